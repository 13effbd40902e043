"""Training system of the VAE: loss, logging and optimiser (Lightning), apart from the network."""

from __future__ import annotations

import warnings
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from container_component_src.model.vae import build_vae, kl_divergence

# Steps between checks of the training loss for NaN or infinity: each check waits for the device
# (a host sync), which on a GPU costs as much as a step of this small network.
FINITE_CHECK_STEPS = 50


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite: the trial or training run cannot continue."""


class _EpochLoss:
    """The training loss of an epoch, summed on the device (no host sync per step), and whether a
    step's loss was not finite since the last check. A plain object: setting attributes of a
    LightningModule costs a lookup through its parameters and buffers."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.total: Tensor | float = 0.0
        self.inputs, self.steps, self.checked_steps = 0, 0, 0
        self.bad: Tensor | bool = False

    def add(self, loss: Tensor, inputs: int) -> int:
        """Count one step's mean loss over `inputs`; return the steps of the epoch so far."""
        self.total = self.total + loss * inputs
        self.bad = self.bad | ~torch.isfinite(loss)
        self.inputs, self.steps = self.inputs + inputs, self.steps + 1
        return self.steps

    def unchecked_bad(self) -> bool:
        """Whether a loss since the last call was not finite (reads the device once)."""
        bad, self.bad, self.checked_steps = bool(self.bad), False, self.steps
        return bad

    def mean(self) -> Tensor:
        return self.total / self.inputs


