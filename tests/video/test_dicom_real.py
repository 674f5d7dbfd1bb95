"""Real scanner DICOMs through ceuspipe's reader: every transfer syntax scanners write.

Files from pydicom-data (GE LOGIQ 700, ALOKA SSD-4000, Philips CX50 and EPIQ 7C, SonoSite
Turbo) and pydicom's own JPEG-LS and 12-bit JPEG test files, read in place or copied to
``tmp_path`` with Modality US (and a frame time where a multi-frame file has none).
Decoders: pydicom itself (native, RLE), python-gdcm (JPEG, JPEG Lossless, JPEG-LS,
JPEG 2000) and Pillow.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
from support.real_dicom import pydicom_test_file, real_dicom, us_copy
from click.testing import CliRunner
from pydicom import uid as U

from ceuspipe.errors import InputError
from ceuspipe.video.sampling import TimeSampler
from ceuspipe.video.dicom import iter_dicom_frames, probe_dicom, read_ultrasound_regions
from ceuspipe.video.reader import open_source

#: pydicom-data's ultrasound files as measured: transfer syntax, photometric, rows, cols, frames.
REAL = {
    "US1_UNCR": (U.ExplicitVRLittleEndian, "RGB", 480, 640, 1),
    "US1_UNCI": (U.ExplicitVRLittleEndian, "RGB", 480, 640, 1),
    "US1_J2KR": (U.JPEG2000Lossless, "YBR_RCT", 480, 640, 1),
    "US1_J2KI": (U.JPEG2000, "YBR_ICT", 480, 640, 1),
    "gdcm-US-ALOKA-16": (U.ImplicitVRLittleEndian, "PALETTE COLOR", 480, 640, 1),
    "gdcm-US-ALOKA-16_big": (U.ExplicitVRBigEndian, "PALETTE COLOR", 480, 640, 1),
    "OBXXXX1A": (U.ExplicitVRLittleEndian, "PALETTE COLOR", 600, 800, 1),
    "OBXXXX1A_2frame": (U.ExplicitVRLittleEndian, "PALETTE COLOR", 600, 800, 2),
    "OBXXXX1A_expb": (U.ExplicitVRBigEndian, "PALETTE COLOR", 600, 800, 1),
    "OBXXXX1A_expb_2frame": (U.ExplicitVRBigEndian, "PALETTE COLOR", 600, 800, 2),
    "OBXXXX1A_rle": (U.RLELossless, "PALETTE COLOR", 600, 800, 1),
    "OBXXXX1A_rle_2frame": (U.RLELossless, "PALETTE COLOR", 600, 800, 2),
    "color-pl": (U.ExplicitVRLittleEndian, "RGB", 120, 256, 1),
    "color-px": (U.ExplicitVRLittleEndian, "RGB", 120, 256, 1),
    "color3d_jpeg_baseline": (U.JPEGBaseline8Bit, "YBR_FULL_422", 480, 640, 120),
    "JPGLosslessP14SV1_1s_1f_8b": (U.JPEGLosslessSV1, "MONOCHROME2", 768, 1024, 1),
}
#: Philips' 2-frame exports carry no frame timing: read from copies with FrameTime set.
UNTIMED = {"OBXXXX1A_2frame", "OBXXXX1A_expb_2frame", "OBXXXX1A_rle_2frame"}
COPY_FRAME_TIME_MS = 100.0


def readable(name: str, tmp_path: Path) -> Path:
    """Path of ``name`` that ceuspipe reads: the file itself, or for :data:`UNTIMED` a copy with a
    frame time (same transfer syntax, same pixel data)."""
    src = real_dicom(name)
    if name not in UNTIMED:
        return src
    return us_copy(src, tmp_path / f"{name}.dcm", FrameTime=COPY_FRAME_TIME_MS)


def images(path) -> list[np.ndarray]:
    """Every frame of ``path`` through ceuspipe's reader (``open_source``), as (H, W, 3) uint8."""
    return [f.image for f in open_source(path).frames()]


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    """``decoded(name)``: :func:`images` of a pydicom-data file, decoded once per module."""
    cache: dict[str, list[np.ndarray]] = {}

    def get(name: str) -> list[np.ndarray]:
        if name not in cache:
            cache[name] = images(readable(name, tmp_path_factory.mktemp("real")))
        return cache[name]

    return get


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


