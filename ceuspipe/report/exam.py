"""``report.html``: one self-contained page per segment-video output folder.

:func:`build_exam_report` reads only the folder's own files (``segment.json``,
``tic.json``, ``tic.csv``, ``tic.png``, ``overlay.mp4``) and returns the page:

* the source file's name (no folder, no patient metadata);
* the layout preview (:func:`ceuspipe.video.layout_preview.render_preview` on
  overlay frames, everything outside the panels obscured);
* four to six overlay frames at phases picked from the fitted curve (before
  arrival, wash-in, peak, wash-out, late wash-out; evenly spread around the
  brightest frame when the fit failed), decoded from ``overlay.mp4``;
* the TIC plot, the parameters with units, 90 % intervals and flags, fit
  quality, a reference curve's parameters when ``tic.json`` has one;
* every warning (layout, flagged frames, truncated wash-out, failed fit);
* the model (variant, width, checkpoint hash, quantisation), versions and the
  command line (folders stripped from path arguments).

Images are embedded as base64 data URIs; nothing is loaded from elsewhere.
Every string that comes from a file is escaped.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import re
import warnings
from pathlib import Path

import numpy as np

from ceuspipe.errors import InputError
from ceuspipe.fsutil import atomic_write_text
from ceuspipe.report._html import data_uri, encode_image, esc, fmt_num, img_tag, kv_table, page, shrink
from ceuspipe.report.perfusion_sections import maps_section, motion_section
from ceuspipe.report.replenishment_section import replenishment_section

log = logging.getLogger("ceuspipe")

__all__ = ["REPORT_NAME", "build_exam_report", "write_exam_report", "pick_frame_times", "display_name",
           "redact_command_line"]

REPORT_NAME = "report.html"
FRAME_WIDTH = 560     # overlay frames are shown at most this wide (px)
PREVIEW_WIDTH = 900   # the layout preview at most this wide (px)

PARAMETER_INFO = {
    "PE": "peak enhancement above the offset", "TTP": "time to peak (clip time)",
    "TI": "arrival: 5 % of PE reached", "TO": "wash-out end: back to 5 % of PE",
    "RT": "rise time TTP - TI", "TTP_from_onset": "time to peak from the model onset",
    "FT": "fall time TO - TTP", "mTT": "mean transit time from onset",
    "WiR": "wash-in rate (largest slope)", "WoR": "wash-out rate (smallest slope)",
    "WiAUC": "area TI..TTP", "WoAUC": "area TTP..TO", "WiWoAUC": "WiAUC + WoAUC",
    "WiPI": "wash-in perfusion index WiAUC / RT", "QOF": "quality of fit",
}


def _read_json(path: Path) -> dict:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "missing (not a complete segment-video output folder)") from None
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise InputError(path, f"not valid JSON: {exc}") from None
    if not isinstance(d, dict):
        raise InputError(path, "expected a JSON object")
    return d


def display_name(path: str | None) -> str:
    """The last component of ``path`` (POSIX or Windows separators): the file name only."""
    if not path:
        return "-"
    return re.split(r"[\\/]", str(path).rstrip("\\/"))[-1] or "-"


def redact_command_line(argv) -> str | None:
    """``argv`` as one line, with folders removed from path-like arguments
    (``/data/Smith/exam.mp4`` -> ``.../exam.mp4``) so a shared report carries no
    folder names; None when no command line was recorded (a library call)."""
    if not argv:
        return None
    out = []
    for token in argv:
        token = str(token)
        prefix, sep, value = token.partition("=") if token.startswith("--") else ("", "", token)
        if re.search(r"[\\/]", value):
            value = ".../" + display_name(value)
        out.append(prefix + sep + value)
    return " ".join(out)


# ------------------------------------------------------------------ frame times


def _num(v) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def pick_frame_times(tic: dict, times: np.ndarray, values: np.ndarray | None = None,
                     excluded: np.ndarray | None = None) -> list[tuple[str, float]]:
    """Four to six ``(phase label, frame time s)`` pairs, in time order, snapped to
    ``times`` (the segmented frames' times, s).

    From a successful fit: before arrival (halfway from the first frame to TI),
    wash-in (halfway TI..TTP), peak (TTP), wash-out (halfway TTP..TO or the last
    frame) and late wash-out (TO or the last frame). Without a fit: the first
    frame, the brightest frame of ``values`` (3-frame median, excluded frames
    skipped), points between them and the last frame."""
    times = np.asarray(times, dtype=np.float64)
    times = times[np.isfinite(times)]
    if times.size == 0:
        return []
    t_first, t_last = float(times.min()), float(times.max())
    p = tic.get("parameters") or {}
    ti, ttp, to = (_num((p.get(k) or {}).get("value")) for k in ("TI", "TTP", "TO"))
    targets: list[tuple[str, float]] = []
    if tic.get("success") and math.isfinite(ti) and math.isfinite(ttp):
        ti_c, ttp_c = min(max(ti, t_first), t_last), min(max(ttp, t_first), t_last)
        end = min(to, t_last) if math.isfinite(to) else t_last
        targets = [("before arrival", t_first + 0.5 * (ti_c - t_first) if ti_c > t_first else t_first),
                   ("wash-in", 0.5 * (ti_c + ttp_c)), ("peak", ttp_c),
                   ("wash-out", 0.5 * (ttp_c + max(end, ttp_c))), ("late wash-out", max(end, ttp_c))]
        if end < t_last - 1e-6:
            targets.append(("end of clip", t_last))
    else:
        t_peak = t_first + 0.5 * (t_last - t_first)
        if values is not None and len(values) == len(times):
            v = np.asarray(values, dtype=np.float64).copy()
            if excluded is not None and len(excluded) == len(v):
                v[np.asarray(excluded, bool)] = np.nan
            if v.size >= 3:
                pad = np.concatenate(([v[0]], v, [v[-1]]))
                with warnings.catch_warnings():  # all-NaN columns (no lesion in 3 frames) stay NaN
                    warnings.simplefilter("ignore", RuntimeWarning)
                    v = np.nanmedian(np.stack([pad[:-2], pad[1:-1], pad[2:]]), axis=0)
            if np.isfinite(v).any():
                t_peak = float(times[int(np.nanargmax(v))])
        targets = [("first frame", t_first), ("rising", 0.5 * (t_first + t_peak)), ("brightest", t_peak),
                   ("falling", 0.5 * (t_peak + t_last)), ("last frame", t_last)]
    snapped: list[tuple[str, float]] = []
    seen: set[float] = set()
    for label, t in targets:
        tt = float(times[int(np.argmin(np.abs(times - t)))])
        if tt not in seen:
            seen.add(tt)
            snapped.append((label, tt))
    if len(snapped) < 4:  # short clips or coinciding phases: fill up with evenly spread frames
        for tt in np.unique(times[np.linspace(0, times.size - 1, 6).round().astype(int)]):
            if len(snapped) >= min(5, np.unique(times).size):
                break
            if float(tt) not in seen:
                seen.add(float(tt))
                snapped.append(("frame", float(tt)))
    return sorted(snapped, key=lambda x: x[1])


def _decode_frames(overlay: Path, wanted: list[float]) -> dict[float, np.ndarray]:
    """The overlay frames nearest each wanted time: ``{wanted time: (H, W, 3) uint8}``."""
    from ceuspipe.video.reader import iter_frames

    if not wanted:
        return {}
    w = np.array(sorted(wanted))
    gaps = np.diff(w)
    tol = max(1e-3, 0.5 * float(gaps[gaps > 0].min())) if (gaps > 0).any() else 0.05
    tol = min(tol, 0.05)
    best: dict[float, tuple[float, np.ndarray]] = {}

    def select(t: float) -> bool:
        return bool(np.abs(w - t).min() <= tol)

    for f in iter_frames(overlay, select=select):
        i = int(np.argmin(np.abs(w - f.time_s)))
        d = abs(float(w[i]) - f.time_s)
        if float(w[i]) not in best or d < best[float(w[i])][0]:
            best[float(w[i])] = (d, f.image)
    return {k: v[1] for k, v in best.items()}


# ------------------------------------------------------------------ sections


def _parameter_table(params: dict, table_id: str) -> str:
    head = ("<tr><th>Parameter</th><th>Value</th><th>Unit</th><th>90 % interval</th><th>Std. error</th>"
            "<th>Flags</th><th>Meaning</th></tr>")
    rows = []
    for name, p in params.items():
        if name.startswith("fit_") or not isinstance(p, dict):
            continue
        lo, hi = p.get("ci_low"), p.get("ci_high")
        ci = f"{fmt_num(lo)} – {fmt_num(hi)}" if lo is not None and hi is not None else "-"
        flags = []
        if p.get("extrapolated"):
            flags.append('<span class="warn">extrapolated</span>')
        if p.get("uncertain"):
            flags.append('<span class="warn">uncertain</span>')
        rows.append(f'<tr data-parameter="{esc(str(name))}"><td>{esc(str(name))}</td>'
                    f'<td class="num">{fmt_num(p.get("value"))}</td><td>{esc(str(p.get("unit") or ""))}</td>'
                    f'<td class="num">{ci}</td><td class="num">{fmt_num(p.get("stderr"))}</td>'
                    f'<td>{" ".join(flags) or "-"}</td><td class="muted">{esc(PARAMETER_INFO.get(name, ""))}</td></tr>')
    return f'<table id="{esc(table_id)}">{head}{"".join(rows)}</table>'


def _reference(tic: dict) -> dict | None:
    """A reference (e.g. parenchyma) curve's summary in ``tic.json``, when there is one."""
    for key in ("reference", "parenchyma"):
        ref = tic.get(key)
        if isinstance(ref, dict) and ref:
            return ref
    return None


def collect_warnings(seg: dict, tic: dict) -> list[str]:
    """Every warning of an output folder, once each: layout warnings from
    ``segment.json``, the curve's warnings, flagged frames, extrapolated (truncated
    wash-out) and uncertain parameters, a failed fit."""
    out: list[str] = []

    def add(line) -> None:
        line = str(line).strip()
        if line and line not in out:
            out.append(line)

    for w in seg.get("warnings") or []:
        add(w)
    lay = seg.get("layout") or {}
    if lay.get("warning"):
        add(f"layout: {lay['warning']}")
    if not tic.get("success", False):
        add(f"TIC fit failed: {tic.get('reason') or 'unknown reason'}")
    for name, frames in (tic.get("flags") or {}).items():
        if isinstance(frames, list) and frames:
            add(f"{len(frames)} frame(s) flagged {name} (excluded from the fit)"
                if name != "empty_mask" else f"{len(frames)} frame(s) with an empty lesion mask")
    params = tic.get("parameters") or {}
    extra = [k for k, p in params.items() if isinstance(p, dict) and p.get("extrapolated")
             and p.get("value") is not None and not k.startswith("fit_")]
    if extra:
        add("extrapolated beyond the fitted frames (truncated curve): " + ", ".join(extra))
    unc = [k for k, p in params.items() if isinstance(p, dict) and p.get("uncertain") and not k.startswith("fit_")]
    if unc:
        add("uncertain (90 % interval wider than the value): " + ", ".join(unc))
    for w in tic.get("warnings") or []:
        add(f"TIC: {w}")
    ref = _reference(tic)
    if ref is not None:
        for w in ref.get("warnings") or []:
            add(f"reference curve: {w}")
    return out


def _model_rows(seg: dict) -> list[tuple[str, str]]:
    masks = seg.get("masks")
    if masks:  # --masks: no model ran; name where the masks came from
        return [("masks", esc(f"given ({masks.get('kind')}): {display_name(masks.get('path'))}")),
                ("frames", fmt_num(masks.get("frames"))),
                ("follows the motion", "yes" if masks.get("follows_motion") else "no (one mask per frame)")]
    cfg = seg.get("model_config") or {}
    q = seg.get("model_quantization") or {}
    if q:
        quant = esc(", ".join(f"{k} {v}" for k, v in q.items() if not isinstance(v, (dict, list))) or "int8")
    else:
        quant = "none (fp32)"
    sha = seg.get("model_sha256")
    return [("variant", esc(str(cfg.get("variant", "-")))), ("width", fmt_num(cfg.get("width"))),
            ("input size", f"{fmt_num(cfg.get('size'))} px"),
            ("checkpoint", esc(display_name(seg.get("model_checkpoint") or seg.get("checkpoint")))),
            ("checkpoint sha256", f"<code>{esc(sha[:12])}</code>" if sha else "not recorded"),
            ("quantisation", quant), ("threshold", fmt_num(seg.get("threshold"))),
            ("engine / device", esc(f"{seg.get('engine', '-')} / {seg.get('device', '-')}")),
            *_precision_rows(seg.get("precision") or {})]


def _precision_rows(p: dict) -> list[tuple[str, str]]:
    """The precision decision of segment.json (absent in runs before it was recorded)."""
    if not p:
        return []
    rows = [("precision", esc(f"{p.get('used', '-')} (asked {p.get('requested', '-')}): {p.get('reason', '-')}"))]
    m = p.get("int8_model") or {}
    if m:
        rows.append(("int8 calibration", esc(f"{fmt_num(m.get('calibration_frames'))} frames"
                                             f"{' of this clip' if m.get('calibrated_on_this_clip') else ''}; "
                                             f"held-out mask Dice vs fp32 {fmt_num(m.get('held_out_dice_mean'), 4)}")))
    c = p.get("check") or {}
    if c:
        b = c.get("bounds") or {}
        verdict = '<span class="ok">passed</span>' if c.get("passed") else '<span class="bad">failed</span>'
        rows.append(("int8 check on this clip", f"{verdict}: " + esc(
            f"{fmt_num(c.get('frames'))} frames, mask Dice mean {fmt_num(c.get('dice_mean'), 4)} "
            f"(bound {fmt_num(b.get('dice_mean_min'))}), min {fmt_num(c.get('dice_min'), 4)}; curve difference "
            f"{fmt_num(c.get('curve_max_difference'), 3)} of peak (bound {fmt_num(b.get('curve_max_difference'))})")))
    return rows


def _run_rows(seg: dict, tic: dict) -> list[tuple[str, str]]:
    return [("frames segmented", f"{fmt_num(seg.get('frames'))} of {fmt_num(seg.get('frames_decoded'))} decoded"),
            ("clip duration", f"{fmt_num(seg.get('duration_s'))} s"),
            ("sampling", "every frame" if seg.get("sample_fps") is None else f"{fmt_num(seg.get('sample_fps'))} fps"),
            ("temporal smoothing", f"{fmt_num(seg.get('temporal_smoothing'))} frames"),
            ("dynamic range", f"{fmt_num(seg.get('dynamic_range_db'))} dB"),
            ("run time", f"{fmt_num(seg.get('wall_s'), 3)} s ({fmt_num(seg.get('fps'), 3)} frames/s)"),
            ("layout", esc(f"CEUS {(seg.get('layout') or {}).get('ceus')}, US {(seg.get('layout') or {}).get('us')}, "
                           f"origin {(seg.get('layout') or {}).get('origin')}, "
                           f"confidence {(seg.get('layout') or {}).get('confidence')}"))]


def _fit_rows(tic: dict) -> list[tuple[str, str]]:
    ok = bool(tic.get("success"))
    status = '<span class="ok">fitted</span>' if ok else \
        f'<span class="bad">failed: {esc(str(tic.get("reason") or "unknown"))}</span>'
    res = tic.get("residual_model") or {}
    return [("status", status), ("model", esc(str(tic.get("model", "-")))),
            ("quantity", esc(str(tic.get("quantity", "-")))),
            ("QOF", f"{fmt_num(tic.get('qof_percent'), 3)} %"),
            ("frames used", f"{fmt_num(tic.get('n_used'))} of {fmt_num(tic.get('n_frames'))}"),
            ("noise model", esc(f"{res.get('noise', '-')}; {res.get('loss', '-')}; "
                                f"{res.get('n_downweighted', 0)} frame(s) down-weighted"))]


# ------------------------------------------------------------------ the page


def build_exam_report(out_dir: str | os.PathLike) -> str:
    """The HTML of ``out_dir``'s report, from its files only (see the module doc).
    Raises :class:`InputError` when ``segment.json``, ``tic.json`` or ``overlay.mp4``
    is missing or unreadable."""
    from ceuspipe.tic.io import read_tic_csv
    from ceuspipe.video.layout_preview import render_preview
    from ceuspipe.video.panels import PanelLayout

    out = Path(out_dir)
    seg = _read_json(out / "segment.json")
    tic = _read_json(out / "tic.json")
    overlay = out / "overlay.mp4"
    if not overlay.is_file():
        raise InputError(overlay, "missing (not a complete segment-video output folder)")
    name = display_name(seg.get("source") or tic.get("source"))

    times = values = excluded = None
    if (out / "tic.csv").is_file():
        table = read_tic_csv(out / "tic.csv")
        times = table["time_s"]
        values = table.get(tic.get("quantity") or "mean_linear")
        excluded = table.get("excluded")
    if times is None:
        times = np.linspace(*(tic.get("time_range_s") or [0.0, float(seg.get("duration_s") or 0.0)]), 6)
    picks = pick_frame_times(tic, times, values, excluded)
    frames = _decode_frames(overlay, [t for _, t in picks])

    sections = [f"<h1>CEUS exam report: {esc(name)}</h1>",
                f'<p class="muted" id="source">Source file: <b>{esc(name)}</b> · generated '
                f'{esc(_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))} by ceuspipe '
                f'{esc(str((seg.get("versions") or {}).get("ceuspipe", "")))}</p>']

    warnings = collect_warnings(seg, tic)
    items = "".join(f"<li>{esc(w)}</li>" for w in warnings) or '<li class="ok" style="color:#146c2e">none</li>'
    sections.append(f'<section id="warnings"><h2>Warnings ({len(warnings)})</h2>'
                    f'<ul class="warnings">{items}</ul></section>')

    # layout preview
    preview_html = '<p class="muted">no frame could be decoded from overlay.mp4</p>'
    if frames:
        try:
            layout = PanelLayout.from_dict(seg["layout"])
            prev = render_preview([frames[k] for k in sorted(frames)], layout)
            preview_html = img_tag(data_uri(encode_image(shrink(prev, PREVIEW_WIDTH), ".jpg", 88), "image/jpeg"),
                                   "layout preview", "wide")
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("%s: no layout preview: %s", out, exc)
            preview_html = f'<p class="warn">no layout preview: {esc(str(exc))}</p>'
    sections.append('<section id="layout"><h2>Panel layout</h2>'
                    '<p class="muted">Everything outside the two panels is blurred out.</p>'
                    f"{preview_html}</section>")

    figs = []
    for label, t in picks:
        img = frames.get(t)
        if img is None:
            continue
        uri = data_uri(encode_image(shrink(img, FRAME_WIDTH), ".jpg", 85), "image/jpeg")
        figs.append(f'<figure data-phase="{esc(label)}">{img_tag(uri, f"overlay at {t:.2f} s ({label})")}'
                    f"<figcaption>{esc(label)} · {t:.2f} s</figcaption></figure>")
    sections.append('<section id="frames"><h2>Overlay frames</h2>'
                    + ("".join(figs) or '<p class="muted">none decoded</p>') + "</section>")

    png = out / "tic.png"
    plot = img_tag(data_uri(png.read_bytes(), "image/png"), "time-intensity curve", "wide") if png.is_file() \
        else '<p class="muted">no tic.png</p>'
    ref = _reference(tic)
    ref_note = "lesion and reference curves" if ref is not None else "lesion curve"
    sections.append(f'<section id="tic"><h2>Time-intensity curve ({ref_note})</h2>{plot}</section>')

    sections.append('<section id="parameters"><h2>Perfusion parameters (lesion)</h2>'
                    + _parameter_table(tic.get("parameters") or {}, "lesion-parameters")
                    + '<p class="muted">90 % intervals from the fit covariance; "extrapolated": depends on the '
                      'curve beyond the fitted frames; "uncertain": interval wider than the value.</p>')
    if ref is not None:
        sections.append("<h2>Reference curve</h2>")
        if isinstance(ref.get("parameters"), dict):
            sections.append(_parameter_table(ref["parameters"], "reference-parameters"))
        scalars = [(str(k), fmt_num(v) if isinstance(v, (int, float)) or v is None else esc(str(v)))
                   for k, v in ref.items() if not isinstance(v, (dict, list))]
        if scalars:
            sections.append(kv_table(scalars))
        relative = tic.get("relative_parameters")
        if isinstance(relative, dict) and relative:
            sections.append("<h2>Lesion relative to the reference (rPE, rWiAUC, ..., dTTP)</h2>"
                            + _parameter_table(relative, "relative-parameters"))
    sections.append("</section>")
    sections.append(replenishment_section(tic))
    sections.append(motion_section(out, seg.get("motion")))
    sections.append(maps_section(out, seg.get("maps")))
    sections.append(f'<section id="fit"><h2>Fit quality</h2>{kv_table(_fit_rows(tic))}</section>')
    sections.append(f'<section id="model"><h2>Model</h2>{kv_table(_model_rows(seg))}</section>')
    sections.append(f'<section id="run"><h2>Run</h2>{kv_table(_run_rows(seg, tic))}</section>')
    versions = {**(tic.get("versions") or {}), **(seg.get("versions") or {})}
    sections.append('<section id="versions"><h2>Versions</h2>'
                    + kv_table([(k, esc(str(v))) for k, v in sorted(versions.items())]) + "</section>")
    cmd = redact_command_line(seg.get("command_line"))
    cmd_html = f"<code>{esc(cmd)}</code>" if cmd else '<span class="muted">library call (no command line)</span>'
    sections.append(f'<section id="command"><h2>Command line</h2><p>{cmd_html}</p></section>')
    return page(f"CEUS report: {name}", "\n".join(sections))


def write_exam_report(out_dir: str | os.PathLike, dest: str | os.PathLike | None = None) -> Path:
    """Build ``out_dir``'s report and write it (atomically) to ``dest``, default
    ``out_dir/report.html``. Returns the path."""
    dest = Path(dest) if dest is not None else Path(out_dir) / REPORT_NAME
    atomic_write_text(dest, build_exam_report(out_dir))
    return dest
