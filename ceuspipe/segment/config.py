"""Options of ``ceuspipe segment-video`` (and of a pipeline's ``segment`` stage): one
frozen dataclass whose defaults the CLI reads, checked on creation."""

from __future__ import annotations

from dataclasses import dataclass

from ceuspipe.segment.int8_check import MIN_DICE
from ceuspipe.video.layout import LayoutOptions

#: x264 speed presets the overlay may use, fastest first.
OVERLAY_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")

@dataclass(frozen=True)
class SegmentConfig(LayoutOptions):
    """Options of :func:`segment_video`.

    ``sample_fps``: frames per second of presentation time to segment (None:
    every frame). ``batch_size``: frames per inference call. ``device``:
    ``auto|cpu|cuda``; ``engine``: ``auto`` (ONNX Runtime on CPU, PyTorch fp16
    autocast on CUDA) or a registered engine (:mod:`ceuspipe.segment.engines`). ``dynamic_range_db``: display dynamic
    range for linearising grey levels (dB). ``tic_model``: ``lognormal|gamma``.
    ``temporal_smoothing``: median window in frames (0 = off, see
    :mod:`ceuspipe.segment.temporal`). ``threshold``: probability threshold
    (None: the checkpoint's, 0.5 in the paper). Layout options come from
    :class:`~ceuspipe.video.layout.LayoutOptions` (``layout_samples`` early
    frames are used for detection). ``overwrite``: replace an existing output
    folder. ``cache_dir``: where exported ONNX models are cached.
    ``overlay_crf``: H.264 quality of the overlay (lower = better); ``overlay_preset``:
    its x264 speed preset (:data:`OVERLAY_PRESETS`; slower ones give smaller files).
    ``reference``: also measure a reference region of parenchyma per frame and report
    lesion-over-reference parameters (:mod:`ceuspipe.tic.reference`): by default a
    ring ``reference_distance_px`` outside the frame's lesion mask and
    ``reference_width_px`` wide, inside the CEUS panel's imaged area;
    ``reference_distance_mm``/``reference_width_mm`` set them in mm instead (needs the
    layout's ``pixel_size_mm``); ``reference_mask``: a PNG of the CEUS panel's size
    (non-zero = reference) used for every frame instead of the ring.
    ``clean_masks``: keep each frame's largest connected component and fill its holes.
    ``dedupe``: detect repeated frames (:mod:`ceuspipe.segment.repeats`), segment
    each acquired frame once and fit the curve on acquired frames only.
    ``motion``: measure each acquired frame's in-plane displacement from the B-mode panel
    (:mod:`ceuspipe.motion`); a ``reference_mask`` follows it and frames out of plane are
    left out of the curve.
    ``maps``: perfusion maps (:mod:`ceuspipe.maps`): the clip's bolus model fitted to every
    ``map_block_px`` x ``map_block_px`` block of the CEUS panel (``map_block_mm`` instead
    when the layout knows the pixel size), moved with the motion. Off by default: at 4 px
    blocks they cost about 40 % of a 600-frame 360x360 clip's run on 2 cores (fit 1.9 s,
    12 PNGs 1.5 s, accumulation ~1 s against ~11 s).
    ``masks``: lesion masks drawn elsewhere, used instead of a model's
    (:mod:`ceuspipe.segment.given_masks`: a mask video, a folder of PNGs, a NIfTI volume or
    one PNG for a fixed region that follows the motion).
    ``nifti``: also write the masks as ``masks.nii.gz`` (NIfTI-1, pixel size and frame
    times; :mod:`ceuspipe.mask_export`); ``dicom_seg``: for a DICOM input, also write
    ``mask_seg.dcm``, a DICOM Segmentation referencing the source frames (it carries the
    source's patient and study attributes, as the standard requires). Both off by default:
    each reads mask.mkv back (about 1 s for 900 frames of 360x360).
    ``precision``: ``auto|fp32|int8`` (:mod:`ceuspipe.segment.precision`; auto = a
    checkpoint on the CPU runs its cached int8 model, checked on every clip against
    fp32 and redone with fp32 when the check fails). ``int8_min_dice``: the bound on
    the int8-vs-fp32 mean mask Dice, at calibration and on each clip's check frames.
    """

    sample_fps: float | None = None
    batch_size: int = 8
    device: str = "auto"
    engine: str = "auto"
    dynamic_range_db: float = 60.0
    tic_model: str = "lognormal"
    temporal_smoothing: int = 0
    threshold: float | None = None
    overwrite: bool = False
    cache_dir: str | None = None
    overlay_crf: int = 20
    overlay_preset: str = "superfast"
    queue_frames: int = 16
    reference: bool = True
    reference_mask: str | None = None
    reference_distance_px: float = 5.0
    reference_width_px: float = 15.0
    reference_distance_mm: float | None = None
    reference_width_mm: float | None = None
    clean_masks: bool = False
    dedupe: bool = True
    motion: bool = True
    maps: bool = False
    map_block_px: int = 4
    map_block_mm: float | None = None
    masks: str | None = None
    nifti: bool = False
    dicom_seg: bool = False
    precision: str = "auto"
    int8_min_dice: float = MIN_DICE

    def __post_init__(self) -> None:
        from ceuspipe import configs
        from ceuspipe.segment.precision import PRECISIONS
        from ceuspipe.segment.engines import EngineMismatch, check_request
        from ceuspipe.tic.models import MODELS

        super().__post_init__()
        configs.number("sample_fps", self.sample_fps, above=0, optional=True, unit="frames per second")
        configs.number("batch_size", self.batch_size, minimum=1, integer=True)
        configs.device("device", self.device)
        configs.number("dynamic_range_db", self.dynamic_range_db, above=0, unit="dB")
        configs.choice("tic_model", self.tic_model, tuple(MODELS))
        configs.number("temporal_smoothing", self.temporal_smoothing, minimum=0, integer=True, unit="frames")
        configs.number("threshold", self.threshold, above=0, maximum=1, optional=True)
        configs.number("overlay_crf", self.overlay_crf, minimum=0, maximum=51, integer=True)
        configs.choice("overlay_preset", self.overlay_preset, OVERLAY_PRESETS)
        configs.number("queue_frames", self.queue_frames, minimum=2, integer=True)
        configs.path_or_none("cache_dir", self.cache_dir)
        for name in ("reference", "clean_masks", "dedupe", "motion", "maps", "nifti", "dicom_seg"):
            if not isinstance(getattr(self, name), bool):
                raise configs.ConfigError(name, f"must be true or false, got {getattr(self, name)!r}")
        configs.number("map_block_px", self.map_block_px, minimum=1, integer=True, unit="pixels")
        configs.number("map_block_mm", self.map_block_mm, above=0, optional=True, unit="mm")
        configs.path_or_none("reference_mask", self.reference_mask)
        configs.path_or_none("masks", self.masks)
        configs.number("reference_distance_px", self.reference_distance_px, minimum=0, unit="pixels")
        configs.number("reference_width_px", self.reference_width_px, above=0, unit="pixels")
        configs.number("reference_distance_mm", self.reference_distance_mm, minimum=0, optional=True, unit="mm")
        configs.number("reference_width_mm", self.reference_width_mm, above=0, optional=True, unit="mm")
        if self.reference_mask is not None and not self.reference:
            raise configs.ConfigError("reference_mask", "given while the reference region is off (reference false)")
        configs.choice("precision", self.precision, PRECISIONS)
        configs.number("int8_min_dice", self.int8_min_dice, minimum=0, maximum=1)
        try:  # what the engines can do, checked in one place
            check_request(self.engine, self.device, self.precision)
        except EngineMismatch as exc:
            raise configs.ConfigError(exc.field, str(exc)) from None
