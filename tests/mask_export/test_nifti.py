"""NIfTI mask sequences: round trip through export_masks and read_nifti_masks on a phantom's
mask video, checked against nibabel's own reading; real frame times; streaming memory;
atomic output; other tools' NIfTI files; no patient data in the file."""

from __future__ import annotations

import gzip
import json
import tracemalloc

import nibabel as nib
import numpy as np
import pytest
from support.mask_videos import phantom_exam, read_mask_video, write_mask_video

from ceuspipe.errors import InputError
from ceuspipe.mask_export import NIFTI_NAME, export_masks, read_nifti_masks, write_nifti_masks
from ceuspipe.mask_export.nifti import TIMES_KIND


def test_phantom_masks_round_trip_with_pixel_size_and_times(tmp_path):
    clip, out, layout, _ = phantom_exam(tmp_path, duration_s=3.0, fps=4.0)
    masks, times = read_mask_video(out / "mask.mkv")
    assert sum(m.any() for m in masks) >= len(masks) // 2  # the lesion is there to compare
    assert export_masks(out, nifti=True, dicom_seg=False, source=clip, layout=layout,
                        pixel_size_mm=(0.2, 0.25)) == [NIFTI_NAME]

    back = read_nifti_masks(out / NIFTI_NAME)
    assert back.shape == masks[0].shape and back.n_frames == len(masks)
    assert back.pixel_size_mm == (0.2, 0.25)
    np.testing.assert_allclose(back.times_s, times, atol=1e-6)
    got = list(back)
    assert all(a.dtype == bool and np.array_equal(a, b) for a, b in zip(got, masks, strict=True))

    img = nib.load(out / NIFTI_NAME)  # the format as nibabel (and any NIfTI tool) reads it
    h, w = masks[0].shape
    assert img.shape == (w, h, 1, len(masks)) and img.get_data_dtype() == np.uint8
    data = np.asarray(img.dataobj)
    assert set(np.unique(data)) <= {0, 1}
    assert all(np.array_equal(data[:, :, 0, k].T.astype(bool), masks[k]) for k in range(len(masks)))
    zooms = img.header.get_zooms()
    np.testing.assert_allclose(zooms, (0.2, 0.25, 1.0, 0.25), rtol=1e-6)
    assert img.header.get_xyzt_units() == ("mm", "sec")


def test_layout_pixel_size_is_the_default(tmp_path):
    clip, out, layout, truth = phantom_exam(tmp_path, container="dicom-rgb", duration_s=2.0, fps=2.0)
    export_masks(out, nifti=True, dicom_seg=False, source=clip, layout=layout)
    dx = truth["container"]["pixel_size_mm"][0]
    assert read_nifti_masks(out / NIFTI_NAME).pixel_size_mm == pytest.approx((dx, dx))


def test_irregular_times_kept_exactly_nominal_step_is_the_median(tmp_path):
    times = [0.0, 0.1, 0.2, 0.5, 0.6, 1.35]  # repeats left out, a gap
    rng = np.random.default_rng(0)
    masks = [rng.random((24, 32)) > 0.6 for _ in times]
    video = write_mask_video(tmp_path / "mask.mkv", masks, times)
    export_masks(tmp_path, nifti=True, dicom_seg=False, source=None, layout=None)
    back = read_nifti_masks(tmp_path / NIFTI_NAME)
    np.testing.assert_allclose(back.times_s, read_mask_video(video)[1], atol=1e-6)
    np.testing.assert_allclose(back.times_s, times, atol=1.5e-3)  # the mkv keeps milliseconds
    assert back.pixel_size_mm is None
    hdr = nib.load(tmp_path / NIFTI_NAME).header
    assert hdr.get_xyzt_units() == ("unknown", "sec")
    assert hdr.get_zooms()[3] == pytest.approx(0.1, abs=1.5e-3)
    record = json.loads(hdr.extensions[0].get_content())
    assert record["kind"] == TIMES_KIND and len(record["frame_times_s"]) == len(times)


def test_no_patient_data_or_source_name_in_the_nifti(tmp_path):
    clip, out, layout, truth = phantom_exam(tmp_path, container="dicom-rgb", duration_s=2.0, fps=2.0)
    name = truth["screen"]["header"]["name"]
    import pydicom

    assert str(pydicom.dcmread(clip, stop_before_pixels=True).PatientName) == name  # it is in the source
    export_masks(out, nifti=True, dicom_seg=False, source=clip, layout=layout)
    raw = gzip.decompress((out / NIFTI_NAME).read_bytes())
    for secret in (name, *name.split("^"), truth["screen"]["header"]["id"], clip.name, str(tmp_path)):
        assert secret.encode() not in raw, secret


