"""Decoding only what 1 fps sampling needs (issue 16): the samples of the skipping path
equal a full decode pixel for pixel, on every codec we read, and it falls back to a
full decode where skipping is not exact."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ceuspipe.video.sampling import TimeSampler
from ceuspipe.video import skip_decode
from ceuspipe.video.clip_stream import open_clip
from ceuspipe.video.reader import open_source
from ceuspipe.video.writer import VideoWriter

from support.bad_inputs import write_dicom

X264_B = {"x264-params": "bframes=3:b-adapt=0:log-level=error"}     # b-pyramid: some B are refs
X264_FLAT_B = {"x264-params": "bframes=3:b-adapt=0:b-pyramid=none:log-level=error"}
X265_B = {"x265-params": "log-level=error:bframes=4:b-adapt=0"}
X264_NO_B = {"x264-params": "bframes=0:log-level=error"}
X264_B_GOP = {"x264-params": "bframes=3:b-adapt=0:keyint=20:scenecut=0:log-level=error"}
X265_B_GOP = {"x265-params": "log-level=error:bframes=4:b-adapt=0:keyint=20:scenecut=0:open-gop=0"}


def moving(i: int, w: int, h: int) -> np.ndarray:
    """A frame with texture that moves, so P and B frames carry real residuals."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = (xx * 3 + i * 5) % 256
    img[..., 1] = (yy * 4 + i * 3) % 256
    img[..., 2] = ((xx + yy) * 2 + i * 7) % 256
    rng = np.random.default_rng(i)
    img[(rng.random((h, w)) < 0.02)] = 255
    return img


def make_clip(path, times, *, codec="libx264", w=64, h=48, fps=10.0, options=None):
    with VideoWriter(path, w, h, fps=fps, codec=codec, options=options) as vw:
        for i, t in enumerate(times):
            vw.write(moving(i, w, h), t)
    return path


def sampled(path, fps: float, *, skip: bool, threads: bool = True, select=None):
    """Frames a TimeSampler accepts, as ClipStream consumes them (samples_for per frame)."""
    sampler = TimeSampler(fps)
    sel = select(sampler) if select else sampler
    out = []
    for frame in open_source(path, threads=threads).frames(select=sel, presample=sampler if skip else None):
        out.append((frame, tuple(sampler.samples_for(frame.time_s))))
    return out, sampler


def assert_same(fast, full):
    (a, sa), (b, sb) = fast, full
    assert len(a) == len(b) > 0
    for (fa, na), (fb, nb) in zip(a, b):
        assert (fa.index, fa.time_s, na) == (fb.index, fb.time_s, nb)
        assert fa.image.shape == fb.image.shape and np.array_equal(fa.image, fb.image), fa.index
    assert (sa.decoded, sa.last_time_s) == (sb.decoded, sb.last_time_s)


#: Frame times (s) of the test clips: constant 25 fps, NTSC 29.97 fps, variable.
CFR = [i / 25 for i in range(150)]
NTSC = [k * 1001 / 30000 for k in range(200)]
VFR = list(np.cumsum([0.0] + [0.02, 0.05, 0.031, 0.11, 0.04] * 30))

CLIPS = {
    "h264-b-cfr": dict(suffix=".mp4", times=CFR, fps=25, options=X264_B),
    "h264-flat-b-mkv": dict(suffix=".mkv", times=[i / 25 for i in range(120)], fps=25, options=X264_FLAT_B),
    "h264-b-2997": dict(suffix=".mp4", times=NTSC, fps=30000 / 1001,
                        options=X264_B),
    "h264-b-vfr": dict(suffix=".mp4", times=VFR,
                       fps=25, options=X264_B),
    "hevc-b": dict(suffix=".mkv", times=[i / 25 for i in range(100)], fps=25, codec="libx265", options=X265_B),
    "h264-b-ts": dict(suffix=".ts", times=[i / 25 for i in range(100)], fps=25, options=X264_B),
    "mpeg4-b": dict(suffix=".mov", times=[i / 25 for i in range(100)], fps=25, codec="mpeg4",
                    options={"bf": "2", "g": "30"}),
    # IDR pictures every 20 frames: the tail of each group after its last sample is not sent
    "h264-b-gop": dict(suffix=".mp4", times=CFR, fps=25, options=X264_B_GOP),
    "h264-b-gop-ts": dict(suffix=".ts", times=CFR, fps=25, options=X264_B_GOP),
    "h264-b-gop-vfr": dict(suffix=".mkv", times=VFR,
                           fps=25, options=X264_B_GOP),
    "hevc-b-gop": dict(suffix=".mkv", times=[i / 25 for i in range(100)], fps=25, codec="libx265",
                       options=X265_B_GOP),
}


