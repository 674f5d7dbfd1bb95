"""Write a phantom exam as a multi-frame ultrasound DICOM cine.

Two pixel encodings, as scanners export them: uncompressed RGB (Explicit VR
Little Endian; frames streamed to the file one at a time) and JPEG baseline
8-bit with ``YBR_FULL_422`` (each frame JPEG-encoded by OpenCV with 4:2:2 chroma
subsampling, the fragments encapsulated with :func:`pydicom.encaps.encapsulate`;
only the compressed frames are held in memory). Frame timing is ``FrameTime``
(ms, with ``CineRate``). Optionally a Sequence of Ultrasound Regions
(0018,6011) gives each panel's box and pixel spacing (cm per pixel, units 3).
The file appears under its final name only when :meth:`DicomCineWriter.close`
succeeds.
"""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

import cv2
import numpy as np

from ceuspipe.fsutil import AtomicWriterContext, output_error, set_default_mode
from ceuspipe.video.panels import Box

US_MULTIFRAME_SOP = "1.2.840.10008.5.1.4.1.1.3.1"
ENCODINGS = ("rgb", "jpeg")


def region_item(box: Box, cm_per_px: float):
    """One item of the Sequence of Ultrasound Regions: a 2-D tissue region over ``box``
    (full-frame pixels) with ``cm_per_px`` spacing in both directions."""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.RegionSpatialFormat = 1  # 2-D
    item.RegionDataType = 1       # tissue
    item.RegionFlags = 0
    item.RegionLocationMinX0 = box.x
    item.RegionLocationMinY0 = box.y
    item.RegionLocationMaxX1 = box.x + box.w - 1
    item.RegionLocationMaxY1 = box.y + box.h - 1
    item.PhysicalUnitsXDirection = 3  # cm
    item.PhysicalUnitsYDirection = 3
    item.PhysicalDeltaX = float(cm_per_px)
    item.PhysicalDeltaY = float(cm_per_px)
    return item


class DicomCineWriter(AtomicWriterContext):
    """Write ``n_frames`` ``(height, width, 3) uint8`` RGB frames to ``path``.

    ``encoding``: ``"rgb"`` or ``"jpeg"``; ``fps`` frames per second;
    ``regions``: ``[(box, cm_per_px), ...]`` for the Sequence of Ultrasound
    Regions, or ``None`` for none; ``patient``: ``{"name", "id", "date"}`` for the
    (synthetic) patient module; the study and series get new UIDs. Use as a context manager.
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, n_frames: int, *, fps: float,
                 encoding: str = "jpeg", regions: list[tuple[Box, float]] | None = None,
                 patient: dict | None = None, jpeg_quality: int = 92):
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, not {encoding!r}")
        self.path = Path(path)
        self.width, self.height, self.n_frames = int(width), int(height), int(n_frames)
        self.encoding = encoding
        self.quality = int(jpeg_quality)
        self._ds = self._dataset(fps, regions, patient or {})
        self._count = 0
        self._fragments: list[bytes] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self._tmp = Path(tmp)
        self._fh = os.fdopen(fd, "wb")
        if encoding == "rgb":
            self._start_native()

    def _dataset(self, fps: float, regions, patient: dict):
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = US_MULTIFRAME_SOP
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian if self.encoding == "rgb" else JPEGBaseline8Bit
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = US_MULTIFRAME_SOP
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "US"
        ds.PatientName = patient.get("name", "PHANTOM^CEUS")
        ds.PatientID = patient.get("id", "PHANTOM")
        ds.StudyDate = str(patient.get("date", "")).replace("-", "")
        # General Study / Series identification (Type 1 and 2), as every scanner writes it:
        # derived objects (a DICOM Segmentation) join the source's study and name its series.
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.StudyTime = ""
        ds.StudyID = ""
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.SeriesNumber = 1
        ds.InstanceNumber = 1
        ds.Manufacturer = "ceuspipe phantom"
        ds.Rows, ds.Columns = self.height, self.width
        ds.NumberOfFrames = self.n_frames
        ds.SamplesPerPixel = 3
        ds.PlanarConfiguration = 0
        ds.PhotometricInterpretation = "RGB" if self.encoding == "rgb" else "YBR_FULL_422"
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        ds.FrameTime = f"{1000.0 / fps:.8g}"
        ds.CineRate = int(round(fps))
        ds.FrameIncrementPointer = 0x00181063  # FrameTime
        if self.encoding == "jpeg":
            ds.LossyImageCompression = "01"
        if regions:
            ds.SequenceOfUltrasoundRegions = [region_item(box, cm) for box, cm in regions]
        return ds

    def _start_native(self) -> None:
        from pydicom import dcmwrite

        dcmwrite(self._fh, self._ds, enforce_file_format=True)
        length = self.n_frames * self.height * self.width * 3
        # (7FE0,0010) OB, explicit VR little endian, defined length (padded to even)
        self._fh.write(struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\0\0" + struct.pack("<I", length + length % 2))

    def write(self, frame: np.ndarray) -> None:
        """Append one ``(height, width, 3) uint8`` RGB frame."""
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        if frame.shape != (self.height, self.width, 3):
            raise ValueError(f"frame shape {frame.shape} != {(self.height, self.width, 3)}")
        if self._count >= self.n_frames:
            raise ValueError(f"more than the {self.n_frames} frames announced")
        if self.encoding == "rgb":
            self._fh.write(frame.tobytes())
        else:
            ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                                    [cv2.IMWRITE_JPEG_QUALITY, self.quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                                     cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422])
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            self._fragments.append(data.tobytes())
        self._count += 1

    def close(self) -> None:
        """Finish the file and move it to its final name (all frames must be written)."""
        if self._fh is None:
            return
        try:
            if self._count != self.n_frames:
                raise ValueError(f"{self._count} frames written, {self.n_frames} announced")
            if self.encoding == "rgb":
                if (self.n_frames * self.height * self.width * 3) % 2:
                    self._fh.write(b"\0")
            else:
                from pydicom import dcmwrite
                from pydicom.encaps import encapsulate

                self._ds.PixelData = encapsulate(self._fragments)
                self._ds["PixelData"].VR = "OB"
                self._ds["PixelData"].is_undefined_length = True
                dcmwrite(self._fh, self._ds, enforce_file_format=True)
            self._fh.close()
            self._fh = None
            set_default_mode(self._tmp)
            os.replace(self._tmp, self.path)
        except BaseException as exc:
            self.abort()
            err = output_error(exc, self.path)
            if err is exc:
                raise
            raise err from exc

    def abort(self) -> None:
        """Drop the partial file."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._tmp.unlink(missing_ok=True)