def test_memory_does_not_grow_with_the_number_of_frames(tmp_path):
    h, w, n = 256, 256, 160  # 10 MB of mask data
    yy, xx = np.mgrid[:h, :w]

    def frames():
        for k in range(n):
            yield (xx - 60 - k) ** 2 + (yy - 128) ** 2 < 40 ** 2

    tracemalloc.start()
    try:
        write_nifti_masks(frames(), tmp_path / "m.nii.gz", frame_times_s=np.arange(n) / 10.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, peak  # a few frames' worth, not the 10 MB sequence
    back = read_nifti_masks(tmp_path / "m.nii.gz")
    tracemalloc.start()
    try:
        count = sum(1 for _ in back)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n and peak < 2_000_000, peak


def test_failed_write_leaves_nothing(tmp_path):
    def broken():
        yield np.ones((8, 8), bool)
        raise RuntimeError("decoder died")

    with pytest.raises(RuntimeError):
        write_nifti_masks(broken(), tmp_path / "m.nii.gz", frame_times_s=[0.0, 0.1, 0.2])
    with pytest.raises(ValueError, match="2 mask frames written, 3 announced"):
        write_nifti_masks([np.ones((8, 8))] * 2, tmp_path / "m.nii.gz", frame_times_s=[0.0, 0.1, 0.2])
    with pytest.raises(ValueError, match="strictly increasing"):
        write_nifti_masks([np.ones((8, 8))] * 2, tmp_path / "m.nii.gz", frame_times_s=[0.1, 0.1])
    assert list(tmp_path.iterdir()) == []


def test_uncompressed_nii_and_single_frame(tmp_path):
    mask = np.zeros((5, 9), np.uint8)
    mask[1:3, 2:7] = 1
    write_nifti_masks([mask], tmp_path / "one.nii", frame_times_s=[2.5], pixel_size_mm=0.3)
    back = read_nifti_masks(tmp_path / "one.nii")
    assert back.times_s.tolist() == [2.5] and back.pixel_size_mm == (0.3, 0.3)
    assert np.array_equal(next(iter(back)), mask.astype(bool))
    offset = nib.load(tmp_path / "one.nii").dataobj.offset
    assert offset % 16 == 0 and (tmp_path / "one.nii").stat().st_size == offset + mask.size  # no gzip


def test_other_tools_nifti_3d_int16_scaled(tmp_path):
    rng = np.random.default_rng(1)
    masks = rng.random((4, 6, 10)) > 0.5  # (t, H, W)
    data = np.transpose(masks, (2, 1, 0)).astype(np.int16) * 2  # (x, y, t)
    img = nib.Nifti1Image(data, np.diag([0.5, 0.5, 1.0, 1.0]))
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_slope_inter(0.5, 0.0)
    nib.save(img, tmp_path / "other.nii.gz")
    back = read_nifti_masks(tmp_path / "other.nii.gz")
    assert back.shape == (6, 10) and back.n_frames == 4
    assert back.times_s is None  # a 3-D file states no time step
    assert back.pixel_size_mm == (0.5, 0.5)
    assert all(np.array_equal(a, b) for a, b in zip(back, masks, strict=True))


def test_other_tools_4d_in_msec_gives_times(tmp_path):
    data = np.zeros((6, 5, 1, 3), np.uint8)
    data[2, 1, 0, 1] = 1
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_zooms((1.0, 1.0, 1.0, 40.0))
    img.header.set_xyzt_units("micron", "msec")
    nib.save(img, tmp_path / "t.nii")
    back = read_nifti_masks(tmp_path / "t.nii")
    np.testing.assert_allclose(back.times_s, [0.0, 0.04, 0.08])
    assert back.pixel_size_mm == pytest.approx((0.001, 0.001))
    frames = list(back)
    assert frames[1][1, 2] and frames[1].sum() == 1 and not frames[0].any()


def test_bad_files_are_one_line_input_errors(tmp_path):
    (tmp_path / "x.nii.gz").write_bytes(b"not a nifti at all")
    with pytest.raises(InputError, match="x.nii.gz"):
        read_nifti_masks(tmp_path / "x.nii.gz")
    with pytest.raises(InputError, match="no such file"):
        read_nifti_masks(tmp_path / "missing.nii")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3, 2), np.uint8), np.eye(4)), tmp_path / "vol.nii")
    with pytest.raises(InputError, match="volume over time"):
        read_nifti_masks(tmp_path / "vol.nii")
    write_nifti_masks([np.ones((16, 16))] * 4, tmp_path / "cut.nii", frame_times_s=[0, 1, 2, 3])
    raw = (tmp_path / "cut.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(raw[:-300])
    back = read_nifti_masks(tmp_path / "cut.nii")  # the header alone is read here
    with pytest.raises(InputError, match="frame 3 of 4: truncated"):
        list(back)


def test_export_refuses_masks_of_another_size(tmp_path):
    clip, out, layout, _ = phantom_exam(tmp_path, duration_s=2.0, fps=2.0)
    write_mask_video(out / "mask.mkv", [np.zeros((20, 30), bool)] * 2, [0.0, 0.5])
    with pytest.raises(InputError, match="masks are 30x20"):
        export_masks(out, nifti=True, dicom_seg=False, source=clip, layout=layout)
    with pytest.raises(InputError, match="no mask video"):
        export_masks(tmp_path, nifti=True, dicom_seg=False, source=clip, layout=layout)
    assert not (out / NIFTI_NAME).exists()
