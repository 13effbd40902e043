"""A label-free threshold that follows each run's median score: the rule evaluation replays over
the test rows and the model server applies as rows arrive, with the same flags row for row.

A fixed threshold from validation scores over-alarms on a run whose normal operation sits higher
than the validation rows (another set-up of the test bed, a new operating point after a fault):
it flags all of it. Here the threshold's margin over the validation median (`level`) is scaled
by how far the median of the run's own scores before each row (every row, flagged or not) has
risen above `level`, in validation upper-quartile spreads (`spread`), never below the margin:

    threshold = level + (base - level) x max(1, (run median - level) / spread)

A median barely moves for anomalies that are a minority of a run's rows, and follows a run's new
normal level, which a threshold that learns only from the rows it does not flag (DSPOT) cannot
once it flags them all. The factor is rounded down to 1 %-wide bins (`EDGES`), so that a
stream's state is a fixed array of bin counts (memory that does not grow with the rows): the
lower median of the bins is the bin of the exact lower median. Evaluation replays each run
through the same state the server keeps, so both flag the same rows.

A run is what the model's reference marks: for a model scaled per run (`reference_rows`), each
segment of rows in evaluation and each distinct `reference` a request carries in the server;
without references, all of a split's rows in time order, and all the rows one server process
scores.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

# Bin edges of the rise in spreads: 1 %-wide from 1 to about 1e6 (a rise below one spread leaves
# the threshold as it is; above the last edge, the last edge).
EDGES = 1.01 ** np.arange(1389)
_EDGE_LIST = EDGES.tolist()
# Streams one server process follows at once (the least recently seen is forgotten first).
MAX_STREAMS = 1024
# Rows judged in one pass of the loop (their Python floats and bins, ~5 MB).
_PART_ROWS = 65_536


@dataclass(frozen=True)
class MedianFollow:
    """The validation scores' median (`level`) and upper-quartile spread (`spread`, > 0) a
    threshold follows a run's median score by."""

    level: float
    spread: float

    @classmethod
    def of(cls, val_scores: np.ndarray, base: float) -> MedianFollow:
        """From the validation scores the threshold `base` came from. With no quartile spread
        (a quarter of the scores or more tied at the median), the margin itself is the unit."""
        scores = np.asarray(val_scores, dtype=np.float64)
        level = float(np.median(scores))
        spread = float(np.quantile(scores, 0.75)) - level
        if not spread > 0:
            spread = base - level if base > level else 1.0
        return cls(level=level, spread=spread)

    def bins(self, scores: np.ndarray) -> np.ndarray:
        """Each score's bin: 0 for a rise under one spread, k for EDGES[k - 1] <= rise < EDGES[k]."""
        rise = (np.asarray(scores, dtype=np.float64) - self.level) / self.spread
        return np.searchsorted(EDGES, rise, side="right")

    def threshold(self, base: float, median_bin: int) -> float:
        """The threshold `base` scaled for a run whose median lies in bin `median_bin`."""
        factor = _EDGE_LIST[median_bin - 1] if median_bin else 1.0
        return self.level + (base - self.level) * factor

    def replay(self, scores: np.ndarray, base: float, runs: np.ndarray | None = None) -> np.ndarray:
        """The flags of `scores` in time order, each row judged by the lower median of its run's rows
        before it (a run's first row by the margin itself), as the server judges them: the same
        `FollowState`, one per run. `runs` numbers each row's run (None: one run)."""
        scores = np.asarray(scores, dtype=np.float64)
        if runs is None:
            return FollowState(self).judge(scores, base)
        runs = np.asarray(runs)
        states: dict[Any, FollowState] = {}
        flags = np.empty(len(scores), dtype=bool)
        # Contiguous blocks of one run at a time (a run may come back after another: its state waits).
        edges = np.flatnonzero(np.diff(runs)) + 1
        for start, stop in zip(np.r_[0, edges], np.r_[edges, len(runs)], strict=True):
            state = states.setdefault(runs[start].item(), FollowState(self))
            flags[start:stop] = state.judge(scores[start:stop], base)
        return flags

    def to_dict(self) -> dict[str, float]:
        return {"level": self.level, "spread": self.spread}


class FollowState:
    """One stream's running median, as counts of its scores' bins (fixed memory), and the flags of
    rows judged by it in order: what the server keeps per stream and evaluation per run."""

    def __init__(self, follow: MedianFollow) -> None:
        self.follow = follow
        # Python ints, not an array: the loop below reads and writes one at a time.
        self.counts = [0] * (len(EDGES) + 1)
        self.rows = 0
        self.median_bin = 0  # the bin of the lower median of the rows so far
        self.below = 0  # rows in bins under `median_bin`

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
        # The state lives in locals while the loop runs (attribute reads cost more than the work).
        flagged = []
        counts, rows, median_bin, below = self.counts, self.rows, self.median_bin, self.below
        threshold = self.follow.threshold(base, median_bin)
        for score, bin_ in zip(scores.tolist(), self.follow.bins(scores).tolist(), strict=True):
            flagged.append(score > threshold)
            counts[bin_] += 1
            rows += 1
            if bin_ < median_bin:
                below += 1
            rank = (rows - 1) // 2 + 1  # the lower median's rank, from 1
            moved = median_bin
            while below + counts[median_bin] < rank:
                below += counts[median_bin]
                median_bin += 1
            while below >= rank:
                median_bin -= 1
                below -= counts[median_bin]
            if median_bin != moved:
                threshold = self.follow.threshold(base, median_bin)
        self.rows, self.median_bin, self.below = rows, median_bin, below
        return flagged


class FollowStreams:
    """The `FollowState` of each stream a server process scores (at most `MAX_STREAMS`, the least
    recently seen forgotten first: a forgotten stream starts again at the margin itself)."""

    def __init__(self, follow: MedianFollow, base: float) -> None:
        self.follow, self.base = follow, base
        self.states: OrderedDict[Any, FollowState] = OrderedDict()

    def judge(self, scores: np.ndarray, stream: Any = None) -> np.ndarray:
        """Flags of a request's scores in time order, by the state of `stream` (None: the one
        stream of a model without references)."""
        state = self.states.pop(stream, None) or FollowState(self.follow)
        self.states[stream] = state
        if len(self.states) > MAX_STREAMS:
            self.states.popitem(last=False)
        return state.judge(scores, self.base)
