"""The VAEs: plain, scriptable `nn.Module`s (training lives in `system.py`).

Two models share one scoring interface. `VAE` (the point model) sees one grid row; `WindowVAE`
sees the last `window` rows of all channels through strided 1-D convolutions. Both score a *series*: given
rows of shape (rows, channels) in time order, `score` returns one score per row that has
`context` (= window - 1) rows before it, i.e. rows - context scores, each for the newest row of
its window. The point model has no context, so it scores every row.

The score of a row is the sum over channels of each channel's negative log-likelihood,
standardised by its spread on validation data and weighted (`calibrate`): a channel whose NLL is
large by its nature (a mode switch, a channel that barely moves) cannot dominate one that moves
out of its usual range.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn

# Bounds of the decoder's log-variance. A mode channel (constant, or a few levels: see
# `data.scaling`) gets a floor of a 0.5 standard deviation in scaled units, where its levels are at
# least 1 apart: the model cannot learn that such a channel never moves and turn its next switch
# into an enormous likelihood term. Measured channels keep the wide range.
MIN_LOG_VAR = -12.0
MODE_MIN_LOG_VAR = 2.0 * math.log(0.5)
MAX_LOG_VAR = 12.0


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class _ScoredVAE(nn.Module):
    """What both models share: the Gaussian likelihood of each channel and the calibrated score.

    Subclasses set `context` and implement `encode`, `decode` and `windows` (the model's input
    for each scored row of a series) and `newest` (the newest row of an input or reconstruction).
    """

    def __init__(self, n_features: int, context: int) -> None:
        super().__init__()
        self.context = context
        self.max_log_var = MAX_LOG_VAR  # an attribute: TorchScript reads no globals
        self.register_buffer("log_var_floor", torch.full((n_features,), MIN_LOG_VAR))
        self.register_buffer("nll_center", torch.zeros(n_features))
        self.register_buffer("nll_scale", torch.ones(n_features))
        self.register_buffer("channel_weight", torch.ones(n_features))
        # Where each channel enters the encoder when a series is scored (`bound_inputs`); unbounded
        # until training sets them.
        self.register_buffer("input_low", torch.full((n_features,), -math.inf))
        self.register_buffer("input_high", torch.full((n_features,), math.inf))
        self.bounded_inputs = False

    def log_var(self) -> Tensor:
        return torch.maximum(self.log_var_x, self.log_var_floor).clamp(max=self.max_log_var)

    def set_mode_channels(self, indices: list[int]) -> None:
        """Give these channels (modes, commands, constants) the wider variance floor."""
        self.log_var_floor[indices] = MODE_MIN_LOG_VAR

    def channel_nll(self, x: Tensor, x_mean: Tensor) -> Tensor:
        """Negative log-likelihood of each value under N(x_mean, exp(log_var_x)), shaped like `x`:
        (inputs, channels) or (inputs, channels, rows of a window)."""
        log_var = self.log_var()
        if x.dim() == 3:
            log_var = log_var.unsqueeze(-1)
        return 0.5 * (math.log(2.0 * math.pi) + log_var + (x - x_mean) ** 2 / log_var.exp())

    def nll(self, x: Tensor, x_mean: Tensor) -> Tensor:
        """Negative log-likelihood per input, averaged over the rows of a window, shape (inputs,)."""
        return self.channel_nll(x, x_mean).flatten(1).sum(dim=1) / (self.context + 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Reconstruction mean from the latent mean (no sampling), latent mean and log-variance."""
        mean, logvar = self.encode(x)
        return self.decode(mean), mean, logvar

    def bound_inputs(self, low: Tensor, high: Tensor) -> None:
        """Clamp each channel's input to [low, high] where a series is scored (infinite bounds:
        none): a channel left out of the score that leaves its training range then cannot move
        the latent, and with it the other channels' reconstruction, past what training showed."""
        self.input_low.copy_(low)
        self.input_high.copy_(high)
        self.bounded_inputs = bool(torch.isfinite(low).any() or torch.isfinite(high).any())

    def bounded(self, x: Tensor) -> Tensor:
        """`x` (inputs, channels) or (inputs, channels, rows) with each channel within its bounds."""
        if not self.bounded_inputs:
            return x
        low, high = self.input_low, self.input_high
        if x.dim() == 3:
            low, high = low.unsqueeze(-1), high.unsqueeze(-1)
        return torch.maximum(torch.minimum(x, high), low)

    @torch.jit.export
    def raw_channel_nll(self, series: Tensor) -> Tensor:
        """Each channel's NLL of the newest row of every window of `series`, shape (rows - context,
        channels); the encoder sees the inputs within their bounds (`bound_inputs`)."""
        x = self.windows(series)
        x_mean, _, _ = self.forward(self.bounded(x))
        return self.channel_nll(self.newest(x), self.newest(x_mean))

    @torch.jit.export
    def channel_scores(self, series: Tensor) -> Tensor:
        """Each channel's share of the anomaly score, shape (rows - context, channels); rows sum to `score`."""
        standard = (self.raw_channel_nll(series) - self.nll_center) / self.nll_scale
        return standard * self.channel_weight

    @torch.jit.export
    def score(self, series: Tensor) -> Tensor:
        """Anomaly score of every row with a full window, shape (rows - context,)."""
        return self.channel_scores(series).sum(dim=1)

    def calibrate(self, center: Tensor, scale: Tensor, weight: Tensor) -> None:
        """Set how each channel's NLL is standardised and weighted in the score."""
        self.nll_center.copy_(center)
        self.nll_scale.copy_(scale)
        self.channel_weight.copy_(weight)


