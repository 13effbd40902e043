"""Label-free thresholds that follow each run's scores: the rules evaluation replays over the test
rows and the model server applies as rows arrive, with the same flags row for row.

A fixed threshold from validation scores over-alarms on a run whose normal operation sits higher
than the validation rows (another set-up of the test bed, a new operating point after a fault):
it flags all of it. Three rules follow a run instead, each from the run's own scores before each
row (every row, flagged or not), never below the fixed threshold (`base`):

- `MedianFollow` (`threshold_follow = "median"`): the threshold's margin over the validation
  median (`level`) is scaled by how far the run's median has risen above `level`, in validation
  upper-quartile spreads (`spread`), never below the margin:

      threshold = level + (base - level) x max(1, (run median - level) / spread)

- `SpreadFollow` (`threshold_follow = "spread"`): the run's scores are measured from their own
  median in their own lower-quartile spread, and the threshold is the validation's in those
  units, so that a run like the validation keeps `base` and a noisier one widens it:

      threshold = max(base, run median + k x (run median - run lower quartile)),
      k = (base - level) / (level - validation lower quartile)

- `IqrFollow` (`threshold_follow = "iqr"`): the same in the run's interquartile range (a robust
  z-score per run), k = (base - level) / validation interquartile range.

With a window (`follow_window` rows, 0: the whole run), each rule reads the run's newest
`window` scores only: a new state of the test bed that lasts half a window becomes the run's
normal, and so does a fault that long (an alarm then marks a change, not a state; Fc1 counts a
fault found once, point F1 pays). Without one, a run's median needs half its rows to move.

A median barely moves for anomalies that are a minority of a run's rows, nor does the lower
quartile's distance below it (high scores cannot widen it): the median and spread rules move once
anomalies are half a run, and follow a run's new normal level, which a threshold that learns only
from the rows it does not flag (DSPOT) cannot once it flags them all. The upper quartile widens
once anomalies are a quarter of a run: the iqr rule follows a noisier run best and lets an alarm
clear during a fault that long (the gate weighs that: Fc1 counts a fault found once).

A stream's state is a fixed array of counts of its scores' bins (memory that does not grow with
the rows; with a window, the window's bins too), and a quantile of the bins is the bin of the
exact quantile (bins are monotone): the threshold rounds each down to its bin's lower edge.
Evaluation replays each run through the same state the server keeps, so both flag the same rows.

A run is what the model's reference marks: for a model scaled per run (`reference_rows`), each
segment of rows in evaluation and each distinct `reference` a request carries in the server;
without references, all of a split's rows in time order, and all the rows one server process
scores.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np

# Bin edges of the median rule's rise in spreads: 1 %-wide from 1 to about 1e6 (a rise below one
# spread leaves the threshold as it is; above the last edge, the last edge).
EDGES = 1.01 ** np.arange(1389)
_EDGE_LIST = EDGES.tolist()
# Bin edges of the spread rule's signed distance from the validation median, in its lower-quartile
# spreads: 0.01 apart on an asinh scale (0.01 units near the median, 1 % of the distance far from
# it) from about -1e6 to 1e6; below the first edge, the first edge.
SIGNED_EDGES = np.sinh(np.arange(-1450, 1451) * 0.01)
_SIGNED_VALUES = [float(SIGNED_EDGES[0]), *SIGNED_EDGES.tolist()]
# Streams one server process follows at once (the least recently seen is forgotten first).
MAX_STREAMS = 1024
# Rows judged in one pass of the loop (their Python floats and bins, ~5 MB).
_PART_ROWS = 65_536


def _level_and_unit(val_scores: np.ndarray, base: float, low: float, high: float) -> tuple[float, float]:
    """The validation scores' median and the distance between their `low` and `high` quantiles; with
    none (the scores between them all tied), the margin `base` - median, or 1."""
    scores = np.asarray(val_scores, dtype=np.float64)
    level = float(np.median(scores))
    unit = float(np.quantile(scores, high) - np.quantile(scores, low))
    if not unit > 0:
        unit = base - level if base > level else 1.0
    return level, unit


def _walk(counts: list[int], bin_: int, below: int, rank: int) -> tuple[int, int]:
    """The bin of the `rank`-th smallest counted score (from 1) and the scores in bins below it,
    walked from a bin near it (`bin_`, with `below` scores under it)."""
    while below + counts[bin_] < rank:
        below += counts[bin_]
        bin_ += 1
    while below >= rank:
        bin_ -= 1
        below -= counts[bin_]
    return bin_, below


def _count_in_window(counts: list[int], recent: deque[int], window: int, bin_: int) -> int:
    """Count a row of bin `bin_` in a `window`: keep its bin in `recent` and count the oldest row
    out once there are more; the bin it leaves, else `len(counts)` (no bin)."""
    counts[bin_] += 1
    recent.append(bin_)
    if len(recent) > window:
        old = recent.popleft()
        counts[old] -= 1
        return old
    return len(counts)


class _Rule:
    """What every rule shares: replaying runs through its state."""

    def state(self) -> FollowState:
        raise NotImplementedError

    def replay(self, scores: np.ndarray, base: float, runs: np.ndarray | None = None) -> np.ndarray:
        """The flags of `scores` in time order, each row judged by its run's rows before it (a run's
        first row by `base`), as the server judges them: the same state, one per run. `runs`
        numbers each row's run (None: one run)."""
        scores = np.asarray(scores, dtype=np.float64)
        if runs is None:
            return self.state().judge(scores, base)
        runs = np.asarray(runs)
        states: dict[Any, FollowState] = {}
        flags = np.empty(len(scores), dtype=bool)
        # Contiguous blocks of one run at a time (a run may come back after another: its state waits).
        edges = np.flatnonzero(np.diff(runs)) + 1
        for start, stop in zip(np.r_[0, edges], np.r_[edges, len(runs)], strict=True):
            state = states.setdefault(runs[start].item(), self.state())
            flags[start:stop] = state.judge(scores[start:stop], base)
        return flags


