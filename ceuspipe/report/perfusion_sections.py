"""Report sections of segment-video's perfusion imaging: in-plane motion (``motion.png``)
and the parametric maps (``map_<NAME>.png``), each built from the output folder's files and
its summary in segment.json."""

from __future__ import annotations

from pathlib import Path

from ceuspipe.report._html import data_uri, esc, fmt_num, img_tag, kv_table


def motion_section(out: Path, motion: dict | None) -> str:
    """In-plane motion: ``motion.png`` and the summary of segment.json (a note when off)."""
    if not isinstance(motion, dict):
        return '<section id="motion"><h2>Motion</h2><p class="muted">not measured (--no-motion)</p></section>'
    png = out / "motion.png"
    plot = img_tag(data_uri(png.read_bytes(), "image/png"), "in-plane motion", "wide") if png.is_file() else ""
    rows = [("frames out of plane", f"{motion.get('frames_out_of_plane')} of {motion.get('frames')} (left out of "
                                    "the curve)"),
            ("RMS displacement", f"{fmt_num(motion.get('rms_displacement_px'))} px"),
            ("largest displacement", f"{fmt_num(motion.get('max_displacement_px'))} px"),
            ("score threshold", fmt_num(motion.get("score_threshold")))]
    return ('<section id="motion"><h2>Motion (from the B-mode panel)</h2>' + plot
            + kv_table([(k, esc(v)) for k, v in rows]) + "</section>")


def maps_section(out: Path, maps: dict | None) -> str:
    """Perfusion maps: the PNGs of ``maps["report_maps"]`` and how the maps were made (a note
    when off). Every map's PNG stays in the folder; the page shows a few."""
    if not isinstance(maps, dict):
        return '<section id="maps"><h2>Perfusion maps</h2><p class="muted">not computed (--no-maps)</p></section>'
    figs = []
    for name in maps.get("report_maps") or []:
        png = out / f"map_{name}.png"
        if png.is_file():
            figs.append(f'<figure class="map">{img_tag(data_uri(png.read_bytes(), "image/png"), f"{name} map")}'
                        f"<figcaption>{esc(name)}</figcaption></figure>")
    block = f"{maps.get('block_px')} x {maps.get('block_px')} px"
    if maps.get("block_mm") is not None:
        block += f" ({fmt_num(maps['block_mm'], 3)} mm)"
    failed = {k or "fitted": v for k, v in (maps.get("reasons") or {}).items()}
    rows = [("block", block), ("grid (rows x columns)", " x ".join(str(v) for v in maps.get("grid") or [])),
            ("blocks fitted", f"{maps.get('blocks_fitted')} of {maps.get('blocks_imaged')} in the imaged area"),
            ("outcomes", ", ".join(f"{k}: {v}" for k, v in failed.items())),
            ("time bins", f"{maps.get('bins')} of {fmt_num(maps.get('bin_s'), 3)} s"),
            ("model", str(maps.get("model"))),
            ("files", ", ".join([maps.get("file", ""), *(maps.get("pngs") or [])]))]
    return ('<section id="maps"><h2>Perfusion maps (per block, motion-compensated)</h2>' + "".join(figs)
            + kv_table([(k, esc(v)) for k, v in rows]) + "</section>")
