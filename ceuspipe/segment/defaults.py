"""Where ``segment-video`` finds its model when none is given.

Order: the ``CEUSPIPE_MODEL`` environment variable, else the ``[segment]``
table's ``model`` key of the user config file
``$XDG_CONFIG_HOME/ceuspipe/config.toml`` (``~/.config/ceuspipe/config.toml``
when ``XDG_CONFIG_HOME`` is unset or empty)::

    [segment]
    model = "/models/ceusegnet.pt"

A relative path in the config file is taken relative to the file's folder.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Mapping

from ceuspipe.errors import InputError

ENV_VAR = "CEUSPIPE_MODEL"

HOW_TO_SET = (f"no model given: pass --model CHECKPOINT, set {ENV_VAR}=CHECKPOINT, or put "
              "'[segment] model = \"CHECKPOINT\"' in ~/.config/ceuspipe/config.toml")


def user_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The user config file path (it may not exist), honouring ``XDG_CONFIG_HOME``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if base else Path(env.get("HOME") or Path.home()) / ".config"
    return root / "ceuspipe" / "config.toml"


def default_model(environ: Mapping[str, str] | None = None) -> Path:
    """Return the configured default checkpoint path.

    Raises :class:`InputError` with one line saying how to configure a model when
    none is set, or naming the config file when it cannot be parsed.
    """
    env = os.environ if environ is None else environ
    value = (env.get(ENV_VAR) or "").strip()
    if value:
        return Path(value).expanduser()
    cfg = user_config_path(env)
    if cfg.is_file():
        try:
            data = tomllib.loads(cfg.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise InputError(cfg, f"cannot read config file ({exc})") from None
        section = data.get("segment")
        model = section.get("model") if isinstance(section, dict) else None
        if model is not None:
            if not isinstance(model, str) or not model.strip():
                raise InputError(cfg, "[segment] model must be a non-empty string path")
            path = Path(model.strip()).expanduser()
            return path if path.is_absolute() else cfg.parent / path
    raise InputError(None, HOW_TO_SET)
