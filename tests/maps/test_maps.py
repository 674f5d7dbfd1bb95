"""Perfusion maps: block accumulation, motion, the fitted and model-free maps, maps.npz, PNGs."""

import io
import tracemalloc

import numpy as np
import pytest
from scipy import ndimage

from ceuspipe.errors import InputError
from ceuspipe.maps import BlockAccumulator, compute_maps, read_maps_npz, render_map_png, render_maps, write_maps_npz
from ceuspipe.maps.compute import maps_from_curves, model_free
from ceuspipe.maps.simulate import sector_mask, two_region_phantom
from ceuspipe.tic.linearize import linearize

H = 96
B = 2
SHIFT = 6.0


def run_phantom(shift_px=SHIFT, compensate=True, block_px=B, bin_s=0.5, model="lognormal", seed=0):
    ph = two_region_phantom((H, H), shift_px=shift_px, imaged=sector_mask((H, H)), model=model)
    rng = np.random.default_rng(seed)
    acc = BlockAccumulator((H, H), block_px=block_px, imaged_mask=ph.imaged, bin_s=bin_s, max_bins=1024)
    for i in range(len(ph)):
        dx, dy = ph.shifts[i] if compensate else (0.0, 0.0)
        acc.add(ph.times_s[i], ph.frame(i, rng), dx=dx, dy=dy)
    return ph, acc, compute_maps(acc, model=model, pixel_size_mm=0.2)