class VAESystem(pl.LightningModule):
    """Trains a `VAE` on scaled telemetry rows.

    The training loss per input (a row, or a window) is (1 - mse_weight) * NLL + mse_weight *
    squared error + beta * KL, averaged over inputs, the NLL and squared error taken per row of a
    window. The validation objective is the mean NLL of the newest row of each input, decoded from
    the latent mean: it depends neither on beta, nor the batch size, nor the window length, so
    tuning can compare trials of either model.

    Args:
        n_features: Number of channels.
        hidden_sizes: Encoder hidden widths.
        latent_dim: Latent size.
        beta: Weight of the KL term.
        mse_weight: Share of squared error mixed into the likelihood term (0: pure likelihood).
        learning_rate: Adam learning rate.
        model: "point" or "window" (see `vae.build_vae`).
        window: Rows per window of the windowed model.
        mode_channels: Indices of the channels the scaler found constant or of few levels
            (they get a wider variance floor: see `vae.py`).
    """

    def __init__(
        self,
        n_features: int,
        hidden_sizes: list[int] | tuple[int, ...] = (64, 32),
        latent_dim: int = 4,
        beta: float = 1.0,
        mse_weight: float = 0.0,
        learning_rate: float = 1e-3,
        model: str = "point",
        window: int = 1,
        mode_channels: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.vae = build_vae(model, n_features, list(hidden_sizes), latent_dim, window)
        self.vae.set_mode_channels(list(mode_channels))
        self._epoch = _EpochLoss()
        self._val_sums: Tensor | None = None
        self._compile_mode: str | None = None
        self._compiled_loss: Any = None
        self.automatic_optimization = False  # see training_step

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning names the running hook on the module several times a step; nn.Module's checks
        # of each assignment (a parameter? a module? a buffer?) cost about a third of the time
        # Lightning adds to this small network's step. The name is a plain attribute.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        # Manual optimisation: the same zero-grad, backward and step as Lightning's automatic loop,
        # without its closure machinery (about a fifth of the loop's time beyond the maths).
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        loss = self._step(batch, "train")
        self.manual_backward(loss)
        optimizer.step()
        return loss

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        self._step(batch, "val")

    def compile_loss(self, mode: str) -> None:
        """Compile `loss` (and so its backward) with torch.compile in `mode`; "reduce-overhead"
        replays it as CUDA graphs on a GPU. Where the backend cannot compile (no C++ compiler on
        the CPU, no Triton on the GPU), the first step says so once and training goes on uncompiled.
        Compiled at the first step, in the process that trains (DDP's spawned ones included)."""
        self._compile_mode = mode

    def loss(self, x: Tensor, sample: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        """The batch's loss (see the class), its decoded means and each input's KL term: with a
        latent drawn from the encoder (training), or its mean (validation)."""
        if self._compile_mode is not None:
            from torch._dynamo.exc import BackendCompilerFailed

            if self._compiled_loss is None:
                self._compiled_loss = torch.compile(self._eager_loss, mode=self._compile_mode)
            try:
                return self._compiled_loss(x, sample)
            except BackendCompilerFailed as exc:
                self._compile_mode = self._compiled_loss = None
                warnings.warn(f"torch.compile failed, training uncompiled: {str(exc).splitlines()[0]}", stacklevel=2)
        return self._eager_loss(x, sample)

    def _eager_loss(self, x: Tensor, sample: bool) -> tuple[Tensor, Tensor, Tensor]:
        # The encoder sees the inputs within their bounds, as when rows are scored (`bound_inputs`).
        mean, logvar = self.vae.encode(self.vae.bounded(x))
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp() if sample else mean
        x_mean = self.vae.decode(z)
        nll = self.vae.nll(x, x_mean)
        kl = kl_divergence(mean, logvar)
        w = self.hparams.mse_weight
        if w:  # skipped at 0 (the default): a third of the windowed model's loss arithmetic
            squared_error = ((x - x_mean) ** 2).flatten(1).sum(dim=1) / (self.vae.context + 1)
            nll = (1 - w) * nll + w * squared_error
        return (nll + self.hparams.beta * kl).mean(), x_mean, kl

    def _step(self, x: Tensor, stage: str) -> Tensor:
        loss, x_mean, kl = self.loss(x, sample=stage == "train")
        batch_size = x.shape[0]
        if stage == "train":
            if self._epoch.add(loss.detach(), batch_size) % FINITE_CHECK_STEPS == 0:
                self._check_finite()
            return loss
        if not torch.isfinite(loss):
            self._raise_non_finite(f"validation loss is {loss.item()} at epoch {self.current_epoch}")
        # Sums over this rank's shard, reduced across ranks once at the epoch's end: the objective
        # is the mean over every validation input, whatever the ranks and their batch counts.
        newest = self.vae.channel_nll(self.vae.newest(x), self.vae.newest(x_mean)).sum(dim=1)
        sums = torch.stack((loss.detach() * batch_size, newest.sum(), kl.sum(), loss.new_tensor(batch_size)))
        self._val_sums = sums.double() if self._val_sums is None else self._val_sums + sums.double()
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_sums = None

    def on_validation_epoch_end(self) -> None:
        if self._val_sums is None:
            self._val_sums = torch.zeros(4, dtype=torch.float64, device=self.device)
        totals = self.trainer.strategy.reduce(self._val_sums, reduce_op="sum")
        loss, nll, kl = (totals[:3] / totals[3]).tolist()
        # Off the progress bar: Katib's StdOut collector reads every `name=value` in the output,
        # and the bar's rounded `val_nll=-25.3` would count as a measurement; ObjectivePrinter
        # prints them exactly once per validation. Already reduced: no sync.
        self.log_dict({"val_loss": loss, "val_nll": nll, "val_kl": kl}, sync_dist=False)

    def on_train_epoch_start(self) -> None:
        self._epoch.reset()

    def on_train_epoch_end(self) -> None:
        self._check_finite()
        if self._epoch.inputs:
            # Once an epoch: Lightning's logging of a step costs more than this small network's step.
            self.log("train_loss", self._epoch.mean(), prog_bar=True, sync_dist=True)

    def _check_finite(self) -> None:
        """Raise if a training loss since the last check was NaN or infinite (one host sync)."""
        first, last = self._epoch.checked_steps + 1, self._epoch.steps
        if self._epoch.unchecked_bad():
            epoch = self.current_epoch
            self._raise_non_finite(f"train loss is NaN or infinite at epoch {epoch}, in steps {first} to {last}")

    def _raise_non_finite(self, what: str) -> None:
        raise NonFiniteLossError(f"{what} (learning rate {self.hparams.learning_rate}): lower the learning rate")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # The fused kernel updates every parameter in one launch on a GPU; the CPU keeps the default.
        fused = self.device.type == "cuda"
        return torch.optim.Adam(self.parameters(), lr=self.hparams.learning_rate, fused=fused or None)
