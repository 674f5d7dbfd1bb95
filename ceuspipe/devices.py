"""Which torch device a command runs on: one contract for training, evaluation and segment-video.

Names: ``auto`` (the GPU when CUDA is available, else the CPU), ``cpu``,
``cuda`` (this process's GPU: ``cuda:<local_rank>``) and ``cuda:N``. The name is
checked without torch by :func:`ceuspipe.configs.device` when a config is
built; availability is checked here, when the device is about to be used.
"""

from __future__ import annotations

from ceuspipe import configs
from ceuspipe.errors import InputError

#: Device names offered by the CLI (``cuda:N`` is accepted too).
DEVICE_NAMES = ("auto", "cpu", "cuda")


def resolve_device(name: str, local_rank: int = 0) -> str:
    """``"cpu"`` or ``"cuda:N"`` for a device name; :class:`InputError` when CUDA is asked
    for and not available, or GPU ``N`` does not exist."""
    import torch

    try:
        configs.device("device", name)
    except configs.ConfigError as exc:
        raise InputError(None, str(exc)) from None
    has_cuda = torch.cuda.is_available()
    if name == "auto":
        name = "cuda" if has_cuda else "cpu"
    if name == "cpu":
        return "cpu"
    if not has_cuda:
        raise InputError(None, f"device {name!r} asked for, but no CUDA GPU is available")
    index = local_rank if name == "cuda" else int(name.split(":", 1)[1])
    if index >= torch.cuda.device_count():
        raise InputError(None, f"device {name!r} asked for, but only {torch.cuda.device_count()} "
                               "CUDA GPU(s) are visible")
    return f"cuda:{index}"
