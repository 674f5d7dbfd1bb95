"""``index.html`` at a batch output root: one row per exam of the ledger.

Each row: patient and exam ids (the folder names the output already uses, no
other patient data), status, when it finished, how long it took, key
parameters (TTP, PE, mTT, QOF) from the exam's ``tic.json`` when its segment
stage wrote one, warnings, and a link to its ``report.html`` relative to the
root. Failed exams show their error line, with the inbox folder removed from
source paths. Clicking a column header sorts by it (a few lines of inline
script); the page works without it. Written atomically by
:func:`ceuspipe.batch.runner.run_pipeline` at the end of every run.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

from ceuspipe.fsutil import atomic_write_text
from ceuspipe.report._html import esc, fmt_num, page
from ceuspipe.report.exam import REPORT_NAME, display_name

__all__ = ["INDEX_NAME", "build_index", "write_index"]

INDEX_NAME = "index.html"
KEY_PARAMETERS = ("TTP", "PE", "mTT", "QOF")

_SORT_JS = """
document.querySelectorAll('#exams th').forEach(function(th,i){th.style.cursor='pointer';
th.title='sort';th.onclick=function(){var tb=th.closest('table').tBodies[0],rows=[].slice.call(tb.rows),
d=th.dataset.dir=th.dataset.dir==='1'?'-1':'1';rows.sort(function(a,b){var x=a.cells[i].dataset.v||
a.cells[i].textContent,y=b.cells[i].dataset.v||b.cells[i].textContent,nx=parseFloat(x),ny=parseFloat(y);
return d*(isNaN(nx)||isNaN(ny)?x.localeCompare(y):nx-ny);});rows.forEach(function(r){tb.appendChild(r);});};});
"""


def _load(path: Path) -> dict:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return _dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")


def _strip_paths(line: str, inbox: str | None, path: str) -> str:
    """``line`` with the ``inbox`` folder removed from paths under it (the rest are the
    ids the output folders use) and any other occurrence of ``path`` cut to its file name."""
    if inbox:
        line = line.replace(inbox.rstrip("/\\") + os.sep, "")
    return line.replace(path, display_name(path)) if path else line


def build_index(out_root: str | os.PathLike, rows, *, inbox: str | os.PathLike | None = None) -> str:
    """The HTML of the batch index of ``out_root`` from ledger ``rows``
    (:class:`~ceuspipe.batch.ledger.ExamRow`); ``inbox`` is removed from error lines."""
    root = Path(out_root)
    rows = sorted(rows, key=lambda r: (r.patient_id, r.exam_id, r.path))
    counts: dict[str, int] = {}
    body_rows, failures = [], []
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
        exam_dir = root / r.patient_id / r.exam_id
        rel = f"{r.patient_id}/{r.exam_id}"
        tic = _load(exam_dir / "tic.json") if r.status == "done" else {}
        seg = _load(exam_dir / "segment.json") if r.status == "done" else {}
        params = tic.get("parameters") or {}
        cells = []
        for k in KEY_PARAMETERS:
            v = (params.get(k) or {}).get("value") if isinstance(params.get(k), dict) else None
            unit = (params.get(k) or {}).get("unit", "") if isinstance(params.get(k), dict) else ""
            num = "" if v is None else str(float(v))
            cells.append(f'<td class="num" data-v="{esc(num)}">{fmt_num(v, 3)}'
                         f'{" " + esc(str(unit)) if v is not None and unit else ""}</td>')
        warnings: list[str] = []
        for w in ((r.outputs or {}).get("warnings") or []) + list(seg.get("warnings") or []):
            if str(w) not in warnings:
                warnings.append(str(w))
        if tic and not tic.get("success", False):
            warnings.append(f"TIC fit failed: {tic.get('reason') or 'unknown'}")
        error = _strip_paths(r.error, str(inbox) if inbox else None, r.path) if r.error and r.status != "done" \
            else ""
        if r.status == "failed":
            failures.append((rel, error))
        report = exam_dir / REPORT_NAME
        link = f'<a href="{esc(rel + "/" + REPORT_NAME)}">report</a>' if r.status == "done" and report.is_file() \
            else "-"
        dur = (r.finished - r.started) if r.finished is not None and r.started is not None else None
        status_cls = {"done": "ok", "failed": "bad"}.get(r.status, "muted")
        notes = "<br>".join(esc(w) for w in warnings)
        if error:
            notes = (notes + "<br>" if notes else "") + f'<span class="bad">{esc(error)}</span>'
        body_rows.append(
            f'<tr data-status="{esc(r.status)}"><td>{esc(r.patient_id)}</td><td>{esc(r.exam_id)}</td>'
            f'<td class="{status_cls}">{esc(r.status)}</td><td data-v="{r.finished or ""}">{esc(_when(r.finished))}</td>'
            f'<td class="num" data-v="{"" if dur is None else dur}">{fmt_num(dur, 3)}{"" if dur is None else " s"}</td>'
            f'{"".join(cells)}<td class="warn">{notes or "-"}</td><td>{link}</td></tr>')
    head = ("<tr><th>Patient</th><th>Exam</th><th>Status</th><th>Finished</th><th>Duration</th>"
            + "".join(f"<th>{esc(k)}</th>" for k in KEY_PARAMETERS) + "<th>Warnings / error</th><th>Report</th></tr>")
    summary = ", ".join(f"{n} {esc(s)}" for s, n in sorted(counts.items())) or "no exams yet"
    parts = ["<h1>CEUS batch index</h1>",
             f'<p class="muted">{len(rows)} exam(s): {summary} · written '
             f'{esc(_dt.datetime.now().strftime("%Y-%m-%d %H:%M"))}. Click a column header to sort.</p>',
             f'<table id="exams"><thead>{head}</thead><tbody>{"".join(body_rows)}</tbody></table>']
    if failures:
        items = "".join(f"<li><b>{esc(rel)}</b>: {esc(err)}</li>" for rel, err in failures)
        parts.append(f'<section id="failures"><h2>Failures ({len(failures)})</h2><ul>{items}</ul></section>')
    return page("CEUS batch index", "\n".join(parts), _SORT_JS)


def write_index(out_root: str | os.PathLike, rows, *, inbox: str | os.PathLike | None = None) -> Path:
    """Write ``out_root/index.html`` atomically (:func:`build_index`); returns the path."""
    dest = Path(out_root) / INDEX_NAME
    atomic_write_text(dest, build_index(out_root, rows, inbox=inbox))
    return dest
