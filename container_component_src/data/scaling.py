"""Channel scaling: fit on the training set only, apply the same transform everywhere.

With `reference_rows` > 0 each run of rows (a segment: rows on the regular grid without a gap)
is taken relative to its own operating point, the mean of its first `reference_rows` rows,
instead of the training set's center: (x - reference) / scale. Recordings of one system that
differ in level (another test bed set-up, another mode, a sensor offset) then look alike, and
what the model sees is a run's deviation from how it started. The served model needs the same
reference with each request (see `serving.inference`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
from tqdm.auto import tqdm

from container_component_src import datasets, storage
from container_component_src.choices import ScalerKind
from container_component_src.data.segments import SegmentNumbering, median_step_ns, segment_starts
from container_component_src.errors import OptionError
from container_component_src.storage import InputError

if TYPE_CHECKING:
    from container_component_src.cluster.dask import Tasks

# A channel with at most this many distinct values in training is a mode (command, state) channel.
MAX_MODE_LEVELS = 5
# Distinct values and resolution are read from at most this many training rows.
KIND_SAMPLE_ROWS = 200_000
# A continuous channel drifts in training when at least DRIFT_SHARE of its variance lies between
# the means of DRIFT_BLOCKS consecutive blocks of rows, both over all its training rows and over
# their newest half: its level wanders through training and still wanders where training ends (a
# temperature warming through a run) instead of varying about one center, so a later level off the
# training range is its nature, not evidence of a fault. A start-up transient or a step early in
# training that then settles is an operating point the model was fitted on, not a level on the move.
DRIFT_BLOCKS = 8
DRIFT_SHARE = 0.5


def _levels(values: np.ndarray) -> tuple[int, float]:
    """Distinct values of one channel, and its scale floor: its resolution (the smallest step
    between two values) when it sits at one value more than half the time, else 0."""
    distinct, counts = np.unique(values.astype(np.float64), return_counts=True)
    if distinct.size < 2 or counts.max() * 2 <= values.size:
        return distinct.size, 0.0
    return distinct.size, float(np.diff(distinct).min())


def channel_levels(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values and scale floor (see `_levels`) of each column of a (rows, channels)
    matrix, read from at most `KIND_SAMPLE_ROWS` evenly spaced rows."""
    return _sample_levels(values[:: _sample_stride(len(values))])


