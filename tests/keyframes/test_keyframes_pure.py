"""Sampling, scoring and top-k selection against independent brute-force computations."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ceuspipe.keyframes import TopK, select_top_k
from ceuspipe.keyframes.scorers import change_scores
from ceuspipe.video.sampling import TimeSampler, sample_indices


def brute_sample_indices(times, fps):
    """Definition, literally: sample n is the first frame with t - t0 >= n / fps."""
    t0 = times[0]
    out, n = [], 0
    while True:
        target = n / fps
        hits = [i for i, t in enumerate(times) if t - t0 >= target - 1e-9]
        if not hits:
            return out
        out.append(hits[0])
        n += 1


def brute_top_k(scores, k):
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return sorted(order[:k])


def test_sample_indices_constant_rate():
    times = np.arange(0, 100) / 10.0  # 10 fps, 9.9 s
    idx = sample_indices(times, 1.0)
    assert list(idx) == list(range(0, 100, 10))


def test_sample_indices_2997_no_drift():
    # 29.97 fps for ten minutes: sample n must be frame ceil(n * 29.97), not n * 30.
    times = np.arange(18000) * 1001 / 30000
    idx = sample_indices(times, 1.0)
    n = np.arange(idx.size)
    expected = np.ceil(n * 30000 / 1001 - 1e-9).astype(int)
    assert np.array_equal(idx, expected)
    assert idx[-1] != (idx.size - 1) * 30  # a frame-index rule would have drifted by ~18 frames


def test_sample_indices_offset_first_frame_and_gap():
    times = [5.0, 5.4, 5.9, 6.0, 6.5, 9.2, 9.9, 10.1]
    # t - t0: 0, .4, .9, 1.0, 1.5, 4.2, 4.9, 5.1 -> n=0:0, 1:3, 2:5, 3:5, 4:5, 5:7
    assert list(sample_indices(times, 1.0)) == [0, 3, 5, 5, 5, 7]


def test_sample_indices_half_fps():
    times = np.arange(0, 50) / 5.0
    assert list(sample_indices(times, 0.5)) == [0, 10, 20, 30, 40]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.001, 0.9), min_size=1, max_size=60),
       st.sampled_from([0.5, 1.0, 2.0, 3.0]))
def test_streaming_sampler_matches_definition(gaps, fps):
    times = np.concatenate([[0.0], np.cumsum(gaps)])
    expected = brute_sample_indices(list(times), fps)
    assert list(sample_indices(times, fps)) == expected
    sampler = TimeSampler(fps)
    streamed = []
    for i, t in enumerate(times):
        if sampler(t):
            streamed += [i] * len(sampler.samples_for(t))
        else:
            assert sampler.samples_for(t) == []
    assert streamed == expected


def test_change_scores_independent():
    rng = np.random.default_rng(0)
    grays = [rng.integers(0, 256, (7, 9), dtype=np.uint8) for _ in range(5)]
    scores = change_scores(grays)
    assert scores[0] == 0
    for n in range(1, 5):
        manual = np.mean(np.abs(grays[n].astype(int) - grays[n - 1].astype(int)))
        assert abs(scores[n] - manual) < 1e-12


def test_select_top_k_ties_to_earlier_in_time_order():
    scores = [0, 5, 3, 5, 1, 3, 5]
    assert list(select_top_k(scores, 3)) == [1, 3, 6]
    assert list(select_top_k(scores, 4)) == [1, 2, 3, 6]
    assert list(select_top_k(scores, 100)) == list(range(7))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=0, max_size=80), st.integers(1, 45))
def test_topk_streaming_equals_batch(scores, k):
    expected = brute_top_k(scores, k)
    assert list(select_top_k(scores, k)) == expected
    top = TopK(k)
    for n, s in enumerate(scores):
        top.push(s, n, payload=f"frame{n}")
    items = top.items()
    assert [n for _, n, _ in items] == expected
    assert all(p == f"frame{n}" for _, n, p in items)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.001, 0.9), min_size=1, max_size=60),
       st.sampled_from([0.5, 1.0, 3.0]), st.lists(st.integers(1, 20), min_size=1, max_size=10))
def test_planning_ahead_in_pieces_equals_one_plan(gaps, fps, cuts):
    """A shadow planning a stream group by group (the no-B-frames reader) keeps exactly the
    frames one plan over every time keeps, the distinct samples of the definition."""
    times = list(np.concatenate([[0.0], np.cumsum(gaps)]))
    sampler = TimeSampler(fps)
    whole = sampler.plan(times)
    assert whole == set(brute_sample_indices(times, fps))
    shadow, pieces, start = sampler.shadow(), set(), 0
    for size in cuts + [len(times)]:
        pieces |= {start + i for i in shadow.plan_ahead(times[start:start + size])}
        start += size
    assert pieces == whole and sampler.next_n == 0  # the sampler itself is untouched
