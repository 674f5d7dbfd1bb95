"""Video input/output: frame reading (PyAV, DICOM), panel layout, video writing."""
