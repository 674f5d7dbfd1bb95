"""CEUSegNet, its ablation variants and size reporting.

Names are loaded on first use, so that ``ceuspipe.model.variants`` (the variant
registry, used by the CLI and config checks) is importable without torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {"VARIANTS": "ceuspipe.model.variants", "build_model": "ceuspipe.model.factory",
            "count_macs": "ceuspipe.model.info", "count_parameters": "ceuspipe.model.info",
            "model_info": "ceuspipe.model.info"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ceuspipe.model' has no attribute {name!r}")