def _sample_stride(rows: int) -> int:
    return max(1, rows // KIND_SAMPLE_ROWS)


def _sample_levels(sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pairs = [_levels(sample[:, i]) for i in range(sample.shape[1])]
    levels = np.asarray([n for n, _ in pairs], dtype=np.int64)
    return levels, np.asarray([r for _, r in pairs], dtype=np.float64)


def channel_kinds(levels: np.ndarray) -> np.ndarray:
    """Kind of each channel from its number of distinct values: constant, mode or continuous."""
    return np.where(levels <= 1, "constant", np.where(levels <= MAX_MODE_LEVELS, "mode", "continuous"))


class Moments:
    """Rows, mean and sum of squared deviations per column, merged batch by batch (Chan et al.):
    the mean and variance of all rows without holding them."""

    def __init__(self, columns: int) -> None:
        self.n = 0
        self.mean = np.zeros(columns)
        self.m2 = np.zeros(columns)

    def add(self, values: np.ndarray) -> None:
        n = len(values)
        if n == 0:
            return
        mean = values.mean(axis=0, dtype=np.float64)
        m2 = np.square(values - mean).sum(axis=0)
        delta, total = mean - self.mean, self.n + n
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + np.square(delta) * (self.n * n / total)
        self.n = total

    def merge(self, other: Moments) -> None:
        if other.n == 0:
            return
        delta, total = other.mean - self.mean, self.n + other.n
        self.mean = self.mean + delta * (other.n / total)
        self.m2 = self.m2 + other.m2 + np.square(delta) * (self.n * other.n / total)
        self.n = total

    def variance(self) -> np.ndarray:
        return self.m2 / self.n if self.n else np.zeros_like(self.m2)


class _DriftBlocks:
    """The moments of `DRIFT_BLOCKS` consecutive blocks of equally many rows among the rows
    [start, start + length) of a series that arrives in batches (see `drift_shares`)."""

    def __init__(self, start: int, length: int, columns: int) -> None:
        self.start, self.per_block, self.columns = start, length // DRIFT_BLOCKS, columns
        self.blocks = [Moments(columns) for _ in range(DRIFT_BLOCKS)] if self.per_block >= 2 else []

    def add(self, values: np.ndarray, first_row: int) -> None:
        """Add the rows `values`, the first of which is row `first_row` of the series."""
        for number, block in enumerate(self.blocks):
            low = self.start + number * self.per_block
            begin, end = max(low, first_row), min(low + self.per_block, first_row + len(values))
            if begin < end:
                block.add(values[begin - first_row : end - first_row])

    def shares(self) -> np.ndarray:
        if not self.blocks:
            return np.zeros(self.columns)
        total = Moments(self.columns)
        for block in self.blocks:
            total.merge(block)
        between = np.var(np.stack([b.mean for b in self.blocks]), axis=0)
        variance = total.variance()
        return np.divide(between, variance, out=np.zeros_like(variance), where=variance > 0)


def drift_shares(values: np.ndarray) -> np.ndarray:
    """Share of each column's variance (rows in time order) that lies between the means of
    `DRIFT_BLOCKS` consecutive blocks of equally many rows; 0 for a constant column and for fewer
    than two rows per block."""
    blocks = _DriftBlocks(0, len(values), values.shape[1])
    blocks.add(np.asarray(values, dtype=np.float64), 0)
    return blocks.shares()


def mode_channels_of(values: np.ndarray) -> tuple[int, ...]:
    """Indices of the columns of a (rows, channels) matrix that are constant or modes: the rule
    `fit_scaler` applies, for a caller that trains on rows without a scaler."""
    return tuple(int(i) for i in np.flatnonzero(channel_kinds(channel_levels(values)[0]) != "continuous"))


# A pass over the rows: a fresh iterator of frames in time order each time it is called.
Batches = Callable[[], Iterator[pd.DataFrame]]


def _matrix(frame: pd.DataFrame, channels: list[str], dtype: type) -> np.ndarray:
    return frame[channels].to_numpy(dtype)


def _pass(batches: Batches, rows: int, description: str, progress: bool) -> Iterator[pd.DataFrame]:
    """One pass over the rows, with a progress bar of rows when `progress`."""
    with tqdm(total=rows, desc=description, unit="row", disable=not progress) as bar:
        for frame in batches():
            yield frame
            bar.update(len(frame))


def _times(frame: pd.DataFrame) -> np.ndarray:
    index = frame.index if frame.index.tz is not None else frame.index.tz_localize("UTC")
    return index.as_unit("ns").asi8


def _segment_references(
    frames: Iterable[pd.DataFrame], channels: list[str], reference_rows: int, numbering: SegmentNumbering, dtype: type
) -> np.ndarray:
    """The mean of the first `reference_rows` rows of each segment (all its rows when it is
    shorter), one row per segment, from the frames of the series in time order."""
    sums: list[np.ndarray] = []
    counts: list[int] = []
    for frame in frames:
        ids = numbering(_times(frame))
        if ids.size == 0 or (counts and ids[-1] == len(counts) - 1 and counts[-1] >= reference_rows):
            continue
        values = _matrix(frame, channels, dtype)
        for start in segment_starts(ids):
            segment = int(ids[start])
            if segment == len(counts):
                sums.append(np.zeros(len(channels)))
                counts.append(0)
            take = values[start : start + reference_rows - counts[segment]]
            take = take[: int(np.searchsorted(ids[start:], segment, side="right"))]
            sums[segment] += take.sum(axis=0, dtype=np.float64)
            counts[segment] += len(take)
    return np.stack(sums) / np.asarray(counts)[:, None]


def _order_keys(values: np.ndarray) -> np.ndarray:
    """Unsigned integers in the order of the (finite) floats `values`: what a radix select counts."""
    unsigned = np.uint32 if values.dtype == np.float32 else np.uint64
    bits = values.view(unsigned)
    top = unsigned(1) << unsigned(8 * values.dtype.itemsize - 1)
    return np.where(bits & top, ~bits, bits | top)


def _from_keys(keys: np.ndarray, dtype: type) -> np.ndarray:
    top = keys.dtype.type(1) << keys.dtype.type(8 * keys.dtype.itemsize - 1)
    return np.where(keys & top, keys & ~top, ~keys).view(dtype).astype(np.float64)


RADIX_BITS = 16


def _order_statistics(
    batches: Batches, channels: list[str], rows: int, ranks: list[int], dtype: type, progress: bool
) -> np.ndarray:
    """The values of rank `ranks` (0 = smallest) of each channel, exactly, by radix select: each
    pass over the rows counts the next 16 bits of the values' order keys among the rows whose
    leading bits match the rank's so far (two passes for float32 channels, four for float64), in
    memory of 2^16 counts per channel and rank, whatever the rows.

    Returns:
        float64 values, shape (len(ranks), channels).
    """
    width = 8 * np.dtype(dtype).itemsize
    unsigned = np.uint32 if width == 32 else np.uint64
    prefixes = np.zeros((len(ranks), len(channels)), dtype=np.uint64)
    remaining = np.tile(np.asarray(ranks, dtype=np.int64)[:, None], (1, len(channels)))
    offsets = (np.arange(len(channels), dtype=np.int64) << RADIX_BITS)[None, :]
    for done in range(0, width, RADIX_BITS):
        shift = width - done - RADIX_BITS
        # Ranks whose leading bits agree in every channel share one count.
        groups: dict[bytes, list[int]] = {}
        for rank in range(len(ranks)):
            groups.setdefault(prefixes[rank].tobytes(), []).append(rank)
        counts = {key: np.zeros(len(channels) << RADIX_BITS, dtype=np.int64) for key in groups}
        for frame in _pass(batches, rows, f"quantiles {done // RADIX_BITS + 1}/{width // RADIX_BITS}", progress):
            keys = _order_keys(_matrix(frame, channels, dtype))
            digits = ((keys >> unsigned(shift)) & unsigned((1 << RADIX_BITS) - 1)).astype(np.int64) + offsets
            for key, members in groups.items():
                if done == 0:
                    selected = digits.ravel()
                else:
                    leading = (keys >> unsigned(shift + RADIX_BITS)).astype(np.uint64)
                    selected = digits[leading == prefixes[members[0]][None, :]]
                counts[key] += np.bincount(selected, minlength=len(channels) << RADIX_BITS)
        for key, members in groups.items():
            cumulative = counts[key].reshape(len(channels), -1).cumsum(axis=1)
            for rank in members:
                digit = (cumulative <= remaining[rank][:, None]).sum(axis=1)
                below = np.where(digit > 0, cumulative[np.arange(len(channels)), np.maximum(digit - 1, 0)], 0)
                remaining[rank] -= below
                prefixes[rank] = (prefixes[rank] << np.uint64(RADIX_BITS)) | digit.astype(np.uint64)
    return np.stack([_from_keys(p.astype(unsigned), dtype) for p in prefixes])


def _quantiles(
    batches: Batches, channels: list[str], rows: int, quantiles: list[float], dtype: type, progress: bool
) -> np.ndarray:
    """Quantiles of each channel over all rows as `np.quantile` computes them (linear between the
    two order statistics around (rows - 1) * q), from exact order statistics."""
    positions = [(rows - 1) * q for q in quantiles]
    lows = [int(np.floor(p)) for p in positions]
    ranks = sorted({r for low in lows for r in (low, min(low + 1, rows - 1))})
    values = dict(zip(ranks, _order_statistics(batches, channels, rows, ranks, dtype, progress), strict=True))
    out = []
    for position, low in zip(positions, lows, strict=True):
        a, b, t = values[low], values[min(low + 1, rows - 1)], position - low
        # numpy's interpolation, term for term, so the result is the same to the last bit.
        out.append(np.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t))
    return np.stack(out)


def fit_scaler(
    frame: pd.DataFrame, channels: list[str], kind: str = "standard", reference_rows: int = 0
) -> dict[str, Any]:
    """Return the scaler parameters for `channels` of the rows of `frame`: see `fit_scaler_batches`."""
    return fit_scaler_batches(lambda: iter([frame]), channels, len(frame), kind, reference_rows, "the rows")


def fit_scaler_batches(
    batches: Batches,
    channels: list[str],
    rows: int,
    kind: str = "standard",
    reference_rows: int = 0,
    source: str = "training set",
    progress: bool = False,
) -> dict[str, Any]:
    """Return the scaler parameters for `channels`: (x - center) / scale.

    standard: mean and standard deviation; robust: median and interquartile range / 1.349 (the
    standard deviation of a normal channel, unmoved by outliers); minmax: minimum and range.
    A channel that sits at one value more than half the time in training has its scale floored at
    its resolution (the smallest step between two of its values), so that one step later scales
    to at most 1, not to thousands; a constant channel gets scale 1. Channels are listed by
    kind: constant, mode (at most `MAX_MODE_LEVELS` distinct values: a command or state) or
    continuous, and those whose scale was floored are named. Continuous channels that drift in
    training (see `DRIFT_SHARE`; measured on the rows in time order as the model sees them, each
    segment relative to its reference when `reference_rows` > 0) are named with their drift share,
    the smaller of those of all rows and of the newest half.

    The rows arrive in batches, a pass at a time (memory: a batch, whatever the rows): one pass
    for moments, extremes, the sample that tells kinds and (without references) drift; with
    references, two more for the segments' references and one for drift; robust quantiles are
    exact, by radix select (two passes for float32 channels, four for float64).

    Args:
        batches: Each call, a fresh iterator of the rows' frames in time order.
        rows: Rows in all batches.
        reference_rows: 0, or the rows at the start of each segment whose mean replaces the
            center for that segment (see the module's docstring); kept in the scaler.
        source: What the rows are, for error messages.
        progress: Show a progress bar per pass.

    Raises:
        OptionError: An unknown kind, or `reference_rows` below 0.
        InputError: No rows, or a channel with a missing or infinite value.
    """
    if reference_rows < 0:
        raise OptionError(f"--reference-rows must be 0 (off) or more, got {reference_rows}")
    if kind not in tuple(ScalerKind):
        raise OptionError(f"--kind must be one of {', '.join(ScalerKind)}, got {kind!r}")
    if rows == 0:
        raise InputError(f"{source} holds no rows")
    first = next(batches())
    dtype = np.float32 if all(first[c].dtype == np.float32 for c in channels) else np.float64
    by_segment = bool(reference_rows) and isinstance(first.index, pd.DatetimeIndex)
    moments = Moments(len(channels))
    low, high = np.full(len(channels), np.inf), np.full(len(channels), -np.inf)
    bad = np.zeros(len(channels), dtype=np.int64)
    stride, sample = _sample_stride(rows), []
    drift = [_DriftBlocks(0, rows, len(channels)), _DriftBlocks(rows // 2, rows - rows // 2, len(channels))]
    row = 0
    for frame in _pass(batches, rows, "scaler: moments", progress):
        values = _matrix(frame, channels, dtype)
        if not np.isfinite(values).all():
            bad += (~np.isfinite(values)).sum(axis=0)
            continue  # counted, then refused below: moments of NaN are of no use
        wide = values.astype(np.float64)
        moments.add(wide)
        low, high = (
            np.minimum(low, wide.min(axis=0, initial=np.inf)),
            np.maximum(high, wide.max(axis=0, initial=-np.inf)),
        )
        sample.append(values[(-row) % stride :: stride].copy())  # a view would keep the batch alive
        if not by_segment:
            for blocks in drift:
                blocks.add(wide, row)
        row += len(values)
    if bad.any():
        column = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{source}: channel '{channels[column]}' has {bad[column]} missing or infinite value(s): "
            "a scaler fitted on them would turn every scaled value into NaN"
        )
    if kind == ScalerKind.standard:
        center, scale = moments.mean, np.sqrt(moments.variance())
    elif kind == ScalerKind.robust:
        q25, center, q75 = _quantiles(batches, channels, rows, [0.25, 0.5, 0.75], dtype, progress)
        scale = (q75 - q25) / 1.349
    else:
        center, scale = low, high - low
    levels, resolution = _sample_levels(np.concatenate(sample))
    kinds = channel_kinds(levels)
    constant = levels <= 1
    floored = ~constant & (scale < resolution)
    scale = np.where(constant, 1.0, np.maximum(scale, resolution))
    # Each channel's range as the model sees it (scaled): `model.train` bounds the inputs of the
    # channels left out of the score to it.
    scaled_low, scaled_high = (low - center) / scale, (high - center) / scale
    if by_segment:
        scaler = {"reference_rows": reference_rows, "center": center, "scale": scale}
        scaled_low, scaled_high = np.full(len(channels), np.inf), np.full(len(channels), -np.inf)
        row = 0
        for _, values in _scaled(batches, channels, rows, scaler, dtype, progress):
            wide = values.astype(np.float64)
            for blocks in drift:
                blocks.add(wide, row)
            scaled_low = np.minimum(scaled_low, wide.min(axis=0, initial=np.inf))
            scaled_high = np.maximum(scaled_high, wide.max(axis=0, initial=-np.inf))
            row += len(values)
    shares = np.minimum(drift[0].shares(), drift[1].shares())
    drifting = (kinds == "continuous") & (shares >= DRIFT_SHARE)
    return {
        "kind": str(kind),
        "channels": list(channels),
        "center": center.tolist(),
        "scale": scale.tolist(),
        "channel_kinds": dict(zip(channels, kinds.tolist(), strict=True)),
        "distinct_values": dict(zip(channels, levels.tolist(), strict=True)),
        "constant_channels": [c for c, k in zip(channels, constant, strict=True) if k],
        "floored_channels": [c for c, k in zip(channels, floored, strict=True) if k],
        "drifting_channels": {c: round(float(v), 3) for c, v, d in zip(channels, shares, drifting, strict=True) if d},
        "reference_rows": int(reference_rows),
        "scaled_range": {"low": scaled_low.tolist(), "high": scaled_high.tolist()},
    }


def describe_channels(scaler: dict[str, Any]) -> list[str]:
    """One line per channel that is not plainly continuous: its kind and why; first, a line for
    all channels when each run is scaled relative to its own first rows."""
    rows = scaler.get("reference_rows", 0)
    lines = [f"all channels: each run relative to the mean of its first {rows} rows (reference_rows)"] if rows else []
    distinct = scaler.get("distinct_values", {})
    for channel, kind in scaler.get("channel_kinds", {}).items():
        if kind == "constant":
            lines.append(f"{channel}: constant in training (scale set to 1, weighted as a mode channel)")
        elif kind == "mode":
            lines.append(
                f"{channel}: mode channel, {distinct[channel]} distinct values in training (weighted as a mode channel)"
            )
    for channel in scaler.get("floored_channels", []):
        lines.append(f"{channel}: scale floored at its resolution (it barely moved in training)")
    for channel, share in scaler.get("drifting_channels", {}).items():
        lines.append(
            f"{channel}: drifts in training (at least {share:.0%} of its variance between {DRIFT_BLOCKS} blocks of "
            "rows in time, over all rows and over the newest half; weighted by drift_weight)"
        )
    return lines


def scale_values(values: np.ndarray, scaler: dict[str, Any], center: np.ndarray | None = None) -> np.ndarray:
    """Scale a (rows, channels) matrix whose columns are in the scaler's channel order; float32.

    Args:
        center: One row that takes the place of the scaler's center (a segment's reference).
    """
    center = np.asarray(scaler["center"]) if center is None else center
    return ((values - center) / np.asarray(scaler["scale"])).astype(np.float32)


def _scale_frame(
    frame: pd.DataFrame,
    channels: list[str],
    scaler: dict[str, Any],
    references: np.ndarray | None,
    numbering: SegmentNumbering | None,
) -> np.ndarray:
    """The scaled channels of one frame (float32): each segment relative to its row of
    `references` when given (segments numbered by `numbering`, which carries on from the frame
    before), else relative to the scaler's center."""
    values = _matrix(frame, channels, np.float64)
    if references is None or numbering is None or not len(frame):
        return scale_values(values, scaler)
    return scale_values(values, scaler, references[numbering(_times(frame))])


def _scaled(
    batches: Batches, channels: list[str], rows: int, scaler: dict[str, Any], dtype: type, progress: bool
) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    """Each batch with its scaled channels (float32), each segment relative to its reference when
    the scaler takes references (then the frames must be indexed by time)."""
    references = numbering = None
    if scaler.get("reference_rows", 0) and rows:
        step = median_step_ns(_times(f) for f in _pass(batches, rows, "segments", progress))
        references = _segment_references(
            _pass(batches, rows, "segment references", progress),
            channels,
            scaler["reference_rows"],
            SegmentNumbering(step),
            dtype,
        )
        numbering = SegmentNumbering(step)
    for frame in _pass(batches, rows, "scale", progress):
        yield frame, _scale_frame(frame, channels, scaler, references, numbering)


def _check_scalable(frame: pd.DataFrame, scaler: dict[str, Any], source: str) -> type:
    """The dtype the channels of `frame` are read in.

    Raises:
        InputError: A channel is missing, or the scaler takes segments' references and the rows
            are not indexed by time.
    """
    channels = scaler["channels"]
    missing = [c for c in channels if c not in frame.columns]
    if missing:
        raise InputError(f"{source} lacks channel(s) the scaler was fitted on: {', '.join(missing)}")
    if scaler.get("reference_rows", 0) and not isinstance(frame.index, pd.DatetimeIndex):
        raise InputError(f"{source} is not indexed by time: its segments' references cannot be found")
    return np.float32 if all(frame[c].dtype == np.float32 for c in channels) else np.float64


def scale_frames(
    batches: Batches, scaler: dict[str, Any], source: str, rows: int, progress: bool = False
) -> Iterator[pd.DataFrame]:
    """Each batch with the scaler's channels scaled; other columns (labels) pass through unchanged.

    Raises:
        InputError: A channel is missing, or the scaler takes segments' references and the rows
            are not indexed by time.
    """
    dtype = _check_scalable(next(batches()), scaler, source)
    for frame, scaled in _scaled(batches, scaler["channels"], rows, scaler, dtype, progress):
        out = frame.copy()
        out[scaler["channels"]] = scaled
        yield out


def apply_scaler(frame: pd.DataFrame, scaler: dict[str, Any], source: str) -> pd.DataFrame:
    """Scale the scaler's channels of `frame`; other columns (labels) pass through unchanged.

    Raises:
        InputError: A channel is missing, or the scaler takes segments' references and
            `frame` is not indexed by time.
    """
    return next(scale_frames(lambda: iter([frame]), scaler, source, len(frame)))


def channel_columns(frame: pd.DataFrame, label_column: str) -> list[str]:
    """The numeric columns of `frame` except the label."""
    return [c for c in frame.columns if c != label_column and pd.api.types.is_numeric_dtype(frame[c])]


def run_fit_scaler(
    train_url: str, scaler_url: str, kind: str = "standard", label_column: str = "label", reference_rows: int = 0
) -> dict[str, Any]:
    """Fit the scaler on the training set (a dataset, streamed a batch at a time) and write it as JSON."""
    train = datasets.parts(train_url)
    channels = channel_columns(next(datasets.iter_frames(train_url, dataset_parts=train)), label_column)

    def batches() -> Iterator[pd.DataFrame]:
        return datasets.iter_frames(train_url, channels, dataset_parts=train)

    rows = sum(p.rows for p in train)
    scaler = fit_scaler_batches(
        batches, channels, rows, kind, reference_rows, f"training set {train_url}", progress=True
    )
    storage.write_json(scaler, scaler_url)
    return scaler


def read_scaler(url: str) -> dict[str, Any]:
    """The scaler fit-scaler wrote at `url`, checked.

    Raises:
        InputError: Not JSON, or no channel list with a finite center and a positive scale for each.
    """
    scaler = storage.read_json(url)
    try:
        channels, center, scale = list(scaler["channels"]), scaler["center"], scaler["scale"]
        center, scale = np.asarray(center, dtype=np.float64), np.asarray(scale, dtype=np.float64)
        valid = center.shape == scale.shape == (len(channels),) and np.isfinite(center).all()
        valid = valid and bool((np.isfinite(scale) & (scale > 0)).all()) and int(scaler.get("reference_rows", 0)) >= 0
    except (KeyError, TypeError, ValueError):
        valid = False
    if not valid:
        raise InputError(
            f"{url} is not a scaler written by fit-scaler: it needs 'channels', and a finite 'center' and positive "
            "'scale' per channel"
        )
    return scaler


def run_apply_scaler(
    scaler_url: str, pairs: list[tuple[str, str]], tasks: Tasks, scratch_url: str = ""
) -> dict[str, int]:
    """Scale each (input, output) dataset pair with the fitted scaler; return rows per output.

    One Dask task per part, streaming it a batch at a time. With references (`reference_rows`),
    this process first reads the times and each segment's first rows (two passes) and gives each
    task the references and where the segment numbering stands at its part's start.

    Args:
        tasks: Where the tasks run (`cluster.dask.step_tasks`).
        scratch_url: See `datasets.map_parts` (workers in pods of their own).
    """
    scaler = read_scaler(scaler_url)
    channels, reference_rows = scaler["channels"], scaler.get("reference_rows", 0)
    counts = {}
    for number, (source, target) in enumerate(pairs):
        listed = datasets.parts(source)
        dtype = _check_scalable(next(datasets.iter_frames(source, dataset_parts=listed)), scaler, source)
        step, references, states = 0.0, None, {}
        if reference_rows and sum(p.rows for p in listed):
            frames = datasets.iter_frames(source, [], dataset_parts=listed)
            step = median_step_ns(_times(f) for f in frames)
            numbering = SegmentNumbering(step)
            frames = _noting_starts(listed, channels, numbering, states)
            references = _segment_references(frames, channels, reference_rows, numbering, dtype)
        scratch = storage.join(scratch_url, str(number)) if scratch_url else ""
        args = (scaler, step, references, states)
        name = f"scale {source.rstrip('/').rsplit('/', 1)[-1]}"
        rows = datasets.map_parts(tasks, source, [target], _scale_part, args, scratch, name)
        counts[target] = sum(rows)
    return counts


def _check_finite(scaled: np.ndarray, values: np.ndarray, channels: list[str], source: str) -> None:
    """Refuse a finite value that scales beyond float32 (a huge value against a tiny scale): written
    as infinity it would turn training's loss into NaN.

    Raises:
        InputError: Names the source, the channel and the value.
    """
    bad = ~np.isfinite(scaled) & np.isfinite(values)
    if bad.any():
        row, column = (int(i[0]) for i in np.nonzero(bad))
        raise InputError(
            f"{source}: channel '{channels[column]}' value {values[row, column]:g} scales beyond float32 "
            f"({bad.sum()} value(s)): the channel barely moved in training; drop it or fix the value"
        )


def _noting_starts(
    listed: list[datasets.Part],
    channels: list[str],
    numbering: SegmentNumbering,
    states: dict[str, tuple[int | None, int]],
) -> Iterator[pd.DataFrame]:
    """The frames of the parts in order, noting in `states` where `numbering` stands as each part starts."""
    for part in listed:
        states[part.url] = (numbering.last_time, numbering.last_id)
        yield from datasets.iter_part(part.url, channels)


def _scale_part(
    part_url: str,
    targets: list[str],
    scaler: dict[str, Any],
    step: float,
    references: np.ndarray | None,
    states: dict[str, tuple[int | None, int]],
) -> tuple[list[datasets.Part], int]:
    """One Dask task of `run_apply_scaler`: scale one part; its rows. Arrow tables in, Arrow tables
    out: the channels are replaced column by column, the other columns pass through untouched."""
    channels = scaler["channels"]
    numbering = None
    if references is not None:
        numbering = SegmentNumbering(step)
        numbering.last_time, numbering.last_id = states[part_url]
    out = datasets.PartWriter(targets[0])
    try:
        for table in datasets.iter_part_tables(part_url):
            values = np.column_stack([table.column(c).to_numpy() for c in channels]).astype(np.float64, copy=False)
            center = None
            if numbering is not None and table.num_rows:
                center = references[numbering(datasets.times_ns(table))]
            scaled = scale_values(values.reshape(table.num_rows, len(channels)), scaler, center)
            _check_finite(scaled, values, channels, part_url)
            for j, channel in enumerate(channels):
                position = table.schema.get_field_index(channel)
                table = table.set_column(position, pa.field(channel, pa.float32()), pa.array(scaled[:, j]))
            out.write(table)
    except BaseException:
        out.abort()
        raise
    return [out.close()], out.rows