# ------------------------------------------------------------------------- every file decodes

@pytest.mark.parametrize("name", sorted(REAL))
def test_real_file_decodes_to_rgb_frames_of_the_header_size(name, decoded, tmp_path):
    tsyntax, photometric, rows, cols, n = REAL[name]
    header = pydicom.dcmread(readable(name, tmp_path), stop_before_pixels=True)
    assert header.file_meta.TransferSyntaxUID == tsyntax
    assert header.PhotometricInterpretation == photometric
    assert str(header.Modality) == "US"
    assert (int(header.Rows), int(header.Columns), int(header.get("NumberOfFrames", 1) or 1)) == (rows, cols, n)
    frames = decoded(name)
    assert len(frames) == n
    for img in frames:
        assert img.dtype == np.uint8 and img.shape == (rows, cols, 3)
        assert img.max() > img.min()  # an image, not a blank decode
    info = probe_dicom(readable(name, tmp_path))
    assert (info.width, info.height, info.frame_count_hint) == (cols, rows, n)


@pytest.mark.parametrize("name", sorted(UNTIMED))
def test_untimed_multiframe_exports_are_refused_with_one_line(name):
    with pytest.raises(InputError) as err:
        list(iter_dicom_frames(real_dicom(name)))
    assert "no frame timing" in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------ the same screen, different codecs

def test_jpeg2000_lossless_equals_uncompressed_exactly(decoded):
    (j2kr,), (uncr,) = decoded("US1_J2KR"), decoded("US1_UNCR")
    assert np.array_equal(j2kr, uncr)


def test_jpeg2000_lossy_within_the_codec_error(decoded):
    """Measured: J2KI vs UNCR mean |diff| 1.70 grey levels, PSNR 36.56 dB (max 124 at text
    edges); J2KI vs UNCI (UNCI is the lossy image stored uncompressed) identical."""
    (j2ki,), (uncr,), (unci,) = decoded("US1_J2KI"), decoded("US1_UNCR"), decoded("US1_UNCI")
    diff = np.abs(j2ki.astype(np.int16) - uncr.astype(np.int16))
    assert 0.5 < diff.mean() < 2.0
    assert 35.0 < psnr(j2ki, uncr) < 40.0
    assert np.abs(j2ki.astype(np.int16) - unci.astype(np.int16)).max() <= 1


def test_philips_palette_variants_identical_frame_by_frame(decoded):
    (single,) = decoded("OBXXXX1A")
    for name in ("OBXXXX1A_expb", "OBXXXX1A_rle"):
        assert np.array_equal(decoded(name)[0], single), name
    two = decoded("OBXXXX1A_2frame")
    assert np.array_equal(two[0], single) and not np.array_equal(two[1], single)
    for name in ("OBXXXX1A_expb_2frame", "OBXXXX1A_rle_2frame"):
        other = decoded(name)
        assert len(other) == 2
        for i in range(2):
            assert np.array_equal(other[i], two[i]), (name, i)


def test_palette_colours_are_the_lut_entries_scaled_to_8_bits(decoded):
    """8-bit indices with a 16-bit LUT (Philips) and 16-bit indices with a segmented 16-bit
    LUT (ALOKA): every pixel is its LUT entry >> 8, computed here from pydicom directly."""
    from pydicom.pixels import apply_color_lut

    for name in ("OBXXXX1A", "gdcm-US-ALOKA-16"):
        ds = pydicom.dcmread(real_dicom(name))
        expected = (apply_color_lut(ds.pixel_array, ds)[..., :3] >> 8).astype(np.uint8)
        assert np.array_equal(decoded(name)[0], expected), name


