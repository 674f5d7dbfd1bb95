"""``evaluate`` and the train/evaluate/model-info commands."""

import json

import cv2
import pytest
import torch
from support.toy_dataset import make_toy_dataset
from click.testing import CliRunner

from ceuspipe.cli import main
from ceuspipe.train.config import TrainConfig
from ceuspipe.train.evaluate import evaluate
from ceuspipe.train.loop import train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ev")
    ds = make_toy_dataset(root / "ds", n_train=8, n_test=4)
    train(TrainConfig(dataset=str(ds), run_dir=str(root / "run"), width=0.125, epochs=2, batch_size=4,
                      size=32, device="cpu"))
    return ds, root / "run" / "best.pt"


def test_evaluate_writes_metrics_and_predictions(trained, tmp_path):
    ds, ckpt = trained
    res = evaluate(ckpt, ds, "test", tmp_path / "ev", save_predictions=True)
    assert [r["case"] for r in res["cases"]] == [f"q{i:02d}_00" for i in range(4)]
    assert all(0 <= r["dice"] <= 1 and 0 <= r["iou"] <= r["dice"] + 1e-9 for r in res["cases"])
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["dice_mean"] == pytest.approx(sum(r["dice"] for r in res["cases"]) / 4)
    mask = cv2.imread(str(tmp_path / "ev" / "predictions" / "q00_00_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (72, 80) and set(mask.ravel().tolist()) <= {0, 255}
    over = cv2.imread(str(tmp_path / "ev" / "predictions" / "q00_00_overlay.png"))
    assert over.shape == (72, 80, 3)


def test_cli_evaluate_and_model_info(trained, tmp_path):
    ds, ckpt = trained
    runner = CliRunner()
    r = runner.invoke(main, ["evaluate", str(ckpt), str(ds), "-o", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert "q03_00" in r.output and "mean" in r.output
    r = runner.invoke(main, ["model-info", "--variant", "full", "--width", "0.125", "--size", "64", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["parameters"] > 100_000 and info["macs"] > 0


def test_cli_train_and_errors(tmp_path):
    ds = make_toy_dataset(tmp_path / "ds", n_train=4, n_test=2)
    runner = CliRunner()
    args = ["train", str(ds), str(tmp_path / "run"), "--width", "0.125", "--size", "32", "--epochs", "1",
            "--batch-size", "4", "--device", "cpu"]
    r = runner.invoke(main, args)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run" / "last.pt").is_file() and "best val Dice" in r.output
    r = runner.invoke(main, args)  # existing run folder, no --resume
    assert r.exit_code == 1 and "not empty" in r.output
    r = runner.invoke(main, args[:1] + [str(tmp_path), str(tmp_path / "run2")] + args[3:])
    assert r.exit_code == 1 and "dataset.json: missing" in r.output
    r = runner.invoke(main, ["evaluate", str(tmp_path / "ds" / "dataset.json"), str(ds)])
    assert r.exit_code == 1 and "not a ceuspipe checkpoint" in r.output
