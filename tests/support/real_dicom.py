"""Real DICOM files for the tests: scanner exports shipped by pydicom-data and pydicom's own
test files (both read from disk, never downloaded, never modified: copies go to ``tmp_path``).

pydicom-data is in the ``test`` extra; when it is missing the tests that need it fail with
a message saying so (they are not skipped: a silent skip would hide the codec coverage).
"""

from __future__ import annotations

from pathlib import Path

import pytest


def pydicom_data_dir() -> Path:
    """Folder of pydicom-data's files (``data_store/data``); fails the test when not installed."""
    try:
        import data_store
    except ImportError:
        pytest.fail("pydicom-data is not installed (it is in the test extra: pip install -e '.[test]'); "
                    "tests/video/test_dicom_real.py reads its real scanner DICOMs", pytrace=False)
    return Path(data_store.__file__).parent / "data"


def real_dicom(name: str) -> Path:
    """``<name>.dcm`` from pydicom-data (a real scanner export, read-only)."""
    path = pydicom_data_dir() / f"{name}.dcm"
    if not path.is_file():
        pytest.fail(f"{path} is missing: reinstall pydicom-data>=1.0", pytrace=False)
    return path


def pydicom_test_file(name: str) -> Path:
    """``name`` from pydicom's own test files, looked up on disk only (no download)."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.fail(f"pydicom's test file {name} is not on disk (pydicom>=3.0 ships it)", pytrace=False)
    return Path(path)


def us_copy(src: Path, dst: Path, *, transfer_syntax: str | None = None, **attributes) -> Path:
    """Copy of ``src`` at ``dst`` with Modality US and ``attributes`` set (``None`` deletes
    one), written in ``transfer_syntax`` when given (pydicom re-encodes only between native
    syntaxes and deflate; encapsulated pixel data is copied as it is)."""
    import pydicom

    ds = pydicom.dcmread(src)
    ds.Modality = "US"
    for key, value in attributes.items():
        if value is None:
            if key in ds:
                delattr(ds, key)
        else:
            setattr(ds, key, value)
    if transfer_syntax is not None:
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.save_as(dst)
    return dst
