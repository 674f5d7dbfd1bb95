"""Lesion masks of a DICOM cine as a DICOM Segmentation (SEG) object referencing its frames.

One segment, "lesion" (SNOMED CT 52988006 *Lesion*, category 49755003 *Morphologically
abnormal structure*), BINARY (1 bit a pixel). Each SEG frame is a full source frame
(Rows x Columns of the source: the panel mask is placed at the CEUS panel's box, zero
elsewhere) and references its source frame through Derivation Image Sequence ->
Source Image Sequence -> Referenced SOP Instance UID + Referenced Frame Number. Every
mask given becomes a frame, empty ones too: a source frame that was segmented and has no
lesion has an all-zero SEG frame, one that was not segmented (sampled runs) has none.

How it is built: highdicom 0.28 writes SEGs of multi-frame sources only for enhanced
multi-frame images with patient coordinates, and of images without a Frame of Reference
(an ultrasound cine) only for one frame (highdicom issue 284). So highdicom builds the
object for the first frame, from a header that shows the source as one ultrasound image:
every module (patient and study from the source, SEG series, equipment, segmentation
image, segment description, functional groups, dimensions, common instance reference) is
its own. :func:`_extend_to_frames` then does only what highdicom cannot: the referenced
SOP class of the real (multi-frame) source, one per-frame functional group item per
frame with its Referenced Frame Number, a second dimension (Temporal Position Index in the
Frame Content Sequence, the source frame number) so no two frames share dimension index
values, Number of Frames, and the bit-packed pixel data of all frames.

Patient and study attributes: only the Type 1 and 2 attributes of the Patient and General
Study modules (name, ID, birth date, sex; study UID, date, time, ID, accession number,
referring physician; empty when the source lacks them), plus the de-identification flags
when the source has them, are passed to highdicom, which copies them as the IOD requires.
Nothing optional (comments, history, institution, station) is carried over. No Frame of
Reference or pixel spacing is written: the SEG is aligned to the source frame by frame,
and the source's ultrasound regions hold its calibration.

Memory: the packed frames go to a temporary file (1 bit a pixel); the per-frame items
(about 1 kB each) are held until the file is written.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from ceuspipe.errors import InputError
from ceuspipe.fsutil import AtomicWriterContext, aborted_on_failure, set_default_mode
from ceuspipe.video.panels import Box

log = logging.getLogger("ceuspipe")

#: SOP class highdicom is shown while it builds the first frame (Ultrasound Image Storage).
_SINGLE_FRAME_US = "1.2.840.10008.5.1.4.1.1.6.1"
#: Patient and General Study attributes of Type 1 or 2 (required), copied from the source.
_REQUIRED_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                           "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")
#: Conditionally required when the source was de-identified (Patient module, Type 1C).
_DEIDENTIFICATION = ("PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence")
#: Image and equipment attributes highdicom reads from the source.
_IMAGE = ("SpecificCharacterSet", "Modality", "Rows", "Columns", "Manufacturer", "ManufacturerModelName",
          "LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod")
_TEMPORAL_POSITION_INDEX = 0x00209128
_FRAME_CONTENT_SEQUENCE = 0x00209111


def lesion_segment(algorithm: tuple[str, str] | None):
    """The segment description: segment 1, "lesion". ``algorithm``: ``(name, version)`` of
    the model that drew the masks (AUTOMATIC, artificial intelligence), or None for masks
    drawn by a person (MANUAL)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    ident = None
    kind = hd.seg.SegmentAlgorithmTypeValues.MANUAL
    if algorithm is not None:
        kind = hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        ident = hd.AlgorithmIdentificationSequence(name=algorithm[0], version=algorithm[1],
                                                   family=codes.cid7162.ArtificialIntelligence)
    return hd.seg.SegmentDescription(segment_number=1, segment_label="lesion",
                                     segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                                     segmented_property_type=codes.SCT.Lesion, algorithm_type=kind,
                                     algorithm_identification=ident)


def _source_view(ds, path: Path):
    """The source header as highdicom should see it: one ultrasound image of the same size,
    study and series, with only the required patient and study attributes."""
    from pydicom.dataset import Dataset

    for key in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not str(ds.get(key, "") or "").strip():
            raise InputError(path, f"DICOM lacks {key}: a Segmentation must name its source's study, "
                                   "series and instance")
    view = Dataset()
    for key in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", *_IMAGE, *_DEIDENTIFICATION):
        if key in ds:
            view[key] = copy.deepcopy(ds[key])
    for key in _REQUIRED_PATIENT_STUDY:
        setattr(view, key, copy.deepcopy(ds[key].value) if key in ds and ds[key].value is not None else "")
    view.SOPClassUID = _SINGLE_FRAME_US
    return view


