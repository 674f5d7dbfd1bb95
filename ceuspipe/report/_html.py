"""Small HTML helpers shared by the exam report and the batch index (no templates, no
external resources: one inline style sheet, data URIs for images)."""

from __future__ import annotations

import base64
import html
import math

import numpy as np

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:1.2em auto;max-width:1100px;
color:#1b1b1b;background:#fff;padding:0 1em}
h1{font-size:1.45em;margin:.2em 0}h2{font-size:1.1em;margin:1.4em 0 .4em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.88em}td,th{border:1px solid #d0d0d0;padding:.2em .5em;text-align:left;
vertical-align:top}th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums}
.warn{color:#8a3c00}.bad{color:#b00020;font-weight:600}.ok{color:#146c2e}.muted{color:#666}
ul.warnings li{color:#8a3c00}figure{display:inline-block;margin:.3em;text-align:center;width:calc(33% - .8em);
vertical-align:top}figure img{width:100%;border:1px solid #bbb}#layout img{max-width:min(100%,640px)}figcaption{font-size:.8em;color:#444}
img.wide{max-width:100%}code{font-size:.9em;word-break:break-all}
"""

esc = html.escape


def data_uri(data: bytes, mime: str) -> str:
    """``data:<mime>;base64,...`` for ``data``."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def encode_image(rgb: np.ndarray, fmt: str = ".jpg", quality: int = 85) -> bytes:
    """``(H, W, 3) uint8`` RGB -> JPEG or PNG bytes."""
    import cv2

    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == ".jpg" else []
    ok, buf = cv2.imencode(fmt, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise RuntimeError(f"{fmt} encoding failed")
    return buf.tobytes()


def shrink(rgb: np.ndarray, max_width: int) -> np.ndarray:
    """``rgb`` scaled down (area interpolation) to at most ``max_width`` pixels wide."""
    import cv2

    h, w = rgb.shape[:2]
    if w <= max_width:
        return rgb
    return cv2.resize(rgb, (max_width, max(1, round(h * max_width / w))), interpolation=cv2.INTER_AREA)


def img_tag(uri: str, alt: str, cls: str = "") -> str:
    c = f' class="{esc(cls)}"' if cls else ""
    return f'<img src="{uri}" alt="{esc(alt)}"{c}>'


def fmt_num(v, digits: int = 4) -> str:
    """A number for a table cell: ``digits`` significant digits, ``-`` for None/NaN."""
    if v is None or isinstance(v, bool):
        return "-" if v is None else str(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return esc(str(v))
    if not math.isfinite(f):
        return "-"
    return esc(format(f, f".{digits}g"))


def page(title: str, body: str, script: str = "") -> str:
    """A whole HTML5 document (UTF-8, inline style, optional inline script)."""
    js = f"<script>{script}</script>" if script else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n{js}</body></html>\n")


def kv_table(rows: list[tuple[str, str]], cls: str = "") -> str:
    """A two-column table: ``rows`` of (label, HTML value); labels are escaped."""
    c = f' class="{cls}"' if cls else ""
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table{c}>{body}</table>"
