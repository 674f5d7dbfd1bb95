"""The masks of a segment-video output folder as NIfTI and DICOM SEG files, in one read.

:func:`export_masks` reads ``mask.mkv`` (FFV1 grey, CEUS-panel size, 0/255, every frame
at its source frame's time) twice, one frame at a time: a first pass for the frame times
(they go into the NIfTI header, which comes before the frames), a second one for the
masks, fed to both writers. Measured on a 900-frame 360x360 mask video on this 2-core
machine: ~0.15 s for the time pass, ~0.85 s to decode the masks; gzip level 6 adds ~0.4 s
and makes ``masks.nii.gz`` 0.33 MB where ``.nii`` would be 117 MB, so the NIfTI is gzipped.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ceuspipe.errors import InputError

log = logging.getLogger("ceuspipe")

#: The mask video segment-video writes (``ceuspipe.segment.stream.MASK_NAME``).
MASK_VIDEO = "mask.mkv"
#: What :func:`export_masks` writes into the output folder.
NIFTI_NAME = "masks.nii.gz"
SEG_NAME = "mask_seg.dcm"
#: A mask video pixel is lesion above this grey level (videos hold 0/255).
MASK_LEVEL = 127


def export_masks(out_dir: str | os.PathLike, *, nifti: bool, dicom_seg: bool, source: str | os.PathLike | None,
                 layout, pixel_size_mm=None, algorithm: tuple[str, str] | None = None,
                 progress: bool = False) -> list[str]:
    """Write ``masks.nii.gz`` (``nifti``) and ``mask_seg.dcm`` (``dicom_seg``) into
    ``out_dir`` from its ``mask.mkv``; returns the names written, in that order.

    ``source``: the clip that was segmented (a DICOM cine for ``dicom_seg``; never written
    into the NIfTI); ``layout``: its :class:`~ceuspipe.video.panels.PanelLayout` (the CEUS
    box places the masks in the SEG's full frames and must match the mask video's size);
    ``pixel_size_mm``: ``(dx, dy)`` or one number, mm per pixel, or None for the layout's
    (``layout.pixel_size_mm``, from the DICOM ultrasound regions). ``algorithm``: ``(name,
    version)`` of the model that drew the masks (the SEG's segment is then AUTOMATIC), None
    for masks drawn by a person (MANUAL). Each file appears only when complete. Raises
    :class:`InputError` for a missing or mis-sized mask video, or ``dicom_seg`` without a
    DICOM source.
    """
    from tqdm import tqdm

    from ceuspipe.video.reader import is_dicom_path, iter_frames, probe

    out_dir = Path(out_dir)
    if not (nifti or dicom_seg):
        return []
    mask_video = out_dir / MASK_VIDEO
    if not mask_video.is_file():
        raise InputError(mask_video, "no mask video to export")
    if dicom_seg and (source is None or not is_dicom_path(source)):
        raise InputError(source, "a DICOM Segmentation needs a DICOM source; this clip is not DICOM")
    info = probe(mask_video)
    box = layout.ceus if layout is not None else None
    if box is not None and (info.width, info.height) != (box.w, box.h):
        raise InputError(mask_video, f"masks are {info.width}x{info.height}, the layout's CEUS panel "
                                     f"{box.w}x{box.h}: not this clip's masks")
    if dicom_seg and box is None:
        raise ValueError("dicom_seg needs the layout (where the CEUS panel sits in the source frame)")
    if pixel_size_mm is None and layout is not None:
        pixel_size_mm = layout.pixel_size_mm

    times: list[float] = []

    def record_time(time_s: float) -> bool:  # first pass: times only, no frame converted
        times.append(time_s)
        return False

    for _ in iter_frames(mask_video, select=record_time):
        pass
    writers = _writers(out_dir, info.width, info.height, times, nifti=nifti, dicom_seg=dicom_seg, source=source,
                       box=box, pixel_size_mm=pixel_size_mm, algorithm=algorithm)
    written: list[str] = []
    try:
        for frame in tqdm(iter_frames(mask_video), total=len(times), disable=not progress, desc="masks out",
                          unit="frame"):
            mask = frame.image[..., 0] > MASK_LEVEL
            for name, writer in writers:
                if name == NIFTI_NAME:
                    writer.write(mask)
                    continue
                try:
                    writer.add(mask, time_s=frame.time_s)
                except ValueError as exc:
                    raise InputError(mask_video, f"does not fit {Path(source).name}: {exc}") from None
        for name, writer in writers:
            writer.close()
            written.append(name)
    except BaseException:
        for name, writer in writers:
            writer.abort()
            if name in written:  # all or nothing: a file closed before a later one failed goes too
                (out_dir / name).unlink(missing_ok=True)
        raise
    log.debug("%s: exported %s (%d frames)", out_dir, ", ".join(written), len(times))
    return written


def _writers(out_dir: Path, width: int, height: int, times: list[float], *, nifti: bool, dicom_seg: bool,
             source, box, pixel_size_mm, algorithm) -> list[tuple[str, object]]:
    """``[(name, writer), ...]`` for the outputs asked for (NIfTI first)."""
    from ceuspipe.mask_export.dicom_seg import DicomSegWriter
    from ceuspipe.mask_export.nifti import NiftiMaskWriter

    writers: list[tuple[str, object]] = []
    try:
        if nifti:
            writers.append((NIFTI_NAME, NiftiMaskWriter(out_dir / NIFTI_NAME, width, height, times,
                                                        pixel_size_mm=pixel_size_mm)))
        if dicom_seg:
            writers.append((SEG_NAME, DicomSegWriter(source, out_dir / SEG_NAME, box, algorithm=algorithm)))
    except BaseException:
        for _, writer in writers:
            writer.abort()
        raise
    return writers
