"""Reading training rows and writing/reading the Model artifact (a folder)."""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from container_component_src import storage
from container_component_src.model.files import CHANNELS, HPARAMS, METRICS, SCALER, TORCHSCRIPT, TYPICAL_ROWS, WEIGHTS
from container_component_src.storage import InputError


def load_rows(url: str, channels: list[str]) -> tuple[torch.Tensor, np.ndarray]:
    """The `channels` columns of a parquet set as one float32 tensor, checked for gaps, and the
    segment (gapless run in time) of each row."""
    from container_component_src.data.segments import segment_ids

    frame = storage.read_parquet(url)
    missing = [c for c in channels if c not in frame.columns]
    if missing:
        raise InputError(f"{url} lacks channel(s) {', '.join(missing)}")
    if frame.empty:
        raise InputError(f"{url} holds no rows")
    values = frame[channels].to_numpy(np.float32)
    if not np.isfinite(values).all():
        raise InputError(f"{url} has NaN or infinite values: preprocess it first")
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise InputError(f"{url} is not indexed by time: use the output of apply-scaler")
    return torch.from_numpy(np.ascontiguousarray(values)), segment_ids(frame.index)


def write_model_artifact(
    out_dir: str,
    vae: torch.nn.Module,
    scaler: dict[str, Any],
    hparams: dict[str, Any],
    metrics: dict[str, Any],
    typical_rows: list[dict[str, float]] | None = None,
) -> None:
    """Write everything serving needs into `out_dir` (a local folder or object-storage URL),
    atomically: weights, TorchScript, scaler, channel order, hyperparameters, metrics and, when
    given, a typical raw input (what the deploy smoke test expects to pass unflagged)."""
    with warnings.catch_warnings():  # TorchScript is deprecated upstream, and still what serving loads.
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit")
        scripted = torch.jit.script(vae.cpu().eval())
    files = {SCALER: scaler, CHANNELS: scaler["channels"], HPARAMS: hparams, METRICS: metrics}
    if typical_rows is not None:
        files[TYPICAL_ROWS] = typical_rows
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        torch.save(vae.state_dict(), root / WEIGHTS)
        scripted.save(str(root / TORCHSCRIPT))
        for name, content in files.items():
            (root / name).write_text(json.dumps(content, indent=2))
        storage.copy_directory(folder, out_dir)


def load_scripted(model_dir: str) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """The TorchScript model and the scaler of a Model artifact folder."""
    root = Path(model_dir)
    if not (root / TORCHSCRIPT).is_file():
        raise InputError(f"model folder {model_dir} has no {TORCHSCRIPT}: was it written by train?")
    with warnings.catch_warnings():  # TorchScript is deprecated upstream, and still what serving loads.
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit")
        scripted = torch.jit.load(str(root / TORCHSCRIPT))
    if not hasattr(scripted, "channel_scores"):
        raise InputError(f"model folder {model_dir} was written by an older version without channel scores: retrain")
    return scripted, json.loads((root / SCALER).read_text())
