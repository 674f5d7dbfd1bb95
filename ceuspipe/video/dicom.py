"""Multi-frame ultrasound DICOM cines as a stream of RGB frames with true times.

Frames are read one at a time with :func:`pydicom.pixels.iter_pixels` from the
file path (never the whole pixel array at once), except for Deflated Explicit VR
Little Endian files: pydicom reads pixel data only from an inflated data set, so
such a file is read whole with :func:`pydicom.dcmread` and held in memory
(inflated) while its frames are decoded. Encapsulated pixel data is decoded by
pydicom's plug-ins: python-gdcm (JPEG baseline and extended 8-bit, JPEG
Lossless, JPEG-LS, JPEG 2000) and Pillow, RLE by pydicom itself. Pixel data that
no plug-in decodes (12-bit JPEG Extended, for one) raises :class:`InputError`
with one line naming the transfer syntax. Frame times come from the
DICOM timing attributes, in this order unless (0028,0009) Frame Increment
Pointer names one of the first two:

1. (0018,1065) Frame Time Vector: per-frame increments in ms (first is 0),
2. (0018,1063) Frame Time: constant interval in ms,
3. (0018,0040) Cine Rate: frames per second,
4. (0008,2144) Recommended Display Frame Rate: frames per second.

A multi-frame file with none of these raises :class:`InputError`; a
single-frame file gets time 0.0. Colour: RGB as is; YBR_FULL and YBR_FULL_422
converted to RGB by pydicom (once: never twice, which is what makes images
green); YBR_ICT and YBR_RCT (JPEG 2000 only) come out of the JPEG 2000
decoder as RGB; MONOCHROME2 grey to 3 channels, MONOCHROME1 inverted first;
PALETTE COLOR through its lookup table (16-bit entries to 8 bits, see
:func:`palette_table`). Samples wider than 8 bits are scaled linearly from
``[0, 2**BitsStored - 1]`` to ``[0, 255]`` (with a warning; palette indices are
not samples and are not scaled).
The input file is only ever opened for reading.

:func:`read_ultrasound_regions` reads the panel boxes and pixel spacing the
scanner wrote (Sequence of Ultrasound Regions) from the header alone.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ceuspipe.errors import InputError
from ceuspipe.video.frames import Frame, RelativeClock, VideoInfo
from ceuspipe.video.panels import Box

log = logging.getLogger("ceuspipe")

#: More frames than any real cine (an hour at 250 fps): a damaged NumberOfFrames.
MAX_FRAMES = 900_000
_FRAME_TIME_VECTOR = 0x00181065
_FRAME_TIME = 0x00181063
_SUPPORTED_PHOTOMETRIC = {"RGB", "YBR_FULL", "YBR_FULL_422", "MONOCHROME1", "MONOCHROME2",
                          "PALETTE COLOR", "YBR_ICT", "YBR_RCT"}
# Colour transforms of JPEG 2000's codestream: the decoder undoes them and returns RGB.
_J2K_ONLY_PHOTOMETRIC = {"YBR_ICT", "YBR_RCT"}
_DEFLATED = "1.2.840.10008.1.2.1.99"
# An AttributeError's text: says nothing about the file.
_PYTHON_INTERNAL = re.compile(r"object has no attribute")
# Encapsulated video (MPEG-2, MPEG-4 AVC/H.264, HEVC/H.265) transfer syntaxes.
_VIDEO_SYNTAX_PREFIX = "1.2.840.10008.1.2.4.10"


def has_dicom_magic(path: str | os.PathLike) -> bool:
    """True if the file has the DICOM preamble marker ``DICM`` at byte 128."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_header(path: str | os.PathLike):
    """Read and validate the DICOM header (pixel data deferred, not loaded).

    Returns the pydicom ``Dataset``. Raises :class:`InputError` when the file is
    not DICOM, not ultrasound, has no pixel data, uses an unsupported
    photometric interpretation or transfer syntax.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file or folder")
    try:
        ds = pydicom.dcmread(path, defer_size=1024)
        return _checked_header(ds, path)
    except InputError:
        raise
    except (InvalidDicomError, EOFError, ValueError, KeyError, OSError) as err:
        raise InputError(path, f"not a readable DICOM file ({_shown(err, 80)})") from err
    except Exception as err:  # noqa: BLE001 - pydicom raises many types for damaged headers
        raise InputError(path, f"not a readable DICOM file ({err.__class__.__name__}: "
                               f"{_shown(err, 80)})") from err


def _shown(value, limit: int = 24) -> str:
    """``value`` as one short printable-ASCII line for an error message: a damaged
    header can make a field run into the next ones (patient name included)."""
    text = "".join(c if " " <= c <= "~" else "?" for c in str(value))
    return text if len(text) <= limit else text[:limit] + "..."


def _header_call(path: Path, fn, *args):
    """``fn(*args)`` on header values; any failure of a damaged header is an :class:`InputError`."""
    try:
        return fn(*args)
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - damaged values fail in many ways
        raise InputError(path, f"damaged DICOM header ({err.__class__.__name__}: {_shown(err, 80)})") from err


def _checked_header(ds, path: Path):
    """Validate the header fields :func:`read_header` promises; ``ds`` is returned."""
    modality = str(ds.get("Modality", "") or "").strip()
    if not modality:
        log.warning("%s: DICOM has no Modality; read as ultrasound", path)
    elif modality.upper() != "US":
        raise InputError(path, f"not an ultrasound DICOM (Modality={_shown(modality, 16)})")
    if "PixelData" not in ds:
        raise InputError(path, "DICOM has no pixel data")
    tsyntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    if tsyntax.startswith(_VIDEO_SYNTAX_PREFIX):
        raise InputError(path, f"DICOM with encapsulated video (transfer syntax {_shown(tsyntax, 64)}) "
                               "is not supported; export the cine as MP4 instead")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric not in _SUPPORTED_PHOTOMETRIC:
        raise InputError(path, f"unsupported DICOM photometric interpretation {_shown(photometric, 16)!r}")
    if photometric in _J2K_ONLY_PHOTOMETRIC:
        from pydicom.uid import JPEG2000TransferSyntaxes

        if tsyntax not in JPEG2000TransferSyntaxes:
            raise InputError(path, f"DICOM photometric interpretation {photometric} is only valid for "
                                   f"JPEG 2000 pixel data, not {_syntax_label(ds)}: damaged header")
    for key in ("Rows", "Columns", "BitsAllocated"):
        if key not in ds:
            raise InputError(path, f"DICOM lacks {key}")
    return ds


def number_of_frames(ds) -> int:
    """Number of frames from (0028,0008), 1 when absent or empty."""
    try:
        n = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        n = 1
    return max(1, n)


def frame_times(ds, path: str | os.PathLike) -> np.ndarray:
    """Frame times in seconds, ``(n_frames,) float64``, first 0.0, strictly increasing.

    See the module docstring for the attribute order. Raises :class:`InputError`
    when a multi-frame file has no usable timing.
    """
    n = number_of_frames(ds)
    if n == 1:
        return np.zeros(1)
    if n > MAX_FRAMES:
        raise InputError(path, f"DICOM claims {n} frames (more than {MAX_FRAMES}): damaged header")
    pointer = ds.get("FrameIncrementPointer")
    pointers = {int(p) for p in (pointer if isinstance(pointer, (list, tuple)) or
                                 type(pointer).__name__ == "MultiValue" else [pointer])
                if p is not None} if pointer is not None else set()
    order = ["vector", "time", "cine", "display"]
    if _FRAME_TIME in pointers and _FRAME_TIME_VECTOR not in pointers:
        order = ["time", "vector", "cine", "display"]
    for source in order:
        times = _times_from(ds, source, n, path)
        if times is not None:
            return _strictly_increasing(times, path)
    raise InputError(path, "DICOM has no frame timing (FrameTimeVector, FrameTime, CineRate "
                           "or RecommendedDisplayFrameRate)")


def _positive(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) and v > 0 else None


def _times_from(ds, source: str, n: int, path) -> np.ndarray | None:
    if source == "vector":
        vec = ds.get("FrameTimeVector")
        if vec is None or vec == "":
            return None
        values = [float(v) for v in (vec if hasattr(vec, "__len__") and not isinstance(vec, str)
                                     else [vec])]
        if len(values) == n - 1:
            values = [0.0] + values
        if len(values) != n:
            log.warning("%s: FrameTimeVector has %d values for %d frames: ignored",
                        path, len(values), n)
            return None
        values[0] = 0.0
        return np.cumsum(np.asarray(values, dtype=np.float64)) / 1000.0
    if source == "time":
        ms = _positive(ds.get("FrameTime"))
        return None if ms is None else np.arange(n, dtype=np.float64) * (ms / 1000.0)
    keyword = "CineRate" if source == "cine" else "RecommendedDisplayFrameRate"
    fps = _positive(ds.get(keyword))
    return None if fps is None else np.arange(n, dtype=np.float64) / fps


def _strictly_increasing(times: np.ndarray, path) -> np.ndarray:
    from ceuspipe.video.frames import MAX_CLIP_S

    clock = RelativeClock()
    out = np.array([clock(float(t)) for t in times], dtype=np.float64)
    clock.report(path)
    if out.size and not out[-1] <= MAX_CLIP_S:
        raise InputError(path, f"DICOM frame times reach {out[-1]:.3g} s, beyond {MAX_CLIP_S:g} s: "
                               "damaged timing attributes")
    return out


def _syntax_label(ds) -> str:
    """The transfer syntax as ``name (UID)`` for messages (just the UID when pydicom has no name)."""
    uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if not uid:
        return "an unknown transfer syntax"
    name = _shown(getattr(uid, "name", uid), 64)
    return name if name == _shown(uid, 64) else f"{name} ({_shown(uid, 64)})"


def _one_line_reason(err: BaseException) -> str:
    """A pydicom error as one short line. pydicom's decode errors are multi-line:
    ``"Unable to decode as exceptions were raised by all available plugins:"`` and
    one ``"  plugin: reason"`` line per plug-in; the first plug-in's reason is kept,
    passing over Python-internal ones (gdcm's binding fails on damaged JPEG data
    with ``'NoneType' object has no attribute 'encode'``) when another plug-in says more."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    if not lines:
        return err.__class__.__name__
    reason = lines[0].rstrip(":").strip()
    if "raised by all available plugins" in lines[0] and len(lines) > 1:
        reasons = []
        for item in lines[1:]:
            name, sep, rest = item.partition(": ")
            reasons.append(rest if sep and " " not in name else item)
        reason = next((r for r in reasons if not _PYTHON_INTERNAL.search(r)), reasons[0])
    return _shown(reason, 160)