def block_labels(ph, maps, b=B):
    """Label of each block's centre pixel, and its distance (px) to the region boundary."""
    ny, nx = maps.grid_shape
    lab = ph.labels[b // 2::b, b // 2::b][:ny, :nx]
    d = np.maximum(ndimage.distance_transform_edt(ph.labels == 1), ndimage.distance_transform_edt(ph.labels == 0))
    return lab, d[b // 2::b, b // 2::b][:ny, :nx]


@pytest.fixture(scope="module")
def compensated():
    return run_phantom()


@pytest.fixture(scope="module")
def uncompensated():
    return run_phantom(compensate=False)


# --- (b) two regions of known curves, a known shift per frame ---------------------------------------

# Stated bounds. Measured (96x96 panel, 2x2 px blocks, speckle CV 1 per pixel, 90 s at 10 fps
# binned to 2 per second, 6 px breathing shift compensated): region medians within 0.4 % of the
# truth for PE, TTP and mTT; within a block, interquartile spread / median 4-6 % (PE), 1-2 % (TTP),
# 3-5 % (mTT).
MEDIAN_BOUND = {"PE": 0.03, "TTP": 0.02, "mTT": 0.03}
BLOCK_BOUND = {"PE": 0.15, "TTP": 0.05, "mTT": 0.15}


@pytest.mark.parametrize("region", [0, 1])
def test_maps_recover_each_regions_parameters(compensated, region):
    ph, _, maps = compensated
    lab, _ = block_labels(ph, maps)
    core = ndimage.binary_erosion(lab == region, iterations=3) & maps.imaged
    assert core.sum() > 50
    assert maps.success[core].mean() >= 0.98
    for k in ("PE", "TTP", "mTT"):
        truth = ph.truth[region][k].value
        v = maps.maps[k][core]
        assert abs(np.nanmedian(v) / truth - 1) <= MEDIAN_BOUND[k], k
        assert np.mean(np.abs(v / truth - 1) <= BLOCK_BOUND[k]) >= 0.9, k
    # the lesion is earlier and brighter than the parenchyma, in the model-free maps too
    if region == 1:
        par = ndimage.binary_erosion(lab == 0, iterations=3) & maps.imaged
        for k, sign in (("MaxI", 1), ("TMaxI", -1), ("AT", -1), ("PE", 1), ("TTP", -1)):
            assert sign * (np.nanmedian(maps.maps[k][core]) - np.nanmedian(maps.maps[k][par])) > 0, k
        assert np.nanmedian(maps.maps["AT"][core]) == pytest.approx(ph.truth[1]["TI"].value, abs=2.0)


def test_motion_compensation_keeps_blocks_near_the_edge_pure(compensated, uncompensated):
    """Blocks 2.5-6 px from the lesion edge are pure in the reference frame but see both regions
    as the tissue moves by 6 px: moved back, their TTP/PE/mTT match their own region (measured
    99-100 % within 10 %), left where they are they mix (measured 64-79 %)."""
    ph, _, good = compensated
    _, _, bad = uncompensated
    lab, d = block_labels(ph, good)
    band = (d >= 2.5) & (d <= SHIFT + 0.5) & good.imaged
    assert band.sum() > 100
    for k in ("TTP", "PE", "mTT"):
        truth = np.where(lab == 1, ph.truth[1][k].value, ph.truth[0][k].value)
        ok_good = np.mean(np.abs(good.maps[k][band] / truth[band] - 1) <= 0.10)
        ok_bad = np.mean(np.abs(bad.maps[k][band] / truth[band] - 1) <= 0.10)
        assert ok_good >= 0.95, k
        assert ok_bad <= ok_good - 0.1, k


def test_nan_outside_the_imaged_area(compensated):
    ph, acc, maps = compensated
    ny, nx = maps.grid_shape
    share = ph.imaged[:ny * B, :nx * B].reshape(ny, B, nx, B).mean(axis=(1, 3))
    np.testing.assert_array_equal(maps.imaged, share >= 0.5)
    assert (~maps.imaged).sum() > 100
    for name, m in maps.maps.items():
        assert m.dtype == np.float32 and m.shape == (ny, nx)
        assert np.all(np.isnan(m[~maps.imaged])), name
    assert not maps.success[~maps.imaged].any()
    _, values = acc.curves()
    assert np.all(np.isnan(values[~acc.imaged_blocks.ravel()]))
    assert set(maps.reasons()) <= {"", "poor fit (QOF)", "no significant enhancement"}


def test_binning_to_two_per_second_loses_nothing_measurable():
    """Region medians and spreads of PE, TTP and mTT from curves binned to 0.5 s and from the
    10 fps frames themselves (measured: medians within 0.5 % of each other)."""
    small = 48
    ph = two_region_phantom((small, small), duration_s=60.0)
    outs = {}
    for bin_s in (0.5, None):
        rng = np.random.default_rng(5)
        acc = BlockAccumulator((small, small), block_px=B, bin_s=bin_s, max_bins=1024)
        for i in range(len(ph)):
            acc.add(ph.times_s[i], ph.frame(i, rng))
        outs[bin_s] = compute_maps(acc)
    assert outs[0.5].times_s.size == 120 and outs[None].times_s.size == 600
    lab, _ = block_labels(ph, outs[0.5])
    for region in (0, 1):
        core = ndimage.binary_erosion(lab == region, iterations=2)
        for k in ("PE", "TTP", "mTT"):
            a, b = outs[0.5].maps[k][core], outs[None].maps[k][core]
            assert np.nanmedian(a) == pytest.approx(np.nanmedian(b), rel=0.01), k
            iqr = [np.nanpercentile(v, 75) - np.nanpercentile(v, 25) for v in (a, b)]
            assert iqr[0] <= 1.3 * iqr[1] + 1e-9, k


# --- the accumulator ----------------------------------------------------------------------------------

def test_block_means_and_origin_are_where_the_grid_says():
    rng = np.random.default_rng(1)
    panel = rng.integers(0, 256, (30, 41)).astype(np.uint8)
    acc = BlockAccumulator(panel.shape, block_px=4, origin_px=(3, 2), dynamic_range_db=50)
    assert acc.grid_shape == (7, 9)
    lin = linearize(panel, 50)
    means = acc.block_means(panel)
    i, j = 5, 7
    expect = lin[2 + 4 * i:2 + 4 * i + 4, 3 + 4 * j:3 + 4 * j + 4].mean()
    assert means[i, j] == pytest.approx(expect, rel=1e-5)
    # float panels are linear power already
    np.testing.assert_allclose(acc.block_means(lin.astype(np.float32)), means, rtol=1e-6)


def test_subpixel_shift_is_moved_back():
    """The displacement means what ceuspipe.motion's FrameMotion means: the frame shows the
    reference's content moved by (dx, dy)."""
    from ceuspipe.motion import FrameMotion, from_reference

    yy, xx = np.mgrid[0:64, 0:64]
    ref = (2.0 + np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.float32)
    motion = FrameMotion(index=0, time_s=0.0, dx_px=2.5, dy_px=-1.25, score=1.0, used=True)
    dx, dy = motion.dx_px, motion.dy_px
    moved = from_reference(ref, motion, border="replicate")
    acc = BlockAccumulator(ref.shape, block_px=4)
    truth = acc.block_means(ref)
    back = acc.block_means(moved, dx=dx, dy=dy)
    inner = np.s_[1:-1, 1:-1]
    assert np.max(np.abs(back[inner] / truth[inner] - 1)) < 0.03  # bilinear twice: a little blur
    assert np.max(np.abs(acc.block_means(moved)[inner] / truth[inner] - 1)) > 0.1


def test_bins_hold_mean_times_and_merge_in_pairs():
    acc = BlockAccumulator((8, 8), block_px=4, bin_s=0.5, max_bins=8)
    times = 3.0 + np.arange(100) * 0.1  # 10 s at 10 fps: 20 bins of 0.5 s -> merged to 1 s, then 2 s
    for t in times:
        acc.add(t, np.full((8, 8), t, np.float32))
    assert acc.bin_width_s == 2.0 and acc.n_bins <= 8
    tb, values = acc.curves()
    assert values.shape == (4, tb.size)
    np.testing.assert_allclose(values, np.broadcast_to(tb, values.shape), rtol=1e-5)  # ramp: value = time
    np.testing.assert_allclose(tb[:4], [3.95, 5.95, 7.95, 9.95], rtol=1e-9)
    per_frame = BlockAccumulator((8, 8), block_px=4, bin_s=None, max_bins=16)
    for t in times:
        per_frame.add(t, np.full((8, 8), t, np.float32))
    tb, values = per_frame.curves()
    assert per_frame.frames_per_bin == 8 and tb.size == 13
    np.testing.assert_allclose(values[0], tb, rtol=1e-5)


def test_unused_frames_are_counted_and_skipped():
    acc = BlockAccumulator((8, 8), block_px=2)
    for i in range(10):
        bright = i == 4
        acc.add(i * 0.25, np.full((8, 8), 100.0 if bright else 1.0, np.float32), used=not bright)
    assert acc.n_frames == 10 and acc.n_used == 9
    _, values = acc.curves()
    assert np.all(values == 1.0)


def test_memory_is_the_block_grid_times_the_bins_whatever_the_panel_size():
    """Same 24x24 grid over a 48x48 and a 192x192 panel: the same bytes for the curves, and
    growth while frames stream by bounded by that (plus one frame's temporaries), not by the
    panel size times the frame count."""
    sizes = {}
    for b in (2, 8):
        side = 24 * b
        acc = BlockAccumulator((side, side), block_px=b, bin_s=0.5, max_bins=64)
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 256, (side, side)).astype(np.uint8) for _ in range(3)]
        acc.add(0.0, frames[0])
        tracemalloc.start()
        base, _ = tracemalloc.get_traced_memory()
        for i in range(1, 400):  # 40 s at 10 fps: 80 bins -> merged to 40
            acc.add(i * 0.1, frames[i % 3])
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        sizes[b] = (acc.nbytes, peak - base, side * side * 4)
        assert acc.n_bins <= 64
        assert acc.nbytes <= 64 * 24 * 24 * 6 + 16 * 64
    assert sizes[2][0] == sizes[8][0]
    for b, (nbytes, growth, frame_bytes) in sizes.items():
        # the curves, plus one frame's temporaries (a few float32 panels)
        assert growth <= 2 * nbytes + 8 * frame_bytes, (b, growth)


