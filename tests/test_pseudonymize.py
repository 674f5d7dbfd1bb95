"""Shareable datasets: ``--pseudonymize KEYFILE`` for keyframes and build-dataset.

Phantom DICOM cines in patient folders with real-looking names go through
``ceuspipe keyframes --pseudonymize`` and (from plain key frames annotated from the
phantom truth) ``ceuspipe build-dataset --pseudonymize``; every output file is then
scanned (raw bytes, decompressed PNG chunks, JSON text) for the folder names, file
stems and DICOM patient attributes of the sources, and none is found.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pydicom
from click.testing import CliRunner

from ceuspipe.cli import main
from ceuspipe.synth.config import PhantomConfig
from ceuspipe.synth.generate import generate_exam

PATIENTS = ("Doe_Johnathan", "Mustermann_Erika")


def _phantom(root: Path) -> list[str]:
    """Two DICOM exams, ``root/<patient>/Visit_Alpha_<n>.dcm``; returns the strings that
    must not leak: folder names, stems, DICOM PatientName/PatientID/StudyDate."""
    cfg = PhantomConfig(duration_s=6, fps=2, width=320, height=180, container="dicom-rgb")
    words = {root.name}
    for k, pid in enumerate(PATIENTS):
        clip = root / pid / f"Visit_Alpha_{k}.dcm"
        generate_exam(clip, None, cfg, seed=40 + k, patient=pid)
        ds = pydicom.dcmread(clip, stop_before_pixels=True)
        words |= {pid, clip.stem, str(ds.PatientName), str(ds.PatientID)}
        if str(ds.get("StudyDate", "")):
            words.add(str(ds.StudyDate))
    return sorted(w for w in words if len(w) >= 4)


def _texts(path: Path) -> list[bytes]:
    """Raw bytes, plus for PNGs every chunk's data (zlib-inflated where possible)."""
    data = path.read_bytes()
    out = [data]
    if data.startswith(b"\x89PNG"):
        i = 8
        while i + 8 <= len(data):
            n = int.from_bytes(data[i:i + 4], "big")
            kind, body = data[i + 4:i + 8], data[i + 8:i + 8 + n]
            if kind != b"IDAT":
                out.append(body)
                for start in range(len(body)):
                    try:
                        out.append(zlib.decompress(body[start:]))
                        break
                    except zlib.error:
                        continue
            i += 12 + n
    if path.suffix == ".json":
        out.append(json.dumps(json.loads(data)).encode())
    return out


def _leaks(root: Path, words: list[str]) -> list[str]:
    found = []
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        for w in words:
            if w.lower() in rel.lower():
                found.append(f"name {rel}: {w}")
        if p.is_file():
            for blob in _texts(p):
                low = blob.lower()
                for w in words:
                    if w.lower().encode() in low:
                        found.append(f"{rel}: {w}")
    return sorted(set(found))