def test_aloka_little_and_big_endian_identical_with_three_regions(decoded):
    (little,), (big,) = decoded("gdcm-US-ALOKA-16"), decoded("gdcm-US-ALOKA-16_big")
    assert np.array_equal(little, big)
    for name in ("gdcm-US-ALOKA-16", "gdcm-US-ALOKA-16_big"):
        regions = read_ultrasound_regions(real_dicom(name))
        assert len(regions) == 3
        for r in regions:
            assert r.box is not None and r.box.x + r.box.w <= 640 and r.box.y + r.box.h <= 480


def test_planar_configurations_identical(decoded):
    assert np.array_equal(decoded("color-pl")[0], decoded("color-px")[0])


def test_jpeg_baseline_ybr_stays_grey_and_lossless_mono_has_equal_channels(decoded):
    cine = decoded("color3d_jpeg_baseline")
    for img in cine[::30]:  # grey ultrasound: YBR read as RGB would be far from grey (green)
        rgb = img.astype(np.int16)
        assert np.abs(rgb[..., 0] - rgb[..., 1]).mean() < 2.0
        assert np.abs(rgb[..., 2] - rgb[..., 1]).mean() < 2.0
    (mono,) = decoded("JPGLosslessP14SV1_1s_1f_8b")
    raw = pydicom.dcmread(real_dicom("JPGLosslessP14SV1_1s_1f_8b")).pixel_array
    assert all(np.array_equal(mono[..., c], raw) for c in range(3))


# ------------------------------------------------------------------------------------ JPEG-LS

def jpeg_ls_near(path) -> int:
    """The NEAR parameter (maximum error per sample) of the first JPEG-LS scan in ``path``."""
    from pydicom.encaps import generate_fragmented_frames

    ds = pydicom.dcmread(path)
    data = b"".join(next(generate_fragmented_frames(ds.PixelData, number_of_frames=1)))
    sos = data.index(b"\xff\xda")
    n_components = data[sos + 4]
    return data[sos + 5 + 2 * n_components]


def test_jpeg_ls_near_lossless_within_its_bound(tmp_path):
    """pydicom's SC_rgb_jls_lossy_line (NEAR=2, line interleaved) against pydicom-data's
    SC_rgb, the same image uncompressed: measured max |diff| 2, mean 0.70."""
    src = pydicom_test_file("SC_rgb_jls_lossy_line.dcm")
    jls = us_copy(src, tmp_path / "jls_near.dcm")
    twin = us_copy(real_dicom("SC_rgb"), tmp_path / "twin.dcm")
    assert pydicom.dcmread(jls).file_meta.TransferSyntaxUID == U.JPEGLSNearLossless
    near = jpeg_ls_near(jls)
    assert near == 2
    (a,), (b,) = images(jls), images(twin)
    assert a.shape == b.shape == (100, 100, 3)
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert 0 < diff.max() <= near


def test_jpeg_ls_lossless_exact(tmp_path):
    """pydicom's MR_small_jpeg_ls_lossless (16-bit signed) equals MR_small, both read as US."""
    jls = us_copy(pydicom_test_file("MR_small_jpeg_ls_lossless.dcm"), tmp_path / "jls.dcm")
    twin = us_copy(pydicom_test_file("MR_small.dcm"), tmp_path / "twin.dcm")
    assert pydicom.dcmread(jls).file_meta.TransferSyntaxUID == U.JPEGLSLossless
    (a,), (b,) = images(jls), images(twin)
    assert a.shape == (64, 64, 3) and a.max() > a.min()
    assert np.array_equal(a, b)


# ------------------------------------------------------------------------------------ deflate

def test_deflated_multiframe_equals_its_explicit_twin(tmp_path, decoded):
    """Philips' 2-frame palette cine written as Deflated Explicit VR Little Endian."""
    path = us_copy(real_dicom("OBXXXX1A_2frame"), tmp_path / "dfl.dcm", FrameTime=COPY_FRAME_TIME_MS,
                   transfer_syntax=U.DeflatedExplicitVRLittleEndian)
    assert path.stat().st_size < real_dicom("OBXXXX1A_2frame").stat().st_size / 5  # really deflated
    frames = list(open_source(path).frames())
    assert [f.index for f in frames] == [0, 1]
    assert [f.time_s for f in frames] == pytest.approx([0.0, COPY_FRAME_TIME_MS / 1000])
    for f, expected in zip(frames, decoded("OBXXXX1A_2frame")):
        assert np.array_equal(f.image, expected)
    picked = list(iter_dicom_frames(path, select=lambda t: t > 0.05))  # frame 1 alone
    assert [f.index for f in picked] == [1] and np.array_equal(picked[0].image, frames[1].image)


