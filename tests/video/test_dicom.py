"""Multi-frame ultrasound DICOM: timing attributes, colour spaces, bit depth, refusals."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import convert_color_space
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ceuspipe.errors import InputError
from ceuspipe.video.dicom import frame_times, has_dicom_magic, iter_dicom_frames, probe_dicom
from ceuspipe.video.reader import iter_frames, probe

US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
H, W = 8, 12


def write_dicom(path, pixels: np.ndarray, *, photometric: str, modality: str = "US",
                timing: dict | None = None, bits_stored: int | None = None,
                pixel_bytes: bytes | None = None, extra: dict | None = None, preamble=True):
    """Write an uncompressed multi-frame DICOM. ``pixels``: (n, rows, cols[, 3])."""
    n, rows, cols = pixels.shape[:3]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = US_MULTIFRAME
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = US_MULTIFRAME
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientID = "P001"
    ds.Rows, ds.Columns = rows, cols
    ds.NumberOfFrames = n
    ds.SamplesPerPixel = 3 if pixels.ndim == 4 else 1
    if pixels.ndim == 4:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    for key, value in (timing if timing is not None else {"FrameTime": 100.0}).items():
        setattr(ds, key, value)
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    if pixel_bytes is not None or pixels.size:
        ds.PixelData = pixel_bytes if pixel_bytes is not None else pixels.tobytes()
        ds["PixelData"].VR = "OW" if bits > 8 else "OB"
    ds.save_as(path, enforce_file_format=preamble) if preamble else ds.save_as(path, implicit_vr=False)
    return path


def rgb_frames(n=3) -> np.ndarray:
    """Frame i: left third red, middle green, right blue, scaled by (i + 1) / n."""
    out = np.zeros((n, H, W, 3), np.uint8)
    for i in range(n):
        v = int(240 * (i + 1) / n)
        out[i, :, : W // 3, 0] = v
        out[i, :, W // 3: 2 * W // 3, 1] = v
        out[i, :, 2 * W // 3:, 2] = v
        out[i, : H // 2] //= 2
    return out


def test_rgb_frames_times_and_colours(tmp_path):
    pixels = rgb_frames()
    path = write_dicom(tmp_path / "rgb.dcm", pixels, photometric="RGB")
    frames = list(iter_frames(path))
    assert [f.index for f in frames] == [0, 1, 2]
    assert [f.time_s for f in frames] == pytest.approx([0.0, 0.1, 0.2])
    for f, expected in zip(frames, pixels):
        assert f.image.dtype == np.uint8 and f.image.shape == (H, W, 3)
        assert np.array_equal(f.image, expected)


def test_ybr_full_becomes_true_rgb(tmp_path):
    pixels = rgb_frames()
    pixels[2] = 128  # a grey frame must stay grey, not turn green
    ybr = np.stack([convert_color_space(f, "RGB", "YBR_FULL") for f in pixels]).astype(np.uint8)
    path = write_dicom(tmp_path / "ybr.dcm", ybr, photometric="YBR_FULL")
    frames = list(iter_dicom_frames(path))
    for f, expected in zip(frames, pixels):
        assert np.abs(f.image.astype(int) - expected).max() <= 2
    grey = frames[2].image.astype(int)
    assert np.abs(grey - 128).max() <= 1


def test_ybr_full_422_becomes_true_rgb(tmp_path):
    pixels = rgb_frames(2)  # colour blocks are 4 pixels wide: chroma pairs are uniform
    ybr = np.stack([convert_color_space(f, "RGB", "YBR_FULL") for f in pixels]).astype(np.uint8)
    # Native 4:2:2 stores Y0 Y1 Cb Cr for each horizontal pixel pair.
    y, cb, cr = ybr[..., 0], ybr[..., 1], ybr[..., 2]
    packed = np.stack([y[..., 0::2], y[..., 1::2], cb[..., 0::2], cr[..., 0::2]], axis=-1)
    path = write_dicom(tmp_path / "ybr422.dcm", ybr, photometric="YBR_FULL_422",
                       pixel_bytes=packed.astype(np.uint8).tobytes())
    frames = list(iter_dicom_frames(path))
    assert len(frames) == 2
    for f, expected in zip(frames, pixels):
        assert np.abs(f.image.astype(int) - expected).max() <= 2


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_monochrome_to_three_channels(tmp_path, photometric):
    pixels = np.zeros((2, H, W), np.uint8)
    pixels[0, :, :4] = 200
    pixels[1] = 30
    path = write_dicom(tmp_path / "mono.dcm", pixels, photometric=photometric)
    frames = list(iter_frames(path))
    expected = pixels if photometric == "MONOCHROME2" else 255 - pixels
    for f, exp in zip(frames, expected):
        assert f.image.shape == (H, W, 3)
        assert all(np.array_equal(f.image[..., c], exp) for c in range(3))


def test_16_bit_scaled_by_bits_stored_with_warning(tmp_path, caplog):
    pixels = np.zeros((2, H, W), np.uint16)
    pixels[0, :, :4] = 4095
    pixels[0, :, 4:8] = 2048
    pixels[1] = 1000
    path = write_dicom(tmp_path / "deep.dcm", pixels, photometric="MONOCHROME2", bits_stored=12)
    with caplog.at_level(logging.WARNING, logger="ceuspipe"):
        frames = list(iter_frames(path))
    assert frames[0].image[0, 0, 0] == 255
    assert frames[0].image[0, 5, 0] == 128  # 2048 * 255 / 4095 = 127.5 -> 128
    assert frames[0].image[0, 10, 0] == 0
    assert frames[1].image[0, 0, 0] == round(1000 * 255 / 4095)
    assert any("scaled linearly" in r.message for r in caplog.records)


def test_palette_colour(tmp_path):
    idx = np.zeros((1, H, W), np.uint8)
    idx[0, :, 6:] = 1
    lut_r = np.array([0, 65535] + [0] * 254, np.uint16)
    lut_g = np.array([65535, 0] + [0] * 254, np.uint16)
    lut_b = np.zeros(256, np.uint16)
    extra = {"RedPaletteColorLookupTableDescriptor": [256, 0, 16],
             "GreenPaletteColorLookupTableDescriptor": [256, 0, 16],
             "BluePaletteColorLookupTableDescriptor": [256, 0, 16],
             "RedPaletteColorLookupTableData": lut_r.tobytes(),
             "GreenPaletteColorLookupTableData": lut_g.tobytes(),
             "BluePaletteColorLookupTableData": lut_b.tobytes()}
    path = write_dicom(tmp_path / "pal.dcm", idx, photometric="PALETTE COLOR", extra=extra)
    (frame,) = list(iter_frames(path))
    assert tuple(frame.image[0, 0]) == (0, 255, 0)
    assert tuple(frame.image[0, -1]) == (255, 0, 0)


def test_palette_16_bit_lut_scaled_per_file_not_per_frame(tmp_path, caplog):
    """A dark frame (16-bit LUT entries all <= 255) is dark, as in the frames next to it;
    palette indices are not samples: no 'scaled linearly' warning for 16-bit indices."""
    idx = np.zeros((2, H, W), np.uint16)
    idx[0, :, 6:] = 1       # frame 0: entries 0 and 1 only (16-bit values 0 and 200)
    idx[1, :, 6:] = 300     # frame 1: entry 300 (65535)
    lut = np.zeros(512, np.uint16)
    lut[1], lut[300] = 200, 65535
    extra = {f"{c}PaletteColorLookupTableDescriptor": [512, 0, 16] for c in ("Red", "Green", "Blue")}
    extra.update({f"{c}PaletteColorLookupTableData": lut.tobytes() for c in ("Red", "Green", "Blue")})
    path = write_dicom(tmp_path / "pal16.dcm", idx, photometric="PALETTE COLOR", bits_stored=9, extra=extra)
    with caplog.at_level(logging.WARNING, logger="ceuspipe"):
        dark, bright = [f.image for f in iter_frames(path)]
    assert dark.max() == 0  # 200 / 65535 of full scale, not 200 / 255
    assert tuple(bright[0, -1]) == (255, 255, 255) and tuple(bright[0, 0]) == (0, 0, 0)
    assert not any("scaled linearly" in r.message for r in caplog.records)


def test_frame_time_vector(tmp_path):
    pixels = np.zeros((4, H, W), np.uint8)
    path = write_dicom(tmp_path / "ftv.dcm", pixels, photometric="MONOCHROME2",
                       timing={"FrameTimeVector": [0, 33.0, 50.0, 100.0],
                               "FrameIncrementPointer": 0x00181065, "CineRate": 10})
    times = [f.time_s for f in iter_frames(path)]
    assert times == pytest.approx([0.0, 0.033, 0.083, 0.183])


@pytest.mark.parametrize("timing,expected", [
    ({"FrameTime": 33.3667}, [0.0, 0.0333667, 0.0667334]),
    ({"CineRate": 25}, [0.0, 0.04, 0.08]),
    ({"RecommendedDisplayFrameRate": 20}, [0.0, 0.05, 0.1]),
    ({"FrameTime": 50.0, "CineRate": 25}, [0.0, 0.05, 0.1]),  # FrameTime outranks CineRate
])
def test_other_timing_attributes(tmp_path, timing, expected):
    path = write_dicom(tmp_path / "t.dcm", np.zeros((3, H, W), np.uint8),
                       photometric="MONOCHROME2", timing=timing)
    assert [f.time_s for f in iter_frames(path)] == pytest.approx(expected)


def test_no_timing_is_refused(tmp_path):
    path = write_dicom(tmp_path / "notime.dcm", np.zeros((3, H, W), np.uint8),
                       photometric="MONOCHROME2", timing={})
    with pytest.raises(InputError, match="no frame timing"):
        list(iter_frames(path))
    with pytest.raises(InputError, match="no frame timing"):
        probe(path)


def test_ct_modality_is_refused(tmp_path):
    path = write_dicom(tmp_path / "ct.dcm", np.zeros((2, H, W), np.uint8),
                       photometric="MONOCHROME2", modality="CT")
    with pytest.raises(InputError) as err:
        list(iter_frames(path))
    assert str(err.value) == f"{path}: not an ultrasound DICOM (Modality=CT)"


def test_missing_pixel_data_is_refused(tmp_path):
    path = write_dicom(tmp_path / "nopix.dcm", np.zeros((2, H, W), np.uint8)[:0],
                       photometric="MONOCHROME2")
    with pytest.raises(InputError, match="no pixel data"):
        list(iter_frames(path))


def test_not_dicom_with_dcm_suffix(tmp_path):
    path = tmp_path / "fake.dcm"
    path.write_bytes(b"\x00" * 50 + b"hello")
    with pytest.raises(InputError, match="not a readable DICOM"):
        list(iter_frames(path))


def test_select_probe_dispatch_without_suffix_and_input_untouched(tmp_path):
    pixels = rgb_frames(5)
    path = write_dicom(tmp_path / "IM000001", pixels, photometric="RGB", timing={"FrameTime": 200})
    assert has_dicom_magic(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    calls = []

    def odd(t):
        calls.append(t)
        return round(t / 0.2) % 2 == 1

    frames = list(iter_frames(path, select=odd))
    assert calls == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert [f.index for f in frames] == [1, 3]
    assert np.array_equal(frames[1].image, pixels[3])
    info = probe(path)
    assert (info.kind, info.width, info.height, info.frame_count_hint, info.rotation) == \
        ("dicom", W, H, 5, 0)
    assert info.nominal_fps == pytest.approx(5.0) and info.duration_s == pytest.approx(1.0)
    assert probe_dicom(path) == info
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_select_errors_are_not_taken_for_decode_errors(tmp_path):
    path = write_dicom(tmp_path / "x.dcm", rgb_frames(3), photometric="RGB")

    def broken(t):
        if t > 0.05:
            raise ZeroDivisionError("bug in caller")
        return True

    with pytest.raises(ZeroDivisionError):
        list(iter_frames(path, select=broken))


def test_frame_times_nudges_repeated_vector_entries(tmp_path):
    path = write_dicom(tmp_path / "rep.dcm", np.zeros((3, H, W), np.uint8), photometric="MONOCHROME2",
                       timing={"FrameTimeVector": [0, 40, 0]})
    import pydicom

    times = frame_times(pydicom.dcmread(path, stop_before_pixels=True), path)
    assert times[1] == pytest.approx(0.04)
    assert times[2] > times[1] and times[2] == pytest.approx(0.04, abs=1e-5)
