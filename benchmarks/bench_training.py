"""Training: rows/s of a Lightning epoch, its time beyond pure forward/backward/step, and the
windowed model's epoch time against the point model's."""

from __future__ import annotations

import time
from typing import Any

import torch

from benchmarks.common import best_of

# Both sides of each ratio are measured in turns, this many times, and the fastest of each kept:
# a slower minute of a shared VM then falls on both instead of on one side.
ROUNDS = 2


def _pure_epoch(system: Any, batches: list[torch.Tensor], optimizer: torch.optim.Optimizer) -> None:
    """The baseline: forward, backward and step over batches already in memory (the training
    step itself, without a trainer around it)."""
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        system._step(batch, "train").backward()
        optimizer.step()


def lightning_epoch_s(
    system: Any, rows: torch.Tensor, batch_size: int, epochs: int, context: int = 0, accelerator: str = "cpu"
) -> float:
    """The fastest of `epochs` Lightning training epochs (the first, warming up, not counted), fed
    as training feeds them: the data module (on a GPU, rows resident there), no validation."""
    import pytorch_lightning as pl

    from container_component_src.model.data import TelemetryDataModule
    from container_component_src.model.train import progress_bar

    class EpochTimer(pl.Callback):
        """Times the epochs themselves, without the trainer's set-up."""

        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.seconds.append(time.perf_counter() - self.start)

    timer = EpochTimer()
    trainer = pl.Trainer(
        max_epochs=epochs + 1,
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        callbacks=[timer, *progress_bar(True)],
        enable_progress_bar=True,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    data = TelemetryDataModule.from_rows(rows, rows[: context + 1], batch_size)
    data.context = context
    trainer.fit(system, datamodule=data)
    return min(timer.seconds[1:])


def windowed_vs_point(n_rows: int = 38_040, n_features: int = 16, window: int = 16, epochs: int = 3) -> dict[str, Any]:
    """Epoch time of the windowed model against the point model's, on the default data's size."""
    from container_component_src.model.system import VAESystem

    torch.manual_seed(0)
    rows = torch.randn(n_rows, n_features)
    point, windowed = VAESystem(n_features=n_features), VAESystem(n_features=n_features, model="window", window=window)
    point_times, window_times = [], []
    for _ in range(ROUNDS):
        point_times.append(lightning_epoch_s(point, rows, 512, epochs))
        window_times.append(lightning_epoch_s(windowed, rows, 512, epochs, context=window - 1))
    point_s, window_s = min(point_times), min(window_times)
    ratio = window_s / point_s
    return {
        "benchmark": "training epoch, windowed model (CPU)",
        "case": f"{n_rows / 1e3:.0f} k rows x {n_features} channels, window {window}, batch 512",
        "seconds": round(window_s, 2),
        "rows_per_s": round(n_rows / window_s),
        "ratio": round(ratio, 2),
        "ratio_meaning": "its epoch time over the point model's, same run",
        "target": "<= 3",
        "met": ratio <= 3,
    }


def run(
    n_rows: int = 200_000, n_features: int = 16, batch_size: int = 512, epochs: int = 5, windowed_rows: int = 38_040
) -> list[dict[str, Any]]:
    from container_component_src.model.data import batch_loader
    from container_component_src.model.system import VAESystem
    from container_component_src.model.train import hide_unused_gpus

    hide_unused_gpus("cpu")
    torch.manual_seed(0)
    rows = torch.randn(n_rows, n_features)
    system = VAESystem(n_features=n_features)
    batches = list(batch_loader(rows, batch_size, shuffle=True))
    optimizer = system.configure_optimizers()
    pure, lightning = [], []
    for _ in range(ROUNDS):
        pure.append(best_of(epochs, lambda: _pure_epoch(system, batches, optimizer))[0])
        lightning.append(lightning_epoch_s(system, rows, batch_size, epochs))
    pure_s, epoch_s = min(pure), min(lightning)
    overhead = epoch_s / pure_s - 1
    return [
        {
            "benchmark": "training epoch (Lightning, CPU)",
            "case": f"{n_rows / 1e3:.0f} k rows x {n_features} channels, batch {batch_size}",
            "seconds": round(epoch_s, 2),
            "rows_per_s": round(n_rows / epoch_s),
            "ratio": round(overhead, 3),
            "ratio_meaning": "time beyond pure forward/backward/step, as a share of it",
            "target": "<= 0.30",
            "met": overhead <= 0.30,
        },
        windowed_vs_point(n_rows=windowed_rows, n_features=n_features, epochs=max(2, epochs - 2)),
    ]