def test_pydicom_deflated_test_file(tmp_path):
    """pydicom's image_dfl.dcm (deflated by another toolkit) copied with Modality US."""
    path = us_copy(pydicom_test_file("image_dfl.dcm"), tmp_path / "image_dfl.dcm")
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == U.DeflatedExplicitVRLittleEndian
    (img,) = images(path)
    assert img.shape == (512, 512, 3)
    assert all(np.array_equal(img[..., c], ds.pixel_array) for c in range(3))


# ------------------------------------------------------------------- transfer syntax coverage

#: Each transfer syntax scanners write, and the file here that exercises it (made by ``prepare``).
COVERAGE = [
    (U.JPEGBaseline8Bit, "color3d_jpeg_baseline", None),
    (U.JPEGLosslessSV1, "JPGLosslessP14SV1_1s_1f_8b", None),
    (U.JPEGLSLossless, "MR_small_jpeg_ls_lossless.dcm", None),
    (U.JPEGLSNearLossless, "SC_rgb_jls_lossy_line.dcm", None),
    (U.JPEG2000Lossless, "US1_J2KR", None),
    (U.JPEG2000, "US1_J2KI", None),
    (U.RLELossless, "OBXXXX1A_rle_2frame", None),
    (U.ExplicitVRBigEndian, "OBXXXX1A_expb", None),
    (U.ImplicitVRLittleEndian, "gdcm-US-ALOKA-16", None),
    (U.ExplicitVRLittleEndian, "US1_UNCR", None),
    (U.DeflatedExplicitVRLittleEndian, "OBXXXX1A", U.DeflatedExplicitVRLittleEndian),
]


def test_coverage_table_names_every_required_syntax():
    required = {U.JPEGBaseline8Bit, U.JPEGLosslessSV1, U.JPEGLSLossless, U.JPEGLSNearLossless,
                U.JPEG2000Lossless, U.JPEG2000, U.RLELossless, U.ExplicitVRBigEndian,
                U.ImplicitVRLittleEndian, U.ExplicitVRLittleEndian, U.DeflatedExplicitVRLittleEndian}
    assert {row[0] for row in COVERAGE} == required


@pytest.mark.parametrize("tsyntax,name,rewrite", COVERAGE, ids=[row[0].name for row in COVERAGE])
def test_transfer_syntax_is_decoded(tsyntax, name, rewrite, tmp_path):
    if name.endswith(".dcm"):  # pydicom's own test file, not ultrasound: a US copy
        path = us_copy(pydicom_test_file(name), tmp_path / name)
    elif rewrite is not None:
        path = us_copy(real_dicom(name), tmp_path / f"{name}.dcm", transfer_syntax=rewrite)
    else:
        path = readable(name, tmp_path)
    header = pydicom.dcmread(path, stop_before_pixels=True)
    assert header.file_meta.TransferSyntaxUID == tsyntax
    frames = list(open_source(path).frames(select=lambda t: t < 0.1))  # first frames only
    assert frames and frames[0].index == 0
    assert frames[0].image.shape == (int(header.Rows), int(header.Columns), 3)
    assert frames[0].image.dtype == np.uint8 and frames[0].image.max() > frames[0].image.min()
    assert open_source(path).probe().codec == f"dicom:{tsyntax.name}"


# --------------------------------------------------------------------- SonoSite cine: timing

