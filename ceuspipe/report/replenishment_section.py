"""Report section of destruction-replenishment: ``A``, ``beta`` and ``A*beta`` with their 90 %
intervals for every refill in ``tic.json`` (lesion, and the reference curve when there is one)."""

from __future__ import annotations

from ceuspipe.report._html import esc, fmt_num

__all__ = ["replenishment_section"]

_COLUMNS = (("A", "A (blood volume)"), ("beta", "β (velocity)"), ("A_beta", "A·β (flow)"))


def _cell(p) -> str:
    """A parameter's value, unit and 90 % interval (``-`` when missing)."""
    if not isinstance(p, dict) or p.get("value") is None:
        return '<td class="num">-</td>'
    lo, hi = p.get("ci_low"), p.get("ci_high")
    ci = f" ({fmt_num(lo, 3)} – {fmt_num(hi, 3)})" if lo is not None and hi is not None else ""
    flag = ' <span class="warn">extrapolated</span>' if p.get("extrapolated") else ""
    return f'<td class="num">{fmt_num(p.get("value"))} {esc(str(p.get("unit") or ""))}{ci}{flag}</td>'


def _rows(curve: str, refills: list) -> list[str]:
    rows = []
    for i, r in enumerate(refills, 1):
        if not isinstance(r, dict):
            continue
        params = r.get("parameters") or {}
        ok = r.get("success")
        why = esc(str(r.get("reason") or "failed"))
        status = '<span class="ok">fitted</span>' if ok else f'<span class="warn">{why}</span>'
        rows.append(f'<tr data-refill="{i}"><td>{esc(curve)}</td><td class="num">{i}</td>'
                    f'<td class="num">{fmt_num(r.get("start_s"))} – {fmt_num(r.get("end_s"))}</td>'
                    + "".join(_cell(params.get(k)) for k, _ in _COLUMNS)
                    + f'<td class="num">{r.get("n_points", "-")}</td><td>{status}</td></tr>')
    return rows


def replenishment_section(tic: dict) -> str:
    """The "Replenishment" section of the exam report from a ``tic.json`` dict; empty (no
    section) when the clip had no destruction."""
    curves = [("lesion", tic.get("replenishment") or [])]
    ref = tic.get("reference")
    if isinstance(ref, dict) and ref.get("replenishment"):
        curves.append(("reference", ref["replenishment"]))
    rows = [row for name, refills in curves for row in _rows(name, refills)]
    if not rows:
        return ""
    head = ("<tr><th>Curve</th><th>Refill</th><th>Time (s)</th>"
            + "".join(f"<th>{esc(label)} (90 % interval)</th>" for _, label in _COLUMNS)
            + "<th>Frames</th><th>Fit</th></tr>")
    return ('<section id="replenishment"><h2>Replenishment</h2>'
            f'<table id="replenishment-table">{head}{"".join(rows)}</table>'
            '<p class="muted">After each destructive flash, y(t) = y0 + A·(1 − exp(−β·(t − start))) fitted '
            "to the linear intensity until the next flash; intervals from the fit covariance; "
            '"extrapolated": the refill ended before reaching its plateau (under 3 time constants).</p>'
            "</section>")
