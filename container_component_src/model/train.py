"""Training the VAE with Lightning: locally on CPU/GPU (DDP with several devices), in a Katib
trial, or as a replica of a PyTorchJob (Lightning reads the rank and world size they provide)."""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from container_component_src import storage
from container_component_src.choices import CompileMode, LrScaling, ModelKind, choice
from container_component_src.errors import OptionError
from container_component_src.resources import check_step_fits
from container_component_src.storage import InputError

OBJECTIVE = "val_nll"
# The batch size the learning rate is given for (see `scaled_learning_rate`).
REFERENCE_BATCH = 512
# Batches per epoch at least: a batch size larger than the data's share is lowered to this.
MIN_BATCHES_PER_EPOCH = 8
# Floor of a channel's NLL standard deviation on validation (nats) when standardising it in the score.
NLL_SCALE_FLOOR = 0.25
# Each channel's lowest and highest input to the encoder (see `left_out_bounds`).
InputBounds = tuple[list[float], list[float]]


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
        model: "point" (one row at a time) or "window" (the last `window` rows, convolutional).
        window: Rows per window of the windowed model (the scored row and those before it).
        lr_scaling: "none", "sqrt" or "linear": the learning rate is for a batch of 512 rows and
            grows with the batch as its square root or linearly (large batches on a GPU).
    """

    learning_rate: float = 1e-3
    batch_size: int = 512
    beta: float = 1.0
    hidden_size: int = 64
    latent_dim: int = 4
    mse_weight: float = 0.0
    n_hidden_layers: int = 2
    model: str = "point"
    window: int = 16
    lr_scaling: str = "none"

    @property
    def context(self) -> int:
        """Rows the model needs before the row it scores."""
        return 0 if self.model == ModelKind.point else self.window - 1

    @property
    def hidden_sizes(self) -> list[int]:
        return [max(4, self.hidden_size // 2**i) for i in range(self.n_hidden_layers)]

    def validate(self) -> None:
        if self.learning_rate <= 0 or self.batch_size < 1 or self.beta < 0 or self.latent_dim < 1:
            raise OptionError(f"invalid hyperparameters: {self}")
        if self.hidden_size < 4 or self.n_hidden_layers < 1 or not 0 <= self.mse_weight <= 1:
            raise OptionError(f"invalid hyperparameters: {self}")
        choice(ModelKind, self.model, "--model")
        choice(LrScaling, self.lr_scaling, "--lr-scaling")
        if self.window < 2:
            raise OptionError(f"--window must be at least 2 rows, got {self.window}")


@dataclass(frozen=True)
class TrainOptions:
    """How training runs.

    Attributes:
        max_epochs: Upper bound on epochs; early stopping on the validation objective ends sooner.
            Raised when needed to reach `min_steps`.
        min_steps: Optimizer steps before early stopping may act: small data sets give few
            steps per epoch, and an epoch count alone would stop them before they learn.
        patience: Epochs without improvement before stopping.
        accelerator: "cpu", "gpu" or "auto".
        devices: Devices per node (DDP when more than one in all).
        num_nodes: Nodes (PyTorchJob replicas).
        seed: Seed of initialisation, sampling and shuffling.
        progress: Show Lightning's progress bar.
        mode_weight: Weight in the score of the channels the scaler found constant or of few
            distinct values (see `channel_weights`).
        drift_weight: Weight in the score of the continuous channels the scaler found drifting
            in training (see `scaling.DRIFT_SHARE`).
        named_weights: Weight in the score of named channels, over the two rules above: what an
            operator knows of a channel that the training rows cannot show.
        deterministic: Deterministic algorithms on the GPU too; the CPU always uses them.
        precision: Lightning's precision: "32-true", or mixed "bf16-mixed" / "16-mixed".
        compile: torch.compile mode of the training step's loss (forward and backward), or
            "none". Compiling costs tens of seconds at the start; where it cannot compile (no C++
            compiler, no Triton) training goes on uncompiled, with a warning.
    """

    max_epochs: int = 30
    min_steps: int = 500
    patience: int = 4
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    seed: int = 0
    progress: bool = True
    mode_weight: float = 0.1
    drift_weight: float = 1.0
    named_weights: dict[str, float] = field(default_factory=dict)
    deterministic: bool = False
    precision: str = "32-true"
    compile: str = "none"


def hide_unused_gpus(accelerator: str) -> None:
    """When training runs on the CPU, say so to torch once.

    Until CUDA initialises, torch probes NVML (a dlopen) on every accelerator query, which
    Lightning makes each step: about 10 % of a step of this small network on a CUDA build of
    torch without a GPU. An explicit empty CUDA_VISIBLE_DEVICES answers those queries at once.
    """
    import torch

    if "CUDA_VISIBLE_DEVICES" not in os.environ and (accelerator == "cpu" or not torch.cuda.is_available()):
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def uses_gpu(accelerator: str) -> bool:
    """Whether Lightning will train on a GPU with this accelerator setting."""
    import torch

    return accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available())


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


def _strategy(options: TrainOptions) -> Any:
    if options.devices * options.num_nodes == 1:
        return "auto"
    from pytorch_lightning.strategies import DDPStrategy

    # Under torchrun or a PyTorchJob the processes exist already; locally Lightning spawns them.
    # Buffers are not broadcast: the model's (variance floors, calibration) never change while it
    # trains, and a broadcast in each validation forward would make ranks with fewer validation
    # batches than others wait forever.
    return DDPStrategy(start_method="popen" if "WORLD_SIZE" in os.environ else "spawn", broadcast_buffers=False)


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
    # The validation metrics are logged once reduced over the ranks (see `VAESystem`).
    warnings.filterwarnings("ignore", message=r".*when logging on epoch level in distributed setting")


def batch_plan(n_inputs: int, params: ModelParams, options: TrainOptions) -> tuple[int, int]:
    """The batch size and epoch bound for `n_inputs` training inputs (rows or windows).

    The batch is lowered to give at least `MIN_BATCHES_PER_EPOCH` steps per epoch, and the
    epochs raised until `min_steps` steps fit in them, so a small data set still gets trained.
    """
    batch_size = max(1, min(params.batch_size, -(-n_inputs // MIN_BATCHES_PER_EPOCH)))
    steps_per_epoch = max(1, -(-n_inputs // batch_size))
    return batch_size, max(options.max_epochs, -(-options.min_steps // steps_per_epoch))


def scaled_learning_rate(params: ModelParams, batch_size: int) -> float:
    """The learning rate for `batch_size` rows: `params.learning_rate` is for a batch of 512."""
    power = {LrScaling.none: 0.0, LrScaling.sqrt: 0.5, LrScaling.linear: 1.0}[LrScaling(params.lr_scaling)]
    return params.learning_rate * (batch_size / REFERENCE_BATCH) ** power


def world_size(options: TrainOptions) -> int:
    """Training processes in all: devices per node x nodes."""
    return options.devices * options.num_nodes


def fit(
    datamodule: Any,
    n_features: int,
    params: ModelParams,
    options: TrainOptions,
    checkpoint_dir: str,
    mode_channels: tuple[int, ...] | None = None,
    input_bounds: InputBounds | None = None,
) -> tuple[Any, Any]:
    """Train one model on a data module; return the Lightning trainer and the system restored
    from its best checkpoint (None on a rank other than 0 of a multi-process run). Each process
    reads its shard of the data in the module's `setup`.
    `mode_channels` are the indices of the channels `mode_channel_indices` names; without them
    (rows trained without a scaler) the same rule finds them in the training rows (read whole),
    so that no caller trains a constant or command channel into a vanishing variance by omission.
    `input_bounds` (`left_out_bounds`) clamp the encoder's inputs from the first step on: the
    per-epoch objective (early stopping, the best checkpoint, Katib's metric) is then the one
    the rows are scored with.

    Raises:
        InputError: The training or validation set holds fewer complete windows than processes.
    """
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    from container_component_src.model.callbacks import ObjectivePrinter
    from container_component_src.model.system import VAESystem

    params.validate()
    hide_unused_gpus(options.accelerator)
    quiet_third_parties()
    pl.seed_everything(options.seed, workers=True, verbose=False)
    datamodule.context = params.context
    world = world_size(options)
    n_train = datamodule.train.index.window_count(params.context)
    n_val = datamodule.val.index.window_count(params.context)
    if min(n_train, n_val) < world:
        raise InputError(
            f"{n_train} training and {n_val} validation windows of {params.context + 1} gapless rows "
            f"for {world} training process(es): lower --window, or give longer recordings"
        )
    # Each rank steps through its shard: the plan is per rank.
    datamodule.batch_size, max_epochs = batch_plan(-(-n_train // world), params, options)
    if mode_channels is None:
        from container_component_src.data.scaling import mode_channels_of

        mode_channels = mode_channels_of(datamodule.train.read(0, datamodule.train.index.rows).numpy())
    system = VAESystem(
        n_features=n_features,
        hidden_sizes=params.hidden_sizes,
        latent_dim=params.latent_dim,
        beta=params.beta,
        mse_weight=params.mse_weight,
        learning_rate=scaled_learning_rate(params, datamodule.batch_size),
        model=str(params.model),  # a plain string: the checkpoint's hyperparameters load without pickled enums
        window=params.window,
        mode_channels=tuple(mode_channels),
    )
    _bound(system.vae, input_bounds)
    if options.compile != CompileMode.none:
        system.compile_loss(str(choice(CompileMode, options.compile, "--compile")))
    checkpoint = ModelCheckpoint(dirpath=checkpoint_dir, monitor=OBJECTIVE, mode="min", save_top_k=1)
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        min_steps=options.min_steps,
        accelerator=options.accelerator,
        devices=options.devices,
        num_nodes=options.num_nodes,
        strategy=_strategy(options),
        deterministic=options.deterministic or not uses_gpu(options.accelerator),
        precision=options.precision,
        callbacks=[
            EarlyStopping(monitor=OBJECTIVE, patience=options.patience),
            checkpoint,
            ObjectivePrinter(),
            *progress_bar(options.progress),
        ],
        enable_progress_bar=options.progress,
        enable_model_summary=False,
        # The data module shards by rank itself (whole time blocks), instead of splitting batches.
        use_distributed_sampler=False,
        logger=False,
        plugins=cluster_environment(),
    )
    trainer.fit(system, datamodule=datamodule)
    if not trainer.is_global_zero:
        # The checkpoint is rank 0's file, in rank 0's pod: other ranks have nothing to read.
        return trainer, None
    best = VAESystem.load_from_checkpoint(checkpoint.best_model_path, map_location="cpu")
    _bound(best.vae, input_bounds)  # the buffers load; whether to apply them is set again
    return trainer, best


def _bound(vae: Any, bounds: InputBounds | None) -> None:
    import torch

    if bounds is not None:
        vae.bound_inputs(*(torch.tensor(side, dtype=torch.float32) for side in bounds))


def mode_channel_indices(scaler: dict[str, Any]) -> tuple[int, ...]:
    """Indices of the channels the scaler found constant or of few distinct values in training."""
    kinds = scaler.get("channel_kinds", {})
    return tuple(i for i, c in enumerate(scaler["channels"]) if kinds.get(c, "continuous") != "continuous")


def channel_weights(
    scaler: dict[str, Any],
    mode_weight: float,
    drift_weight: float = TrainOptions.drift_weight,
    named_weights: dict[str, float] | None = None,
) -> list[float]:
    """Weight of each channel in the score: `mode_weight` for a channel that the scaler found
    constant or of few distinct values in training (a mode or command channel), `drift_weight`
    for a continuous one it found drifting, 1 for the others. When every continuous channel
    drifts, none is weighed down: the score would be left with nothing to measure. A channel in
    `named_weights` weighs what it says there, whatever the rules found.

    Raises:
        OptionError: `named_weights` names a channel the scaler does not have, or gives a weight
            that is negative or not finite.
    """
    channels = scaler["channels"]
    named = named_weights or {}
    for name, weight in named.items():
        if name not in channels:
            import difflib

            near = difflib.get_close_matches(name, channels, n=1)
            hint = f": did you mean {near[0]!r}?" if near else ""
            raise OptionError(f"--named-weights names {name!r}, not one of the data's {len(channels)} channels{hint}")
        if not 0 <= weight < math.inf:
            raise OptionError(f"--named-weights gives {name!r} the weight {weight}: a weight is 0 or more")
    kinds, drifting = scaler.get("channel_kinds", {}), scaler.get("drifting_channels", {})
    continuous = [c for c in channels if kinds.get(c, "continuous") == "continuous"]
    if all(c in drifting for c in continuous):
        drifting = {}

    def weight(channel: str) -> float:
        if channel in named:
            return named[channel]
        if kinds.get(channel, "continuous") != "continuous":
            return mode_weight
        return drift_weight if channel in drifting else 1.0

    return [weight(channel) for channel in channels]


@dataclass(frozen=True)
class Calibration:
    """What calibrating on the validation set found.

    Attributes:
        val_nll: The objective: the mean over the rows with a whole window of their summed NLL.
        scores: Each validation row's calibrated score.
        whole: Whether each validation row has a whole window behind it.
    """

    val_nll: float
    scores: Any
    whole: Any


def left_out_bounds(scaler: dict[str, Any], weights: list[float]) -> InputBounds | None:
    """Where each channel enters the encoder (see `fit`): the channels left out of the score
    (weight 0) within their range in training (the scaler's `scaled_range`), so that a level
    training never saw in one of them cannot raise the other channels' scores through the latent;
    the others unbounded. None when no channel is left out, or the scaler is from before the
    ranges were kept."""
    bounds = scaler.get("scaled_range")
    left_out = [weight == 0 for weight in weights]
    if not bounds or not any(left_out):
        return None
    low = [lo if out else -math.inf for lo, out in zip(bounds["low"], left_out, strict=True)]
    high = [hi if out else math.inf for hi, out in zip(bounds["high"], left_out, strict=True)]
    return low, high


def calibrate(
    vae: Any,
    val: Any,
    weights: list[float] | None = None,
    mode_weight: float = TrainOptions.mode_weight,
) -> Calibration:
    """Standardise each channel's NLL by its mean and standard deviation on validation (the
    latter floored at `NLL_SCALE_FLOOR`) and weight it (see `vae.py`). The validation rows are
    streamed a chunk at a time, twice (the moments, then the calibrated scores): memory holds a
    chunk and a score per row.

    Args:
        vae: The trained network.
        val: The validation rows (see `rows.RowSource`).
        weights: Each channel's weight (see `channel_weights`); default: `mode_weight` for the
            channels the model was trained to treat as modes, 1 for the others.
    """
    import numpy as np
    import torch

    from container_component_src.data.scaling import Moments
    from container_component_src.evaluation.scoring import ChunkScorer
    from container_component_src.model.rows import iter_chunks
    from container_component_src.model.vae import MIN_LOG_VAR

    vae.eval()
    if weights is None:  # mode channels are those whose variance floor was raised (`set_mode_channels`)
        weights = [mode_weight if floor > MIN_LOG_VAR else 1.0 for floor in vae.log_var_floor.tolist()]
    index, context = val.index, int(vae.context)
    moments, nll_sum = Moments(len(weights)), 0.0
    whole = np.empty(index.rows, bool)
    scorer = ChunkScorer(vae, "raw_channel_nll")
    for first, values, segments in iter_chunks(val):
        raw = scorer(values, segments)
        moments.add(raw)
        whole[first : first + len(raw)] = index.whole(first, first + len(raw), context)
        nll_sum += float(raw[whole[first : first + len(raw)]].sum())
    center, scale = moments.mean, np.maximum(np.sqrt(moments.variance()), NLL_SCALE_FLOOR)
    factor = np.asarray(weights) / scale
    scores, scorer = np.empty(index.rows), ChunkScorer(vae, "raw_channel_nll")
    for first, values, segments in iter_chunks(val):
        scores[first : first + len(values)] = ((scorer(values, segments) - center) * factor).sum(axis=1)
    as_tensor = lambda values: torch.as_tensor(np.asarray(values), dtype=torch.float32)  # noqa: E731
    vae.calibrate(as_tensor(center), as_tensor(scale), as_tensor(weights))
    return Calibration(nll_sum / max(int(whole.sum()), 1), scores, whole)


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
    import numpy as np
    import torch

    from container_component_src.model.data import TelemetryDataModule
    from container_component_src.model.io import write_model_artifact

    # Each process holds its shard of the sets: stop now if they will not fit this pod.
    check_step_fits("train", [train_url, val_url], shards=world_size(options), processes=options.devices)
    scaler = storage.read_json(scaler_url)
    channels = scaler["channels"]
    datamodule = TelemetryDataModule.from_urls(train_url, val_url, channels, params.batch_size, options.seed)
    weights = channel_weights(scaler, options.mode_weight, options.drift_weight, options.named_weights)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as checkpoints:
        trainer, best = fit(
            datamodule,
            len(channels),
            params,
            options,
            checkpoints,
            mode_channel_indices(scaler),
            left_out_bounds(scaler, weights),
        )
        if best is None:  # a worker replica: rank 0 measures and writes the model
            return {"rank": trainer.global_rank, "epochs": int(trainer.current_epoch)}
        # Read from the checkpoint: with spawned DDP processes the trainer here saw no epoch.
        best_epoch = torch.load(trainer.checkpoint_callback.best_model_path, map_location="cpu", weights_only=False)[
            "epoch"
        ]
    seconds = time.perf_counter() - start
    calibration = calibrate(best.vae, datamodule.val, weights)
    epochs = trainer.current_epoch or best_epoch + 1
    n_inputs = datamodule.train.index.window_count(params.context)
    metrics = {
        OBJECTIVE: calibration.val_nll,
        "best_epoch": int(best_epoch),
        "epochs": int(epochs),
        "batch_size": int(datamodule.batch_size),
        "learning_rate": float(best.hparams.learning_rate),
        "steps": int(trainer.global_step),
        "train_rows": datamodule.train.index.rows,
        "val_rows": datamodule.val.index.rows,
        "seconds": round(seconds, 2),
        "rows_per_s": round(n_inputs * epochs / seconds),
    }
    # The typical input: the whole validation window whose newest row has the median score, in raw units.
    whole = np.flatnonzero(calibration.whole)
    median = int(whole[np.argsort(calibration.scores[whole])[len(whole) // 2]])
    window = datamodule.val.read(median - params.context, median + 1).numpy()
    typical = window * np.asarray(scaler["scale"]) + np.asarray(scaler["center"])
    typical_rows = [dict(zip(channels, row.astype(float).tolist(), strict=True)) for row in typical]
    write_model_artifact(model_dir, best.vae, scaler, asdict(params), metrics, typical_rows)
    return metrics