def test_sonosite_cine_frame_times_and_one_fps_samples():
    path = real_dicom("color3d_jpeg_baseline")
    header = pydicom.dcmread(path, stop_before_pixels=True)
    assert float(header.FrameTime) == pytest.approx(33.333)
    expected_times = [i * 0.033333 for i in range(120)]
    all_frames = list(open_source(path).frames(select=lambda t: False))
    assert all_frames == []  # no pixel data read at all
    sampler = TimeSampler(1.0)
    picked = []
    for frame in open_source(path).frames(select=sampler, presample=sampler):
        picked.append((frame.index, frame.time_s, tuple(sampler.samples_for(frame.time_s))))
    # sample n: the first frame at or after n seconds, found here from the times alone
    n_samples = math.floor(expected_times[-1]) + 1
    expected = [next(i for i, t in enumerate(expected_times) if t >= n) for n in range(n_samples)]
    assert expected == [0, 31, 61, 91]  # frame 30 is at 0.99999 s, just before 1 s
    assert [p[0] for p in picked] == expected
    assert [p[1] for p in picked] == pytest.approx([expected_times[i] for i in expected], abs=1e-9)
    assert [p[2] for p in picked] == [(n,) for n in range(n_samples)]
    assert sampler.decoded == 120 and sampler.last_time_s == pytest.approx(expected_times[-1])
    assert sampler.decode_path == "dicom"


# ---------------------------------------------------------------------- undecodable: one line

def test_12_bit_jpeg_extended_is_one_line_naming_file_and_syntax(tmp_path):
    path = us_copy(pydicom_test_file("JPEG-lossy.dcm"), tmp_path / "jpeg12.dcm")
    with pytest.raises(InputError) as err:
        list(iter_dicom_frames(path))
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: DICOM pixel data in JPEG Extended (Process 2 and 4) "
                           f"({U.JPEGExtended12Bit}) cannot be decoded: ")
    assert "12-bit" in text and "plugin" not in text.lower()


def test_damaged_frame_after_good_ones_is_one_line(tmp_path):
    """Frame 1 of a 3-frame JPEG baseline cine cut short: every plug-in fails (pydicom's
    message lists them over several lines); ceuspipe's error is one line."""
    from pydicom.encaps import encapsulate, generate_fragmented_frames

    ds = pydicom.dcmread(real_dicom("color3d_jpeg_baseline"))
    fragments = [b"".join(f) for _, f in zip(range(3), generate_fragmented_frames(ds.PixelData,
                                                                                   number_of_frames=120))]
    fragments[1] = fragments[1][: len(fragments[1]) // 3]
    ds.PixelData = encapsulate(fragments)
    ds.NumberOfFrames = 3
    path = tmp_path / "cut.dcm"
    ds.save_as(path)
    seen = []
    with pytest.raises(InputError) as err:
        for frame in iter_dicom_frames(path):
            seen.append(frame.index)
    assert seen == [0]
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: DICOM pixel data damaged or truncated after 1 of 3 frame(s) (")
    assert "plugin" not in text.lower()


def test_ybr_rct_outside_jpeg_2000_is_refused(tmp_path):
    path = us_copy(real_dicom("US1_UNCR"), tmp_path / "rct.dcm", PhotometricInterpretation="YBR_RCT")
    with pytest.raises(InputError) as err:
        list(iter_dicom_frames(path))
    assert str(err.value) == (f"{path}: DICOM photometric interpretation YBR_RCT is only valid for JPEG 2000 "
                              f"pixel data, not Explicit VR Little Endian ({U.ExplicitVRLittleEndian}): damaged header")


def test_cli_undecodable_dicom_is_one_error_line(tmp_path, monkeypatch):
    from support.bad_inputs import assert_one_line_error

    from ceuspipe.cli import main

    src = us_copy(pydicom_test_file("JPEG-lossy.dcm"), tmp_path / "jpeg12.dcm")
    monkeypatch.setenv("CEUSPIPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "noconfig"))
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["keyframes", str(src), str(out)])
    line = assert_one_line_error(res, str(src), "JPEG Extended (Process 2 and 4)", "cannot be decoded")
    assert res.exit_code == 1 and line.startswith("ceuspipe: error: ")
    assert not out.exists()
