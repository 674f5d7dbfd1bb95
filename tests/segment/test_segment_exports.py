"""segment-video --nifti / --dicom-seg: the mask sequence leaves as NIfTI (any input) and as
a DICOM Segmentation (DICOM inputs), written with the rest of the outputs and equal to
mask.mkv frame for frame; --dicom-seg on a non-DICOM clip is refused before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ceuspipe.errors import InputError
from ceuspipe.mask_export import read_nifti_masks
from ceuspipe.segment import SegmentConfig, segment_video
from ceuspipe.synth.truth import truth_dir_for
from support.mask_videos import phantom_exam, read_mask_video


def _run(tmp_path, container, **options):
    clip, _, layout, truth = phantom_exam(tmp_path, container=container, duration_s=2.0, fps=4.0)
    out = tmp_path / "seg"
    segment_video(clip, None, out, SegmentConfig(masks=str(truth_dir_for(clip) / truth["masks"]["ceus"]),
                                                 ceus_box=layout.ceus, us_box=layout.us, **options))
    return clip, out, json.loads((out / "segment.json").read_text())


def test_nifti_holds_mask_mkv_frame_for_frame(tmp_path):
    clip, out, seg = _run(tmp_path, "mp4", nifti=True)
    assert "masks.nii.gz" in seg["outputs"] and "mask_seg.dcm" not in seg["outputs"]
    masks, times = read_mask_video(out / "mask.mkv")
    nii = read_nifti_masks(out / "masks.nii.gz")
    assert len(nii) == len(masks) and np.allclose(nii.times_s, times, atol=1e-3)
    assert all(np.array_equal(a, b) for a, b in zip(nii, masks))
    assert b"exam" not in (out / "masks.nii.gz").read_bytes()  # no file name leaks into it


def test_dicom_seg_references_the_source_frames(tmp_path):
    import pydicom

    clip, out, seg = _run(tmp_path, "dicom-rgb", dicom_seg=True)
    assert "mask_seg.dcm" in seg["outputs"]
    src = pydicom.dcmread(clip, stop_before_pixels=True)
    ds = pydicom.dcmread(out / "mask_seg.dcm")
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and ds.StudyInstanceUID == src.StudyInstanceUID
    refs = [int(f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber)
            for f in ds.PerFrameFunctionalGroupsSequence]
    assert refs == list(range(1, int(src.NumberOfFrames) + 1))
    masks, _ = read_mask_video(out / "mask.mkv")
    frames = ds.pixel_array  # (frames, rows, cols) 0/1, the source frame's geometry
    box = seg["layout"]["ceus"]
    for k, m in enumerate(masks):
        placed = frames[k][box["y"]:box["y"] + box["h"], box["x"]:box["x"] + box["w"]] > 0
        assert np.array_equal(placed, m), k
        assert not frames[k].sum() - placed.sum()  # nothing outside the CEUS panel


def test_dicom_seg_of_a_video_is_refused_before_any_work(tmp_path):
    with pytest.raises(InputError, match="needs a DICOM input"):
        _run(tmp_path, "mp4", dicom_seg=True)
    assert not (tmp_path / "seg").exists()
