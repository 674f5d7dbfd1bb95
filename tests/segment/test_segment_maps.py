"""Perfusion maps inside segment-video: on a breathing phantom the maps written with the
rest of the outputs recover each truth region's TTP and PE (motion-compensated), the report
shows them, and bad map options are refused with the key named."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from ceuspipe import configs
from ceuspipe.errors import InputError
from ceuspipe.maps import read_maps_npz
from ceuspipe.segment import SegmentConfig, segment_video
from ceuspipe.synth.bolus import LognormalBolus
from ceuspipe.synth.generate import ceus_weight_maps
from ceuspipe.synth.truth import load_truth, truth_dir_for
from ceuspipe.video.panels import PanelLayout
from ceuspipe.video.reader import iter_frames
from support.builders import phantom_clip, write_checkpoint

BLOCK = 6


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("maps")
    clip, _ = phantom_clip(root, duration_s=40.0, fps=3.0, breathing="normal")
    truth = load_truth(clip.parent / f"{clip.stem}.truth")
    lay = PanelLayout.from_dict(truth["layout"])
    out = root / "out"
    masks = str(truth_dir_for(clip) / truth["masks"]["ceus"])  # maps do not depend on the masks: no model needed
    segment_video(clip, None, out, SegmentConfig(ceus_box=lay.ceus, us_box=lay.us, masks=masks, maps=True,
                                                 map_block_px=BLOCK))
    first_mask = next(iter(iter_frames(clip.parent / f"{clip.stem}.truth" / truth["masks"]["ceus"]))).image
    lesion = (first_mask[..., 0] if first_mask.ndim == 3 else first_mask) > 127
    weights = next(iter(ceus_weight_maps(truth)))[1]  # (h, w, 2) at the first frame: the motion's reference
    return {"clip": clip, "truth": truth, "out": out, "lesion": lesion, "weights": weights}


def _true_pe(truth: dict, weights: np.ndarray, blocks: np.ndarray, maps) -> np.ndarray:
    """The true PE of each block of ``blocks`` (the peak of its weights' mean times the two
    curves, :func:`ceuspipe.synth.generate.ceus_weight_maps`): the lesion is not uniform,
    so its nominal curve is not every block's."""
    ny, nx = maps.grid_shape
    x0, y0 = maps.origin_px
    b = maps.block_px
    w = weights[y0:y0 + ny * b, x0:x0 + nx * b].reshape(ny, b, nx, b, 2).mean(axis=(1, 3))[blocks]  # (n, 2)
    curves = [LognormalBolus.from_dict(truth["curves"][k]) for k in ("lesion", "parenchyma")]
    t = np.linspace(0.0, truth["duration_s"], 2001)
    c = np.stack([f(t) - f.offset for f in curves])  # (2, T)
    return (w @ c).max(axis=1)


def _blocks_inside(region: np.ndarray, maps) -> np.ndarray:
    """``(ny, nx)`` bool: blocks wholly inside ``region`` ``(H, W)`` bool."""
    ny, nx = maps.grid_shape
    x0, y0 = maps.origin_px
    b = maps.block_px
    r = region[y0:y0 + ny * b, x0:x0 + nx * b].reshape(ny, b, nx, b)
    return r.all(axis=(1, 3)) & maps.imaged


def test_maps_recover_each_regions_ttp_and_pe(run):
    maps = read_maps_npz(run["out"] / "maps.npz")
    assert maps.block_px == BLOCK and maps.maps["TTP"].dtype == np.float32
    k = np.ones((9, 9), np.uint8)
    inner = cv2.erode(run["lesion"].astype(np.uint8), k).astype(bool)
    outer = ~cv2.dilate(run["lesion"].astype(np.uint8), k, iterations=2).astype(bool)
    for name, region in (("lesion", inner), ("parenchyma", outer)):
        blocks = _blocks_inside(region, maps)
        assert blocks.sum() >= 8, name
        curve = run["truth"]["curves"][name]
        ttp = float(np.nanmedian(maps.maps["TTP"][blocks]))
        pe_ratio = float(np.nanmedian(maps.maps["PE"][blocks] / _true_pe(run["truth"], run["weights"], blocks, maps)))
        assert abs(ttp - curve["ttp_s"]) < 1.0, (name, ttp, curve["ttp_s"])
        assert abs(pe_ratio - 1) < 0.10, (name, pe_ratio)
        assert np.mean(maps.success[blocks]) > 0.9, name


