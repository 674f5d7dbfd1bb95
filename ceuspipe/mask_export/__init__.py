"""Lesion masks out of ceuspipe (issue 27, part 5), for research tools and PACS.

- :mod:`~ceuspipe.mask_export.nifti`: a mask sequence as a NIfTI-1 volume with the pixel
  size and the real frame times, written and read one frame at a time;
- :mod:`~ceuspipe.mask_export.dicom_seg`: the masks of a DICOM cine as a DICOM
  Segmentation referencing the source instance's frames;
- :mod:`~ceuspipe.mask_export.export`: both from a segment-video output folder's
  ``mask.mkv`` (:func:`export_masks`).

nibabel and highdicom are imported by the functions that use them, not here.
"""

from ceuspipe.mask_export.dicom_seg import DicomSegWriter
from ceuspipe.mask_export.export import NIFTI_NAME, SEG_NAME, export_masks
from ceuspipe.mask_export.nifti import NiftiMasks, NiftiMaskWriter, read_nifti_masks, write_nifti_masks

__all__ = ["DicomSegWriter", "NIFTI_NAME", "NiftiMaskWriter", "NiftiMasks", "SEG_NAME", "export_masks",
           "read_nifti_masks", "write_nifti_masks"]
