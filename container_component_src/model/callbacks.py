"""Lightning callbacks of the training runs."""

from __future__ import annotations

import pytorch_lightning as pl


class ObjectivePrinter(pl.Callback):
    """Prints `epoch=N name=value ...` after each validation, the lines Katib's StdOut collector reads."""

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
        line = " ".join(f"{k}={v:.6g}" for k, v in sorted(metrics.items()))
        print(f"epoch={trainer.current_epoch} {line}", flush=True)