def test_accumulator_checks_its_inputs():
    acc = BlockAccumulator((16, 16), block_px=4)
    with pytest.raises(InputError):
        acc.add(0.0, np.zeros((16, 15), np.uint8))
    acc.add(1.0, np.zeros((16, 16), np.uint8))
    with pytest.raises(InputError):
        acc.add(0.5, np.zeros((16, 16), np.uint8))
    with pytest.raises(InputError):
        acc.add(2.0, np.zeros((16, 16), np.uint8), dx=float("nan"))
    with pytest.raises(InputError):
        BlockAccumulator((16, 16), imaged_mask=np.ones((8, 8)))
    with pytest.raises(InputError):
        BlockAccumulator((16, 16), block_px=32)
    with pytest.raises(InputError):
        BlockAccumulator((16, 16), bin_s=0.0)


def test_maps_of_an_empty_or_dark_clip_fail_quietly():
    acc = BlockAccumulator((16, 16), block_px=4)
    maps = compute_maps(acc)
    assert maps.times_s.size == 0 and not maps.success.any()
    for i in range(40):
        acc.add(i * 0.5, np.zeros((16, 16), np.uint8))
    maps = compute_maps(acc)
    assert not maps.success.any() and np.all(np.isnan(maps.maps["PE"]))
    assert np.all(np.isfinite(maps.maps["MaxI"]))
    assert maps.reasons() == {"flat curve": 16}


