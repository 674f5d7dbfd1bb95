"""Small valid and malformed inputs for the bad-input, security and fuzz tests.

Everything is written by these functions into a folder the test gives; sizes
are tiny so a whole set takes a few seconds.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
from pathlib import Path

import av
import numpy as np

#: Marker file a malicious pickle would create if it were ever unpickled.
PWNED_NAME = "PWNED"


def two_panel_frames(n: int = 12, width: int = 112, height: int = 64, seed: int = 0,
                     text: bool = True) -> list[np.ndarray]:
    """``n`` RGB frames ``(height, width, 3) uint8``: a CEUS panel (left, speckle redrawn
    every frame, brightening) and a B-mode panel (right, frozen speckle) on black,
    with a small bright "text" block above the panels."""
    rng = np.random.default_rng(seed)
    side = min(height - 16, (width - 28) // 2)
    y0 = 12
    frozen = rng.integers(60, 200, (side, side, 1), dtype=np.uint8)
    frames = []
    for i in range(n):
        img = np.zeros((height, width, 3), np.uint8)
        ceus = rng.integers(10, 40 + 12 * i, (side, side, 1), dtype=np.uint8)
        img[y0:y0 + side, 4:4 + side] = ceus
        img[y0:y0 + side, width - 4 - side:width - 4] = frozen
        if text:
            img[2:8, 6:30] = 230
        frames.append(img)
    return frames


def write_video(path: Path, frames: list[np.ndarray], fps: float = 8.0, codec: str = "libx264",
                pix_fmt: str | None = None) -> Path:
    from ceuspipe.video.writer import VideoWriter

    h, w = frames[0].shape[:2]
    with VideoWriter(path, w, h, fps=fps, codec=codec, pix_fmt=pix_fmt) as vw:
        for i, f in enumerate(frames):
            vw.write(f, i / fps)
    return path


def write_dicom(path: Path, frames: np.ndarray, *, modality: str = "US", bits: int = 8,
                photometric: str = "RGB", frame_time_ms: float = 125.0,
                patient_name: str = "Doe^Jane", patient_id: str = "PID-SECRET-4711") -> Path:
    """Multi-frame DICOM: ``frames`` ``(n, H, W, 3)`` for RGB or ``(n, H, W)`` grey."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.NumberOfFrames = len(frames)
    ds.Rows, ds.Columns = frames.shape[1:3]
    if photometric == "RGB":
        ds.SamplesPerPixel = 3
        ds.PlanarConfiguration = 0
    else:
        ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.FrameTime = f"{frame_time_ms:.3f}"
    ds.PixelData = np.ascontiguousarray(frames).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_zero_frame_video(path: Path) -> Path:
    """A Matroska file with a video stream header and no frames."""
    c = av.open(str(path), "w")
    s = c.add_stream("ffv1", rate=10)
    s.width, s.height, s.pix_fmt = 64, 64, "bgr0"
    c.start_encoding()
    c.close()
    return path


def write_audio_only(path: Path) -> Path:
    """A Matroska file holding one audio stream and no video stream."""
    c = av.open(str(path), "w")
    s = c.add_stream("pcm_s16le", rate=8000)
    s.layout = "mono"
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
    frame.sample_rate = 8000
    for p in s.encode(frame):
        c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return path


class _Evil:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_evil_pickles(folder: Path) -> tuple[Path, Path]:
    """A raw pickle and a torch.save zip whose unpickling would run ``touch PWNED``."""
    import torch

    marker = folder / PWNED_NAME
    raw = folder / "evil_raw.pt"
    raw.write_bytes(pickle.dumps({"format": "ceuspipe-ceusegnet-v1", "config": {}, "model": _Evil(marker)}))
    buf = io.BytesIO()
    torch.save({"format": "ceuspipe-ceusegnet-v1", "config": {}, "model": _Evil(marker)}, buf)
    zipped = folder / "evil_zip.pt"
    zipped.write_bytes(buf.getvalue())
    return raw, zipped


def tree_hashes(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (paths relative to it), folders in ``skip`` left out."""
    out = {}
    for p in sorted(root.rglob("*")):
        if any(p == s or s in p.parents for s in skip):
            continue
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def error_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("ceuspipe: error:")]


def assert_one_line_error(result, *needles: str) -> str:
    """The run failed (non-zero exit) with exactly one ``ceuspipe: error:`` line containing
    every needle, no traceback, and stderr holds nothing else but log lines before it."""
    stderr = result.stderr
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    lines = error_lines(stderr)
    assert len(lines) == 1, stderr
    assert stderr.strip().splitlines()[-1] == lines[0], stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


SAFE_COMPONENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$")