def palette_table(ds) -> np.ndarray:
    """The PALETTE COLOR lookup table of ``ds`` as ``(2**BitsStored, 3) uint8`` RGB,
    indexed by stored pixel value (indices below the first mapped value take the
    first entry, above the last the last entry, as in
    :func:`pydicom.pixels.apply_color_lut`).

    16-bit entries are scaled to 8 bits (``>> 8``) unless no entry of the whole
    table exceeds 255 (8-bit values written in 16-bit words, which some scanners
    do): decided once per table, so a dark frame is not brightened.
    """
    from pydicom.pixels import apply_color_lut

    bits = int(ds.get("BitsStored", 0) or ds.get("BitsAllocated", 8) or 8)
    if not 1 <= bits <= 16:
        raise ValueError(f"palette indices of {bits} bits")
    rgb = apply_color_lut(np.arange(2 ** bits, dtype=np.uint8 if bits <= 8 else np.uint16), ds)[:, :3]
    if rgb.dtype != np.uint8 and rgb.max(initial=0) > 255:
        rgb = rgb >> 8
    return np.ascontiguousarray(rgb.astype(np.uint8))


def to_rgb8(arr: np.ndarray, ds, palette: np.ndarray | None = None) -> np.ndarray:
    """Convert one decoded frame to ``(rows, cols, 3) uint8`` RGB.

    ``arr`` is what pydicom yields with ``raw=False``: ``(rows, cols)`` grey or
    palette indices, or ``(rows, cols, 3)`` already converted to RGB (YBR_FULL,
    YBR_FULL_422, and JPEG 2000's YBR_ICT and YBR_RCT). ``palette``: the file's
    :func:`palette_table` when already computed (PALETTE COLOR only; computed
    here otherwise).
    """
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric == "PALETTE COLOR":
        table = palette_table(ds) if palette is None else palette
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        return np.take(table, arr, axis=0, mode="clip")
    bits_allocated = int(ds.get("BitsAllocated", 8))
    if bits_allocated > 8 or arr.dtype.itemsize > 1:
        bits_stored = int(ds.get("BitsStored", bits_allocated) or bits_allocated)
        values = arr.astype(np.float32)
        if int(ds.get("PixelRepresentation", 0) or 0) == 1:
            values += float(2 ** (bits_stored - 1))
        values *= 255.0 / float(2 ** bits_stored - 1)
        arr = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    else:
        arr = arr.astype(np.uint8, copy=False)
    if arr.ndim == 2:
        if photometric == "MONOCHROME1":
            arr = 255 - arr
        return np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr[..., :3])