@pytest.mark.parametrize("name", list(CLIPS))
@pytest.mark.parametrize("fps", [1.0, 3.0])
def test_skipping_path_equals_full_decode(tmp_path, name, fps):
    spec = dict(CLIPS[name])
    path = make_clip(tmp_path / f"c{spec.pop('suffix')}", spec.pop("times"), **spec)
    fast = sampled(path, fps, skip=True)
    full = sampled(path, fps, skip=False)
    assert fast[1].decode_path == "skip-nonref", fast[1].decode_note
    assert full[1].decode_path is None
    dropped = int(fast[1].decode_note.split()[0])
    assert dropped > 0  # the decoder really dropped frames
    assert_same(fast, full)


@pytest.mark.parametrize("name,groups", [("h264-b-gop", 8), ("h264-b-gop-ts", 8), ("hevc-b-gop", 5),
                                         ("hevc-b", 0), ("mpeg4-b", 0)])
def test_group_tails_are_not_sent(tmp_path, name, groups):
    """With B-frames, the packets after a closed group's last sample (decode order) are not
    sent either. IDR pictures every 20 frames: every group has such a tail (groups 4 and
    7 hold no 1 fps sample at all). HEVC counts only IDR pictures (x265's default CRA
    starts are open) and MPEG-4 Part 2 none (its B-VOPs after an I-VOP refer to the VOP
    before it): there only the tail after the clip's last sample goes."""
    spec = dict(CLIPS[name])
    path = make_clip(tmp_path / f"c{spec.pop('suffix')}", spec.pop("times"), **spec)
    plan, note = skip_decode.plan_skips(path, TimeSampler(1.0))
    assert note is None
    assert not plan.unsent & plan.keep_pts
    index = {p: round(t * 25) for p, t in zip(plan.pts, plan.times_s)}
    last_sample = max(index[p] for p in plan.keep_pts)
    if groups:
        assert len({index[p] // 20 for p in plan.unsent}) == groups
    else:  # one group: what follows the last sample in decode order (B-frames reorder by < 4)
        assert plan.unsent and min(index[p] for p in plan.unsent) > last_sample - 4


def test_skipping_with_one_decoder_thread(tmp_path):
    spec = dict(CLIPS["h264-b-cfr"])
    path = make_clip(tmp_path / "c.mp4", spec["times"], fps=25, options=X264_B)
    assert_same(sampled(path, 1.0, skip=True, threads=False), sampled(path, 1.0, skip=False, threads=True))


def test_intra_only_mjpeg_decodes_every_frame(tmp_path):
    path = make_clip(tmp_path / "c.mkv", [i / 10 for i in range(40)], codec="mjpeg")
    fast = sampled(path, 1.0, skip=True)
    assert fast[1].decode_path == "full" and "intra-only" in fast[1].decode_note
    assert_same(fast, sampled(path, 1.0, skip=False))


@pytest.mark.parametrize("codec,options", [("libx264", X264_B), ("mpeg4", {"bf": "2", "g": "30"})])
def test_avi_decodes_every_frame(tmp_path, codec, options):
    """AVI stores no presentation times (H.264 B-frames come out one frame off): no plan."""
    path = make_clip(tmp_path / "c.avi", [i / 25 for i in range(100)], fps=25, codec=codec, options=options)
    fast = sampled(path, 1.0, skip=True)
    assert fast[1].decode_path == "full" and "container avi" in fast[1].decode_note
    assert_same(fast, sampled(path, 1.0, skip=False))


#: Without B-frames, IDR pictures every 20 frames (scene cuts off: the texture's noise
#: would otherwise place key frames at random).
X264_NO_B_GOP = {"x264-params": "bframes=0:keyint=20:scenecut=0:log-level=error"}

NO_B_CLIPS = {
    "h264-mp4": dict(suffix=".mp4", times=CFR, fps=25, options=X264_NO_B_GOP),
    "h264-mkv": dict(suffix=".mkv", times=CFR, fps=25, options=X264_NO_B_GOP),
    "h264-ts": dict(suffix=".ts", times=CFR, fps=25, options=X264_NO_B_GOP),
    "h264-2997": dict(suffix=".mp4", times=NTSC, fps=30000 / 1001,
                      options=X264_NO_B_GOP),
    "h264-vfr": dict(suffix=".mp4", times=VFR,
                     fps=25, options=X264_NO_B_GOP),
    "h264-default-gop": dict(suffix=".mp4", times=CFR, fps=25, options=X264_NO_B),
    "hevc": dict(suffix=".mkv", times=[i / 25 for i in range(100)], fps=25, codec="libx265",
                 options={"x265-params": "log-level=error:bframes=0:keyint=20:scenecut=0"}),
    "mpeg4": dict(suffix=".mov", times=[i / 25 for i in range(100)], fps=25, codec="mpeg4", options={"g": "20"}),
}


@pytest.mark.parametrize("name", list(NO_B_CLIPS))
@pytest.mark.parametrize("fps", [1.0, 3.0])
def test_no_b_frames_leave_out_group_tails_exactly(tmp_path, name, fps):
    """Without B-frames the frames after a closed group's last sample are not decoded;
    the samples still equal a full decode pixel for pixel."""
    spec = dict(NO_B_CLIPS[name])
    path = make_clip(tmp_path / f"c{spec.pop('suffix')}", spec.pop("times"), **spec)
    fast = sampled(path, fps, skip=True)
    assert fast[1].decode_path == "skip-tails", fast[1].decode_note
    assert int(fast[1].decode_note.split()[0]) > 0, fast[1].decode_note
    assert_same(fast, sampled(path, fps, skip=False))


def test_no_b_frames_reads_only_the_first_packets_ahead(tmp_path, monkeypatch):
    """The no-B-frames check pre-reads only the probe's packets (here 20 of 150); with
    IDR pictures every 20 frames, 1 fps samples need 6 of every 25 frames or fewer."""
    monkeypatch.setattr(skip_decode, "NO_B_FRAMES_PROBE", 20)
    path = make_clip(tmp_path / "c.mp4", [i / 25 for i in range(150)], fps=25, options=X264_NO_B_GOP)
    fast = sampled(path, 1.0, skip=True)
    assert fast[1].decode_path == "skip-tails"
    # Groups start at 0, 20, 40, ...; samples at 0, 25, 50, ...: decoded 0 | 20-25 | 40-50 | ...
    assert fast[1].decode_note.startswith("109 of 150 frames not decoded"), fast[1].decode_note
    assert_same(fast, sampled(path, 1.0, skip=False))


@pytest.mark.parametrize("group", [1, 7, 600, "bytes"])
def test_long_groups_are_decoded_as_they_come(tmp_path, monkeypatch, group):
    """A cap on the packets (or bytes) held per group (memory on streams with rare IDR
    pictures): exact at any cap, and a smaller cap leaves out no more than a larger one."""
    if group == "bytes":
        monkeypatch.setattr(skip_decode, "MAX_GROUP_BYTES", 1)  # every packet is over it
        group = 1
    monkeypatch.setattr(skip_decode, "MAX_GROUP_PACKETS", group)
    path = make_clip(tmp_path / "c.mkv", [i / 25 for i in range(150)], fps=25, options=X264_NO_B_GOP)
    fast = sampled(path, 1.0, skip=True)
    assert fast[1].decode_path == "skip-tails"
    left_out = int(fast[1].decode_note.split()[0])
    assert left_out == {1: 0, 7: 0, 600: 109}[group] or (group == 7 and 0 < left_out < 109), left_out
    assert_same(fast, sampled(path, 1.0, skip=False))


def test_recovery_points_are_not_taken_for_clean_starts(tmp_path):
    """x264's periodic intra refresh flags recovery points as key frames although the P
    frames after them may still refer to earlier ones: only IDR pictures end a group."""
    from ceuspipe.video.random_access import clean_start_test

    options = {"x264-params": "bframes=0:keyint=30:scenecut=0:intra-refresh=1:log-level=error"}
    path = make_clip(tmp_path / "c.mp4", [i / 25 for i in range(150)], fps=25, options=options)
    import av
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        test = clean_start_test("h264", s.codec_context.extradata, reordering=False)
        flags = [(p.is_keyframe, test(bytes(p))) for p in c.demux(s) if p.size]
    assert sum(k for k, _ in flags) > 2 and sum(c for _, c in flags) == 1  # only the first is IDR
    fast = sampled(path, 1.0, skip=True)
    assert fast[1].decode_path == "skip-tails", fast[1].decode_note
    assert_same(fast, sampled(path, 1.0, skip=False))


@pytest.mark.parametrize("suffix,codec,options", [
    (".mp4", "libx264", X264_NO_B_GOP), (".ts", "libx264", X264_NO_B_GOP),
    (".mkv", "libx265", {"x265-params": "log-level=error:bframes=0:keyint=20:scenecut=0"}),
    (".mov", "mpeg4", {"g": "20"})])
def test_clean_starts_are_the_idr_pictures(tmp_path, suffix, codec, options):
    """Length-prefixed (MP4, Matroska) and start-code (MPEG-TS) packets, HEVC and MPEG-4
    Part 2: with scene cuts off, exactly the key frames every 20 frames start a group."""
    import av

    from ceuspipe.video.random_access import clean_start_test

    path = make_clip(tmp_path / f"c{suffix}", [i / 25 for i in range(60)], fps=25, codec=codec, options=options)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        test = clean_start_test(s.codec_context.codec.name, s.codec_context.extradata, reordering=False)
        clean = [i for i, p in enumerate(q for q in c.demux(s) if q.size) if test(bytes(p))]
    assert clean == [0, 20, 40]


def test_b_frames_after_the_probe_still_skip(tmp_path, monkeypatch):
    """A short probe does not stop a B-frame clip from skipping (its header declares a
    reorder delay, so all timestamps are read)."""
    monkeypatch.setattr(skip_decode, "NO_B_FRAMES_PROBE", 2)
    path = make_clip(tmp_path / "c.mp4", [i / 25 for i in range(150)], fps=25, options=X264_B)
    fast = sampled(path, 1.0, skip=True)
    assert fast[1].decode_path == "skip-nonref", fast[1].decode_note
    assert_same(fast, sampled(path, 1.0, skip=False))


def test_every_frame_a_sample_decodes_in_full(tmp_path):
    path = make_clip(tmp_path / "c.mp4", [i / 2 for i in range(10)], fps=2, options=X264_B)
    fast = sampled(path, 2.0, skip=True)
    assert fast[1].decode_path == "full" and "every frame is a sample" in fast[1].decode_note
    assert_same(fast, sampled(path, 2.0, skip=False))


def test_dicom_reads_selected_frames(tmp_path):
    frames = np.stack([moving(i, 32, 24) for i in range(30)])
    path = write_dicom(tmp_path / "cine.dcm", frames, frame_time_ms=100.0)
    fast = sampled(path, 1.0, skip=True)
    assert fast[1].decode_path == "dicom"
    assert_same(fast, sampled(path, 1.0, skip=False))


@pytest.mark.parametrize("options,extra", [(X264_B, 2.52), (X264_NO_B_GOP, 2.2)])
def test_select_disagreeing_with_plan_restarts_in_full(tmp_path, caplog, options, extra):
    """A select that wants more than was planned: the decoder already dropped that frame
    (a non-reference B frame; without B-frames, frame 55 in the tail of the group 40-59
    whose last sample is frame 50), so the reader decodes in full from the start and
    goes on after the last frame."""
    spec = CLIPS["h264-b-cfr"]
    path = make_clip(tmp_path / "c.mp4", spec["times"], fps=25, options=options)

    def greedy(sampler):
        def sel(t):
            return sampler(t) or abs(t - extra) < 1e-6  # no 1 fps sample
        return sel

    with caplog.at_level(logging.WARNING, logger="ceuspipe"):
        fast = sampled(path, 1.0, skip=True, select=greedy)
    full = sampled(path, 1.0, skip=False, select=greedy)
    assert fast[1].decode_path == "full" and "dropped frame was selected" in fast[1].decode_note
    assert any("decoding every frame from the start" in r.message for r in caplog.records)
    assert_same(fast, full)
    assert extra in [round(f.time_s, 6) for f, _ in fast[0]]


def test_open_clip_reports_the_path(tmp_path):
    from ceuspipe.video.layout import LayoutOptions

    spec = CLIPS["h264-b-cfr"]
    path = make_clip(tmp_path / "c.mp4", spec["times"], w=96, h=48, fps=25, options=X264_B)
    opts = LayoutOptions(ceus_box=(0, 0, 48, 48), us_box=(48, 0, 48, 48))
    clip = open_clip(path, opts, sample_fps=1.0)
    got = [(f.index, f.time_s, f.samples) for f in clip]
    assert [s for _, _, s in got] == [(n,) for n in range(6)]
    assert clip.frames_decoded == 150 and clip.decode_path == "skip-nonref"
    clip.check_length()
