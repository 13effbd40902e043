"""The thresholds that follow each run's scores: the server's state, which evaluation's replay
runs through, flags each row by the exact lower median (and, for the spread and iqr rules, the
lower and upper quartiles they read) of the rows before it, in requests of any size."""

import numpy as np
import pytest

from container_component_src.evaluation import follow as follow_module
from container_component_src.evaluation.follow import (
    FollowStreams,
    IqrFollow,
    MedianFollow,
    MedianState,
    SpreadFollow,
    follow_from_dict,
)


def _brute_force(follow: MedianFollow, scores: np.ndarray, base: float) -> np.ndarray:
    """Each row against the exact lower median of the rows before it (the newest `follow.window`
    of them, if it has one), the slow way."""
    flags = []
    for row, score in enumerate(scores):
        if row == 0:
            threshold = base
        else:
            before = np.sort(scores[max(0, row - follow.window) if follow.window else 0 : row])
            median = before[(len(before) - 1) // 2]
            threshold = follow.threshold(base, int(follow.bins(np.array([median]))[0]))
        flags.append(score > threshold)
    return np.array(flags)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_servers_state_flags_what_evaluations_replay_flags(seed: int) -> None:
    rng = np.random.default_rng(seed)
    val = rng.exponential(size=5_000)
    base = float(np.quantile(val, 0.99))
    follow = MedianFollow.of(val, base)
    # Three runs: like validation, higher (a new operating point), much higher with an anomaly;
    # rounded so that many scores tie, some exactly on a bin edge.
    runs = [
        rng.exponential(size=700),
        3.0 * rng.exponential(size=900) + 4.0,
        np.r_[20.0 * rng.exponential(size=300), 500.0 + rng.exponential(size=50), 20.0 * rng.exponential(size=400)],
    ]
    runs = [np.round(run, 1) for run in runs]
    runs[1][:40] = follow.level + follow.spread * follow_module.EDGES[7]
    scores, ids = np.concatenate(runs), np.repeat(np.arange(3), [len(r) for r in runs])
    replayed = follow.replay(scores, base, ids)
    # The server meets each run as a stream of its own, in requests of any size.
    streams = FollowStreams(follow, base)
    served = []
    for number, run in enumerate(runs):
        cuts = np.sort(rng.choice(np.arange(1, len(run)), size=12, replace=False))
        served += [streams.judge(request, stream=f"run {number}") for request in np.split(run, cuts)]
    assert (np.concatenate(served) == replayed).all()
    assert (replayed[ids == 1] == _brute_force(follow, runs[1], base)).all()
    assert (follow.replay(runs[2], base) == _brute_force(follow, runs[2], base)).all()


def test_a_long_run_is_judged_in_parts_as_if_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    val = rng.exponential(size=2_000)
    base = float(np.quantile(val, 0.99))
    follow = MedianFollow.of(val, base)
    run = np.round(np.r_[rng.exponential(size=300), 4.0 * rng.exponential(size=500) + 6.0], 1)
    monkeypatch.setattr(follow_module, "_PART_ROWS", 7)  # parts end anywhere, mid-move of the median
    assert (follow.replay(run, base) == _brute_force(follow, run, base)).all()


def test_a_run_at_a_higher_level_is_followed_and_its_anomaly_still_flagged() -> None:
    rng = np.random.default_rng(3)
    val = rng.exponential(size=20_000)
    base = float(np.quantile(val, 0.99))
    follow = MedianFollow.of(val, base)
    like = follow.replay(rng.exponential(size=20_000), base)
    assert 0.005 < like.mean() < 0.015, "rows like validation: the quantile's promise"
    higher = 3.0 * rng.exponential(size=10_000) + 5.0
    higher[6_000:6_100] += 80.0
    flags = follow.replay(higher, base)
    assert (higher > base).mean() > 0.9, "the fixed threshold flags the whole run"
    assert flags[6_000:6_100].all() and flags[200:6_000].mean() < 0.02
    assert flags[0], "a run's first row is judged by the margin itself"


def test_without_a_quartile_spread_the_margin_is_the_unit() -> None:
    val = np.r_[np.zeros(900), np.linspace(1.0, 10.0, 100)]
    follow = MedianFollow.of(val, base=9.0)
    assert follow.level == 0.0 and follow.spread == 9.0
    assert MedianFollow.of(np.zeros(100), base=0.0).spread == 1.0
    assert follow.to_dict() == {"rule": "median", "level": 0.0, "spread": 9.0, "window": 0}


def test_a_rise_past_the_last_bin_keeps_the_last_factor() -> None:
    follow = MedianFollow(level=0.0, spread=1.0)
    assert follow.bins(np.array([-5.0, 0.99, 1.0, 1.0e9])).tolist() == [0, 0, 1, len(follow_module.EDGES)]
    assert [follow.threshold(2.0, b) for b in (0, 1, 2, len(follow_module.EDGES))] == [
        2.0,
        2.0,
        2.0 * 1.01,
        2.0 * follow_module.EDGES[-1],
    ]
    state = MedianState(follow)
    state.judge(np.full(5, 1.0e12), base=2.0)
    assert state.median_bin == len(follow_module.EDGES)


def test_streams_beyond_the_limit_forget_the_least_recently_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(follow_module, "MAX_STREAMS", 2)
    streams = FollowStreams(MedianFollow(level=0.0, spread=1.0), base=2.0)
    high = np.full(9, 50.0)
    assert streams.judge(high, "a").tolist() == [True] + [False] * 8, "a's median rose with its rows"
    streams.judge(high, "b")
    streams.judge(high[:1], "a")  # a seen again: b is now the oldest
    streams.judge(high[:1], "c")
    assert list(streams.states) == ["a", "c"]
    assert streams.judge(high[:1], "b").tolist() == [True], "b starts again at the margin"
    assert list(streams.states) == ["c", "b"] and not streams.judge(high[:1], "c")[0], "c remembers its level"


def _quartile_brute_force(follow: SpreadFollow | IqrFollow, scores: np.ndarray, base: float) -> np.ndarray:
    """Each row against the exact lower median and quartiles (the spread rule's lower one, the iqr
    rule's lower and upper ones, by index floor(p x (n - 1))) of the rows before it (the newest
    `follow.window` of them, if it has one)."""
    ranks = {SpreadFollow: (0.5, 0.25), IqrFollow: (0.5, 0.25, 0.75)}[type(follow)]
    flags = []
    for row, score in enumerate(scores):
        threshold = base
        if row:
            before = np.sort(scores[max(0, row - follow.window) if follow.window else 0 : row])
            quantiles = [before[int(np.floor(p * (len(before) - 1) + 1e-9))] for p in ranks]
            threshold = follow.threshold(base, *follow.bins(np.array(quantiles)).tolist())
        flags.append(score > threshold)
    return np.array(flags)


@pytest.mark.parametrize(("rule", "seed"), [(SpreadFollow, 0), (SpreadFollow, 1), (IqrFollow, 0), (IqrFollow, 2)])
def test_the_quartile_rules_state_flags_by_the_exact_median_and_quartiles(
    rule: type[SpreadFollow] | type[IqrFollow], seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(seed)
    val = rng.exponential(size=5_000)
    base = float(np.quantile(val, 0.99))
    follow = rule.of(val, base)
    # Like validation; higher and wider; far below, then an anomaly. Rounded: many ties.
    runs = [
        rng.exponential(size=500),
        3.0 * rng.exponential(size=600) + 4.0,
        np.r_[-1.0e7 * np.ones(5), 20.0 * rng.exponential(size=300), 500.0 + rng.exponential(size=50)],
    ]
    runs = [np.round(run, 1) for run in runs]
    scores, ids = np.concatenate(runs), np.repeat(np.arange(3), [len(r) for r in runs])
    replayed = follow.replay(scores, base, ids)
    for number, run in enumerate(runs):
        assert (replayed[ids == number] == _quartile_brute_force(follow, run, base)).all()
    streams = FollowStreams(follow, base)
    served = []
    for number, run in enumerate(runs):
        cuts = np.sort(rng.choice(np.arange(1, len(run)), size=12, replace=False))
        served += [streams.judge(request, stream=number) for request in np.split(run, cuts)]
    assert (np.concatenate(served) == replayed).all()
    monkeypatch.setattr(follow_module, "_PART_ROWS", 7)
    assert (follow.replay(scores, base, ids) == replayed).all(), "a part's state is carried to the next"


def test_the_spread_rule_follows_a_wider_run_and_keeps_flagging_a_third_of_it_anomalous() -> None:
    rng = np.random.default_rng(5)
    val = rng.exponential(size=20_000)
    base = float(np.quantile(val, 0.99))
    follow = SpreadFollow.of(val, base)
    like = follow.replay(rng.exponential(size=20_000), base)
    assert 0.005 < like.mean() < 0.015, "rows like validation: the quantile's promise"
    moved = 2.0 * rng.exponential(size=5_000) + 3.0
    assert (moved > base).mean() > 0.3 and follow.replay(moved, base)[500:].mean() < 0.02
    # A third of a run anomalous: the median moves, its distance to the lower quartile does not
    # widen, and the anomalies stay flagged (the upper quartile would take them for spread).
    spikes = rng.random(8_000) < 0.3
    flags = follow.replay(rng.exponential(size=8_000) + 50.0 * spikes, base)
    assert flags[spikes][500:].mean() > 0.95 and flags[~spikes].mean() < 0.02


def test_the_spread_rule_without_a_quartile_spread_and_at_its_ends() -> None:
    val = np.r_[np.zeros(900), np.linspace(1.0, 10.0, 100)]
    follow = SpreadFollow.of(val, base=9.0)
    assert follow == SpreadFollow(level=0.0, unit=9.0), "the margin is the unit"
    assert SpreadFollow.of(np.zeros(100), base=0.0).unit == 1.0
    ends = follow.bins(np.array([-1.0e12, 1.0e12])).tolist()
    assert ends == [0, len(follow_module.SIGNED_EDGES)]
    assert follow.threshold(9.0, ends[0], ends[0]) == 9.0, "never below the threshold it starts at"
    top = follow_module.SIGNED_EDGES[-1]  # beyond the edges, the last ones (k = 1 here)
    assert follow.threshold(9.0, ends[1], ends[0]) == pytest.approx(9.0 * (top + (top + top)))
    for rule in (follow, MedianFollow(level=1.0, spread=0.5), IqrFollow(level=1.0, unit=0.5)):
        assert follow_from_dict(rule.to_dict()) == rule


def test_the_iqr_rule_keeps_a_run_like_validation_and_follows_a_wider_one_in_its_range() -> None:
    rng = np.random.default_rng(7)
    val = rng.exponential(size=20_000)
    base = float(np.quantile(val, 0.99))
    follow = IqrFollow.of(val, base)
    assert follow.unit == pytest.approx(np.quantile(val, 0.75) - np.quantile(val, 0.25))
    like = follow.replay(rng.exponential(size=20_000), base)
    assert 0.005 < like.mean() < 0.015, "rows like validation: the quantile's promise"
    # Twice as wide and higher: the spread rule reads the lower side alone, the iqr rule both.
    moved = 2.0 * rng.exponential(size=5_000) + 3.0
    assert (moved > base).mean() > 0.3 and follow.replay(moved, base)[500:].mean() < 0.02
    assert follow.threshold(base, *follow.bins(np.quantile(moved, [0.5, 0.25, 0.75])).tolist()) == pytest.approx(
        np.median(moved) + (base - follow.level) / follow.unit * (np.quantile(moved, 0.75) - np.quantile(moved, 0.25)),
        rel=0.02,
    )
    # A third of a run anomalous widens the upper quartile: the threshold climbs toward the
    # anomalies, as the rule says (the spread rule keeps flagging them; test above).
    spikes = rng.random(8_000) < 0.3
    scores = rng.exponential(size=8_000) + 50.0 * spikes
    spread = SpreadFollow.of(val, base).replay(scores, base)
    iqr = follow.replay(scores, base)
    assert iqr[spikes][500:].mean() < spread[spikes][500:].mean() and iqr[~spikes].mean() <= spread[~spikes].mean()


@pytest.mark.parametrize(
    ("rule", "window"), [(MedianFollow, 1), (MedianFollow, 40), (SpreadFollow, 25), (IqrFollow, 64)]
)
def test_a_windowed_state_flags_by_the_exact_order_statistics_of_the_newest_rows(
    rule: type[MedianFollow] | type[SpreadFollow] | type[IqrFollow], window: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(window)
    val = rng.exponential(size=5_000)
    base = float(np.quantile(val, 0.99))
    follow = rule.of(val, base, window)
    # Like validation, then a new level (longer than the window), an anomaly, back down; many ties.
    moved = 6.0 * rng.exponential(size=200) + 10.0
    run = np.round(np.r_[rng.exponential(size=150), moved, np.full(30, 900.0), rng.exponential(size=120)], 1)
    brute = _brute_force if rule is MedianFollow else _quartile_brute_force
    expected = brute(follow, run, base)
    assert (follow.replay(run, base) == expected).all()
    streams = FollowStreams(follow, base)
    cuts = np.sort(rng.choice(np.arange(1, len(run)), size=15, replace=False))
    assert (np.concatenate([streams.judge(request) for request in np.split(run, cuts)]) == expected).all()
    monkeypatch.setattr(follow_module, "_PART_ROWS", 7)
    assert (follow.replay(run, base) == expected).all(), "a part's window is carried to the next"
    state = follow.state()
    state.judge(run, base)
    assert state.rows == len(state.recent) == min(window, len(run)) and sum(state.counts) == state.rows


def test_a_window_lets_a_new_state_become_normal_after_half_of_it() -> None:
    rng = np.random.default_rng(11)
    val = rng.exponential(size=20_000)
    base = float(np.quantile(val, 0.99))
    # A run that moves to a new, noisier state for good after 2,000 rows, like a test bed after a fault.
    run = np.r_[rng.exponential(size=2_000), 3.0 * rng.exponential(size=3_000) + 20.0]
    whole, windowed = IqrFollow.of(val, base).replay(run, base), IqrFollow.of(val, base, 200).replay(run, base)
    assert whole[2_000:2_500].all(), "the whole run's upper quartile needs a third of the run to move"
    assert windowed[2_000:2_010].all() and windowed[2_150:].mean() < 0.02, "flagged as it moves, then its normal"
    like = IqrFollow.of(val, base, 200).replay(rng.exponential(size=20_000), base)
    assert 0.002 < like.mean() <= 0.015, "rows like validation: never above the promise"


@pytest.mark.parametrize("window", [-1, 2.5, True, "30"])
def test_a_rule_with_a_window_that_is_not_rows_is_refused(window: object) -> None:
    with pytest.raises(ValueError, match="window is not a whole number of rows >= 0"):
        follow_from_dict({"rule": "iqr", "level": 0.0, "unit": 1.0, "window": window})