def probe_dicom(path: str | os.PathLike) -> VideoInfo:
    """:class:`VideoInfo` for a DICOM cine from its header (kind ``"dicom"``, rotation 0)."""
    path = Path(path)
    ds = read_header(path)
    return _header_call(path, _probe_from_header, ds, path)


def _probe_from_header(ds, path: Path) -> VideoInfo:
    times = frame_times(ds, path)
    n = times.size
    fps = None
    duration = None
    if n > 1:
        step = float(times[-1] / (n - 1))
        fps = 1.0 / step if step > 0 else None
        duration = float(times[-1]) + step
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    codec = f"dicom:{tsyntax.name}" if tsyntax is not None else "dicom"
    return VideoInfo(path=path, kind="dicom", width=int(ds.Columns), height=int(ds.Rows),
                     codec=codec, nominal_fps=fps, duration_s=duration, frame_count_hint=n,
                     rotation=0)


def _pixel_frames(path: Path, ds, indices: Iterator[int]) -> Iterator[np.ndarray]:
    """Decoded frames for ``indices`` (read lazily), one at a time, YBR converted to RGB.

    A Deflated Explicit VR Little Endian file is inflated whole into memory first
    (``iter_pixels`` on its path finds no pixel data in the still-deflated stream).
    """
    import pydicom
    from pydicom.pixels import iter_pixels

    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    encapsulated = bool(tsyntax is not None and tsyntax.is_encapsulated)
    src = pydicom.dcmread(path) if tsyntax == _DEFLATED else path
    if photometric == "YBR_FULL_422" and not encapsulated:
        # pydicom 3.0 changes its per-file state after the first native 4:2:2 frame
        # and then miscomputes the next frame's length; a fresh reader per frame
        # (header parse only, pixel bytes still read one frame at a time) avoids it.
        for i in indices:
            yield from iter_pixels(src, indices=[i])
        return
    yield from iter_pixels(src, indices=indices)


