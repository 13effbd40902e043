"""Training system of the VAE: loss, logging and optimiser (Lightning), apart from the network."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import Tensor

from container_component_src.model.vae import VAE, kl_divergence


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite: the trial or training run cannot continue."""


class VAESystem(pl.LightningModule):
    """Trains a `VAE` on scaled telemetry rows.

    The training loss per row is (1 - mse_weight) * NLL + mse_weight * squared error + beta * KL,
    averaged over rows. The validation objective is the mean per-row NLL decoded from the latent
    mean: it does not depend on beta or the batch size, so tuning can compare trials.

    Args:
        n_features: Number of channels.
        hidden_sizes: Encoder hidden widths.
        latent_dim: Latent size.
        beta: Weight of the KL term.
        mse_weight: Share of squared error mixed into the likelihood term (0: pure likelihood).
        learning_rate: Adam learning rate.
    """

    def __init__(
        self,
        n_features: int,
        hidden_sizes: list[int] | tuple[int, ...] = (64, 32),
        latent_dim: int = 4,
        beta: float = 1.0,
        mse_weight: float = 0.0,
        learning_rate: float = 1e-3,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.vae = VAE(n_features, list(hidden_sizes), latent_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.vae.score(x)

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        self._step(batch, "val")

    def _step(self, x: Tensor, stage: str) -> Tensor:
        mean, logvar = self.vae.encode(x)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp() if stage == "train" else mean
        x_mean = self.vae.decode(z)
        nll = self.vae.nll(x, x_mean)
        squared_error = ((x - x_mean) ** 2).sum(dim=1)
        kl = kl_divergence(mean, logvar)
        w = self.hparams.mse_weight
        loss = ((1 - w) * nll + w * squared_error + self.hparams.beta * kl).mean()
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"{stage} loss is {loss.item()} at epoch {self.current_epoch}, step {self.global_step} "
                f"(learning rate {self.hparams.learning_rate}): lower the learning rate"
            )
        batch_size = x.shape[0]
        # Per epoch, not per step: logging every step costs more than this small network's step.
        # Validation metrics stay off the progress bar: Katib's StdOut collector reads every
        # `name=value` in the output, and the bar's rounded `val_nll=-25.3` would count as a
        # measurement; ObjectivePrinter prints them exactly once per validation.
        self.log(
            f"{stage}_loss",
            loss,
            prog_bar=stage == "train",
            on_step=False,
            on_epoch=True,
            batch_size=batch_size,
            sync_dist=stage == "val",
        )
        if stage == "val":
            self.log("val_nll", nll.mean(), batch_size=batch_size, sync_dist=True)
            self.log("val_kl", kl.mean(), batch_size=batch_size, sync_dist=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.learning_rate)
