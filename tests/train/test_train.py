"""Training loop, checkpoints, resume, safe loading, dataset reading."""

import csv
import json
import pickle

import numpy as np
import pytest
import torch
from support.toy_dataset import make_toy_dataset

from ceuspipe.dataset.torch_dataset import CeusSegDataset
from ceuspipe.errors import InputError, OutputError
from ceuspipe.train.checkpoint import load_model, read_checkpoint
from ceuspipe.train.config import TrainConfig
from ceuspipe.train.loop import train
from ceuspipe.train.losses import dice_bce_loss
from ceuspipe.train.metrics import batch_dice_iou, dice_iou

torch.set_num_threads(1)


def cfg(ds, run, **kw):
    base = dict(dataset=str(ds), run_dir=str(run), variant="full", width=0.125, epochs=2, batch_size=4,
                lr=3e-3, size=32, device="cpu", seed=0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_dataset(tmp_path_factory.mktemp("toy"), n_train=12, n_test=6, folds=True)


def test_dataset_items_and_resizing(toy):
    ds = CeusSegDataset(toy, "train", size=48)
    assert len(ds) == 12
    ceus, us, label = ds[0]
    assert ceus.shape == us.shape == label.shape == (1, 48, 48)
    assert ceus.dtype == torch.float32 and 0 <= float(ceus.min()) and float(ceus.max()) <= 1
    assert set(torch.unique(label).tolist()) <= {0.0, 1.0}
    aug = CeusSegDataset(toy, "train", size=48, augment=True, seed=3)
    a1 = aug[1]
    aug.set_epoch(1)
    a2 = aug[1]
    assert a1[0].shape == (1, 48, 48) and set(torch.unique(a1[2]).tolist()) <= {0.0, 1.0}
    aug.set_epoch(0)
    assert torch.equal(aug[1][0], a1[0]) and not torch.equal(a1[0], a2[0])
    assert len(CeusSegDataset(toy, "val", size=32, fold=0)) == 6


def test_malformed_dataset_errors(tmp_path, toy):
    with pytest.raises(InputError, match="dataset.json"):
        CeusSegDataset(tmp_path)
    bad = make_toy_dataset(tmp_path / "bad", n_train=2, n_test=1)
    (bad / "labelsTr" / "p01_00.png").unlink()
    with pytest.raises(InputError, match="p01_00.png: missing"):
        CeusSegDataset(bad, "train")
    (bad / "splits.json").write_text(json.dumps({"train": [], "test": ["q00_00"]}))
    with pytest.raises(InputError, match="splits.json: split 'train' is empty"):
        CeusSegDataset(bad, "train")
    (bad / "imagesTs" / "q00_00_0000.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="q00_00_0000.png: not a readable image"):
        CeusSegDataset(bad, "test")


def test_metrics_and_loss():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    assert dice_iou(a, b) == (1.0, 1.0)
    a[:2] = True
    b[1:3] = True
    assert dice_iou(a, b) == pytest.approx((0.5, 1 / 3))
    d, i = batch_dice_iou(torch.from_numpy(np.stack([a, a]))[:, None], torch.from_numpy(np.stack([b, a]))[:, None])
    assert d.tolist() == pytest.approx([0.5, 1.0]) and i.tolist() == pytest.approx([1 / 3, 1.0])
    t = torch.from_numpy(b).float()[None, None]
    good, bad = dice_bce_loss(t * 20 - 10, t), dice_bce_loss(10 - t * 20, t)
    assert good < 0.05 < 1.5 < bad


def test_learns_toy_task(tmp_path):
    ds = make_toy_dataset(tmp_path / "ds", n_train=16, n_test=8, seed=1)
    result = train(cfg(ds, tmp_path / "run", epochs=10, size=64, batch_size=4))
    # baselines: predict all background (Dice 0 on cases with a lesion) or all foreground
    test = CeusSegDataset(ds, "test", size=64)
    labels = torch.stack([test[i][2] for i in range(len(test))]) > 0.5
    d_bg, _ = batch_dice_iou(torch.zeros_like(labels), labels)
    d_fg, _ = batch_dice_iou(torch.ones_like(labels), labels)
    baseline = max(float(d_bg.mean()), float(d_fg.mean()))
    assert baseline < 0.35
    assert result.best_dice > baseline + 0.3, (result.best_dice, baseline, result.history)
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 11))
    assert set(rows[0]) == {"epoch", "loss", "val_dice", "val_iou", "lr", "seconds"}
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert (tmp_path / "run" / "learning_curve.png").stat().st_size > 1000
    conf = json.loads((tmp_path / "run" / "config.json").read_text())
    assert conf["variant"] == "full" and conf["versions"]["torch"] == torch.__version__
    model, mconf = load_model(tmp_path / "run" / "best.pt", "cpu")
    assert {"variant", "width", "size", "threshold"} <= set(mconf)
    assert not model.training


def test_resume_equals_uninterrupted(tmp_path, toy):
    train(cfg(toy, tmp_path / "a", epochs=4, augment=True))
    train(cfg(toy, tmp_path / "b", epochs=2, augment=True))
    train(cfg(toy, tmp_path / "b", epochs=4, augment=True, resume=True))
    a = read_checkpoint(tmp_path / "a" / "last.pt")
    b = read_checkpoint(tmp_path / "b" / "last.pt")
    assert a["epoch"] == b["epoch"] == 4
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert [r["loss"] for r in a["history"]] == [r["loss"] for r in b["history"]]
    rows = list(csv.DictReader(open(tmp_path / "b" / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    # a second run into a used folder without --resume is refused
    with pytest.raises(OutputError, match="not empty"):
        train(cfg(toy, tmp_path / "a", epochs=1))


def test_wrong_variant_checkpoint(tmp_path, toy):
    train(cfg(toy, tmp_path / "u", variant="unet", width=0.25, epochs=1))
    with pytest.raises(InputError, match=r"last.pt: trained as variant 'unet' width 0.25, asked for 'full' width 1.0"):
        train(cfg(toy, tmp_path / "u", variant="full", width=1.0, epochs=2, resume=True))
    with pytest.raises(InputError, match="nothing to resume"):
        train(cfg(toy, tmp_path / "none", epochs=2, resume=True))


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "ceuspipe-ceusegnet-v1", "x": _Evil(str(marker))}, evil)
    assert not marker.exists()
    with pytest.raises(InputError, match="evil.pt: not a ceuspipe checkpoint"):
        load_model(evil, "cpu")
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_Evil(str(marker))))
    with pytest.raises(InputError, match="raw.pkl"):
        read_checkpoint(raw)
    assert not marker.exists()
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(InputError, match="junk.pt"):
        load_model(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="other.pt: not a ceuspipe checkpoint"):
        load_model(tmp_path / "other.pt")
