"""Training speed against the fastest plain loop: for batch 512 and 8,192, on the same rows in the
same run, the project's Lightning epoch (rows resident on the device, as training feeds them; on a
GPU both eager and with `compile = "reduce-overhead"`) beside a plain PyTorch loop with the same
network and loss, rows on the device, fused Adam, no host sync per step and, on a GPU, the whole
step (forward, backward, Adam) captured in one CUDA graph. The target (a GPU): the project at
least 0.5x that loop at both batch sizes.

On the CPU the same comparison runs with the plain loop uncaptured (CUDA graphs need a GPU): a
check that the script works, not the figure the target is about.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from benchmarks.common import best_of


def plain_epoch(system: Any, rows: torch.Tensor, batch_size: int, capture: bool) -> Callable[[], None]:
    """One epoch of the plain loop over `rows` (already on the device), shuffled on the device,
    waiting for the device only at its end; with `capture`, each step is a replay of one CUDA
    graph fed by a copy into its input."""
    device = rows.device
    cuda = device.type == "cuda"
    optimizer = torch.optim.Adam(system.parameters(), lr=1e-3, fused=cuda or None, capturable=capture)
    n_batches = rows.shape[0] // batch_size

    def batches() -> torch.Tensor:
        return torch.randperm(rows.shape[0], device=device)[: n_batches * batch_size].view(n_batches, batch_size)

    def train_step(x: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        system.loss(x)[0].backward()
        optimizer.step()

    if not capture:

        def eager_epoch() -> None:
            for indices in batches():
                train_step(rows.index_select(0, indices))
            if cuda:
                torch.cuda.synchronize()

        return eager_epoch
    static_x = rows[:batch_size].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the graph, as capture requires
        for _ in range(3):
            train_step(static_x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):  # gradients are allocated, then overwritten, in the graph's pool
        system.loss(static_x)[0].backward()
        optimizer.step()

    def graphed_epoch() -> None:
        for indices in batches():
            static_x.copy_(rows.index_select(0, indices))
            graph.replay()
        torch.cuda.synchronize()

    return graphed_epoch


def run(n_rows: int = 2_000_000, n_features: int = 16, batch_sizes: tuple[int, ...] = (512, 8192), epochs: int = 3):
    from benchmarks.bench_sizing import generated_rows
    from benchmarks.bench_training import lightning_epoch_s
    from container_component_src.model.system import VAESystem
    from container_component_src.model.train import hide_unused_gpus

    cuda = torch.cuda.is_available()
    if not cuda:
        hide_unused_gpus("cpu")
    device = torch.device("cuda" if cuda else "cpu")
    rows = generated_rows(n_rows, n_features)
    resident = rows.to(device)
    results: list[dict[str, Any]] = []
    # On a GPU the project is measured eager and with its step compiled into CUDA graphs.
    modes = ["none", "reduce-overhead"] if cuda else ["none"]
    for batch_size in batch_sizes:
        torch.manual_seed(0)
        plain = VAESystem(n_features=n_features).to(device)
        plain_s, _ = best_of(epochs, plain_epoch(plain, resident, batch_size, capture=cuda))
        for mode in modes:
            torch.manual_seed(0)
            system = VAESystem(n_features=n_features)
            if mode != "none":
                system.compile_loss(mode)
            project_s = lightning_epoch_s(system, rows, batch_size, epochs, accelerator="gpu" if cuda else "cpu")
            ratio = plain_s / project_s
            results.append(
                {
                    "benchmark": f"training throughput ({'GPU' if cuda else 'CPU'})",
                    "case": f"{n_rows / 1e6:.1f} M rows x {n_features} channels, compile {mode}, batch {batch_size:,}",
                    "seconds": round(project_s, 3),
                    "rows_per_s": round(n_rows / project_s),
                    "baseline": (
                        f"plain PyTorch{', one CUDA graph per step' if cuda else ''}: {n_rows / plain_s:,.0f} rows/s"
                    ),
                    "ratio": round(ratio, 2),
                    "ratio_meaning": "the project's rows/s over the plain loop's",
                    "target": ">= 0.5 on a GPU" if cuda else "",
                    "met": ratio >= 0.5 if cuda else None,
                }
            )
    return results