def test_pseudonymized_outputs_carry_no_source_names(tmp_path):
    src = tmp_path / "Clinic_Sources"
    words = _phantom(src)
    assert "Doe_Johnathan" in words
    key = tmp_path / "secret" / "key.json"
    runner = CliRunner()

    kf = tmp_path / "kf_pseudo"
    res = runner.invoke(main, ["keyframes", str(src), str(kf), "-k", "3", "--pseudonymize", str(key)])
    assert res.exit_code == 0, res.output
    assert key.exists() and (key.stat().st_mode & 0o077) == 0
    assert _leaks(kf, words) == []
    mapping = json.loads(key.read_text())
    assert sorted(mapping["patients"].values()) == sorted(PATIENTS)
    ids = sorted(p.name for p in kf.iterdir() if p.is_dir())
    assert ids == sorted(mapping["patients"]) and all(i.startswith("P-") for i in ids)
    doc = json.loads(next(kf.rglob("keyframes.json")).read_text())
    assert doc["source"] is None and doc["pseudonymized"] is True
    # stable: a second run with the same key gives the same ids
    kf2 = tmp_path / "kf_pseudo2"
    assert runner.invoke(main, ["keyframes", str(src), str(kf2), "-k", "3", "--pseudonymize", str(key)]).exit_code == 0
    assert sorted(p.name for p in kf2.iterdir() if p.is_dir()) == ids
    # the key file may not lie in the output
    res = runner.invoke(main, ["keyframes", str(src), str(kf), "--pseudonymize", str(kf / "key.json")])
    assert res.exit_code == 1 and "outside the output folder" in res.output

    # plain key frames (they name their sources), annotated, then a pseudonymised dataset
    plain, ann, ds = tmp_path / "kf_plain", tmp_path / "ann", tmp_path / "dataset"
    assert runner.invoke(main, ["keyframes", str(src), str(plain), "-k", "3"]).exit_code == 0
    assert _leaks(plain, words) != []  # without the option, sources are named (data/README.md)
    res = runner.invoke(main, ["annotate-phantom", str(plain), str(src), str(ann)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["build-dataset", str(plain), str(ann), str(ds), "--max-tries", "5",
                               "--frames-per-patient", "1", "--test-fraction", "0.5", "--min-separation-s", "0",
                               "--pseudonymize", str(key)])
    assert res.exit_code == 0, res.output
    assert _leaks(ds, words) == []
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["sources"] == [] and meta["numTraining"] + meta["numTest"] == 2
    splits = json.loads((ds / "splits.json").read_text())
    assert sorted(splits["train_patients"] + splits["test_patients"]) == ids  # same pseudonyms as keyframes


def _pseudonymize_many(keyfile: str, worker: int, barrier) -> dict:
    import time

    from ceuspipe import pseudonym
    from ceuspipe.pseudonym import Pseudonymizer

    # Widen the windows a race needs (check-then-create, read-merge-write) to 0.2 s.
    slow_write, token = Pseudonymizer._write, pseudonym.secrets.token_bytes
    Pseudonymizer._write = lambda self: (time.sleep(0.2), slow_write(self))[1]
    pseudonym.secrets.token_bytes = lambda n: (time.sleep(0.2), token(n))[1]
    barrier.wait()  # every worker opens the (missing) key file at the same moment
    try:
        ps = Pseudonymizer(keyfile)
        got = {f"patient{worker}_{i}": ps.patient(f"patient{worker}_{i}") for i in range(5)}
        ps.save()
    except Exception as exc:  # noqa: BLE001 - ceuspipe errors do not pickle back through a Pool
        return {"error": f"{type(exc).__name__}: {exc}"}
    return got


def test_parallel_workers_share_one_secret_and_keep_every_mapping(tmp_path):
    """Six processes start on a missing key file at once (a batch run's parallel
    keyframes stage), each slowed inside creating and saving: one secret is made, every pseudonym a worker handed out is the
    one the final key file gives, and no worker's mapping is lost. The key file is
    0600 and no temporary file is left beside it."""
    import multiprocessing as mp
    import os
    import stat

    from ceuspipe.pseudonym import Pseudonymizer

    keyfile = str(tmp_path / "keys" / "key.json")
    ctx = mp.get_context("spawn")
    barrier = ctx.Manager().Barrier(6)
    with ctx.Pool(6) as pool:
        results = pool.starmap(_pseudonymize_many, [(keyfile, w, barrier) for w in range(6)])
    final = Pseudonymizer(keyfile)
    assert not [r["error"] for r in results if "error" in r]
    handed = {k: v for r in results for k, v in r.items()}
    assert len(handed) == 30
    assert {final.patient(k): k for k in handed} == {v: k for k, v in handed.items()}
    assert final.patients == {v: k for k, v in handed.items()}
    assert stat.S_IMODE(os.stat(keyfile).st_mode) == 0o600
    assert sorted(os.listdir(tmp_path / "keys")) == ["key.json", "key.json.lock"]
