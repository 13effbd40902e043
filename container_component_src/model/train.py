"""Training the VAE with Lightning: locally on CPU/GPU (DDP with several devices), in a Katib
trial, or as a replica of a PyTorchJob (Lightning reads the rank and world size they provide)."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

from container_component_src import storage
from container_component_src.errors import OptionError

OBJECTIVE = "val_nll"


@dataclass(frozen=True)
class ModelParams:
    """Hyperparameters of one model: what tuning searches and training uses.

    Attributes:
        learning_rate: Adam learning rate.
        batch_size: Rows per batch.
        beta: Weight of the KL term.
        hidden_size: Width of the first hidden layer; each further layer halves it.
        latent_dim: Latent size.
        mse_weight: Share of squared error mixed into the likelihood term.
        n_hidden_layers: Number of hidden layers of the encoder (and decoder).
    """

    learning_rate: float = 1e-3
    batch_size: int = 512
    beta: float = 1.0
    hidden_size: int = 64
    latent_dim: int = 4
    mse_weight: float = 0.0
    n_hidden_layers: int = 2

    @property
    def hidden_sizes(self) -> list[int]:
        return [max(4, self.hidden_size // 2**i) for i in range(self.n_hidden_layers)]

    def validate(self) -> None:
        if self.learning_rate <= 0 or self.batch_size < 1 or self.beta < 0 or self.latent_dim < 1:
            raise OptionError(f"invalid hyperparameters: {self}")
        if self.hidden_size < 4 or self.n_hidden_layers < 1 or not 0 <= self.mse_weight <= 1:
            raise OptionError(f"invalid hyperparameters: {self}")


@dataclass(frozen=True)
class TrainOptions:
    """How training runs.

    Attributes:
        max_epochs: Upper bound on epochs; early stopping on the validation objective ends sooner.
        patience: Epochs without improvement before stopping.
        accelerator: "cpu", "gpu" or "auto".
        devices: Devices per node (DDP when more than one in all).
        num_nodes: Nodes (PyTorchJob replicas).
        seed: Seed of initialisation, sampling and shuffling.
        progress: Show Lightning's progress bar.
    """

    max_epochs: int = 30
    patience: int = 4
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    seed: int = 0
    progress: bool = True


def hide_unused_gpus(accelerator: str) -> None:
    """When training runs on the CPU, say so to torch once.

    Until CUDA initialises, torch probes NVML (a dlopen) on every accelerator query, which
    Lightning makes each step: about 10 % of a step of this small network on a CUDA build of
    torch without a GPU. An explicit empty CUDA_VISIBLE_DEVICES answers those queries at once.
    """
    import torch

    if "CUDA_VISIBLE_DEVICES" not in os.environ and (accelerator == "cpu" or not torch.cuda.is_available()):
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def progress_bar(enabled: bool) -> list[Any]:
    """Lightning's bar, redrawn every 25 steps: redrawing each step costs as much as a step here."""
    from pytorch_lightning.callbacks import TQDMProgressBar

    return [TQDMProgressBar(refresh_rate=25)] if enabled else []


def cluster_environment() -> list[Any]:
    """Lightning's plugin for a PyTorchJob replica, which Lightning does not detect by itself.

    The Training Operator sets MASTER_ADDR, MASTER_PORT, WORLD_SIZE and RANK (one process per
    replica); torchrun would also set LOCAL_RANK, and Lightning detects that case on its own.
    """
    from lightning_fabric.plugins.environments import KubeflowEnvironment

    operator = {"MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK"} <= os.environ.keys()
    return [KubeflowEnvironment()] if operator and "LOCAL_RANK" not in os.environ else []


def _strategy(options: TrainOptions) -> str:
    if options.devices * options.num_nodes == 1:
        return "auto"
    # Under torchrun or a PyTorchJob the processes exist already; locally Lightning spawns them.
    return "ddp" if "WORLD_SIZE" in os.environ else "ddp_spawn"


def _no_tips(record: Any) -> bool:
    return not record.getMessage().startswith("💡 Tip")


def quiet_third_parties() -> None:
    """Silence what is not our users' business: Lightning's advert for its cloud logger (shown at
    every fit, even with `logger=False`) and its use of a torch API deprecated upstream."""
    import logging
    import warnings

    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_no_tips)  # the same filter is added once
    warnings.filterwarnings("ignore", category=FutureWarning, message=r"`isinstance\(treespec, LeafSpec\)`")


