"""Fault soak of ``ceuspipe run`` (issue 14): kill it, starve it, hang it, then check the outputs.

About 30 small phantom exams (``ceuspipe synth``, generated once and cached) go into
an inbox, some of them damaged on purpose (truncated, garbage header) and one named
``hang`` that the site stage of this soak hangs on. ``ceuspipe run`` subprocesses
(the real ``keyframes`` stage, k=3, then a site stage that writes a marker file)
process them round after round while faults are injected at seeded random moments:

* ``kill_run``: kill -9 of the ``ceuspipe run`` process;
* ``kill_worker``: kill -9 of one exam's worker process (once or twice);
* ``sigterm``: SIGTERM to the run (it must exit 143, release its exams and the lock);
* ``disk_full``: the output root is a tmpfs shrunk to what is used plus about one
  exam's outputs for two runs, then enlarged again (``mount -o remount,size=``);
  without mount permission a flag file makes the site stage raise ENOSPC instead
  (said in the output);
* the ``hang`` exam: stopped after ``exam_timeout_seconds`` (3 s) in every run that tries it.

Runs are repeated (``--settle 0 --recheck 0``, ``--retry-failed`` while some failure
was transient) until every exam is done or failed as expected, bounded by
``--max-rounds`` and ``--max-seconds``. A last fault-free run must then change
nothing, and the ground truth is checked: every exam the ledger marks done has
complete outputs in ``OUT/<patient>/<exam>/`` (keyframes.json with k frames whose PNGs
decode, scores.csv, batch.json, the marker), nothing is left under
``OUT/.ceuspipe/tmp``, the lock is free, no process of the soak is left running.

    python benchmarks/soak_batch.py [--exams 30] [--seed 0] [--out bench_out/soak]

Needs root for the tmpfs (falls back otherwise). Exit status 1 when an exam was lost,
a done exam has incomplete outputs, or another invariant broke (listed as ANOMALY).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ceuspipe.batch.ledger import Ledger, ledger_path  # noqa: E402
from ceuspipe.batch.lock import OutputLock, current_holder  # noqa: E402

K = 3
EXAM_TIMEOUT_S = 3
JOBS = 2
RUN_LIMIT_S = 90  # a run still alive after this counts as hung and is killed
SIGTERM_LIMIT_S = 30  # a run must exit this soon after SIGTERM
BIG_DISK = "256m"
EXPECTED_BAD_INPUT = re.compile(r"not a video|damaged|truncated|invalid data", re.IGNORECASE)
TAG_VAR = "CEUSPIPE_SOAK_TAG"

STAGE_MODULE = '''"""Site stage of the batch soak (written by benchmarks/soak_batch.py)."""
import hashlib
import json
import os
import time
from pathlib import Path


def marker_stage(exam, exam_tmp_dir, options):
    """Hang when the file name contains ``hang_word``; raise ENOSPC while ``enospc_flag``
    exists; else write ``soak_marker.json`` (sha256 and ids of the input)."""
    name = Path(exam.path).name
    if options.get("hang_word") and options["hang_word"] in name:
        end = time.monotonic() + float(options.get("hang_s", 300))
        while time.monotonic() < end:
            time.sleep(0.2)
    if options.get("enospc_flag") and os.path.exists(options["enospc_flag"]):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(exam_tmp_dir))
    time.sleep(float(options.get("delay_s", 0)))
    data = Path(exam.path).read_bytes()
    marker = Path(exam_tmp_dir) / "soak_marker.json"
    marker.write_text(json.dumps({"sha256": hashlib.sha256(data).hexdigest(),
                                  "patient_id": exam.patient_id, "exam_id": exam.exam_id}))
    return {"marker": marker}
'''


# ------------------------------------------------------------------ processes (Linux /proc)


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _children(pid: int) -> list[int]:
    return [p for p in _pids() if _ppid(p) == pid]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def workers_of(run_pid: int) -> list[int]:
    """Exam worker processes of a run: the children of its forkserver."""
    servers = [c for c in _children(run_pid) if b"forkserver" in _cmdline(c)]
    return [w for s in servers for w in _children(s)]


def tagged_processes(tag: str) -> list[int]:
    """Live processes (not zombies) started by this soak (``TAG_VAR=tag`` in their environment)."""
    me, found = os.getpid(), []
    needle = f"{TAG_VAR}={tag}".encode()
    for pid in _pids():
        if pid == me:
            continue
        try:
            if needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(pid)
        except OSError:
            continue
    return found


def _kill9(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False


# ------------------------------------------------------------------ disk


class Disk:
    """The output root on a tmpfs that can be shrunk and enlarged; or, when mounting is
    not allowed, a flag file that makes the site stage raise ENOSPC."""

    def __init__(self, out: Path, flag: Path, mount: bool = True):
        self.out, self.flag, self.mounted = out, flag, False
        out.mkdir(parents=True, exist_ok=True)
        why = "--no-mount"
        if mount:
            try:
                res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={BIG_DISK}", "soak_tmpfs", str(out)],
                                     capture_output=True, text=True)
                self.mounted, why = res.returncode == 0, f"mount failed: {res.stderr.strip() or res.returncode}"
            except OSError as exc:
                why = f"mount failed: {exc}"
        self.how = (f"tmpfs on {out} (size {BIG_DISK}; shrunk to used + ~1 exam while full)"
                    if self.mounted else
                    f"FALLBACK ({why}): no real full disk; the site stage raises OSError(ENOSPC) "
                    f"while {flag} exists")

    def used_bytes(self) -> int:
        st = os.statvfs(self.out)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def fill(self, spare_bytes: int) -> str:
        if not self.mounted:
            self.flag.write_text("full\n")
            return "flag set"
        size_k = (self.used_bytes() + spare_bytes) // 1024 + 1
        subprocess.run(["mount", "-o", f"remount,size={size_k}k", str(self.out)], check=True)
        return f"tmpfs size {size_k} KiB ({self.used_bytes() // 1024} KiB used)"

    def free(self) -> None:
        if self.mounted:
            subprocess.run(["mount", "-o", f"remount,size={BIG_DISK}", str(self.out)], check=True)
        self.flag.unlink(missing_ok=True)

    def close(self) -> None:
        self.flag.unlink(missing_ok=True)
        if self.mounted:
            res = subprocess.run(["umount", str(self.out)], capture_output=True, text=True)
            if res.returncode != 0:
                subprocess.run(["umount", "-l", str(self.out)], capture_output=True)
            self.mounted = False


def unmount_leftover(out: Path) -> None:
    """A soak killed earlier may have left its tmpfs mounted."""
    while os.path.ismount(out):
        if subprocess.run(["umount", str(out)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(out)], check=True)


# ------------------------------------------------------------------ exams


def make_phantoms(cache: Path, n: int) -> list[Path]:
    """``n`` short 320x180 phantom clips: half 4 s at 8 fps, half 6 s at 6 fps (cached)."""
    groups = [(n - n // 2, 4.0, 8.0, 1), (n // 2, 6.0, 6.0, 2)]
    clips: list[Path] = []
    for count, dur, fps, seed in groups:
        if count == 0:
            continue
        folder = cache / f"n{count}_{dur:g}s_{fps:g}fps_320x180_s{seed}"
        found = sorted(folder.glob("*/*.mp4"))
        if len(found) != count:
            shutil.rmtree(folder, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "ceuspipe", "-q", "synth", str(folder), "--patients",
                            str(count), "--duration-s", str(dur), "--fps", str(fps), "--width", "320",
                            "--height", "180", "--preset", "ultrafast", "--seed", str(seed)],
                           check=True, env=_env(None, ""), stdout=subprocess.DEVNULL)
            found = sorted(folder.glob("*/*.mp4"))
        clips += found
    return clips


def build_exams(staging: Path, inbox: Path, clips: list[Path], rng: random.Random) -> dict[str, str]:
    """Write the exams under ``staging/P###/<name>.mp4``; returns ``{inbox path: kind}``
    (kind ``ok``, ``truncated``, ``corrupt`` or ``hang``) for :func:`deliver`."""
    n = len(clips)
    n_trunc = n_corrupt = max(1, n // 15)
    kinds = ["truncated"] * n_trunc + ["corrupt"] * n_corrupt + ["hang"]
    kinds += ["ok"] * max(0, n - len(kinds))
    kinds = kinds[:n]
    rng.shuffle(kinds)
    truth = {}
    for i, (clip, kind) in enumerate(zip(clips, kinds), 1):
        data = clip.read_bytes()
        if kind == "truncated":
            data = data[: int(len(data) * rng.uniform(0.2, 0.9))]
        elif kind == "corrupt":
            head = rng.randint(512, 8192)
            data = rng.randbytes(head) + data[head:]
        rel = Path(f"P{i:03d}") / f"{ {'ok': 'exam1', 'hang': 'hang'}.get(kind, kind)}.mp4"
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).write_bytes(data)
        truth[str(inbox / rel)] = kind
    return truth


def deliver(staging: Path, inbox: Path, paths: list[str]) -> None:
    """Move exams from ``staging`` into the inbox, each appearing complete (rename)."""
    for path in paths:
        rel = Path(path).relative_to(inbox)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / rel, path)


def failed_as_expected(kind: str, path: str, error: str | None) -> bool:
    if kind == "ok" or not error or "\n" in error or not error.startswith(f"{path}: "):
        return False
    if kind == "hang":
        return "timed out" in error
    return bool(EXPECTED_BAD_INPUT.search(error)) and not any(
        w in error for w in ("timed out", "worker process died", "No space", "interrupted", "stopped"))


def settled(truth: dict[str, str], rows: dict) -> bool:
    for path, kind in truth.items():
        row = rows.get(path)
        if row is None:
            return False
        if kind == "ok" and row.status != "done":
            return False
        if kind != "ok" and not (row.status == "failed" and failed_as_expected(kind, path, row.error)):
            return False
    return True


def transient_failures(truth: dict[str, str], rows: dict) -> int:
    """Failed exams whose failure was not the expected one (worker killed, disk full...)."""
    return sum(1 for p, r in rows.items() if r.status == "failed"
               and not failed_as_expected(truth.get(p, "ok"), p, r.error))


def read_rows(out: Path) -> dict:
    if not ledger_path(out).exists():
        return {}
    with Ledger(out, create=False) as ledger:
        return ledger.all()


def last_run_id(out: Path) -> int:
    if not ledger_path(out).exists():
        return 0
    with Ledger(out, create=False) as ledger:
        runs = ledger.runs(1)
    return runs[0].id if runs else 0


# ------------------------------------------------------------------ checks of a done exam


def output_problems(out: Path, row, source_sha: str) -> list[str]:
    """What is missing or wrong in the folder of an exam the ledger marks done."""
    from PIL import Image

    d = out / row.patient_id / row.exam_id
    problems = []
    try:
        meta = json.loads((d / "keyframes.json").read_text())
        frames = meta["frames"]
        if len(frames) != K:
            problems.append(f"keyframes.json lists {len(frames)} frames, not {K}")
        if meta.get("source") != row.path:
            problems.append(f"keyframes.json is of {meta.get('source')}")
        for fr in frames:
            for key in ("frame_path", "ceus_path", "us_path"):
                with Image.open(d / fr[key]) as im:
                    im.load()
        lines = (d / "scores.csv").read_text().splitlines()
        if len(lines) != meta["n_samples"] + 1:
            problems.append(f"scores.csv has {len(lines) - 1} rows, not {meta['n_samples']}")
        record = json.loads((d / "batch.json").read_text())
        if record.get("source") != row.path or record.get("sha256") != source_sha:
            problems.append("batch.json names another source or content")
        marker = json.loads((d / "soak_marker.json").read_text())
        if marker.get("sha256") != source_sha:
            problems.append("soak_marker.json is of other content")
    except Exception as exc:  # noqa: BLE001 - any problem is a finding
        problems.append(f"{exc.__class__.__name__}: {exc}")
    if row.sha256 != source_sha:
        problems.append("ledger sha256 differs from the inbox file")
    return problems


# ------------------------------------------------------------------ one run


def _env(site: Path | None, tag: str) -> dict:
    env = dict(os.environ)
    parts = [str(site)] if site else []
    env["PYTHONPATH"] = os.pathsep.join(parts + [str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    env[TAG_VAR] = tag
    return env


class Soak:
    def __init__(self, args, work: Path):
        self.args, self.work = args, work
        self.rng = random.Random(args.seed)
        self.inbox, self.out, self.site, self.logs = (work / "inbox", work / "out", work / "site",
                                                      work / "logs")
        self.staging = work / "staging"
        self.tag = uuid.uuid4().hex
        self.anomalies: list[str] = []
        self.faults = {"kill_run": 0, "kill_worker": 0, "sigterm": 0, "disk_full_runs": 0, "missed": 0}
        self.rounds = 0
        self.t0 = time.monotonic()

    def anomaly(self, text: str) -> None:
        self.anomalies.append(text)
        print(f"  ANOMALY: {text}", flush=True)

    def write_pipeline(self, enospc_flag: Path) -> Path:
        self.site.mkdir(parents=True, exist_ok=True)
        (self.site / "soak_stages.py").write_text(STAGE_MODULE)
        pipe = self.work / "soak.toml"
        pipe.write_text("\n".join([
            f"inbox = {json.dumps(str(self.inbox))}", f"output = {json.dumps(str(self.out))}",
            f"jobs = {JOBS}", f"exam_timeout_seconds = {EXAM_TIMEOUT_S}",
            "settle_seconds = 0", "recheck_seconds = 0",
            "[stages.keyframes]", f"k = {K}", "sample_fps = 1.0",
            "[stages.marker]", 'function = "soak_stages:marker_stage"', 'hang_word = "hang"',
            "delay_s = 0.1", f"enospc_flag = {json.dumps(str(enospc_flag))}", ""]))
        self.pipe = pipe
        return pipe

    def run(self, fault: str, retry: bool, remaining: int) -> tuple[int | None, str]:
        """One ``ceuspipe run`` with ``fault`` injected; returns (exit code, what happened)."""
        self.rounds += 1
        cmd = [sys.executable, "-m", "ceuspipe", "run", str(self.pipe), "--settle", "0", "--recheck", "0"]
        if retry:
            cmd.append("--retry-failed")
        runs_before = last_run_id(self.out)
        log_path = self.logs / f"round{self.rounds:03d}_{fault}.log"
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, env=_env(self.site, self.tag), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, cwd=REPO)
            t_start = time.monotonic()
            note = self._inject(proc, fault, remaining)
            try:
                rc = proc.wait(timeout=max(1.0, RUN_LIMIT_S - (time.monotonic() - t_start)))
            except subprocess.TimeoutExpired:
                self.anomaly(f"round {self.rounds}: run still alive after {RUN_LIMIT_S} s ({log_path})")
                proc.kill()
                rc = proc.wait()
        if rc == -signal.SIGTERM and last_run_id(self.out) == runs_before:
            note += " before the CLI set its handler (nothing started)"
            rc = 143  # the default action of SIGTERM during start-up: fine, nothing was begun
        self._after_exit(fault, rc, log_path)
        return rc, note

    def _inject(self, proc: subprocess.Popen, fault: str, remaining: int) -> str:
        if fault in ("kill_run", "sigterm"):
            if self.rng.random() < 0.2:  # sometimes during start-up
                when, delay = "in start-up", self.rng.uniform(0.1, 1.5)
            else:  # mostly while it works: after it took the lock
                when, delay = "at work", self.rng.uniform(0.0, 0.5 + 0.4 * max(1, remaining))
                if not self._wait_locked(proc):
                    self.faults["missed"] += 1
                    return "ended before taking the lock"
            if not self._sleep_alive(proc, delay):
                self.faults["missed"] += 1
                return f"ended before the {fault} ({when} + {delay:.1f} s)"
            if fault == "kill_run":
                _kill9(proc.pid)
                self.faults["kill_run"] += 1
                return f"killed -9 {when} + {delay:.1f} s"
            proc.send_signal(signal.SIGTERM)
            self.faults["sigterm"] += 1
            try:
                proc.wait(timeout=SIGTERM_LIMIT_S)
            except subprocess.TimeoutExpired:
                self.anomaly(f"round {self.rounds}: run alive {SIGTERM_LIMIT_S} s after SIGTERM")
            return f"SIGTERM {when} + {delay:.1f} s"
        if fault == "kill_worker":
            killed = 0
            for _ in range(self.rng.choice((1, 2))):
                t_end = time.monotonic() + 20
                workers = []
                while proc.poll() is None and time.monotonic() < t_end:
                    workers = workers_of(proc.pid)
                    if workers:
                        break
                    time.sleep(0.05)
                if not workers:
                    break
                time.sleep(self.rng.uniform(0.0, 0.4))
                if _kill9(self.rng.choice(workers)):
                    killed += 1
                time.sleep(self.rng.uniform(0.3, 1.5))
            self.faults["kill_worker"] += killed
            if not killed:
                self.faults["missed"] += 1
            return f"killed -9 {killed} worker(s)"
        return "-"

    def _wait_locked(self, proc: subprocess.Popen, limit_s: float = 30.0) -> bool:
        """Wait until ``proc`` holds the output lock (reads the holder line the run writes,
        never locks the file itself: that could make the run exit 75)."""
        needle, lock_file = f"pid {proc.pid} ".encode(), self.out / ".ceuspipe" / "lock"
        end = time.monotonic() + limit_s
        while proc.poll() is None and time.monotonic() < end:
            try:
                if lock_file.read_bytes().startswith(needle):
                    return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    @staticmethod
    def _sleep_alive(proc: subprocess.Popen, seconds: float) -> bool:
        try:
            proc.wait(timeout=seconds)
            return False
        except subprocess.TimeoutExpired:
            return True

    def _after_exit(self, fault: str, rc: int, log_path: Path) -> None:
        text = log_path.read_text(errors="replace")
        expected = {0, 1}
        if fault == "kill_run":
            expected |= {-signal.SIGKILL}
        if fault == "sigterm":
            expected |= {143}
        if rc not in expected:
            self.anomaly(f"round {self.rounds}: exit status {rc} after {fault} ({log_path}): "
                         f"{text.strip().splitlines()[-1] if text.strip() else ''}")
        if current_holder(self.out):
            self.anomaly(f"round {self.rounds}: lock still held after the run exited: {current_holder(self.out)}")
        if rc == 143:
            running = [p for p, r in read_rows(self.out).items() if r.status == "running"]
            if running:
                self.anomaly(f"round {self.rounds}: {len(running)} exam(s) left 'running' after SIGTERM")
        if rc in (0, 1, 143) and "Traceback" in text:
            self.anomaly(f"round {self.rounds}: traceback in the output ({log_path})")

    def strays(self, wait_s: float = 3.0) -> list[int]:
        """Processes of the soak still alive ``wait_s`` after the last run exited."""
        end = time.monotonic() + wait_s
        while True:
            found = tagged_processes(self.tag)
            if not found or time.monotonic() > end:
                return found
            time.sleep(0.2)


def describe(pid: int) -> str:
    cmd = _cmdline(pid).replace(b"\0", b" ").decode(errors="replace").strip()
    return f"pid {pid} (parent {_ppid(pid)}): {cmd[:100]}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exams", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "bench_out" / "soak",
                    help="work folder (inbox/, out/, logs/; emptied first)")
    ap.add_argument("--phantoms", type=Path, default=REPO / "bench_out" / "soak_phantoms",
                    help="cache of the generated phantom clips")
    ap.add_argument("--max-rounds", type=int, default=30)
    ap.add_argument("--max-seconds", type=float, default=240.0)
    ap.add_argument("--no-mount", action="store_true",
                    help="no tmpfs: simulate the full disk with a flag file (the fallback without root)")
    args = ap.parse_args()
    if args.exams < 4:
        ap.error("--exams: at least 4 (ok, truncated, corrupt and hang exams)")

    t0 = time.monotonic()
    work = args.out.resolve()
    unmount_leftover(work / "out")
    for sub in ("inbox", "staging", "out", "site", "logs", "soak.toml", "disk_full.flag"):
        p = work / sub
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    t_gen = time.monotonic()
    clips = make_phantoms(args.phantoms.resolve(), args.exams)
    gen_s = time.monotonic() - t_gen

    soak = Soak(args, work)
    truth = build_exams(soak.staging, soak.inbox, clips, soak.rng)
    shas = {p: hashlib.sha256((soak.staging / Path(p).relative_to(soak.inbox)).read_bytes()).hexdigest()
            for p in truth}
    flag = work / "disk_full.flag"
    soak.write_pipeline(flag)
    schedule = ["kill_run"] * 3 + ["kill_worker"] * 2 + ["sigterm"] * 2 + ["disk_full"] + ["none"]
    soak.rng.shuffle(schedule)
    i = schedule.index("disk_full")
    schedule[i:i + 1] = ["disk_full", "disk_full"]  # two runs on a full disk, then room again
    # Exams arrive in waves (a third at first, the rest over the fault rounds), so that
    # every fault meets work in progress, as nightly deliveries would.
    order = list(truth)
    soak.rng.shuffle(order)
    first = len(order) // 3
    waves = [order[:first]] + [order[first + j::len(schedule)] for j in range(len(schedule))]

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the clean-up below runs
    disk = Disk(soak.out, flag, mount=not args.no_mount)
    result = 1
    try:
        kinds = ", ".join(f"{k} {list(truth.values()).count(k)}" for k in ("ok", "truncated", "corrupt", "hang"))
        print(f"soak: {len(truth)} exams ({kinds}), seed {args.seed}, jobs {JOBS}, k {K}, "
              f"exam_timeout_seconds {EXAM_TIMEOUT_S}")
        print(f"disk: {disk.how}")
        print(f"phantoms: {len(clips)} clips in {gen_s:.1f} s (cached under {args.phantoms})")
        print(f"fault schedule: {' '.join(schedule)} (then clean runs until settled)", flush=True)
        t_soak = time.monotonic()
        r = 0
        while r < args.max_rounds:
            rows = read_rows(soak.out)
            fault = schedule[r] if r < len(schedule) else "none"
            if r >= len(schedule) and settled(truth, rows):
                break
            if time.monotonic() - t_soak > args.max_seconds:
                soak.anomaly(f"not settled after {args.max_seconds:g} s")
                break
            if r + 1 < len(waves):
                deliver(soak.staging, soak.inbox, (waves[0] if r == 0 else []) + waves[r + 1])
            retry = transient_failures(truth, rows) > 0
            remaining = sum(1 for p in truth if Path(p).exists()
                            and not (p in rows and rows[p].status in ("done", "failed")))
            disk_note = ""
            if fault == "disk_full":
                disk_note = " [" + disk.fill(700 * 1024) + "]"
                soak.faults["disk_full_runs"] += 1
            t_run = time.monotonic()
            rc, note = soak.run(fault, retry, remaining)
            alive = soak.strays(1.5)
            if alive:
                note += f"; {len(alive)} process(es) of it still alive 1.5 s later"
            if fault == "disk_full" and (r + 1 >= len(schedule) or schedule[r + 1] != "disk_full"):
                disk.free()
                disk_note += " [room again]"
            counts = {}
            for row in read_rows(soak.out).values():
                counts[row.status] = counts.get(row.status, 0) + 1
            print(f"round {soak.rounds:2d}: {fault:<11} {'--retry-failed ' if retry else '':<15}"
                  f"exit {rc!s:>4} in {time.monotonic() - t_run:4.1f} s: {note}{disk_note}; ledger {counts}",
                  flush=True)
            r += 1

        # A last fault-free run must find nothing to do and leave everything clean.
        rc, _ = soak.run("final", False, 0)
        final_log = sorted(soak.logs.glob("*_final.log"))[-1].read_text()
        summary = next((ln for ln in final_log.splitlines() if ln.startswith("run ")), "?")
        print(f"final run: exit {rc}: {summary}")
        if rc != 0 or " 0 done, 0 failed" not in summary:
            soak.anomaly(f"the final run was not a no-op (exit {rc}): {summary}")

        rows = read_rows(soak.out)
        done = [r for r in rows.values() if r.status == "done"]
        redone = [r for r in done if r.attempts > 1]
        as_expected = [p for p, kind in truth.items() if p in rows and rows[p].status == "failed"
                       and failed_as_expected(kind, p, rows[p].error)]
        lost = [p for p, kind in truth.items() if not (p in rows and (
            (kind == "ok" and rows[p].status == "done") or p in as_expected))]
        incomplete = []
        for row in done:
            problems = output_problems(soak.out, row, shas.get(row.path, ""))
            if problems:
                incomplete.append((row.path, problems))
        for path in lost:
            row = rows.get(path)
            print(f"  LOST {path} ({truth[path]}): "
                  f"{'not in the ledger' if row is None else f'{row.status}: {row.error}'}")
        for path, problems in incomplete:
            print(f"  INCOMPLETE {path}: {'; '.join(problems)}")
        for path in as_expected:
            print(f"  failed as expected: {rows[path].error}")
        tmp = soak.out / ".ceuspipe" / "tmp"
        if tmp.exists():
            soak.anomaly(f"left after the final run: {sorted(str(p) for p in tmp.rglob('*'))[:5]}")
        if current_holder(soak.out):
            soak.anomaly("lock held at the end")
        else:
            with OutputLock(soak.out):  # raises LockHeld if not free
                pass
        dirs = {f"{p.parent.name}/{p.name}" for p in soak.out.glob("*/*") if p.is_dir()
                and not p.parent.name.startswith(".")}
        extra = dirs - {f"{r.patient_id}/{r.exam_id}" for r in done}
        if extra:
            soak.anomaly(f"output folders of exams not done: {sorted(extra)}")
        manifest = soak.out / "manifest.csv"
        listed: dict[tuple[str, str], int] = {}
        if manifest.exists():
            with open(manifest, newline="") as fh:
                for rec in csv.DictReader(fh):
                    key = (rec["patient_id"], rec["exam_id"])
                    listed[key] = listed.get(key, 0) + 1
        want = {(r.patient_id, r.exam_id): K for r in done}
        if listed != want:
            soak.anomaly(f"manifest.csv does not list the done exams ({len(listed)} listed, {len(want)} done)")
        strays = soak.strays()
        if strays:
            soak.anomaly(f"{len(strays)} process(es) of the soak still running: "
                         + "; ".join(describe(p) for p in strays[:4]))

        f = soak.faults
        print(f"faults: run kill -9 {f['kill_run']}, worker kill -9 {f['kill_worker']}, "
              f"SIGTERM {f['sigterm']}, runs on a full disk {f['disk_full_runs']}, "
              f"missed (run ended first) {f['missed']}")
        print(f"exams: {len(truth)}")
        print(f"rounds: {soak.rounds} (including the final check run)")
        print(f"done: {len(done)}")
        print(f"redone: {len(redone)}")
        print(f"failed as expected: {len(as_expected)}")
        print(f"lost: {len(lost)}")
        print(f"marked done with incomplete outputs: {len(incomplete)}")
        print(f"anomalies: {len(soak.anomalies)}")
        print(f"wall time: {time.monotonic() - t0:.1f} s (soak {time.monotonic() - t_soak:.1f} s)")
        result = 1 if (lost or incomplete or soak.anomalies) else 0
    finally:
        for pid in tagged_processes(soak.tag):
            _kill9(pid)
        disk.close()
    return result


if __name__ == "__main__":
    sys.exit(main())