@dataclass(frozen=True)
class MedianFollow(_Rule):
    """The validation scores' median (`level`) and upper-quartile spread (`spread`, > 0) a
    threshold follows a run's median score by, over its newest `window` rows (0: all)."""

    level: float
    spread: float
    window: int = 0

    @classmethod
    def of(cls, val_scores: np.ndarray, base: float, window: int = 0) -> MedianFollow:
        """From the validation scores the threshold `base` came from. With no quartile spread
        (a quarter of the scores or more tied at the median), the margin itself is the unit."""
        return cls(*_level_and_unit(val_scores, base, 0.5, 0.75), window)

    def bins(self, scores: np.ndarray) -> np.ndarray:
        """Each score's bin: 0 for a rise under one spread, k for EDGES[k - 1] <= rise < EDGES[k]."""
        rise = (np.asarray(scores, dtype=np.float64) - self.level) / self.spread
        return np.searchsorted(EDGES, rise, side="right")

    def threshold(self, base: float, median_bin: int) -> float:
        """The threshold `base` scaled for a run whose median lies in bin `median_bin`."""
        factor = _EDGE_LIST[median_bin - 1] if median_bin else 1.0
        return self.level + (base - self.level) * factor

    def state(self) -> MedianState:
        return MedianState(self)

    def to_dict(self) -> dict[str, Any]:
        return {"rule": "median", "level": self.level, "spread": self.spread, "window": self.window}


@dataclass(frozen=True)
class _QuartileFollow(_Rule):
    """A rule that measures a run's scores from their own median in a spread between two of their
    quantiles (`quarters`: the ranks it reads, in quarters of the rows so far, the median's first),
    in `unit`s of the validation's same spread from its median `level`, over its newest `window` rows (0: all)."""

    level: float
    unit: float
    window: int = 0
    # The validation quantiles whose distance is the unit, and the rule's name in `to_dict`.
    low: ClassVar[float]
    high: ClassVar[float]
    quarters: ClassVar[tuple[int, ...]]
    rule: ClassVar[str]

    @classmethod
    def of(cls, val_scores: np.ndarray, base: float, window: int = 0) -> Self:
        """From the validation scores the threshold `base` came from. With no spread (a quarter of
        the scores or more tied at the median), the margin itself is the unit."""
        return cls(*_level_and_unit(val_scores, base, cls.low, cls.high), window)

    def bins(self, scores: np.ndarray) -> np.ndarray:
        """Each score's bin: k for SIGNED_EDGES[k - 1] <= distance < SIGNED_EDGES[k] (0 below the first)."""
        distance = (np.asarray(scores, dtype=np.float64) - self.level) / self.unit
        return np.searchsorted(SIGNED_EDGES, distance, side="right")

    def threshold(self, base: float, *bins: int) -> float:
        raise NotImplementedError

    def state(self) -> QuartileState:
        return QuartileState(self)

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "level": self.level, "unit": self.unit, "window": self.window}


