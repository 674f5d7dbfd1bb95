"""Mask sequences as NIfTI-1 volumes, written and read one frame at a time.

Layout of what :class:`NiftiMaskWriter` writes (header through nibabel):

- data: ``uint8`` 0/1, shape ``(x, y, 1, t)`` = ``(W, H, 1, T)``. NIfTI keeps dimension 4
  for time: a 3-D ``(x, y, t)`` file would be shown as z slices by every viewer, so the
  unused z axis is kept at length 1. Voxel order is the format's (x fastest), so each
  ``(H, W)`` frame goes to the file as its C-order bytes, frame after frame.
- ``pixdim[1:3]``: the pixel size in mm with ``xyzt_units`` mm, when known; otherwise 1.0
  with spatial units unknown. ``pixdim[4]``: the median frame interval in seconds and
  ``toffset`` the first frame's time (NIfTI has one time step only).
- the real frame times (irregular after repeated or sampled frames) are in a header
  extension, code 6 (``comment``), holding JSON ``{"kind": "ceuspipe.mask_times",
  "frame_times_s": [...], "pixel_size_mm": [dx, dy] | null}``: one file carries
  everything (no sidecar to lose). Tools that drop extensions keep the nominal step.
- ``qform_code = sform_code = 0``: an ultrasound panel has no patient coordinates, so
  only the pixel spacing is stated (the format's "method 1").
- ``intent`` label (``"lesion"``), ``cal_min/cal_max`` 0/1, ``descrip`` names ceuspipe.

Nothing about the patient or the source file (whose name may hold a patient name) is
written. The file appears under its final name only when the writer is closed after
every announced frame; ``.gz`` names are gzip-compressed as they are written.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from ceuspipe.errors import InputError
from ceuspipe.fsutil import AtomicWriterContext, aborted_on_failure, set_default_mode

#: ``kind`` of the JSON header extension that carries the frame times.
TIMES_KIND = "ceuspipe.mask_times"
#: NIfTI extension code of that extension (6: NIFTI_ECODE_COMMENT, free text).
TIMES_ECODE = 6
#: gzip level for ``.nii.gz``: masks compress ~360x; level 6 costs ~0.4 ms a 360x360 frame.
GZIP_LEVEL = 6
#: Largest frame read back (bytes): a damaged header cannot make the reader allocate more.
MAX_FRAME_BYTES = 1 << 28

_SPACE_UNIT_MM = {"mm": 1.0, "meter": 1000.0, "micron": 0.001}
_TIME_UNIT_S = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}


def _pixel_pair(pixel_size_mm) -> tuple[float, float] | None:
    """``(dx, dy)`` in mm from a number, a pair or None; both must be finite and > 0."""
    if pixel_size_mm is None:
        return None
    pair = np.broadcast_to(np.asarray(pixel_size_mm, dtype=np.float64), (2,))
    if not np.all(np.isfinite(pair)) or not np.all(pair > 0):
        raise ValueError(f"pixel_size_mm must be positive, not {pixel_size_mm!r}")
    return float(pair[0]), float(pair[1])


def _checked_times(frame_times_s: Sequence[float]) -> np.ndarray:
    times = np.asarray(frame_times_s, dtype=np.float64).reshape(-1)
    if times.size == 0:
        raise ValueError("a mask sequence needs at least one frame time")
    if not np.all(np.isfinite(times)) or np.any(np.diff(times) <= 0):
        raise ValueError("frame times must be finite and strictly increasing")
    return times


def nifti_header(width: int, height: int, frame_times_s: Sequence[float], pixel_size_mm=None):
    """The ``nibabel.Nifti1Header`` of a ``(W, H, 1, T)`` mask sequence (see the module
    docstring); ``pixel_size_mm``: ``(dx, dy)`` or one number, mm per pixel, or None."""
    import nibabel as nib

    times = _checked_times(frame_times_s)
    pixel = _pixel_pair(pixel_size_mm)
    step = float(np.median(np.diff(times))) if times.size > 1 else 0.0
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.uint8)
    hdr.set_data_shape((int(width), int(height), 1, int(times.size)))
    dx, dy = pixel if pixel is not None else (1.0, 1.0)
    hdr.set_zooms((dx, dy, 1.0, step))
    hdr.set_xyzt_units("mm" if pixel is not None else "unknown", "sec")
    hdr["toffset"] = float(times[0])
    hdr.set_qform(None, code=0)
    hdr.set_sform(None, code=0)
    hdr.set_intent("label", name="lesion")
    hdr["cal_min"], hdr["cal_max"] = 0.0, 1.0
    hdr["descrip"] = b"ceuspipe lesion masks (0/1); frame times in extension 6"
    record = {"kind": TIMES_KIND, "frame_times_s": [round(float(t), 6) for t in times],
              "pixel_size_mm": None if pixel is None else list(pixel)}
    hdr.extensions.append(nib.nifti1.Nifti1Extension(TIMES_ECODE, json.dumps(record).encode("utf-8")))
    return hdr


class NiftiMaskWriter(AtomicWriterContext):
    """Write ``len(frame_times_s)`` masks of ``(height, width)`` to ``out_path`` one at a time.

    ``out_path`` ending in ``.gz`` is gzip-compressed while written. The header (with the
    frame times) goes first, then each frame's bytes: memory stays at one frame whatever
    the clip's length. :meth:`close` renames the temporary file to ``out_path`` after the
    last announced frame; fewer or more frames raise :class:`ValueError` and leave nothing.
    Use as a context manager (an exception in the block drops the partial file).
    """

    def __init__(self, out_path: str | os.PathLike, width: int, height: int, frame_times_s: Sequence[float], *,
                 pixel_size_mm=None, compresslevel: int = GZIP_LEVEL):
        self.path = Path(out_path)
        self.width, self.height = int(width), int(height)
        header = nifti_header(self.width, self.height, frame_times_s, pixel_size_mm)
        self.n_frames = int(header.get_data_shape()[3])
        self.frames_written = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self._tmp = Path(tmp)
        self._raw = os.fdopen(fd, "wb")
        self._out = (gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, compresslevel=compresslevel, mtime=0)
                     if self.path.suffix.lower() == ".gz" else self._raw)
        with aborted_on_failure(self.abort, self.path):
            self._write_header(header)

    def _write_header(self, header) -> None:
        import io

        buf = io.BytesIO()
        header.write_to(buf)
        offset = int(header["vox_offset"])
        self._out.write(buf.getvalue() + b"\0" * (offset - buf.tell()))

    def write(self, mask: np.ndarray) -> None:
        """Append one ``(height, width)`` mask (any dtype; non-zero = lesion)."""
        if self._out is None:
            raise ValueError("writer is closed")
        if mask.shape != (self.height, self.width):
            raise ValueError(f"mask shape {mask.shape} != {(self.height, self.width)}")
        if self.frames_written >= self.n_frames:
            raise ValueError(f"more than the {self.n_frames} frames announced")
        with aborted_on_failure(self.abort, self.path):
            self._out.write(np.not_equal(mask, 0).view(np.uint8).tobytes())
        self.frames_written += 1

    def close(self) -> Path:
        """Finish the file and move it to its final name; returns that path."""
        if self._out is None:
            return self.path
        with aborted_on_failure(self.abort, self.path):
            if self.frames_written != self.n_frames:
                raise ValueError(f"{self.frames_written} mask frames written, {self.n_frames} announced")
            if self._out is not self._raw:
                self._out.close()
            self._raw.close()
            self._out = self._raw = None
            set_default_mode(self._tmp)
            os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial file (nothing appears under the final name)."""
        for fh in (self._out, self._raw):
            if fh is not None:
                try:
                    fh.close()
                except OSError:
                    pass
        self._out = self._raw = None
        self._tmp.unlink(missing_ok=True)