class VAE(_ScoredVAE):
    """The point model: MLP encoder to the latent mean and log-variance; MLP decoder to the mean
    of a Gaussian per channel, whose log-variance is a learned parameter per channel.

    Args:
        n_features: Number of channels.
        hidden_sizes: Widths of the hidden layers of the encoder (the decoder mirrors them).
        latent_dim: Size of the latent space.
    """

    def __init__(self, n_features: int, hidden_sizes: list[int], latent_dim: int) -> None:
        super().__init__(n_features, context=0)
        self.encoder = _mlp([n_features, *hidden_sizes])
        self.to_mean = nn.Linear(hidden_sizes[-1], latent_dim)
        self.to_logvar = nn.Linear(hidden_sizes[-1], latent_dim)
        self.decoder = _mlp([latent_dim, *reversed(hidden_sizes), n_features])
        self.log_var_x = nn.Parameter(torch.zeros(n_features))
        self.act = nn.SiLU()

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        hidden = self.act(self.encoder(x))
        return self.to_mean(hidden), self.to_logvar(hidden).clamp(-12.0, 12.0)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def windows(self, series: Tensor) -> Tensor:
        return series

    def newest(self, x: Tensor) -> Tensor:
        return x


class WindowVAE(_ScoredVAE):
    """The windowed model: it sees `window` consecutive rows, shape (inputs, channels, window).

    The encoder is a stack of 1-D convolutions over time with kernel 2 and stride 2, each halving
    the window's length (written as a matrix product over pairs of neighbouring rows, the fastest
    form of such a convolution on a CPU); the flattened result gives the latent mean and
    log-variance. The decoder mirrors it with transposed convolutions (each doubling the length)
    back to the mean of a Gaussian per channel and row, with a learned log-variance per channel
    (shared by the rows). A window whose length is not a multiple of 2^layers is zero-padded
    before its oldest row, and the padding is cropped after decoding.

    Args:
        n_features: Number of channels.
        hidden_sizes: Channel widths of the convolutions of the encoder (the decoder mirrors them).
        latent_dim: Size of the latent space.
        window: Rows per window (the scored row and `window - 1` before it).
    """

    def __init__(self, n_features: int, hidden_sizes: list[int], latent_dim: int, window: int) -> None:
        super().__init__(n_features, context=window - 1)
        self.window = window
        stride = 2 ** len(hidden_sizes)
        self.padding = -window % stride
        self.encoded_rows = (window + self.padding) // stride
        widths = [n_features, *hidden_sizes]
        self.encoder = nn.ModuleList(nn.Linear(2 * a, b) for a, b in itertools.pairwise(widths))
        flat = hidden_sizes[-1] * self.encoded_rows
        self.to_mean = nn.Linear(flat, latent_dim)
        self.to_logvar = nn.Linear(flat, latent_dim)
        self.from_latent = nn.Linear(latent_dim, flat)
        self.decoder = nn.ModuleList(nn.Linear(a, 2 * b) for a, b in itertools.pairwise(widths[::-1]))
        self.log_var_x = nn.Parameter(torch.zeros(n_features))
        self.act = nn.SiLU()

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        hidden = nn.functional.pad(x, (self.padding, 0)).transpose(1, 2)  # (inputs, rows, channels)
        for layer in self.encoder:
            inputs, rows, width = hidden.shape
            hidden = self.act(layer(hidden.reshape(inputs, rows // 2, 2 * width)))
        hidden = hidden.flatten(1)
        return self.to_mean(hidden), self.to_logvar(hidden).clamp(-12.0, 12.0)

    def decode(self, z: Tensor) -> Tensor:
        hidden = self.act(self.from_latent(z)).unflatten(1, (self.encoded_rows, -1))
        last = len(self.decoder) - 1
        for i, layer in enumerate(self.decoder):
            out = layer(hidden)
            hidden = out.reshape(out.shape[0], 2 * out.shape[1], out.shape[2] // 2)
            if i < last:
                hidden = self.act(hidden)
        return hidden.transpose(1, 2)[:, :, self.padding :]

    def windows(self, series: Tensor) -> Tensor:
        return series.unfold(0, self.window, 1)

    def newest(self, x: Tensor) -> Tensor:
        return x[:, :, -1]


def build_vae(kind: str, n_features: int, hidden_sizes: list[int], latent_dim: int, window: int) -> _ScoredVAE:
    """The point model (`kind` "point"; `window` is then ignored) or the windowed model ("window")."""
    if kind == "point":
        return VAE(n_features, hidden_sizes, latent_dim)
    return WindowVAE(n_features, hidden_sizes, latent_dim, window)


def kl_divergence(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(q(z|x) || N(0, I)) of each row, shape (rows,)."""
    return -0.5 * (1 + logvar - mean**2 - logvar.exp()).sum(dim=1)
