"""Channel scaling: fit on the training set only, apply the same transform everywhere.

With `reference_rows` > 0 each run of rows (a segment: rows on the regular grid without a gap)
is taken relative to its own operating point, the mean of its first `reference_rows` rows,
instead of the training set's center: (x - reference) / scale. Recordings of one system that
differ in level (another test bed set-up, another mode, a sensor offset) then look alike, and
what the model sees is a run's deviation from how it started. The served model needs the same
reference with each request (see `serving.inference`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from container_component_src import storage
from container_component_src.choices import ScalerKind
from container_component_src.data.segments import segment_ids, segment_starts
from container_component_src.errors import OptionError
from container_component_src.storage import InputError

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
    distinct, counts = np.unique(values, return_counts=True)
    if distinct.size < 2 or counts.max() * 2 <= values.size:
        return distinct.size, 0.0
    return distinct.size, float(np.diff(distinct).min())


def channel_levels(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values and scale floor (see `_levels`) of each column of a (rows, channels)
    matrix, read from at most `KIND_SAMPLE_ROWS` evenly spaced rows."""
    sample = values[:: max(1, len(values) // KIND_SAMPLE_ROWS)]
    pairs = [_levels(sample[:, i]) for i in range(values.shape[1])]
    levels = np.asarray([n for n, _ in pairs], dtype=np.int64)
    return levels, np.asarray([r for _, r in pairs], dtype=np.float64)


def channel_kinds(levels: np.ndarray) -> np.ndarray:
    """Kind of each channel from its number of distinct values: constant, mode or continuous."""
    return np.where(levels <= 1, "constant", np.where(levels <= MAX_MODE_LEVELS, "mode", "continuous"))


def drift_shares(values: np.ndarray) -> np.ndarray:
    """Share of each column's variance (rows in time order) that lies between the means of
    `DRIFT_BLOCKS` consecutive blocks of equally many rows; 0 for a constant column and for fewer
    than two rows per block."""
    per_block = len(values) // DRIFT_BLOCKS
    if per_block < 2:
        return np.zeros(values.shape[1])
    blocks = values[: per_block * DRIFT_BLOCKS].reshape(DRIFT_BLOCKS, per_block, -1)
    total = blocks.reshape(-1, values.shape[1]).var(axis=0)
    between = blocks.mean(axis=1).var(axis=0)
    return np.divide(between, total, out=np.zeros_like(total), where=total > 0)


def mode_channels_of(values: np.ndarray) -> tuple[int, ...]:
    """Indices of the columns of a (rows, channels) matrix that are constant or modes: the rule
    `fit_scaler` applies, for a caller that trains on rows without a scaler."""
    return tuple(int(i) for i in np.flatnonzero(channel_kinds(channel_levels(values)[0]) != "continuous"))


def fit_scaler(
    frame: pd.DataFrame, channels: list[str], kind: str = "standard", reference_rows: int = 0
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

    Args:
        reference_rows: 0, or the rows at the start of each segment whose mean replaces the
            center for that segment (see the module's docstring); kept in the scaler.

    Raises:
        OptionError: An unknown kind, or `reference_rows` below 0.
    """
    if reference_rows < 0:
        raise OptionError(f"--reference-rows must be 0 (off) or more, got {reference_rows}")
    values = frame[channels].to_numpy("float64")
    if kind == ScalerKind.standard:
        center, scale = values.mean(axis=0), values.std(axis=0)
    elif kind == ScalerKind.robust:
        low, center, high = np.quantile(values, [0.25, 0.5, 0.75], axis=0)
        scale = (high - low) / 1.349
    elif kind == ScalerKind.minmax:
        center, scale = values.min(axis=0), values.max(axis=0) - values.min(axis=0)
    else:
        raise OptionError(f"--kind must be one of {', '.join(ScalerKind)}, got {kind!r}")
    levels, resolution = channel_levels(values)
    kinds = channel_kinds(levels)
    constant = levels <= 1
    floored = ~constant & (scale < resolution)
    scale = np.where(constant, 1.0, np.maximum(scale, resolution))
    seen = values
    if reference_rows and isinstance(frame.index, pd.DatetimeIndex):
        seen = _scale_by_segment(
            values, segment_ids(frame.index), {"reference_rows": reference_rows, "center": center, "scale": scale}
        )
    shares = np.minimum(drift_shares(seen), drift_shares(seen[len(seen) // 2 :]))
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


def _scale_by_segment(values: np.ndarray, segments: np.ndarray, scaler: dict[str, Any]) -> np.ndarray:
    """Scale each segment relative to the mean of its first `reference_rows` rows (all of them
    when it is shorter); segment by segment, so no row-sized center is ever built."""
    rows = scaler["reference_rows"]
    scaled = np.empty(values.shape, dtype=np.float32)
    if len(values) == 0:
        return scaled
    starts = segment_starts(segments)
    for start, end in zip(starts, [*starts[1:], len(values)], strict=True):
        reference = values[start : min(end, start + rows)].mean(axis=0)
        scaled[start:end] = scale_values(values[start:end], scaler, reference)
    return scaled


def apply_scaler(frame: pd.DataFrame, scaler: dict[str, Any], source: str) -> pd.DataFrame:
    """Scale the scaler's channels of `frame`; other columns (labels) pass through unchanged.

    Raises:
        InputError: A channel is missing, or the scaler takes segments' references and
            `frame` is not indexed by time.
    """
    channels = scaler["channels"]
    missing = [c for c in channels if c not in frame.columns]
    if missing:
        raise InputError(f"{source} lacks channel(s) the scaler was fitted on: {', '.join(missing)}")
    values = frame[channels].to_numpy("float64")
    if scaler.get("reference_rows", 0):
        if not isinstance(frame.index, pd.DatetimeIndex):
            raise InputError(f"{source} is not indexed by time: its segments' references cannot be found")
        scaled = _scale_by_segment(values, segment_ids(frame.index), scaler)
    else:
        scaled = scale_values(values, scaler)
    out = frame.copy()
    out[channels] = scaled
    return out


def channel_columns(frame: pd.DataFrame, label_column: str) -> list[str]:
    """The numeric columns of `frame` except the label."""
    return [c for c in frame.columns if c != label_column and pd.api.types.is_numeric_dtype(frame[c])]


def run_fit_scaler(
    train_url: str, scaler_url: str, kind: str = "standard", label_column: str = "label", reference_rows: int = 0
) -> dict[str, Any]:
    """Fit the scaler on the training set and write it as JSON."""
    train = storage.read_parquet(train_url)
    if train.empty:
        raise InputError(f"training set {train_url} holds no rows")
    channels = channel_columns(train, label_column)
    values = train[channels].to_numpy("float64")
    if not np.isfinite(values).all():
        column = channels[int(np.flatnonzero(~np.isfinite(values).all(axis=0))[0])]
        count = int((~np.isfinite(train[column].to_numpy("float64"))).sum())
        raise InputError(
            f"training set {train_url}: channel '{column}' has {count} missing or infinite value(s): "
            "a scaler fitted on them would turn every scaled value into NaN"
        )
    scaler = fit_scaler(train, channels, kind, reference_rows)
    storage.write_json(scaler, scaler_url)
    return scaler


def run_apply_scaler(scaler_url: str, pairs: list[tuple[str, str]]) -> dict[str, int]:
    """Scale each (input, output) parquet pair with the fitted scaler; return rows per output."""
    scaler = storage.read_json(scaler_url)
    counts = {}
    for source, target in pairs:
        scaled = apply_scaler(storage.read_parquet(source), scaler, source)
        storage.write_parquet(scaled, target)
        counts[target] = len(scaled)
    return counts
