"""Fuzz worker: decode every file of a folder, run the key-frame driver on it, report.

Usage: ``python tests/support/fuzz_worker.py FOLDER OUT_ROOT REPORT``. Runs in its own
process so that a crash in a native decoder (segfault, abort) is seen by the
parent as a signal exit; before each file the worker appends ``START name`` to
REPORT (flushed), after it one JSON line ``{"file", "outcome", "detail", "left"}``
where ``outcome`` is ``ok`` or ``input_error`` (a CeuspipeError); any other
exception is ``crash`` with its class and message. ``left`` lists what the
key-frame driver left under OUT_ROOT for a failed file (must be empty).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path


#: Address-space limit for the worker: a damaged header that makes something allocate
#: without bound shows up as a MemoryError ("crash") instead of exhausting the machine.
MEMORY_LIMIT = 6 << 30


def main(folder: str, out_root: str, report: str) -> int:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    from ceuspipe.errors import CeuspipeError
    from ceuspipe.inputs import ExamInput
    from ceuspipe.keyframes import KeyframeConfig, extract_exam
    from ceuspipe.video.reader import iter_frames, probe

    logging.getLogger("ceuspipe").setLevel(logging.CRITICAL)
    out = Path(out_root)
    config = KeyframeConfig(sample_fps=4.0, k=3)
    with open(report, "a", encoding="utf-8") as rep:
        for path in sorted(Path(folder).iterdir()):
            rep.write(f"START {path.name}\n")
            rep.flush()
            outcome, detail, left = "ok", "", []
            exam = None
            t0 = time.perf_counter()
            try:
                probe(path)
                n = sum(1 for _ in iter_frames(path))
                exam = ExamInput(path, "fuzz", path.name.replace(".", "_"))
                result = extract_exam(exam, out, config)
                detail = f"{n} frames, {result.n_selected} key frames"
                folder_out = out / "fuzz" / exam.exam_id
                if not (folder_out / "keyframes.json").is_file():
                    outcome, detail = "crash", "returned without a complete output folder"
            except CeuspipeError as exc:
                outcome, detail = "input_error", str(exc)
                if "\n" in detail:
                    outcome = "crash"
                mine = out / "fuzz" / exam.exam_id if exam is not None else None
                left = sorted(str(p.relative_to(out)) for p in out.rglob("*")
                              if p == mine or p.name.startswith("."))
            except Exception as exc:  # noqa: BLE001 - that is what the fuzz run looks for
                outcome, detail = "crash", f"{exc.__class__.__name__}: {exc}"
            rep.write(json.dumps({"file": path.name, "outcome": outcome, "detail": detail[:300],
                                  "left": left,
                                  "seconds": round(time.perf_counter() - t0, 3)}) + "\n")
            rep.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
