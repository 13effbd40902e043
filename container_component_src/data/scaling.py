"""Channel scaling: fit on the training set only, apply the same transform everywhere."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd

from container_component_src import storage
from container_component_src.errors import OptionError
from container_component_src.storage import InputError

ScalerKind = Literal["standard", "minmax"]


def fit_scaler(frame: pd.DataFrame, channels: list[str], kind: ScalerKind = "standard") -> dict[str, Any]:
    """Return the scaler parameters for `channels`: (x - center) / scale.

    Constant channels get scale 1 (they are listed), so the transform never divides by zero.
    """
    values = frame[channels].to_numpy("float64")
    if kind == "standard":
        center, scale = values.mean(axis=0), values.std(axis=0)
    elif kind == "minmax":
        center, scale = values.min(axis=0), values.max(axis=0) - values.min(axis=0)
    else:
        raise OptionError(f"--kind must be 'standard' or 'minmax', got {kind!r}")
    constant = scale <= 1e-12
    scale = np.where(constant, 1.0, scale)
    return {
        "kind": kind,
        "channels": list(channels),
        "center": center.tolist(),
        "scale": scale.tolist(),
        "constant_channels": [c for c, k in zip(channels, constant, strict=True) if k],
    }


def scale_values(values: np.ndarray, scaler: dict[str, Any]) -> np.ndarray:
    """Scale a (rows, channels) matrix whose columns are in the scaler's channel order; float32."""
    return ((values - np.asarray(scaler["center"])) / np.asarray(scaler["scale"])).astype(np.float32)


def apply_scaler(frame: pd.DataFrame, scaler: dict[str, Any], source: str) -> pd.DataFrame:
    """Scale the scaler's channels of `frame`; other columns (labels) pass through unchanged."""
    channels = scaler["channels"]
    missing = [c for c in channels if c not in frame.columns]
    if missing:
        raise InputError(f"{source} lacks channel(s) the scaler was fitted on: {', '.join(missing)}")
    out = frame.copy()
    out[channels] = scale_values(frame[channels].to_numpy("float64"), scaler)
    return out


def channel_columns(frame: pd.DataFrame, label_column: str) -> list[str]:
    """The numeric columns of `frame` except the label."""
    return [c for c in frame.columns if c != label_column and pd.api.types.is_numeric_dtype(frame[c])]


def run_fit_scaler(
    train_url: str, scaler_url: str, kind: ScalerKind = "standard", label_column: str = "label"
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
    scaler = fit_scaler(train, channels, kind)
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