def test_model_free_maps_of_known_curves():
    t = np.arange(0, 60, 0.5)
    ramp = np.clip((t - 10.0) / 10.0, 0, 1) * np.exp(-np.clip(t - 20.0, 0, None) / 15.0)
    y = np.vstack([0.01 + ramp, np.full(t.size, np.nan), 0.01 + 2 * ramp])
    y[0, 5] = np.nan
    free = model_free(t, y, smooth_s=0.5, arrival_fraction=0.1)
    assert free["TMaxI"][0] == pytest.approx(20.0, abs=0.5)
    assert free["MaxI"][0] == pytest.approx(1.01, rel=0.02)
    assert free["AT"][0] == pytest.approx(11.0, abs=0.3)
    assert np.isnan(free["MaxI"][1]) and np.isnan(free["AT"][1])
    assert free["MaxI"][2] == pytest.approx(2.01, rel=0.02)


# --- (c) maps.npz ---------------------------------------------------------------------------------------

def test_maps_npz_round_trip(tmp_path, compensated):
    _, _, maps = compensated
    path = tmp_path / "out" / "maps.npz"
    write_maps_npz(path, maps)
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        assert {"PE", "TTP", "RT", "mTT", "WiR", "WiAUC", "WoAUC", "WiWoAUC", "QOF", "MaxI", "TMaxI", "AT"} <= keys
        assert {"origin_px", "block_px", "pixel_size_mm", "success", "imaged", "times_s", "meta"} <= keys
        assert z["PE"].dtype == np.float32 and z["PE"].shape == maps.grid_shape
        assert z["origin_px"].tolist() == [0, 0] and int(z["block_px"]) == B
        assert float(z["pixel_size_mm"]) == pytest.approx(0.2)
    back = read_maps_npz(path)
    assert back.grid_shape == maps.grid_shape and back.block_px == B and back.origin_px == (0, 0)
    assert back.units == maps.units and back.model == "lognormal" and back.pixel_size_mm == pytest.approx(0.2)
    for k, v in maps.maps.items():
        np.testing.assert_array_equal(back.maps[k], v)
    np.testing.assert_array_equal(back.success, maps.success)
    np.testing.assert_array_equal(back.imaged, maps.imaged)
    assert not list(tmp_path.joinpath("out").glob(".*"))  # no temporary file left


def test_maps_npz_without_pixel_size(tmp_path):
    t = np.arange(0, 40, 0.5)
    maps = maps_from_curves(t, np.full((4, t.size), np.nan), (2, 2), block_px=3, origin_px=(5, 7))
    write_maps_npz(tmp_path / "m.npz", maps)
    with np.load(tmp_path / "m.npz") as z:
        assert "pixel_size_mm" not in z.files and z["origin_px"].tolist() == [5, 7]
    assert read_maps_npz(tmp_path / "m.npz").pixel_size_mm is None


# --- (d) PNGs ----------------------------------------------------------------------------------------------

def test_render_map_png_with_panel_contour_and_colour_bar(tmp_path, compensated):
    from PIL import Image

    ph, _, maps = compensated
    panel = ph.frame(200, np.random.default_rng(3))
    lesion = ph.labels == 1
    path = tmp_path / "pe.png"
    render_map_png(path, maps.maps["PE"], "PE", maps.units["PE"], panel, lesion, block_px=maps.block_px,
                   origin_px=maps.origin_px)
    img = Image.open(io.BytesIO(path.read_bytes()))
    assert img.format == "PNG" and img.size[0] > img.size[1] > 100
    arr = np.asarray(img.convert("RGB")).astype(int)
    assert (np.abs(arr[..., 0] - arr[..., 2]) > 60).mean() > 0.05  # colour, not only the grey panel
    paths = render_maps(tmp_path / "pngs", maps, panel, lesion, names=["TTP", "MaxI"])
    assert [p.name for p in paths] == ["map_TTP.png", "map_MaxI.png"] and all(p.stat().st_size > 0 for p in paths)
    # no panel, all NaN: still a picture
    render_map_png(tmp_path / "nan.png", np.full((4, 4), np.nan), "PE", "a.u.")
    assert Image.open(tmp_path / "nan.png").format == "PNG"
