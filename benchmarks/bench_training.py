"""Training: rows/s of a Lightning epoch, and its time beyond pure forward/backward/step."""

from __future__ import annotations

import time
from typing import Any

import torch

from benchmarks.common import best_of


def _pure_epoch(system: Any, batches: list[torch.Tensor], optimizer: torch.optim.Optimizer) -> None:
    """The baseline: forward, backward and step over batches already in memory."""
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        system._step(batch, "train_pure").backward()
        optimizer.step()


def run(n_rows: int = 200_000, n_features: int = 16, batch_size: int = 512, epochs: int = 5) -> list[dict[str, Any]]:
    import pytorch_lightning as pl

    from container_component_src.model.data import batch_loader
    from container_component_src.model.system import VAESystem
    from container_component_src.model.train import hide_unused_gpus, progress_bar

    hide_unused_gpus("cpu")
    torch.manual_seed(0)
    rows = torch.randn(n_rows, n_features)
    system = VAESystem(n_features=n_features)
    # Lightning's self.log is a no-op outside a trainer loop; the pure loop only does the maths.
    system.log = lambda *args, **kwargs: None  # type: ignore[method-assign]
    batches = list(batch_loader(rows, batch_size, shuffle=True))
    optimizer = system.configure_optimizers()
    pure_s, _ = best_of(epochs, lambda: _pure_epoch(system, batches, optimizer))
    del system.log

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
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        callbacks=[timer, *progress_bar(True)],
        enable_progress_bar=True,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(system, batch_loader(rows, batch_size, shuffle=True))
    epoch_s = min(timer.seconds[1:])
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
        }
    ]
