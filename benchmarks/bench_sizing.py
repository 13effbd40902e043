"""Sizing: one training epoch at the real archive's shape, 181 channels and one year on a
10-second grid (3.15 M rows), its time and peak memory, and the extrapolation to ten years. On the
CPU here; on the GPU as well when one is present."""

from __future__ import annotations

import resource
from typing import Any

import torch

ROWS_PER_YEAR = 365 * 24 * 3600 // 10
ARCHIVE_CHANNELS = 181


def generated_rows(n_rows: int, n_channels: int, seed: int = 0) -> torch.Tensor:
    """Scaled telemetry of the archive's shape: channels that mix three slow shared factors
    (periods of an hour, a day and a week at 10 s) with their own noise, like correlated ECLSS
    channels rather than white noise."""
    generator = torch.Generator().manual_seed(seed)
    time = torch.arange(n_rows, dtype=torch.float32)
    factors = torch.stack([torch.sin(time / period) for period in (360.0, 8640.0, 60480.0)], dim=1)
    rows = factors @ torch.randn(3, n_channels, generator=generator)
    return rows.add_(torch.randn(n_rows, n_channels, generator=generator), alpha=0.3)


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kilobytes on Linux


# What a GPU's training may hold besides its resident rows: the network, Adam's state, a batch's
# activations and the allocator's rounding (MB at these sizes; a generous bound).
GPU_OVERHEAD_GIB = 0.5


def run(n_rows: int = ROWS_PER_YEAR, n_channels: int = ARCHIVE_CHANNELS, batch_size: int = 512) -> list[dict[str, Any]]:
    from benchmarks.bench_training import lightning_epoch_s
    from container_component_src.model.system import VAESystem
    from container_component_src.model.train import hide_unused_gpus

    torch.manual_seed(0)
    rows = generated_rows(n_rows, n_channels)
    results = []
    # The GPU first: hiding the GPUs for the CPU run must not come before CUDA has started.
    accelerators = [*(["gpu"] if torch.cuda.is_available() else []), "cpu"]
    for accelerator in accelerators:
        if accelerator == "cpu":
            hide_unused_gpus("cpu")
        else:
            torch.cuda.reset_peak_memory_stats()
        system = VAESystem(n_features=n_channels)
        seconds = lightning_epoch_s(system, rows, batch_size, epochs=1, accelerator=accelerator)
        memory = torch.cuda.max_memory_allocated() / 2**30 if accelerator == "gpu" else _peak_rss_gb()
        # On a GPU the shard's float32 rows stay resident (`model.data.RESIDENT_SHARE`), beside
        # the network, Adam's state and a batch's activations: a few MB at these sizes.
        resident = rows.numel() * rows.element_size() / 2**30
        on_gpu = (
            {
                "predicted_gib": round(resident, 2),
                "target": f"GPU memory at most the shard's rows ({resident:.2f} GiB) + {GPU_OVERHEAD_GIB} GiB",
                "met": memory <= resident + GPU_OVERHEAD_GIB,
            }
            if accelerator == "gpu"
            else {}
        )
        results.append(
            {
                "benchmark": f"sizing: {n_channels} channels x {n_rows / ROWS_PER_YEAR:.2g} year(s), 10 s grid",
                "case": (
                    f"one epoch, {accelerator.upper()}, point model, batch {batch_size}; peak "
                    f"{'GPU memory' if accelerator == 'gpu' else 'RSS'} {memory:.1f} GiB; ten years: "
                    f"~{10 * ROWS_PER_YEAR / n_rows * seconds / 60:.0f} min an epoch, "
                    f"{10 * ROWS_PER_YEAR * n_channels * 4 / 2**30:.0f} GiB of float32 rows"
                ),
                "seconds": round(seconds, 2),
                "rows_per_s": round(n_rows / seconds),
                "peak_memory_gib": round(memory, 2),
                **on_gpu,
            }
        )
    return results