@dataclass(frozen=True)
class SpreadFollow(_QuartileFollow):
    """The validation scores' median (`level`) and lower-quartile spread (`unit`, > 0) a
    threshold follows a run's median and lower-quartile spread by."""

    low, high, quarters, rule = 0.25, 0.5, (2, 1), "spread"

    def threshold(self, base: float, *bins: int) -> float:
        """The threshold for a run whose median and lower quartile lie in these bins."""
        median, quartile = (_SIGNED_VALUES[bin_] for bin_ in bins)
        margin = (base - self.level) / self.unit  # the validation's: k, its quartile being -1
        return max(base, self.level + self.unit * (median + margin * (median - quartile)))


@dataclass(frozen=True)
class IqrFollow(_QuartileFollow):
    """The validation scores' median (`level`) and interquartile range (`unit`, > 0) a threshold
    follows a run's median and interquartile range by (a robust z-score per run)."""

    low, high, quarters, rule = 0.25, 0.75, (2, 1, 3), "iqr"

    def threshold(self, base: float, *bins: int) -> float:
        """The threshold for a run whose median, lower and upper quartile lie in these bins."""
        median, lower, upper = (_SIGNED_VALUES[bin_] for bin_ in bins)
        margin = (base - self.level) / self.unit  # the validation's: k, its range being 1
        return max(base, self.level + self.unit * (median + margin * (upper - lower)))


Follow = MedianFollow | SpreadFollow | IqrFollow
RULES: dict[str, type[Follow]] = {"median": MedianFollow, "spread": SpreadFollow, "iqr": IqrFollow}


def follow_of(rule: str, val_scores: np.ndarray, base: float, window: int = 0) -> Follow:
    """The following rule `rule` (a key of `RULES`) for the threshold `base` from `val_scores`,
    over each run's newest `window` rows (0: all)."""
    return RULES[rule].of(val_scores, base, window)


def follow_from_dict(content: Any) -> Follow:
    """The rule `to_dict` wrote (without "rule": the median rule, as written before the spread rule;
    without "window": the whole run, as written before windows).

    Raises:
        ValueError: Not a rule with finite numbers, a unit > 0 and a window of 0 rows or more (what
            is wrong, in a sentence).
    """
    rule = content.get("rule", "median") if isinstance(content, dict) else None
    if not isinstance(rule, str) or rule not in RULES:
        raise ValueError(f"not a rule ({', '.join(map(repr, RULES))}) with its level and unit")
    keys = ("level", "spread") if rule == "median" else ("level", "unit")
    values = [content.get(key) for key in keys]
    if not all(_finite(value) for value in values) or not values[1] > 0:
        raise ValueError(f"not a level and a {keys[1]} > 0")
    window = content.get("window", 0)
    if not isinstance(window, int) or isinstance(window, bool) or window < 0:
        raise ValueError("its window is not a whole number of rows >= 0")
    return RULES[rule](float(values[0]), float(values[1]), window)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and bool(np.isfinite(value))


class FollowState:
    """One stream's scores as counts of their bins (fixed memory), and the flags of rows judged by
    them in order: what the server keeps per stream and evaluation per run."""

    def __init__(self, bins: int, window: int) -> None:
        # Python ints, not an array: the loop reads and writes one at a time.
        self.counts = [0] * bins
        self.rows = 0  # counted: all of the run's, or its newest `window`
        self.window = window
        self.recent: deque[int] = deque()  # the counted rows' bins, oldest first (with a window only)

    def judge(self, scores: np.ndarray, base: float) -> np.ndarray:
        """Flag each score by the rows before it, then count it. Evaluation replays every test row
        of each detector through here: a part at a time, so that the Python objects the loop reads
        stay a few MB whatever the rows."""
        scores = np.asarray(scores, dtype=np.float64)
        flags = np.empty(len(scores), dtype=bool)
        for start in range(0, len(scores), _PART_ROWS):
            part = scores[start : start + _PART_ROWS]
            flags[start : start + len(part)] = self._judge_part(part, base)
        return flags

    def _judge_part(self, scores: np.ndarray, base: float) -> list[bool]:
        raise NotImplementedError


