"""Pipeline files: the TOML that tells ``ceuspipe run`` what to do with new exams.

```toml
inbox = "/data/ceus/inbox"          # scanned recursively for videos / DICOM
output = "/data/ceus/processed"     # OUT/<patient_id>/<exam_id>/ and OUT/.ceuspipe/
jobs = 2                            # exams in parallel on this machine (-1: one per core)
scheduler = "tcp://head:8786"       # optional: a Dask scheduler instead of local processes
settle_seconds = 10                 # files modified more recently are left for the next run
recheck_seconds = 2                 # second look at size/mtime this long after the first
exam_timeout_seconds = 1800         # an exam still running after this is stopped and failed

[stages.keyframes]                  # stages run in file order, each with its options
sample_fps = 1.0
k = 40

[stages.segment]
model = "/models/ceusegnet/best.pt"
```

Relative paths (``inbox``, ``output`` and path options of stages) resolve
against the folder of the pipeline file. A stage table may name its function
with ``function = "package.module:function"`` (a site's own stage); otherwise
the table name is looked up in :mod:`ceuspipe.batch.stages` (or is itself a
quoted ``"module:function"``).

Every problem raises :class:`~ceuspipe.errors.InputError` whose one line names
the file and the key, e.g. ``nightly.toml: jobs: must be an integer >= 1 or -1``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ceuspipe.errors import InputError

DEFAULT_SETTLE_S = 10.0
DEFAULT_RECHECK_S = 2.0
#: Seconds an exam may run before it is stopped and failed as "timed out" (local workers).
DEFAULT_EXAM_TIMEOUT_S = 1800.0
_TOP_KEYS = {"inbox", "output", "jobs", "scheduler", "settle_seconds", "recheck_seconds",
             "exam_timeout_seconds", "stages"}


@dataclass(frozen=True)
class StageSpec:
    """One stage of a pipeline: ``name`` (its key in the file and in the ledger's
    outputs), ``function`` (registry name or ``module:function``) and its options
    (already checked, paths made absolute)."""

    name: str
    function: str
    options: dict[str, Any]


@dataclass(frozen=True)
class Pipeline:
    """A loaded pipeline file; every path is absolute. Times are in seconds."""

    path: Path
    inbox: Path
    output: Path
    stages: tuple[StageSpec, ...]
    jobs: int = 1
    scheduler: str | None = None
    settle_s: float = DEFAULT_SETTLE_S
    recheck_s: float = DEFAULT_RECHECK_S
    exam_timeout_s: float = DEFAULT_EXAM_TIMEOUT_S

    @property
    def stages_hash(self) -> str:
        """Short sha256 of the stages and their options (recorded per exam in the ledger)."""
        return stages_hash(self.stages)


def stages_hash(stages: tuple[StageSpec, ...] | list[StageSpec]) -> str:
    blob = json.dumps([[s.name, s.function, s.options] for s in stages], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _number(path: Path, key: str, value: Any, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise InputError(path, f"{key}: must be a number >= {minimum:g} (seconds), got {value!r}")
    return float(value)


def _path(path: Path, key: str, value: Any) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise InputError(path, f"{key}: must be a non-empty path string, got {value!r}")
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else (path.parent / p).resolve()


def load_pipeline(path: str | os.PathLike) -> Pipeline:
    """Read and check a pipeline file (see the module docstring for its keys)."""
    from ceuspipe.batch.stages import prepare_options

    path = Path(path).resolve()
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise InputError(path, "pipeline file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(path, f"not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise InputError(path, "not valid TOML (not UTF-8 text)") from None
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None

    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise InputError(path, f"{unknown[0]}: unknown key (known: {', '.join(sorted(_TOP_KEYS))})")
    for key in ("inbox", "output"):
        if key not in data:
            raise InputError(path, f"{key}: missing (a folder path)")
    inbox = _path(path, "inbox", data["inbox"])
    output = _path(path, "output", data["output"])
    if output == inbox or inbox in output.parents:
        raise InputError(path, "output: must not be inside the inbox (outputs would be found as new exams)")

    jobs = data.get("jobs", 1)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or (jobs < 1 and jobs != -1):
        raise InputError(path, f"jobs: must be an integer >= 1 or -1 (one per core), got {jobs!r}")
    scheduler = data.get("scheduler")
    if scheduler is not None and (not isinstance(scheduler, str) or not scheduler.strip()):
        raise InputError(path, f"scheduler: must be an address string like tcp://host:8786, got {scheduler!r}")
    settle = _number(path, "settle_seconds", data.get("settle_seconds", DEFAULT_SETTLE_S))
    recheck = _number(path, "recheck_seconds", data.get("recheck_seconds", DEFAULT_RECHECK_S))
    timeout = _number(path, "exam_timeout_seconds", data.get("exam_timeout_seconds", DEFAULT_EXAM_TIMEOUT_S),
                      minimum=0.1)

    tables = data.get("stages")
    if not isinstance(tables, dict) or not tables:
        raise InputError(path, "stages: missing; add at least one [stages.<name>] table")
    stages = []
    for name, options in tables.items():
        key = f"stages.{name}"
        if not isinstance(options, dict):
            raise InputError(path, f"{key}: must be a table ([{key}]) of options")
        options = dict(options)
        function = options.pop("function", name)
        if not isinstance(function, str) or not function:
            raise InputError(path, f"{key}.function: must be a 'module:function' string")
        try:
            options = prepare_options(function, options, path.parent)
        except InputError:
            raise
        except (ValueError, TypeError, KeyError, ImportError, AttributeError) as exc:
            msg = exc.args[0] if exc.args else str(exc)
            raise InputError(path, f"{key}{'.' if not str(msg).startswith(':') else ''}{msg}") from None
        stages.append(StageSpec(name=name, function=function, options=options))
    return Pipeline(path=path, inbox=inbox, output=output, stages=tuple(stages), jobs=jobs,
                    scheduler=scheduler, settle_s=settle, recheck_s=recheck, exam_timeout_s=timeout)