def iter_dicom_frames(path: str | os.PathLike, *,
                      select: Callable[[float], bool] | None = None) -> Iterator[Frame]:
    """Yield :class:`Frame` objects of a DICOM cine, one frame read at a time.

    ``select(time_s)`` is called once per frame in order, before that frame's
    pixels are read; rejected frames are never read. Raises :class:`InputError`
    for non-ultrasound files, missing pixel data or timing, or undecodable or
    truncated pixel data (also after some frames were yielded).
    """
    path = Path(path)
    ds = read_header(path)
    times = _header_call(path, frame_times, ds, path)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    palette = _header_call(path, palette_table, ds) if photometric == "PALETTE COLOR" else None
    if _header_call(path, lambda: int(ds.get("BitsAllocated", 8))) > 8 and palette is None:
        log.warning("%s: %s-bit DICOM samples scaled linearly to 8 bits (BitsStored=%s)",
                    path, ds.get("BitsAllocated"), ds.get("BitsStored"))
    current = [-1]
    select_error: list[BaseException] = []

    def wanted() -> Iterator[int]:
        for i, t in enumerate(times):
            try:
                keep = select is None or select(float(t))
            except Exception as err:  # re-raised below, not taken for a decode error
                select_error.append(err)
                return
            if keep:
                current[0] = i
                yield i

    yielded = 0
    try:
        for arr in _pixel_frames(path, ds, wanted()):
            i = current[0]
            yield Frame(index=i, time_s=float(times[i]), image=to_rgb8(arr, ds, palette))
            yielded += 1
    except InputError:
        raise
    except Exception as err:  # pydicom raises many types for damaged or unsupported data
        if select_error:
            raise select_error[0] from None
        # pydicom's messages run over several lines (one per decoding plug-in): one line here.
        reason = _one_line_reason(err)
        if yielded == 0:
            raise InputError(path, f"DICOM pixel data in {_syntax_label(ds)} cannot be decoded: "
                                   f"{reason}") from err
        # Native pixel data ends early when the file is truncated; frames already
        # handed out cannot be taken back, so the whole clip is refused.
        raise InputError(path, f"DICOM pixel data damaged or truncated after {yielded} of "
                               f"{times.size} frame(s) ({reason})") from err
    if select_error:
        raise select_error[0]