class MedianState(FollowState):
    """A stream's lower median, as the bin it lies in (`median_bin`)."""

    def __init__(self, follow: MedianFollow) -> None:
        super().__init__(len(EDGES) + 1, follow.window)
        self.follow = follow
        self.median_bin = 0  # the bin of the lower median of the rows so far
        self.below = 0  # rows in bins under `median_bin`

    def _judge_part(self, scores: np.ndarray, base: float) -> list[bool]:
        # The state lives in locals while the loop runs (attribute reads cost more than the work).
        flagged = []
        counts, rows, median_bin, below = self.counts, self.rows, self.median_bin, self.below
        window, recent = self.window, self.recent
        threshold = self.follow.threshold(base, median_bin)
        for score, bin_ in zip(scores.tolist(), self.follow.bins(scores).tolist(), strict=True):
            flagged.append(score > threshold)
            if window:  # a function call a row: only where there is a window to keep
                old, rows = _count_in_window(counts, recent, window, bin_), len(recent)
                if old < median_bin:
                    below -= 1
            else:
                counts[bin_] += 1
                rows += 1
            if bin_ < median_bin:
                below += 1
            rank = (rows - 1) // 2 + 1  # the lower median's rank, from 1
            # Most rows leave the median in its bin: the walk only when it moves.
            if below + counts[median_bin] < rank or below >= rank:
                median_bin, below = _walk(counts, median_bin, below, rank)
                threshold = self.follow.threshold(base, median_bin)
        self.rows, self.median_bin, self.below = rows, median_bin, below
        return flagged


class QuartileState(FollowState):
    """A stream's median and quartiles, as the bins they lie in (the ranks its rule's `quarters` name)."""

    def __init__(self, follow: _QuartileFollow) -> None:
        super().__init__(len(SIGNED_EDGES) + 1, follow.window)
        self.follow = follow
        # Each starts at the bin of the validation median (a run's first row is judged by `base`).
        self.at = [int(follow.bins(np.array([follow.level]))[0])] * len(follow.quarters)
        self.below = [0] * len(follow.quarters)  # rows in bins under each

    def _judge_part(self, scores: np.ndarray, base: float) -> list[bool]:
        flagged = []
        counts, rows, at, below = self.counts, self.rows, self.at, self.below
        window, recent = self.window, self.recent
        quarters = self.follow.quarters
        pointers = range(len(quarters))
        threshold = self.follow.threshold(base, *at) if rows else base
        gone = len(counts)  # no bin: nothing left the window
        for score, bin_ in zip(scores.tolist(), self.follow.bins(scores).tolist(), strict=True):
            flagged.append(score > threshold)
            moved = not rows
            if window:
                old, rows = _count_in_window(counts, recent, window, bin_), len(recent)
            else:
                counts[bin_] += 1
                old, rows = gone, rows + 1
            for i in pointers:
                here, under = at[i], below[i]
                if bin_ < here:
                    under += 1
                if old < here:
                    under -= 1
                rank = (rows - 1) * quarters[i] // 4 + 1  # the lower quantile's rank, from 1
                if under + counts[here] < rank or under >= rank:
                    at[i], under = _walk(counts, here, under, rank)
                    moved = True
                below[i] = under
            if moved:
                threshold = self.follow.threshold(base, *at)
        self.rows = rows
        return flagged


class FollowStreams:
    """The state of each stream a server process scores (at most `MAX_STREAMS`, the least
    recently seen forgotten first: a forgotten stream starts again at the threshold itself)."""

    def __init__(self, follow: Follow, base: float) -> None:
        self.follow, self.base = follow, base
        self.states: OrderedDict[Any, FollowState] = OrderedDict()

    def judge(self, scores: np.ndarray, stream: Any = None) -> np.ndarray:
        """Flags of a request's scores in time order, by the state of `stream` (None: the one
        stream of a model without references)."""
        state = self.states.pop(stream, None) or self.follow.state()
        self.states[stream] = state
        if len(self.states) > MAX_STREAMS:
            self.states.popitem(last=False)
        return state.judge(scores, self.base)