def _frame_item(template, source_class: str, frame_number: int, position: int):
    """Per-frame functional group item of SEG frame ``position`` (1-based) for source frame
    ``frame_number`` (1-based), from highdicom's item for its single frame."""
    item = copy.deepcopy(template)
    source = item.DerivationImageSequence[0].SourceImageSequence[0]
    source.ReferencedSOPClassUID = source_class
    source.ReferencedFrameNumber = int(frame_number)
    content = item.FrameContentSequence[0]
    content.TemporalPositionIndex = int(frame_number)
    values = content.DimensionIndexValues
    values = [int(v) for v in values] if isinstance(values, (list, tuple)) or hasattr(values, "__iter__") \
        else [int(values)]
    content.DimensionIndexValues = [*values, int(position)]
    return item


def _extend_to_frames(seg, source_class: str, frame_numbers: list[int]) -> None:
    """Turn highdicom's one-frame SEG into one frame per source frame in ``frame_numbers``
    (see the module docstring); pixel data is set by the caller."""
    from pydicom.dataset import Dataset

    for series in seg.ReferencedSeriesSequence:
        for inst in series.ReferencedInstanceSequence:
            inst.ReferencedSOPClassUID = source_class
    for item in seg.get("SourceImageSequence", []):
        item.ReferencedSOPClassUID = source_class
    template = seg.PerFrameFunctionalGroupsSequence[0]
    seg.PerFrameFunctionalGroupsSequence = [_frame_item(template, source_class, n, k)
                                            for k, n in enumerate(frame_numbers, 1)]
    time_axis = Dataset()
    time_axis.DimensionOrganizationUID = seg.DimensionIndexSequence[0].DimensionOrganizationUID
    time_axis.DimensionIndexPointer = _TEMPORAL_POSITION_INDEX
    time_axis.FunctionalGroupPointer = _FRAME_CONTENT_SEQUENCE
    time_axis.DimensionDescriptionLabel = "Source frame"
    seg.DimensionIndexSequence.append(time_axis)
    seg.NumberOfFrames = len(frame_numbers)


class BitPacker:
    """Append ``bool`` pixels to a binary file 8 to a byte, first pixel in the lowest bit
    (DICOM's BINARY segmentation packing: frames follow each other without padding)."""

    def __init__(self, fh):
        self._fh = fh
        self._rest = np.zeros(0, bool)
        self.nbytes = 0

    def add(self, pixels: np.ndarray) -> None:
        bits = np.concatenate([self._rest, pixels.reshape(-1).astype(bool, copy=False)])
        whole = bits.size - bits.size % 8
        data = np.packbits(bits[:whole], bitorder="little").tobytes()
        self._fh.write(data)
        self.nbytes += len(data)
        self._rest = bits[whole:]

    def finish(self) -> None:
        """Write the last partial byte (zero bits after it) and pad to an even length."""
        if self._rest.size:
            self._fh.write(np.packbits(self._rest, bitorder="little").tobytes())
            self.nbytes += 1
            self._rest = np.zeros(0, bool)
        if self.nbytes % 2:
            self._fh.write(b"\0")
            self.nbytes += 1