def write_nifti_masks(mask_frames: Iterable[np.ndarray], out_path: str | os.PathLike, *,
                      pixel_size_mm=None, frame_times_s: Sequence[float]) -> Path:
    """Write ``mask_frames`` (an iterable of ``(H, W)`` masks, non-zero = lesion, read one
    at a time) as a NIfTI-1 ``uint8`` 0/1 volume ``(W, H, 1, T)`` at ``out_path``
    (``.nii`` or ``.nii.gz``), atomically.

    ``frame_times_s``: the ``T`` frame times in seconds, strictly increasing (known before
    the frames: they go into the header, see the module docstring); ``pixel_size_mm``:
    ``(dx, dy)`` or one number in mm per pixel, or None when unknown. The number of masks
    must equal ``T`` (:class:`ValueError` otherwise, and nothing is written).
    """
    frames = iter(mask_frames)
    first = next(frames, None)
    if first is None:
        raise ValueError("no mask frames")
    with NiftiMaskWriter(out_path, first.shape[1], first.shape[0], frame_times_s,
                         pixel_size_mm=pixel_size_mm) as writer:
        writer.write(first)
        for mask in frames:
            writer.write(mask)
    return writer.path


@dataclass(frozen=True)
class NiftiMasks:
    """A NIfTI mask sequence opened by :func:`read_nifti_masks`: iterate it for the
    ``(H, W) bool`` masks, read from the file one frame at a time (each iteration reads
    the file again from the start).

    ``shape``: ``(H, W)``; ``times_s``: ``(T,) float64`` seconds, from ceuspipe's
    extension, else ``toffset + k * pixdim[4]`` when the file states a time unit and a
    step, else None (match frames by count); ``pixel_size_mm``: ``(dx, dy)`` when the
    file states a spatial unit, else None.
    """

    path: Path
    shape: tuple[int, int]
    n_frames: int
    times_s: np.ndarray | None
    pixel_size_mm: tuple[float, float] | None
    _offset: int
    _dtype: np.dtype
    _scale: tuple[float, float] | None

    def __len__(self) -> int:
        return self.n_frames

    def __iter__(self) -> Iterator[np.ndarray]:
        from nibabel.openers import ImageOpener

        h, w = self.shape
        nbytes = h * w * self._dtype.itemsize
        with ImageOpener(self.path, "rb") as fh:
            fh.seek(self._offset)
            for k in range(self.n_frames):
                buf = fh.read(nbytes)
                if len(buf) != nbytes:
                    raise InputError(self.path, f"file ends in frame {k + 1} of {self.n_frames}: truncated")
                values = np.frombuffer(buf, dtype=self._dtype).reshape(h, w)
                if self._scale is not None:
                    values = values * self._scale[0] + self._scale[1]
                if values.dtype.kind == "f":
                    values = np.nan_to_num(values, nan=0.0)
                yield values != 0


