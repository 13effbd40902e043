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

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import torch
import typer

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


def default_data(
    sets: dict[str, str],
    accelerator: str,
    compile_modes: tuple[str, ...] = ("none",),
    budget: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    """The pipeline's training on the default data (30 epochs at the hyperparameters tuning found,
    `bench_budgets.PARAMS`) on `accelerator`, then evaluated: seconds of training, val_nll and Fc1
    at the label-free threshold, one row per compile mode. The target (a GPU machine): training
    faster on its GPU than on its CPU cores, val_nll and Fc1 no worse (`compare_default_data`).

    Args:
        sets: The scaled sets (`prepare_default_data`): "train", "val", "test" and "scaler".
        budget: `TrainOptions` fields in place of the pipeline's budget (a dry run's).
    """
    import tempfile

    from benchmarks.bench_budgets import PARAMS
    from container_component_src.evaluation.evaluate import EvaluateOptions, run_evaluate
    from container_component_src.model.train import ModelParams, TrainOptions, run_train

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for mode in compile_modes:
            model = f"{scratch}/model_{mode}"
            options = TrainOptions(accelerator=accelerator, progress=False, compile=mode, **(budget or {}))
            metrics = run_train(sets["train"], sets["val"], sets["scaler"], model, ModelParams(**PARAMS), options)
            out = [f"{scratch}/{name}_{mode}" for name in ("results", "summary.json", "report.html")]
            summary = run_evaluate(model, sets["val"], sets["test"], *out, EvaluateOptions(worst_events=1))
            rows.append(
                {
                    "benchmark": "training on the default data",
                    "case": f"{accelerator.upper()}, compile {mode}, {metrics['epochs']} epochs of batch "
                    f"{metrics['batch_size']}",
                    "accelerator": accelerator,
                    "compile": mode,
                    "seconds": metrics["seconds"],
                    "val_nll": round(metrics["val_nll"], 3),
                    "fc1": round(summary["metrics"]["fc1"], 3),
                    "threads": torch.get_num_threads(),
                }
            )
    return rows


# "No worse" than the CPU, allowing for the two devices' different arithmetic and order of sums.
VAL_NLL_SLACK, FC1_SLACK = 0.5, 0.01


def compare_default_data(gpu: list[dict[str, Any]], cpu: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each GPU run of `default_data` against the CPU's (uncompiled) run on the same machine."""
    base = next(row for row in cpu if row["compile"] == "none")
    return [
        {
            "benchmark": "training on the default data: GPU against the machine's CPU cores",
            "case": f"compile {row['compile']}",
            "seconds": row["seconds"],
            "baseline": f"CPU ({base['threads']} threads) {base['seconds']} s, val_nll {base['val_nll']}, Fc1 "
            f"{base['fc1']}; GPU val_nll {row['val_nll']}, Fc1 {row['fc1']}",
            "ratio": round(base["seconds"] / row["seconds"], 2),
            "ratio_meaning": "CPU seconds over GPU seconds",
            "target": f"> 1, val_nll at most {VAL_NLL_SLACK} above the CPU's, Fc1 at most {FC1_SLACK} below",
            "met": base["seconds"] > row["seconds"]
            and row["val_nll"] <= base["val_nll"] + VAL_NLL_SLACK
            and row["fc1"] >= base["fc1"] - FC1_SLACK,
        }
        for row in gpu
    ]


def prepare_default_data(folder: Path) -> dict[str, str]:
    """The default data's scaled sets and scaler in `folder`, once: made on this machine, which has
    the data steps' packages, and carried to the GPU machine (the steps' other outputs are left
    behind: a carried folder is counted against the device's 64 MiB)."""
    import shutil
    import tempfile

    from benchmarks.bench_budgets import scaled_set_urls, scaled_sets

    urls = scaled_set_urls(folder)
    if not all(Path(url).exists() for url in urls.values()):
        with tempfile.TemporaryDirectory() as scratch:
            made = scaled_sets(Path(scratch))
            folder.mkdir(parents=True, exist_ok=True)
            for name, url in made.items():
                (shutil.copytree if Path(url).is_dir() else shutil.copy)(url, urls[name])
    return urls


app = typer.Typer(add_completion=False, help="The GPU checks' steps (see gpu_check.sh).")


@app.command()
def prepare(folder: Path) -> None:
    """Put the default data's scaled sets in FOLDER (here, before the GPU machine's run)."""
    print(json.dumps(prepare_default_data(folder)))


@app.command("default-data")
def default_data_command(
    folder: Path,
    out: Annotated[Path, typer.Option(help="JSON file of the rows.")],
    accelerator: Annotated[str, typer.Option(help="gpu or cpu.")] = "gpu",
    compile_modes: Annotated[list[str], typer.Option("--compile", help="Compile modes, one run each.")] = ["none"],  # noqa: B006
    dry_run: Annotated[bool, typer.Option(help="One epoch, no step floor: a check that it runs.")] = False,
) -> None:
    """Train and evaluate on the scaled sets in FOLDER (written by `prepare`)."""
    from benchmarks.bench_budgets import scaled_set_urls

    budget = {"max_epochs": 1, "min_steps": 0} if dry_run else {}
    rows = default_data(scaled_set_urls(folder), accelerator, tuple(compile_modes), budget)
    out.write_text(json.dumps(rows, indent=1))
    print(json.dumps(rows, indent=1))


@app.command()
def compare(gpu: Path, cpu: Path, out: Annotated[Path, typer.Option(help="JSON file of the comparison.")]) -> None:
    """Compare the GPU's rows of `default-data` with the CPU's."""
    rows = compare_default_data(json.loads(gpu.read_text()), json.loads(cpu.read_text()))
    out.write_text(json.dumps(rows, indent=1))
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    app()