class DicomSegWriter(AtomicWriterContext):
    """Collect the panel masks of a DICOM cine and write them as a SEG at ``out_path``.

    ``source``: the cine (its header is read here; pixel data never); ``box``: the CEUS
    panel in full-frame pixels, where each ``(box.h, box.w)`` mask goes in the source
    frame. :meth:`add` takes masks in time order with their time in seconds from the
    first frame (as the cine's frame times, :func:`ceuspipe.video.dicom.frame_times`) or
    their 1-based source frame number. ``algorithm``: ``(name, version)`` of the model, or
    None for masks drawn by a person. :meth:`close` writes the file atomically.
    """

    def __init__(self, source: str | os.PathLike, out_path: str | os.PathLike, box: Box, *,
                 algorithm: tuple[str, str] | None, series_number: int = 99,
                 series_description: str = "ceuspipe lesion masks"):
        from ceuspipe.video.dicom import frame_times, read_header

        self.source = Path(source)
        self.path = Path(out_path)
        self._ds = read_header(self.source)
        self.rows, self.columns = int(self._ds.Rows), int(self._ds.Columns)
        if box.x < 0 or box.y < 0 or box.x + box.w > self.columns or box.y + box.h > self.rows:
            raise InputError(self.source, f"panel box {box.as_list()} lies outside the {self.columns}x{self.rows} "
                                          "frames: not the layout of this cine")
        self.box = box
        self._view = _source_view(self._ds, self.source)
        self._times = frame_times(self._ds, self.source)
        self.algorithm = algorithm
        self.series_number = int(series_number)
        self.series_description = series_description
        self.frame_numbers: list[int] = []
        self._first: np.ndarray | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.bits.", suffix=".tmp", dir=self.path.parent)
        self._bits_path = Path(tmp)
        self._bits = os.fdopen(fd, "wb")
        self._packer = BitPacker(self._bits)
        self._seg_tmp: Path | None = None
        self._done = False

    def frame_number_at(self, time_s: float) -> int:
        """The 1-based number of the source frame shown at ``time_s``: the nearest frame time,
        within a quarter of the interval to its neighbours (at least 2 ms: mask videos keep
        milliseconds), so a time between two frames matches neither."""
        times = self._times
        i = int(np.clip(np.searchsorted(times, time_s), 0, times.size - 1))
        if i > 0 and abs(times[i - 1] - time_s) <= abs(times[i] - time_s):
            i -= 1
        gaps = np.diff(times)
        gap = min(gaps[i - 1] if i > 0 else np.inf, gaps[i] if i < gaps.size else np.inf)
        tolerance = max(0.002, 0.25 * gap) if np.isfinite(gap) else 0.002
        if abs(times[i] - time_s) > tolerance:
            raise ValueError(f"no frame of {self.source.name} at {time_s:.3f} s "
                             f"(nearest: frame {i + 1} at {times[i]:.3f} s)")
        return i + 1

    def add(self, mask: np.ndarray, *, time_s: float | None = None, frame_number: int | None = None) -> int:
        """Add one ``(box.h, box.w)`` panel mask (non-zero = lesion) for the source frame at
        ``time_s`` seconds or numbered ``frame_number`` (1-based); returns that number.
        Frames must come in increasing order, each once."""
        if (time_s is None) == (frame_number is None):
            raise TypeError("give time_s or frame_number")
        if mask.shape != (self.box.h, self.box.w):
            raise ValueError(f"mask shape {mask.shape} != panel {(self.box.h, self.box.w)}")
        number = self.frame_number_at(time_s) if frame_number is None else int(frame_number)
        if not 1 <= number <= self._times.size:
            raise ValueError(f"frame {number} is not in 1..{self._times.size}")
        if self.frame_numbers and number <= self.frame_numbers[-1]:
            raise ValueError(f"source frame {number} after frame {self.frame_numbers[-1]}: masks must "
                             "come once per frame, in time order")
        full = np.zeros((self.rows, self.columns), bool)
        b = self.box
        full[b.y: b.y + b.h, b.x: b.x + b.w] = mask != 0
        with aborted_on_failure(self.abort, self.path):
            self._packer.add(full)
        if self._first is None:
            self._first = full
        self.frame_numbers.append(number)
        return number

    def _segmentation(self):
        import highdicom as hd

        from ceuspipe import __version__

        with warnings.catch_warnings():
            # highdicom warns about single-component person names (e.g. "PHANTOM"): the
            # source's value is copied as it is, never rewritten.
            warnings.filterwarnings("ignore", message=".*person name.*")
            seg = hd.seg.Segmentation(
                source_images=[self._view], pixel_array=self._first[None], segmentation_type="BINARY",
                segment_descriptions=[lesion_segment(self.algorithm)],
                series_instance_uid=hd.UID(), series_number=self.series_number, sop_instance_uid=hd.UID(),
                instance_number=1, manufacturer="ceuspipe", manufacturer_model_name="ceuspipe",
                software_versions=__version__, device_serial_number="none", omit_empty_frames=False,
                content_label="LESION", content_description="Lesion masks of the CEUS panel")
        seg.SeriesDescription = self.series_description
        _extend_to_frames(seg, str(self._ds.SOPClassUID), self.frame_numbers)
        return seg

    def close(self) -> Path:
        """Write the SEG (at least one mask must have been added) and move it to its name."""
        from pydicom import dcmwrite

        if self._done:
            return self.path
        with aborted_on_failure(self.abort, self.path):
            if not self.frame_numbers:
                raise ValueError("no masks added: a Segmentation needs at least one frame")
            self._packer.finish()
            self._bits.close()
            self._bits = None
            seg = self._segmentation()
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
            self._seg_tmp = Path(tmp)
            with open(self._bits_path, "rb") as bits, os.fdopen(fd, "wb") as out:
                seg.PixelData = bits
                seg["PixelData"].VR = "OB"
                dcmwrite(out, seg, enforce_file_format=True)
            set_default_mode(tmp)
            os.replace(tmp, self.path)
            self._seg_tmp = None
        self._done = True
        self._bits_path.unlink(missing_ok=True)
        log.debug("%s: %d SEG frames of %s", self.path, len(self.frame_numbers), self.source.name)
        return self.path

    def abort(self) -> None:
        """Drop the temporary files (nothing appears under the final name)."""
        if self._bits is not None:
            self._bits.close()
            self._bits = None
        self._bits_path.unlink(missing_ok=True)
        if self._seg_tmp is not None:
            self._seg_tmp.unlink(missing_ok=True)
            self._seg_tmp = None
        self._done = True
