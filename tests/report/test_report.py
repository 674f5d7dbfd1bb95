"""report.html (per exam) and index.html (per batch root): sections, escaping, no patient
data, and rendering in a real headless browser (skipped only when no chromium is found)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from ceuspipe.batch.ledger import Ledger
from ceuspipe.cli import main
from ceuspipe.report import build_index, write_index
from ceuspipe.report.exam import pick_frame_times, redact_command_line
from ceuspipe.segment import SegmentConfig, segment_video
from support.builders import phantom_clip, write_checkpoint

BROWSERS = ("chromium", "chromium-headless-shell", "chromium-browser", "google-chrome")


class Page(HTMLParser):
    """What the tests look at: section ids, images, text, warning items, parameter rows, links."""

    def __init__(self, text: str):
        super().__init__()
        self.sections, self.images, self.links, self.params = [], [], [], []
        self.text, self.warnings, self.tables = [], [], 0
        self._in_warn = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a.get("id"))
        elif tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "a":
            self.links.append(a.get("href"))
        elif tag == "tr" and "data-parameter" in a:
            self.params.append(a["data-parameter"])
        elif tag == "ul" and "warnings" in (a.get("class") or ""):
            self._in_warn = True
        elif tag == "table":
            self.tables += 1
        elif tag in ("script", "link", "iframe") and (a.get("src") or a.get("href")):
            raise AssertionError(f"external resource: {tag} {a}")

    def handle_endtag(self, tag):
        if tag == "ul":
            self._in_warn = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_warn and data.strip():
            self.warnings.append(data.strip())

    @property
    def all_text(self) -> str:
        return " ".join(self.text)


def _decode_data_uri(src: str) -> np.ndarray:
    m = re.fullmatch(r"data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)", src)
    assert m, src[:60]
    img = cv2.imdecode(np.frombuffer(base64.b64decode(m.group(2)), np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.size > 0
    return img


def _browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


_COUNT_JS = ("<script>window.addEventListener('load',function(){var n=0,t=0;"
             "document.querySelectorAll('img').forEach(function(i){t++;if(i.complete&&i.naturalWidth>0)n++;});"
             "var d=document.createElement('div');d.id='decoded';d.textContent=n+'/'+t;"
             "document.body.appendChild(d);});</script>")


def _render(html_path: Path, tmp: Path, size=(1100, 1600)) -> tuple[np.ndarray, str]:
    """(screenshot BGR, text of #decoded 'n/total') of ``html_path`` in headless chromium."""
    exe = _browser()
    if exe is None:
        pytest.skip("no chromium found (apt-get install -y chromium); browser check skipped")
    probe = tmp / f"probe_{html_path.name}"
    probe.write_text(html_path.read_text(encoding="utf-8").replace("</body>", _COUNT_JS + "</body>"),
                     encoding="utf-8")
    flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={tmp / 'chromium-profile'}", "--virtual-time-budget=3000"]
    shot = tmp / f"{html_path.stem}.png"
    subprocess.run([*flags, f"--screenshot={shot}", f"--window-size={size[0]},{size[1]}",
                    html_path.resolve().as_uri()], capture_output=True, timeout=90, check=True)
    dom = subprocess.run([*flags, "--dump-dom", probe.resolve().as_uri()], capture_output=True, text=True,
                         timeout=90, check=True).stdout
    m = re.search(r'<div id="decoded">(\d+)/(\d+)</div>', dom)
    assert m, dom[-500:]
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (size[1], size[0])
    return img, f"{m.group(1)}/{m.group(2)}"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    clip, truth = phantom_clip(root, duration_s=4.0, fps=8.0)
    ckpt = write_checkpoint(root / "tiny.pt")
    out = root / "out"
    segment_video(clip, ckpt, out, SegmentConfig(cache_dir=str(root / "cache"), maps=True))
    return SimpleNamespace(root=root, clip=clip, ckpt=ckpt, out=out, truth=truth)


# --------------------------------------------------------------------------- exam report


def test_segment_video_writes_a_complete_report(env):
    assert (env.out / "report.html").is_file()
    seg = json.loads((env.out / "segment.json").read_text())
    assert "report.html" in seg["outputs"] and seg["command_line"] is None  # a library call
    assert re.fullmatch(r"[0-9a-f]{64}", seg["model_sha256"])
    html = (env.out / "report.html").read_text(encoding="utf-8")
    page = Page(html)
    for section in ("warnings", "layout", "frames", "tic", "parameters", "fit", "model", "run", "versions",
                    "command"):
        assert section in page.sections, section
    # source: the file name only, never its folder
    assert "exam1.mp4" in page.all_text and str(env.clip.parent) not in html
    # 1 layout preview + 4..6 overlay frames + the TIC plot + the motion plot + 4 maps, all embedded and decodable
    assert 11 <= len(page.images) <= 13 and {"motion", "maps"} <= set(page.sections)
    assert all(src.startswith("data:image/") for src in page.images)
    shapes = [_decode_data_uri(src).shape for src in page.images]
    assert shapes[-6] == cv2.imread(str(env.out / "tic.png")).shape  # tic.png verbatim
    assert shapes[-5] == cv2.imread(str(env.out / "motion.png")).shape  # motion.png verbatim
    assert shapes[-4:] == [cv2.imread(str(env.out / f"map_{n}.png")).shape for n in ("PE", "TTP", "mTT", "WiR")]
    assert len(re.findall(r'<figure data-phase="', html)) == len(page.images) - 7
    # parameters with units, model identity, versions, fit quality
    assert {"PE", "TTP", "mTT", "QOF"} <= set(page.params) and not any(p.startswith("fit_") for p in page.params)
    text = page.all_text
    assert "a.u." in text and "90 % interval" in text and seg["model_sha256"][:12] in text
    assert "none (fp32)" in text and "library call" in text and "onnxruntime" in text
    assert "QOF" in text and "frames used" in text
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
    tic = json.loads((env.out / "tic.json").read_text())
    if not tic["success"]:
        assert any(w.startswith("TIC fit failed") for w in page.warnings)


def test_report_renders_in_a_headless_browser(env, tmp_path):
    img, decoded = _render(env.out / "report.html", tmp_path)
    n = len(Page((env.out / "report.html").read_text(encoding="utf-8")).images)
    assert decoded == f"{n}/{n}"
    assert float(img.astype(np.float32).var()) > 100.0  # not blank
    assert (img < 128).mean() > 0.02 and (img > 200).mean() > 0.3  # text/images on a white page


def test_report_cli_rebuilds_and_warnings_are_escaped(env, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(env.out, out)
    seg = json.loads((out / "segment.json").read_text())
    seg["warnings"] = ["<script>alert(1)</script> panels look swapped & unsure"]
    seg["command_line"] = ["ceuspipe", "segment-video", "/data/Doe^John/clip.mp4", "--out=/data/Doe^John/o"]
    (out / "segment.json").write_text(json.dumps(seg))
    (out / "report.html").unlink()
    r = CliRunner().invoke(main, ["report", str(out)])
    assert r.exit_code == 0, r.output
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    page = Page(html)
    assert any("panels look swapped" in w for w in page.warnings)
    # embedded images are base64, where any three letters turn up by chance: look outside them
    text_only = re.sub(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+", "data:...", html)
    assert "Doe" not in text_only and "ceuspipe segment-video .../clip.mp4 --out=.../o" in page.all_text
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # atomic: no temporary left
    r = CliRunner().invoke(main, ["report", str(tmp_path / "missing")])
    assert r.exit_code == 1 and "not a folder" in r.output


def test_dicom_patient_data_never_reaches_the_report(tmp_path, monkeypatch):
    from ceuspipe.synth import PhantomConfig, generate_exam

    dcm = tmp_path / "P9" / "exam1.dcm"
    truth = generate_exam(dcm, None, PhantomConfig(duration_s=3.0, fps=6.0, width=320, height=180,
                                                   container="dicom-jpeg"), seed=3)
    import pydicom

    ds = pydicom.dcmread(dcm, stop_before_pixels=True)
    name, pid = str(ds.PatientName), str(ds.PatientID)
    assert name == truth["screen"]["header"]["name"] and pid
    ckpt = write_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "out"
    argv = ["ceuspipe", "segment-video", str(dcm), "--model", str(ckpt), "-o", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setenv("CEUSPIPE_CACHE_DIR", str(tmp_path / "cache"))
    r = CliRunner().invoke(main, argv[1:])
    assert r.exit_code == 0, r.output
    assert f"report: {out / 'report.html'}" in r.output
    assert json.loads((out / "segment.json").read_text())["command_line"] == argv
    html = (out / "report.html").read_text(encoding="utf-8")
    visible = re.sub(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]+", "", html)  # base64 may hold any 4 letters
    for secret in {name, pid, *name.split("^")} - {""}:
        assert secret.lower() not in visible.lower(), secret
    assert "exam1.dcm" in visible and str(tmp_path) not in visible
    page = Page(html)
    assert len(page.images) >= 6 and all(_decode_data_uri(s).size for s in page.images)


def test_frame_times_follow_the_fitted_curve():
    times = np.arange(0, 60.0, 0.5)
    tic = {"success": True, "parameters": {"TI": {"value": 10.0}, "TTP": {"value": 20.0}, "TO": {"value": 45.0}}}
    picks = pick_frame_times(tic, times)
    assert [l for l, _ in picks] == ["before arrival", "wash-in", "peak", "wash-out", "late wash-out",
                                     "end of clip"]
    assert [t for _, t in picks] == [5.0, 15.0, 20.0, 32.5, 45.0, 59.5]
    # truncated wash-out: TO beyond the clip
    tic["parameters"]["TO"]["value"] = 80.0
    assert [t for _, t in pick_frame_times(tic, times)] == [5.0, 15.0, 20.0, 39.5, 59.5]
    # no fit: around the brightest frame; tiny clips still give up to 4 distinct frames
    values = np.exp(-((times - 30.0) / 8.0) ** 2)
    picks = pick_frame_times({"success": False}, times, values)
    assert dict((l, t) for l, t in picks)["brightest"] in (29.5, 30.0) and len(picks) == 5
    assert len(pick_frame_times({"success": False}, np.array([0.0, 0.1, 0.2, 0.3]))) == 4
    assert redact_command_line(None) is None


# --------------------------------------------------------------------------- batch index


def test_batch_index_rows_links_failures_and_browser(env, tmp_path):
    out = tmp_path / "out"
    inbox = tmp_path / "inbox"
    shutil.copytree(env.out, out / "P001" / "visit1_clip")
    done = SimpleNamespace(path=inbox / "P001" / "visit1" / "clip.mp4", patient_id="P001", exam_id="visit1_clip")
    bad = SimpleNamespace(path=inbox / "P002" / "visit1" / "clip.mp4", patient_id="P002", exam_id="visit1_clip")
    with Ledger(out) as ledger:
        run = ledger.start_run("nightly.toml", "h")
        ledger.mark_running([(done, 1, 0.0, "a"), (bad, 1, 0.0, "b")], run, "h")
        ledger.mark_done(str(done.path), {"dir": "P001/visit1_clip", "warnings": ["<b>uncertain layout</b>"]})
        ledger.mark_failed(str(bad.path), f"{bad.path}: not a video (no stream)")
        path = write_index(out, list(ledger.exams()), inbox=inbox)
    html = path.read_text(encoding="utf-8")
    page = Page(html)
    assert page.links == ["P001/visit1_clip/report.html"] and (out / page.links[0]).is_file()
    assert "failures" in page.sections and "P002/visit1/clip.mp4: not a video (no stream)" in page.all_text
    assert str(inbox) not in html and "&lt;b&gt;uncertain layout&lt;/b&gt;" in html
    assert html.count('data-status="done"') == 1 and html.count('data-status="failed"') == 1
    assert "TTP" in page.all_text and "mTT" in page.all_text and page.images == []
    assert len(re.findall(r"<script>", html)) == 1 and len(html.split("<script>")[1].split("</script>")[0]) < 800
    img, decoded = _render(path, tmp_path, size=(1100, 500))
    assert decoded == "0/0" and float(img.astype(np.float32).var()) > 50.0
    # the CLI rebuilds it from the ledger
    path.unlink()
    r = CliRunner().invoke(main, ["report", str(out)])
    assert r.exit_code == 0 and path.is_file(), r.output
    assert build_index(out, []).count("<tr") == 1  # header only
