"""DICOM Segmentation of a DICOM cine's masks: read back frame for frame with highdicom and
with pydicom, referencing the source instance and the right frame numbers; masks at the
CEUS panel's place in the full frame; only the required patient and study attributes; a
real scanner cine from pydicom-data."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest
from support.mask_videos import phantom_exam, read_mask_video, write_mask_video
from support.real_dicom import real_dicom, us_copy

from ceuspipe.errors import InputError
from ceuspipe.mask_export import NIFTI_NAME, SEG_NAME, DicomSegWriter, export_masks
from ceuspipe.video.dicom import frame_times
from ceuspipe.video.panels import Box

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def _full(mask: np.ndarray, box: Box, rows: int, cols: int) -> np.ndarray:
    full = np.zeros((rows, cols), bool)
    full[box.y: box.y + box.h, box.x: box.x + box.w] = mask
    return full


def _referenced_frames(ds) -> list[int]:
    out = []
    for item in ds.PerFrameFunctionalGroupsSequence:
        (src,) = item.DerivationImageSequence[0].SourceImageSequence
        out.append((str(src.ReferencedSOPInstanceUID), int(src.ReferencedFrameNumber)))
    return out


def _check_read_back(seg_path, source_path, masks_by_frame: dict[int, np.ndarray], box: Box):
    """The SEG at ``seg_path`` holds exactly ``masks_by_frame`` (source frame number -> panel
    mask) at ``box`` of ``source_path``'s frames, as highdicom and pydicom read it."""
    src = pydicom.dcmread(source_path, stop_before_pixels=True)
    rows, cols = int(src.Rows), int(src.Columns)
    numbers = list(masks_by_frame)
    expected = np.stack([_full(masks_by_frame[n], box, rows, cols) for n in numbers])

    ds = pydicom.dcmread(seg_path)
    assert ds.SOPClassUID == SEG_STORAGE and ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    assert (ds.Rows, ds.Columns, int(ds.NumberOfFrames)) == (rows, cols, len(numbers))
    assert ds.StudyInstanceUID == src.StudyInstanceUID and ds.SeriesInstanceUID != src.SeriesInstanceUID
    assert _referenced_frames(ds) == [(src.SOPInstanceUID, n) for n in numbers]
    (ref,) = ds.ReferencedSeriesSequence
    assert ref.SeriesInstanceUID == src.SeriesInstanceUID
    assert [(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in ref.ReferencedInstanceSequence] == \
        [(src.SOPClassUID, src.SOPInstanceUID)]
    (segment,) = ds.SegmentSequence
    assert segment.SegmentLabel == "lesion" and segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "52988006"
    dims = [(d.DimensionIndexPointer, d.FunctionalGroupPointer) for d in ds.DimensionIndexSequence]
    assert dims == [(0x0062000B, 0x0062000A), (0x00209128, 0x00209111)]
    values = [tuple(i.FrameContentSequence[0].DimensionIndexValues) for i in ds.PerFrameFunctionalGroupsSequence]
    assert len(set(values)) == len(values)  # no two frames share their dimension index values
    pixels = ds.pixel_array.reshape(len(numbers), rows, cols).astype(bool)
    assert np.array_equal(pixels, expected)

    seg = hd.seg.segread(seg_path)
    assert seg.get_source_image_uids() == [(src.StudyInstanceUID, src.SeriesInstanceUID, src.SOPInstanceUID)]
    got = seg.get_pixels_by_source_frame(src.SOPInstanceUID, source_frame_numbers=numbers)
    assert got.shape == (len(numbers), rows, cols, 1)
    assert np.array_equal(got[..., 0].astype(bool), expected)
    return ds


def test_phantom_cine_seg_reads_back_frame_for_frame(tmp_path):
    clip, out, layout, truth = phantom_exam(tmp_path, container="dicom-rgb", duration_s=3.0, fps=4.0)
    masks, _ = read_mask_video(out / "mask.mkv")
    assert len(masks) == 12 and sum(m.any() for m in masks) >= 6
    written = export_masks(out, nifti=True, dicom_seg=True, source=clip, layout=layout,
                           algorithm=("ceuspipe-test", "1.0"))
    assert written == [NIFTI_NAME, SEG_NAME]
    ds = _check_read_back(out / SEG_NAME, clip, dict(enumerate(masks, 1)), layout.ceus)
    # patient and study as the source has them (the standard requires them in a SEG)
    assert str(ds.PatientName) == truth["screen"]["header"]["name"]
    assert ds.PatientID == truth["screen"]["header"]["id"]
    (segment,) = ds.SegmentSequence
    assert segment.SegmentAlgorithmType == "AUTOMATIC" and segment.SegmentAlgorithmName == "ceuspipe-test"
    assert "FrameOfReferenceUID" not in ds  # aligned frame by frame, no patient coordinates


def test_sampled_masks_reference_their_own_frames(tmp_path):
    clip, out, layout, _ = phantom_exam(tmp_path, container="dicom-rgb", duration_s=3.0, fps=4.0)
    times = frame_times(pydicom.dcmread(clip, stop_before_pixels=True), clip)
    numbers = [1, 3, 4, 9, 12]  # 1-based, irregular
    rng = np.random.default_rng(5)
    box = layout.ceus
    masks = [rng.random((box.h, box.w)) > 0.8 for _ in numbers]
    masks[2][:] = False  # segmented, no lesion: an all-zero frame, not a missing one
    write_mask_video(out / "mask.mkv", masks, [times[n - 1] for n in numbers])
    assert export_masks(out, nifti=False, dicom_seg=True, source=clip, layout=layout) == [SEG_NAME]
    ds = _check_read_back(out / SEG_NAME, clip, dict(zip(numbers, masks)), box)
    assert ds.SegmentSequence[0].SegmentAlgorithmType == "MANUAL"


def test_masks_between_source_frames_are_refused(tmp_path):
    clip, out, layout, _ = phantom_exam(tmp_path, container="dicom-rgb", duration_s=2.0, fps=4.0)
    box = layout.ceus
    write_mask_video(out / "mask.mkv", [np.ones((box.h, box.w), bool)] * 2, [0.0, 0.125])  # frames 0.25 s apart
    with pytest.raises(InputError, match=r"mask.mkv: does not fit exam.dcm: no frame .* at 0.125 s"):
        export_masks(out, nifti=True, dicom_seg=True, source=clip, layout=layout)
    assert sorted(p.name for p in out.iterdir()) == ["mask.mkv"]  # nothing else, no temporary files


def test_dicom_seg_needs_a_dicom_source(tmp_path):
    clip, out, layout, _ = phantom_exam(tmp_path, duration_s=2.0, fps=2.0)
    with pytest.raises(InputError, match="needs a DICOM source"):
        export_masks(out, nifti=True, dicom_seg=True, source=clip, layout=layout)


def test_only_required_patient_attributes_are_carried_over(tmp_path):
    clip, out, layout, _ = phantom_exam(tmp_path, container="dicom-rgb", duration_s=2.0, fps=2.0)
    extra = {"PatientComments": "allergic to contrast", "AdditionalPatientHistory": "HCC 2019",
             "InstitutionName": "St Elsewhere", "PatientAddress": "1 Main St", "StudyDescription": "liver CEUS",
             "PatientBirthDate": "19600101", "OtherPatientIDs": "X-99"}
    source = us_copy(clip, tmp_path / "rich.dcm", **extra)
    export_masks(out, nifti=False, dicom_seg=True, source=source, layout=layout)
    ds = pydicom.dcmread(out / SEG_NAME)
    for key in ("PatientComments", "AdditionalPatientHistory", "InstitutionName", "PatientAddress",
                "StudyDescription", "OtherPatientIDs"):
        assert key not in ds, key
    assert ds.PatientBirthDate == "19600101"  # Type 2 of the Patient module: copied
    raw = (out / SEG_NAME).read_bytes()
    for secret in ("allergic", "HCC 2019", "St Elsewhere", "Main St", "X-99"):
        assert secret.encode() not in raw


def test_source_without_study_uid_is_an_input_error(tmp_path):
    clip, out, layout, _ = phantom_exam(tmp_path, container="dicom-rgb", duration_s=2.0, fps=2.0)
    source = us_copy(clip, tmp_path / "nostudy.dcm", StudyInstanceUID=None)
    with pytest.raises(InputError, match="nostudy.dcm: DICOM lacks StudyInstanceUID"):
        DicomSegWriter(source, out / SEG_NAME, layout.ceus, algorithm=None)


def test_real_scanner_cine_from_pydicom_data(tmp_path):
    source = real_dicom("color3d_jpeg_baseline")  # SonoSite, US Multi-frame, 120 frames, JPEG baseline
    src = pydicom.dcmread(source, stop_before_pixels=True)
    assert src.SOPClassUID == "1.2.840.10008.5.1.4.1.1.3.1" and int(src.NumberOfFrames) > 1
    box = Box(97, 41, 321, 203)  # odd sizes: frames do not end on a byte
    times = frame_times(src, source)
    yy, xx = np.mgrid[:box.h, :box.w]
    numbers = [1, 2, 30, 31, 77, int(src.NumberOfFrames)]
    masks = {n: (xx - 40 - 2 * n) ** 2 + (yy - 90) ** 2 < (20 + n % 7) ** 2 for n in numbers}
    with DicomSegWriter(source, tmp_path / SEG_NAME, box, algorithm=("ceuspipe", "test")) as writer:
        for n in numbers:
            assert writer.add(masks[n], time_s=float(times[n - 1])) == n
    ds = _check_read_back(tmp_path / SEG_NAME, source, masks, box)
    assert ds.PatientName == src.PatientName and ds.StudyDate == src.StudyDate


def test_writer_checks_order_shape_and_box(tmp_path):
    source = real_dicom("color3d_jpeg_baseline")
    with pytest.raises(InputError, match="outside the 640x480 frames"):
        DicomSegWriter(source, tmp_path / SEG_NAME, Box(600, 0, 100, 100), algorithm=None)
    writer = DicomSegWriter(source, tmp_path / SEG_NAME, Box(0, 0, 10, 10), algorithm=None)
    writer.add(np.ones((10, 10)), frame_number=5)
    with pytest.raises(ValueError, match="in time order"):
        writer.add(np.ones((10, 10)), frame_number=5)
    with pytest.raises(ValueError, match="mask shape"):
        writer.add(np.ones((9, 10)), frame_number=6)
    writer.abort()
    assert list(tmp_path.iterdir()) == []
