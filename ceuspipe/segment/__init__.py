"""Per-frame lesion segmentation of CEUS clips: streaming batched inference, mask and
overlay videos, time-intensity curve outputs, ONNX export for CPU deployment.

The names below load :mod:`ceuspipe.segment.run` on first use, so that importing a
light submodule (the CLI reads ``config.SegmentConfig`` for its defaults) does not cost
every command ~0.1 s of start-up."""

__all__ = ["SegmentConfig", "SegmentReport", "default_out_dir", "segment_video"]


def __getattr__(name: str):
    if name == "SegmentConfig":
        from ceuspipe.segment.config import SegmentConfig

        return SegmentConfig
    if name in __all__:
        from ceuspipe.segment import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
