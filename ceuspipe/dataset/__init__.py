"""Annotation import, grey-level balanced frame choice and dataset folders.

Public entry points: :func:`build_dataset` (``ceuspipe build-dataset``),
:func:`import_annotations`, :func:`balance_selection`, :func:`split_patients`,
:func:`annotate_phantom` (``ceuspipe annotate-phantom``). Annotation formats are
plug-ins (:mod:`ceuspipe.dataset.formats`, :func:`register_format`). The torch ``Dataset``
over a built folder lives in :mod:`ceuspipe.dataset.torch_dataset`.
"""

from ceuspipe.dataset.annotations import AnnotationProblem, AnnotationSet, import_annotations
from ceuspipe.dataset.balance import BalanceResult, Candidate, balance_selection, ks_uniform
from ceuspipe.dataset.build import BuildConfig, BuildReport, build_dataset
from ceuspipe.dataset.formats import register_format
from ceuspipe.dataset.split import PatientSplit, split_patients

__all__ = [
    "AnnotationProblem", "AnnotationSet", "import_annotations",
    "BalanceResult", "Candidate", "balance_selection", "ks_uniform",
    "BuildConfig", "BuildReport", "build_dataset", "register_format",
    "PatientSplit", "split_patients",
]
