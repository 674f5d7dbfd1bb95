"""A segmentation model loaded for inference: a checkpoint's torch model or an exported ONNX file.

:func:`load_spec` reads either (checkpoints with ``torch.load(weights_only=True)``,
so a checkpoint from elsewhere cannot run code) into a :class:`ModelSpec` that
carries the input size, threshold and, for int8 files, the quantisation record.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ceuspipe.errors import InputError


@dataclass
class ModelSpec:
    """A loaded model: a checkpoint's eval-mode torch model, or an exported ONNX file.

    ``config`` holds at least ``size`` (input side in pixels) and, from a
    checkpoint, ``variant``, ``width`` and ``threshold``; ``path`` is the file.
    For an ONNX file ``model`` is None, ``onnx_path`` is the file and
    ``quantization`` its ``ceuspipe_quantization`` metadata (empty for fp32).
    """

    model: Any
    config: dict
    path: Path
    onnx_path: Path | None = None
    quantization: dict = field(default_factory=dict)
    _sha256: str | None = field(default=None, repr=False, compare=False)

    @property
    def sha256(self) -> str:
        """SHA-256 hex digest of the model file (read once)."""
        if self._sha256 is None:
            from ceuspipe.segment.onnx_export import file_digest

            self._sha256 = file_digest(self.path)
        return self._sha256

    @property
    def size(self) -> int:
        return int(self.config.get("size", 128))

    @property
    def threshold(self) -> float:
        return float(self.config.get("threshold", 0.5))


def load_onnx_spec(path: str | os.PathLike) -> ModelSpec:
    """A :class:`ModelSpec` for an ONNX file from ``ceuspipe export`` (fp32 or int8).

    The input size comes from the ``ceuspipe_config`` metadata, else from a fixed
    input shape. Raises :class:`InputError` naming the file when it is not a
    loadable model with inputs ``ceus``/``us`` and output ``logits``.
    """
    from ceuspipe.segment.onnx_export import read_metadata

    path = Path(path)
    meta = read_metadata(path)
    inputs = meta["inputs"]
    if not inputs or not set(inputs) <= {"ceus", "us"} or "logits" not in meta["outputs"]:
        raise InputError(path, f"not a ceuspipe segmentation model (inputs {sorted(inputs)}, outputs "
                               f"{meta['outputs']}; expected inputs ceus/us and output logits)")
    config = dict(meta["config"])
    if "size" not in config:
        shape = next(iter(inputs.values()))
        if len(shape) != 4 or not isinstance(shape[-1], int):
            raise InputError(path, "input size unknown: no ceuspipe_config metadata and no fixed input shape")
        config["size"] = shape[-1]
    return ModelSpec(model=None, config=config, path=path, onnx_path=path, quantization=meta["quantization"])


def load_spec(checkpoint: str | os.PathLike, device: str = "cpu") -> ModelSpec:
    """Load a checkpoint (``weights_only``) into an eval-mode model on ``device``;
    a ``.onnx`` file gives an ONNX :class:`ModelSpec` (see :func:`load_onnx_spec`).

    Raises :class:`InputError` naming the file when it is missing or not a
    ceuspipe checkpoint.
    """
    from ceuspipe.train.checkpoint import load_model

    path = Path(checkpoint)
    if not path.is_file():
        raise InputError(path, "model checkpoint not found")
    if path.suffix.lower() == ".onnx":
        return load_onnx_spec(path)
    model, config = load_model(path, device)
    config = dict(config if isinstance(config, dict) else vars(config))
    model.eval()
    return ModelSpec(model=model, config=config, path=path)
