"""Test data makers: tiny checkpoints, short clips and phantom exams, generated in each
test's tmp_path, and test-only plumbing (a small filesystem, a fake installed entry point).

Every test reaches shared helpers one way: ``from support.<module> import ...``
(``tests/`` is on ``sys.path``, see ``tests/conftest.py``).
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial batch-norm statistics so the untrained model's output depends on the input."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
    model.eval()
    # Centre the logits on panel-like inputs so that about half the pixels are "lesion".
    head = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels == 1][-1]
    x = torch.rand(2, 1, 64, 64, generator=g) * 0.5
    with torch.no_grad():
        head.bias -= torch.median(model(x, x))
    return model


def write_checkpoint(path: Path, *, size: int = 64, seed: int = 0, variant: str = "full", width: float = 0.125,
                     model=None) -> Path:
    """A checkpoint of an untrained model of ``variant`` at ``width`` with randomised batch-norm
    statistics (outputs depend on the input), or of ``model`` when given."""
    from ceuspipe.model import build_model
    from ceuspipe.train.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    model = model if model is not None else _randomise(build_model(variant, width), seed)
    config = {"variant": variant, "width": width, "size": size, "threshold": 0.5}
    save_checkpoint(path, {"config": config, "model": model.state_dict(), "epoch": 0})
    return path


def write_clip(path: Path, *, frames: int = 12, fps: float = 4.0, seed: int = 0,
               width: int = 160, height: int = 80) -> Path:
    """A tiny dual-panel clip (black screen, darker textured CEUS panel left, brighter
    B-mode panel right, contrast rising over time), H.264 mp4."""
    from ceuspipe.video.writer import VideoWriter

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    texture = rng.integers(0, 60, size=(height - 20, width // 2 - 20), dtype=np.uint8)
    with VideoWriter(path, width, height, fps=fps, codec="libx264") as w:
        for i in range(frames):
            img = np.zeros((height, width, 3), np.uint8)
            ceus = np.clip(texture // 2 + 20 + 8 * i + rng.integers(0, 30, texture.shape), 0, 255)
            img[10:height - 10, 10:width // 2 - 10] = ceus.astype(np.uint8)[..., None]
            img[10:height - 10, width // 2 + 10:width - 10] = (texture + 120)[..., None]
            w.write(img, i / fps)
    return path


def phantom_clip(folder: Path, *, seed: int = 1, duration_s: float = 4.0, fps: float = 8.0, **kw):
    """A small (320x180) synthetic CEUS exam ``folder/P<seed>/exam1.mp4`` and its truth dict."""
    from ceuspipe.synth import PhantomConfig, generate_exam

    clip = folder / f"P{seed:03d}" / "exam1.mp4"
    truth = generate_exam(clip, None, PhantomConfig(duration_s=duration_s, fps=fps, width=320,
                                                    height=180, **kw), seed=seed)
    return clip, truth


@contextlib.contextmanager
def small_fs(path: Path, size: str = "3m"):
    """A real ``size`` tmpfs mounted at ``path`` for the block (needs root; skips the test
    where mounting is not allowed), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()}); the in-process "
                    "ENOSPC tests cover the same paths")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def installed_entry_point(monkeypatch, registry, name: str, obj):
    """For the block, ``registry`` (a :class:`ceuspipe.registry.Registry`) sees ``obj`` as an
    entry point called ``name`` of an installed package; forgotten afterwards."""
    import importlib.metadata

    class EntryPoint:
        @staticmethod
        def load():
            return obj

    ep = EntryPoint()
    ep.name = name
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group: [ep] if group == registry.entry_point_group else [])
    registry.reload_entry_points()
    try:
        yield
    finally:
        registry.unregister(name)
        monkeypatch.undo()
        registry.reload_entry_points()
