"""Export a CEUSegNet checkpoint to ONNX, verify it, and cache it for CPU inference.

The exported graph has two inputs, ``ceus`` and ``us``, each ``(B, 1, S, S)``
float32 grey in ``[0, 1]`` (``S`` = the checkpoint's input size), and one output
``logits`` ``(B, 1, S, S)`` float32 (the single-branch ablation variants
``ceus_only``/``us_only`` keep only the input they use); lesion probability is ``sigmoid(logits)``
and the mask is ``probability >= threshold``. ``B`` is a dynamic axis unless a
fixed batch is asked for. The model's config (``variant``, ``width``, ``size``,
``threshold``...) is stored as JSON in the ONNX metadata key ``ceuspipe_config``.

The TorchScript-based exporter (``dynamo=False``) is used: it needs no extra
packages, is fast and exact for this network (maximum absolute logit difference
about 1e-6 against eager PyTorch); the ``torch.export``-based exporter is the
fallback when it fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from ceuspipe.fsutil import set_default_mode
from ceuspipe.errors import InputError

log = logging.getLogger("ceuspipe")

#: Bump when the exported graph's contract changes, so cached files are rebuilt.
EXPORT_FORMAT = 1
OPSET = 17


def default_cache_dir() -> Path:
    """``$CEUSPIPE_CACHE_DIR``, else ``$XDG_CACHE_HOME/ceuspipe``, else ``~/.cache/ceuspipe``."""
    explicit = os.environ.get("CEUSPIPE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ceuspipe"


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_onnx(model, out_path: str | os.PathLike, size: int, *, batch: int | None = None,
                config: dict | None = None, opset: int = OPSET) -> Path:
    """Write ``model`` (CPU, fp32, eval) as ONNX to ``out_path`` atomically.

    ``batch=None`` makes the batch axis dynamic; an int fixes it. ``size`` is
    the input side in pixels. ``config`` goes into the ``ceuspipe_config``
    metadata. Returns the path.
    """
    import onnx
    import torch

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    n = batch or 2
    example = (torch.rand(n, 1, size, size), torch.rand(n, 1, size, size))
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".export.tmp", dir=out.parent)
    os.close(fd)
    try:
        dyn = None if batch else {"ceus": {0: "batch"}, "us": {0: "batch"}, "logits": {0: "batch"}}
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, example, tmp, input_names=["ceus", "us"],
                                  output_names=["logits"], dynamic_axes=dyn, opset_version=opset,
                                  dynamo=False, do_constant_folding=True)
        except Exception as exc:  # noqa: BLE001 - try the other exporter before giving up
            log.info("TorchScript ONNX export failed (%s); trying the torch.export exporter", exc)
            dyn_shapes = None
            if not batch:
                b = torch.export.Dim("batch", min=1, max=4096)
                dyn_shapes = {"ceus": {0: b}, "us": {0: b}}
            with warnings.catch_warnings(), torch.no_grad(), \
                    contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                torch.onnx.export(model, example, tmp, input_names=["ceus", "us"],
                                  output_names=["logits"], dynamic_shapes=dyn_shapes,
                                  dynamo=True, verbose=False, external_data=False)
        proto = onnx.load(tmp)
        set_metadata(proto, {"ceuspipe_config": json.dumps(config or {"size": size}, sort_keys=True, default=str),
                             "ceuspipe_export_format": str(EXPORT_FORMAT)})
        onnx.checker.check_model(proto)
        save_atomic(proto, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return out


def save_atomic(proto, out: str | os.PathLike) -> Path:
    """Save an ONNX ``ModelProto`` to ``out`` via a temporary file and a rename, so a
    reader never sees half a model; permissions follow the umask. Returns the path."""
    import onnx

    out = Path(out)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    set_default_mode(tmp)
    try:
        onnx.save(proto, tmp)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return out


def set_metadata(proto, values: dict[str, str]) -> None:
    """Set ``metadata_props`` of an ONNX ``ModelProto`` (replacing keys already there)."""
    keep = [(p.key, p.value) for p in proto.metadata_props if p.key not in values]
    del proto.metadata_props[:]
    for key, value in [*keep, *values.items()]:
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value


def read_metadata(onnx_path: str | os.PathLike) -> dict:
    """The ceuspipe metadata of an ONNX file: ``config`` (dict, empty when absent) and
    ``quantization`` (dict, empty for fp32 models). Raises :class:`InputError` naming the
    file when ONNX Runtime cannot load it or the JSON is damaged."""
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises several types for bad files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(onnx_path, f"not a loadable ONNX model ({first[:200]})") from None
    props = sess.get_modelmeta().custom_metadata_map
    out = {"inputs": {i.name: list(i.shape) for i in sess.get_inputs()},
           "outputs": [o.name for o in sess.get_outputs()]}
    for key in ("config", "quantization"):
        raw = props.get(f"ceuspipe_{key}")
        try:
            value = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            raise InputError(onnx_path, f"damaged ceuspipe_{key} metadata") from None
        out[key] = value if isinstance(value, dict) else {}
    return out


def max_logit_difference(model, onnx_path: str | os.PathLike, size: int, *, batch: int = 2,
                         seed: int = 0) -> float:
    """Largest ``|logit_torch - logit_onnx|`` on ``batch`` random input pairs in ``[0, 1]``."""
    import onnxruntime as ort
    import torch

    rng = np.random.default_rng(seed)
    c = rng.random((batch, 1, size, size), dtype=np.float32)
    u = rng.random((batch, 1, size, size), dtype=np.float32)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    fixed = sess.get_inputs()[0].shape[0]
    if isinstance(fixed, int):
        c, u = c[:fixed], u[:fixed]
    (got,) = sess.run(["logits"], feed_for(sess, c, u))
    with torch.inference_mode():
        want = model.eval()(torch.from_numpy(c), torch.from_numpy(u)).float().numpy()
    return float(np.max(np.abs(got - want)))


def feed_for(session, ceus: np.ndarray, us: np.ndarray) -> dict[str, np.ndarray]:
    """Input dict for an ONNX Runtime session: single-branch variants (``ceus_only``,
    ``us_only``) export only the input they use."""
    names = {i.name for i in session.get_inputs()}
    return {k: v for k, v in (("ceus", ceus), ("us", us)) if k in names}


def cached_onnx(spec, *, cache_dir: str | os.PathLike | None = None) -> Path:
    """ONNX file (dynamic batch) for a loaded checkpoint, exported once and cached.

    ``spec``: :class:`ceuspipe.segment.model_spec.ModelSpec`. The cache key is
    the checkpoint's SHA-256, the input size and :data:`EXPORT_FORMAT`; the file
    is ``<cache_dir>/onnx/<sha256[:20]>-s<size>-f<format>.onnx``, written
    atomically, so concurrent runs never see half a file.
    """
    import torch

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    digest = spec.sha256
    path = root / "onnx" / f"{digest[:20]}-s{spec.size}-f{EXPORT_FORMAT}.onnx"
    if path.is_file():
        return path
    log.info("exporting %s to ONNX (cached at %s)", spec.path, path)
    model = spec.model
    device = next(model.parameters()).device
    if device.type != "cpu":
        import copy

        model = copy.deepcopy(model).to("cpu")
    with torch.no_grad():
        export_onnx(model, path, spec.size, config=spec.config)
    return path