def test_maps_are_outputs_and_in_the_report(run):
    seg = json.loads((run["out"] / "segment.json").read_text())
    m = seg["maps"]
    assert m["file"] in seg["outputs"] and all(p in seg["outputs"] for p in m["pngs"])
    assert {"map_PE.png", "map_TTP.png", "map_mTT.png", "map_MaxI.png"} <= set(m["pngs"])
    assert all((run["out"] / p).is_file() for p in m["pngs"])
    assert m["blocks_fitted"] <= m["blocks_imaged"] and m["block_px"] == BLOCK
    html = (run["out"] / "report.html").read_text()
    section = html[html.index('<section id="maps">'):]
    section = section[:section.index("</section>")]
    assert section.count("<img") == len(m["report_maps"]) == 4 and "blocks fitted" in section


def test_no_maps_writes_none(tmp_path):
    clip, truth = phantom_clip(tmp_path, duration_s=2.0, fps=4.0)
    lay = PanelLayout.from_dict(load_truth(clip.parent / f"{clip.stem}.truth")["layout"])
    out = tmp_path / "out"
    segment_video(clip, write_checkpoint(tmp_path / "tiny.pt"), out,
                  SegmentConfig(ceus_box=lay.ceus, us_box=lay.us, engine="torch", maps=False))
    assert not list(out.glob("map*")) and json.loads((out / "segment.json").read_text())["maps"] is None
    assert "not computed (--no-maps)" in (out / "report.html").read_text()


@pytest.mark.parametrize("key, value", [("maps", "yes"), ("map_block_px", 0), ("map_block_px", 2.5),
                                        ("map_block_mm", -1.0)])
def test_bad_map_options_name_the_key(key, value):
    with pytest.raises(configs.ConfigError, match=key):
        SegmentConfig(**{key: value})


def test_block_in_mm_needs_a_pixel_size(tmp_path):
    clip, _ = phantom_clip(tmp_path, duration_s=1.0, fps=4.0)
    lay = PanelLayout.from_dict(load_truth(clip.parent / f"{clip.stem}.truth")["layout"])
    with pytest.raises(InputError, match="map block size in mm"):
        segment_video(clip, write_checkpoint(tmp_path / "tiny.pt"), tmp_path / "out",
                      SegmentConfig(ceus_box=lay.ceus, us_box=lay.us, engine="torch", maps=True, map_block_mm=1.0))
    assert not (tmp_path / "out").exists()


def test_replenishment_maps_recover_each_regions_beta(tmp_path):
    """A replenishment-protocol phantom: every refill in tic.json gets beta and A*beta maps,
    and each region's interior blocks recover its beta (truth.json) within 15 %."""
    clip, _ = phantom_clip(tmp_path, duration_s=36.0, fps=6.0, protocol="replenishment",
                           flash_times_s=(12.0, 24.0))
    truth = load_truth(clip.parent / f"{clip.stem}.truth")
    lay = PanelLayout.from_dict(truth["layout"])
    out = tmp_path / "out"
    segment_video(clip, None, out, SegmentConfig(ceus_box=lay.ceus, us_box=lay.us, maps=True, map_block_px=4,
                                                 masks=str(truth_dir_for(clip) / truth["masks"]["ceus"])))
    refills = json.loads((out / "tic.json").read_text())["replenishment"]
    assert [r["start_s"] for r in refills] == truth["replenishment"]["destructions_s"]
    seg = json.loads((out / "segment.json").read_text())
    assert {"map_beta_refill1.png", "map_A_beta_refill2.png"} <= set(seg["maps"]["pngs"])
    maps = read_maps_npz(out / "maps.npz")
    weights = next(iter(ceus_weight_maps(truth)))[1]
    for ch, name in enumerate(("lesion", "parenchyma")):
        inside = (weights[..., ch] > 0.98) & (weights[..., 1 - ch] < 0.02)
        blocks = _blocks_inside(inside, maps)
        assert blocks.sum() >= 4, name
        for k in (1, 2):
            beta = float(np.nanmedian(maps.maps[f"beta_refill{k}"][blocks]))
            assert beta == pytest.approx(truth["replenishment"][name]["beta_per_s"], rel=0.15), (name, k)
            assert maps.units[f"A_beta_refill{k}"] == "a.u./s"