#: RegionDataType values of image regions (0: none, 1: tissue, 2: colour flow).
IMAGE_DATA_TYPES = (0, 1, 2)
_UNIT_MM = {3: 10.0}  # PhysicalUnits 3 = cm


@dataclass(frozen=True)
class UltrasoundRegion:
    """One item of the Sequence of Ultrasound Regions (0018,6011).

    ``box``: the region in full-frame pixels (``None`` when its corners are missing
    or invalid); ``spatial_format`` (0018,6012: 1 = 2-D) and ``data_type``
    (0018,6014: 1 = tissue), ``None`` when absent; ``pixel_size_mm``:
    ``(PhysicalDeltaX, PhysicalDeltaY)`` in mm per pixel when both directions are
    in cm (units 3), else ``None``; ``units`` the raw (x, y) unit codes.
    """

    box: Box | None
    spatial_format: int | None
    data_type: int | None
    pixel_size_mm: tuple[float, float] | None
    units: tuple[int | None, int | None]


def _int_or_none(value) -> int | None:
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _region(item) -> UltrasoundRegion:
    x0, y0, x1, y1 = (_int_or_none(item.get(k)) for k in
                      ("RegionLocationMinX0", "RegionLocationMinY0", "RegionLocationMaxX1", "RegionLocationMaxY1"))
    box = None
    if None not in (x0, y0, x1, y1) and 0 <= x0 <= x1 and 0 <= y0 <= y1:
        box = Box(x0, y0, x1 - x0 + 1, y1 - y0 + 1)  # the Max corners are inclusive
    ux, uy = _int_or_none(item.get("PhysicalUnitsXDirection")), _int_or_none(item.get("PhysicalUnitsYDirection"))
    pix = None
    if ux in _UNIT_MM and uy in _UNIT_MM:
        dx, dy = _positive(item.get("PhysicalDeltaX")), _positive(item.get("PhysicalDeltaY"))
        if dx is not None and dy is not None:
            pix = (dx * _UNIT_MM[ux], dy * _UNIT_MM[uy])
    return UltrasoundRegion(box, _int_or_none(item.get("RegionSpatialFormat")),
                            _int_or_none(item.get("RegionDataType")), pix, (ux, uy))


def read_ultrasound_regions(path: str | os.PathLike) -> list[UltrasoundRegion]:
    """The Sequence of Ultrasound Regions of a DICOM file (header only: pixel data is
    not read), in file order; ``[]`` when the file has none.

    Raises :class:`InputError` when the file is not a readable DICOM. Damaged
    items are kept with ``box=None`` (and are then not used as panels).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file or folder")
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, EOFError, ValueError, KeyError, OSError) as err:
        raise InputError(path, f"not a readable DICOM file ({_shown(err, 80)})") from err
    except Exception as err:  # noqa: BLE001 - pydicom raises many types for damaged headers
        raise InputError(path, f"not a readable DICOM file ({err.__class__.__name__})") from err
    try:
        seq = ds.get("SequenceOfUltrasoundRegions")
        items = list(seq) if seq is not None else []
    except Exception as err:  # noqa: BLE001 - a damaged sequence is no regions
        log.warning("%s: unreadable Sequence of Ultrasound Regions (%s): ignored", path, err.__class__.__name__)
        return []
    out = []
    for i, item in enumerate(items, 1):
        try:
            out.append(_region(item))
        except Exception as err:  # noqa: BLE001 - damaged values fail in many ways
            log.warning("%s: ultrasound region %d unreadable (%s): ignored", path, i, err.__class__.__name__)
            out.append(UltrasoundRegion(None, None, None, None, (None, None)))
    return out
