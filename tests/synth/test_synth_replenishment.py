"""The phantom's replenishment protocol: truth, validation, and the fit on a rendered clip."""

import numpy as np
import pytest
from click.testing import CliRunner

from ceuspipe.configs import ConfigError
from ceuspipe.synth.config import PhantomConfig
from ceuspipe.synth.generate import ceus_weight_maps, exam_truth, render_exam
from ceuspipe.synth.replenishment import RefillCurve, regional_enhancement
from ceuspipe.tic import TicAccumulator

SMALL = dict(duration_s=36, fps=8, width=320, height=180)
PROTOCOL = dict(protocol="replenishment", flash_times_s=(12.0, 24.0))


def test_bolus_truth_unchanged_and_protocol_recorded():
    plain = exam_truth(PhantomConfig(**SMALL), 5)
    assert "protocol" not in plain and "replenishment" not in plain and "protocol" not in plain["config"]
    truth = exam_truth(PhantomConfig(**SMALL, **PROTOCOL), 5)
    assert truth["curves"] == plain["curves"] and truth["lesion_shape"] == plain["lesion_shape"]
    rep = truth["replenishment"]
    assert truth["protocol"] == "replenishment" and rep["destructions_s"] == [12.25, 24.25]
    for region in ("lesion", "parenchyma"):
        r = rep[region]
        assert r["A"] > 0 and r["beta_per_s"] > 0 and r["A_beta"] == pytest.approx(r["A"] * r["beta_per_s"])


def test_refill_curve_restarts_at_each_destruction():
    c = RefillCurve(A=0.1, beta=0.5, t0=3.0, tau_s=2.0, destructions_s=(10.0, 20.0))
    assert c(2.0) == 0.0 and c(10.0) == 0.0 and c(20.0) == 0.0
    assert c(9.9) == pytest.approx(0.1 * (1 - np.exp(-6.9 / 2.0)))
    assert c(14.0) == pytest.approx(0.1 * (1 - np.exp(-2.0)))
    assert c(np.array([19.9, 21.0]))[1] == pytest.approx(0.1 * (1 - np.exp(-0.5)))
    assert RefillCurve.from_dict(c.to_dict()) == c


@pytest.mark.parametrize("bad,key", [(dict(protocol="infusion"), "protocol"),
                                     (dict(protocol="replenishment"), "flash_times_s"),
                                     (dict(protocol="replenishment", flash_times_s=(40.0,)), "flash_times_s")])
def test_bad_protocol_options_name_their_key(bad, key):
    with pytest.raises(ConfigError) as err:
        PhantomConfig(**{**SMALL, **bad})
    assert err.value.key == key


def test_cli_protocol_option(tmp_path):
    from ceuspipe.cli import main

    res = CliRunner().invoke(main, ["synth", str(tmp_path / "x"), "-n", "1", "--protocol", "replenishment",
                                    "--duration-s", "2"])
    assert res.exit_code != 0 and "flash_times_s" in res.output


def test_refills_of_a_rendered_clip_recover_each_regions_A_and_beta():
    """Through TicAccumulator as segment-video feeds it: each region's interior (weight maps)."""
    truth = exam_truth(PhantomConfig(**SMALL, **PROTOCOL), 3)
    lay = truth["layout"]["ceus"]
    accs = {k: TicAccumulator(truth["dynamic_range_db"]) for k in ("lesion", "parenchyma")}
    weights = {}
    for (i, t, frame, _, _), (_, w) in zip(render_exam(truth), ceus_weight_maps(truth)):
        panel = frame[lay["y"]: lay["y"] + lay["h"], lay["x"]: lay["x"] + lay["w"]]
        for ch, name in enumerate(("lesion", "parenchyma")):
            mask = (w[..., ch] > 0.98) & (w[..., 1 - ch] < 0.02)
            weights.setdefault(name, []).append(w[mask].mean(axis=0))  # (2,) weights' mean
            accs[name].add(i, t, panel, mask.astype(np.uint8))
    les, par = regional_enhancement(truth)
    rep = truth["replenishment"]
    for name, acc in accs.items():
        res = acc.result()
        assert res.flags["flash"].sum() == 4  # two 0.2 s flashes at 8 fps, found by the flags
        refills = res.replenishment
        assert [r.start_s for r in refills] == rep["destructions_s"]
        wl, wp = np.mean(weights[name], axis=0)
        # the region's true refill in this mask: its weights' mean times each region's curve
        true_A = wl * rep["lesion"]["A"] + wp * rep["parenchyma"]["A"]
        for r in refills:
            assert r.success, r.reason
            assert r.value("A") == pytest.approx(true_A, rel=0.1)
            assert r.value("beta") == pytest.approx(rep[name]["beta_per_s"], rel=0.1)
            assert r.value("A_beta") == pytest.approx(true_A * rep[name]["beta_per_s"], rel=0.1)
    assert les(12.25) == 0.0 and par(30.0) > 0
