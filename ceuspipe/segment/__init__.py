"""Per-frame lesion segmentation of CEUS clips: streaming batched inference, mask and
overlay videos, time-intensity curve outputs, ONNX export for CPU deployment."""

from ceuspipe.segment.run import SegmentConfig, SegmentReport, default_out_dir, segment_video

__all__ = ["SegmentConfig", "SegmentReport", "default_out_dir", "segment_video"]