def read_nifti_masks(path: str | os.PathLike) -> NiftiMasks:
    """Open a NIfTI-1 or NIfTI-2 mask sequence (``.nii``, ``.nii.gz``) for lazy reading.

    Accepted shapes: ``(x, y)`` (one mask), ``(x, y, t)`` (the third axis read as time),
    ``(x, y, 1, t)`` (what :class:`NiftiMaskWriter` writes), and those with trailing axes
    of length 1. Non-zero voxels (after the header's scaling, NaN as 0) are lesion. Only
    the header is read here. Raises :class:`InputError` for a missing or non-NIfTI file
    or a shape that is not a 2-D sequence.
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    try:
        img = nib.load(path)
    except Exception as err:  # noqa: BLE001 - nibabel raises many types for damaged files
        raise InputError(path, f"not a readable NIfTI file ({err.__class__.__name__})") from err
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(path, f"not a NIfTI file ({type(img).__name__})")
    proxy = img.dataobj
    shape = tuple(int(n) for n in proxy.shape)
    width, height, frames = _sequence_shape(path, shape)
    dtype = np.dtype(proxy.dtype)
    if dtype.kind not in "buif" or width * height * dtype.itemsize > MAX_FRAME_BYTES:
        raise InputError(path, f"unsupported mask data ({dtype}, {width}x{height} per frame)")
    slope, inter = float(proxy.slope), float(proxy.inter)
    scale = None if (slope, inter) == (1.0, 0.0) else (slope, inter)
    hdr = img.header
    record = _times_record(hdr)
    return NiftiMasks(path=path, shape=(height, width), n_frames=frames,
                      times_s=_times(hdr, record, frames, len(shape)),
                      pixel_size_mm=_pixel_size(hdr, record), _offset=int(proxy.offset), _dtype=dtype,
                      _scale=scale)


def _sequence_shape(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``(W, H, T)`` of a NIfTI shape that holds a 2-D sequence."""
    dims = list(shape)
    while len(dims) > 4 and dims[-1] == 1:
        dims.pop()
    if len(dims) == 2:
        dims += [1]
    elif len(dims) == 4:
        if dims[2] != 1:
            raise InputError(path, f"a volume over time (shape {shape}) is not a 2-D mask sequence")
        dims = [dims[0], dims[1], dims[3]]
    if len(dims) != 3 or min(dims) < 1:
        raise InputError(path, f"shape {shape} is not a 2-D mask sequence (x, y, t)")
    return dims[0], dims[1], dims[2]


def _times_record(hdr) -> dict | None:
    """ceuspipe's JSON extension, if the file has one."""
    for ext in hdr.extensions:
        if ext.get_code() != TIMES_ECODE:
            continue
        try:
            record = json.loads(ext.get_content())
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(record, dict) and record.get("kind") == TIMES_KIND:
            return record
    return None


def _times(hdr, record: dict | None, frames: int, ndim: int) -> np.ndarray | None:
    if record is not None:
        try:
            times = np.asarray(record.get("frame_times_s"), dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            times = np.empty(0)
        if times.size == frames and np.all(np.isfinite(times)):
            return times
    if frames == 1:
        return np.array([float(hdr["toffset"])])
    unit = _TIME_UNIT_S.get(hdr.get_xyzt_units()[1])
    step = float(hdr["pixdim"][4]) if ndim >= 4 else 0.0
    if unit is None or not step > 0:
        return None
    return (float(hdr["toffset"]) + step * np.arange(frames)) * unit


def _pixel_size(hdr, record: dict | None) -> tuple[float, float] | None:
    """From ceuspipe's extension (exact; the header holds float32), else ``pixdim`` when the
    file states a spatial unit."""
    if record is not None:
        try:
            return _pixel_pair(record.get("pixel_size_mm"))
        except (TypeError, ValueError):
            pass
    scale = _SPACE_UNIT_MM.get(hdr.get_xyzt_units()[0])
    if scale is None:
        return None
    dx, dy = (float(v) * scale for v in hdr["pixdim"][1:3])
    return (dx, dy) if dx > 0 and dy > 0 else None
