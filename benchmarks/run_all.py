"""Run the benchmarks, print a speed table and a detection-quality table, write benchmarks/results/latest.json
and, per benchmark, the markdown the docs show (benchmarks/figures/<name>.md).

poetry run python -m benchmarks.run_all              # everything, preprocessing at benchmark size (~30 M rows)
poetry run python -m benchmarks.run_all --size small # a quicker look (~1.7 M rows)
poetry run python -m benchmarks.run_all --only serving --only skab
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(add_completion=False)

QUALITY_KEYS = ("fc1", "f1", "pr_auc", "far", "mar")
NAMES = (
    "preprocess",
    "label-join",
    "threshold-sweep",
    "training",
    "sizing",
    "step-sizing",
    "gpu",
    "serving",
    "pipeline",
    "skab",
    "thresholds",
    "budgets",
)
FIGURES = Path(__file__).resolve().parent / "figures"


def suite(size: str, data_dir: Path, workers: int) -> dict[str, Callable[[], list[dict[str, Any]]]]:
    """Each benchmark by name, in the order they run."""
    from benchmarks import (
        bench_budgets,
        bench_gpu,
        bench_label_join,
        bench_pipeline,
        bench_preprocess,
        bench_serving,
        bench_sizing,
        bench_skab,
        bench_step_sizing,
        bench_threshold_sweep,
        bench_thresholds,
        bench_training,
    )

    benchmarks = {
        "preprocess": lambda: bench_preprocess.run(data_dir, (size, "default"), workers),
        "label-join": bench_label_join.run,
        "threshold-sweep": bench_threshold_sweep.run,
        "training": bench_training.run,
        "sizing": bench_sizing.run,
        "step-sizing": bench_step_sizing.run,
        "gpu": bench_gpu.run,
        "serving": bench_serving.run,
        "pipeline": bench_pipeline.run,
        "skab": bench_skab.run,
        "thresholds": bench_thresholds.run,
        "budgets": bench_budgets.run,
    }
    return benchmarks


def _speed_notes(row: dict[str, Any]) -> str:
    """The ratio, and what else a speed row measured (peak memory, agreement with our output)."""
    notes = [f"{row['ratio']} ({row['ratio_meaning']})"] if "ratio" in row else []
    if "peak_memory_mb" in row:
        notes.append(f"peak {row['peak_memory_mb']:,} MB")
    if "agreement" in row:
        notes.append(f"output: {row['agreement']}")
    return "; ".join(notes)


def tables(rows: list[dict[str, Any]]) -> dict[str, tuple[tuple[str, ...], list[tuple[str, ...]]]]:
    """The rows as three tables (speed, detection quality, calibration): headers and cells."""
    speed: list[tuple[str, ...]] = []
    quality: list[tuple[str, ...]] = []
    calibration: list[tuple[str, ...]] = []
    for row in rows:
        if "far_ratio" in row:
            calibration.append(
                (
                    row["benchmark"],
                    row["case"],
                    f"{row['nominal_far']:.2%}",
                    f"{row['observed_far']:.2%}",
                    f"{row['far_ratio']:.3g}",
                    f"{row['fc1']:.3f}" if "fc1" in row else "",
                    row["verdict"] if "verdict" in row else "better calibrated" if row["better_calibrated"] else "",
                )
            )
        elif any(key in row for key in QUALITY_KEYS):
            quality.append(
                (
                    row["benchmark"],
                    row["case"],
                    *(f"{row[k]:.3f}" if k in row else "" for k in QUALITY_KEYS),
                    row.get("baseline", ""),
                    row.get("published", ""),
                )
            )
        else:
            speed.append(
                (
                    row["benchmark"],
                    row["case"],
                    f"{row['seconds']:.3f}",
                    f"{row['rows_per_s']:,}" if "rows_per_s" in row else "",
                    _speed_notes(row),
                    row.get("target", ""),
                    {True: "yes", False: "NO"}.get(row.get("met"), ""),
                )
            )
    return {
        "Speed": (("benchmark", "case", "seconds", "rows/s", "ratio", "target", "met"), speed),
        "Detection quality": (
            ("benchmark", "case", "Fc1", "F1", "PR-AUC", "FAR", "MAR", "baselines (same run)", "published"),
            quality,
        ),
        "Calibration of the label-free thresholds on normal rows": (
            ("benchmark", "threshold", "promised FAR", "observed FAR", "observed / promised", "Fc1", "verdict"),
            calibration,
        ),
    }


def print_tables(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=220)
    for name, (header, cells) in tables(rows).items():
        if not cells and name.startswith("Calibration"):
            continue
        table = Table(title=f"{name}: {title}")
        for column in header:
            table.add_column(column)
        for line in cells:
            table.add_row(*line)
        console.print(table)
    for row in rows:
        if "per_task_s" in row:
            console.print(f"{row['benchmark']}, seconds per task: {row['per_task_s']}")


def figures_markdown(rows: list[dict[str, Any]], name: str, title: str, day: str) -> str:
    """One benchmark's figures as the docs show them: who wrote them, where, when, then its tables."""
    lines = [f"Written by `python -m benchmarks.run_all --only {name}` on {day} ({title}).", ""]
    for table, (header, cells) in tables(rows).items():
        if cells:
            cell = lambda text: str(text).replace("|", "\\|")  # noqa: E731 - one use, here
            lines += [f"**{table}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(cell(c) for c in line) + " |" for line in cells]
            lines.append("")
    per_task = [f"{row['benchmark']}, seconds per task: {row['per_task_s']}" for row in rows if "per_task_s" in row]
    return "\n".join(lines + per_task).rstrip() + "\n"


def write_figures(rows: list[dict[str, Any]], names: list[str], title: str, folder: Path = FIGURES) -> list[Path]:
    """Write each benchmark's figures for the docs (atomically: a figure file is whole or absent)."""
    import time

    from container_component_src import storage

    written = []
    for name in names:
        path = folder / f"{name}.md"
        mine = [row for row in rows if row.get("suite") == name]
        with storage.atomic_write(str(path), "w") as handle:
            handle.write(figures_markdown(mine, name, title, time.strftime("%Y-%m-%d")))
        written.append(path)
    return written


@app.command()
def main(
    size: Annotated[
        str, typer.Option(help="Preprocessing data: 'full' (tens of millions of rows) or 'small'.")
    ] = "full",
    data_dir: Annotated[Path, typer.Option(help="Where the benchmark data is generated (once).")] = Path(
        "local_data/benchmarks"
    ),
    workers: Annotated[int, typer.Option(help="Local Dask workers for preprocessing.")] = 2,
    only: Annotated[list[str] | None, typer.Option(help="Run only this benchmark (repeatable).")] = None,
) -> None:
    """Run the benchmark suite."""
    from benchmarks.common import SIZES, machine, save

    if size not in SIZES:
        raise typer.BadParameter(f"--size must be one of {', '.join(SIZES)}")
    benchmarks = suite(size, data_dir, workers)
    unknown = set(only or ()) - set(benchmarks)
    if unknown:
        raise typer.BadParameter(f"--only: unknown {', '.join(sorted(unknown))} (have: {', '.join(benchmarks)})")
    ran = [name for name in benchmarks if not only or name in only]
    rows = [row | {"suite": name} for name in ran for row in benchmarks[name]()]
    print_tables(rows, machine())
    typer.echo(f"Results: {save('latest', rows)}")
    typer.echo(f"Figures for the docs: {', '.join(str(p) for p in write_figures(rows, ran, machine()))}")


if __name__ == "__main__":
    app()