def fit(
    datamodule: Any, n_features: int, params: ModelParams, options: TrainOptions, checkpoint_dir: str
) -> tuple[Any, Any]:
    """Train one model; return the Lightning trainer and the system restored from its best
    checkpoint (None on a rank other than 0 of a multi-process run)."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    from container_component_src.model.callbacks import ObjectivePrinter
    from container_component_src.model.system import VAESystem

    params.validate()
    hide_unused_gpus(options.accelerator)
    quiet_third_parties()
    pl.seed_everything(options.seed, workers=True, verbose=False)
    system = VAESystem(
        n_features=n_features,
        hidden_sizes=params.hidden_sizes,
        latent_dim=params.latent_dim,
        beta=params.beta,
        mse_weight=params.mse_weight,
        learning_rate=params.learning_rate,
    )
    checkpoint = ModelCheckpoint(dirpath=checkpoint_dir, monitor=OBJECTIVE, mode="min", save_top_k=1)
    trainer = pl.Trainer(
        max_epochs=options.max_epochs,
        accelerator=options.accelerator,
        devices=options.devices,
        num_nodes=options.num_nodes,
        strategy=_strategy(options),
        deterministic=True,
        callbacks=[
            EarlyStopping(monitor=OBJECTIVE, patience=options.patience),
            checkpoint,
            ObjectivePrinter(),
            *progress_bar(options.progress),
        ],
        enable_progress_bar=options.progress,
        enable_model_summary=False,
        logger=False,
        plugins=cluster_environment(),
    )
    datamodule.batch_size = params.batch_size
    trainer.fit(system, datamodule=datamodule)
    if not trainer.is_global_zero:
        # The checkpoint is rank 0's file, in rank 0's pod: other ranks have nothing to read.
        return trainer, None
    best = VAESystem.load_from_checkpoint(checkpoint.best_model_path, map_location="cpu")
    return trainer, best


def run_train(
    train_url: str,
    val_url: str,
    scaler_url: str,
    model_dir: str,
    params: ModelParams,
    options: TrainOptions,
) -> dict[str, Any]:
    """Train on the scaled sets and write the Model artifact folder (rank 0 only).

    Returns:
        The training metrics.
    """
    import torch

    from container_component_src.model.data import TelemetryDataModule
    from container_component_src.model.io import write_model_artifact

    scaler = storage.read_json(scaler_url)
    channels = scaler["channels"]
    datamodule = TelemetryDataModule(train_url, val_url, channels, params.batch_size, options.seed)
    datamodule.setup("fit")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as checkpoints:
        trainer, best = fit(datamodule, len(channels), params, options, checkpoints)
        if best is None:  # a worker replica: rank 0 measures and writes the model
            return {"rank": trainer.global_rank, "epochs": int(trainer.current_epoch)}
        # Read from the checkpoint: with spawned DDP processes the trainer here saw no epoch.
        best_epoch = torch.load(trainer.checkpoint_callback.best_model_path, map_location="cpu", weights_only=False)[
            "epoch"
        ]
    seconds = time.perf_counter() - start
    with torch.no_grad():
        val_scores = best.vae.eval().score(datamodule.val_rows)
    val_nll = float(val_scores.mean())
    epochs = trainer.current_epoch or best_epoch + 1
    metrics = {
        OBJECTIVE: val_nll,
        "best_epoch": int(best_epoch),
        "epochs": int(epochs),
        "train_rows": int(datamodule.train_rows.shape[0]),
        "val_rows": int(datamodule.val_rows.shape[0]),
        "seconds": round(seconds, 2),
        "rows_per_s": round(datamodule.train_rows.shape[0] * epochs / seconds),
    }
    if trainer.is_global_zero:
        import numpy as np

        median_row = datamodule.val_rows[int(val_scores.argsort()[len(val_scores) // 2])].numpy()
        typical = median_row * np.asarray(scaler["scale"]) + np.asarray(scaler["center"])
        typical_row = dict(zip(channels, typical.astype(float).tolist(), strict=True))
        write_model_artifact(model_dir, best.vae, scaler, asdict(params), metrics, typical_row)
    return metrics
