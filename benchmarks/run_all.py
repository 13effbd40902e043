"""Run the benchmarks, print a speed table and a detection-quality table, write benchmarks/results/latest.json.

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


def suite(size: str, data_dir: Path, workers: int) -> dict[str, Callable[[], list[dict[str, Any]]]]:
    """Each benchmark by name, in the order they run."""
    from benchmarks import (
        bench_gpu,
        bench_label_join,
        bench_pipeline,
        bench_preprocess,
        bench_serving,
        bench_sizing,
        bench_skab,
        bench_step_sizing,
        bench_threshold_sweep,
        bench_training,
    )

    return {
        "preprocess": lambda: bench_preprocess.run(data_dir, size, workers),
        "label-join": bench_label_join.run,
        "threshold-sweep": bench_threshold_sweep.run,
        "training": bench_training.run,
        "sizing": bench_sizing.run,
        "step-sizing": bench_step_sizing.run,
        "gpu": bench_gpu.run,
        "serving": bench_serving.run,
        "pipeline": bench_pipeline.run,
        "skab": bench_skab.run,
    }


def print_tables(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=220)
    speed = Table(title=f"Speed: {title}")
    for column in ("benchmark", "case", "seconds", "rows/s", "ratio", "target", "met"):
        speed.add_column(column)
    quality = Table(title=f"Detection quality: {title}")
    for column in ("benchmark", "case", "Fc1", "F1", "PR-AUC", "FAR", "MAR", "baselines (same run)", "published"):
        quality.add_column(column)
    calibration = Table(title=f"Calibration of the label-free thresholds on normal rows: {title}")
    for column in ("benchmark", "threshold", "promised FAR", "observed FAR", "observed / promised", "better"):
        calibration.add_column(column)
    for row in rows:
        if "far_ratio" in row:
            calibration.add_row(
                row["benchmark"],
                row["case"],
                f"{row['nominal_far']:.2%}",
                f"{row['observed_far']:.2%}",
                f"{row['far_ratio']:.3g}",
                "yes" if row["better_calibrated"] else "",
            )
            continue
        if any(key in row for key in QUALITY_KEYS):
            quality.add_row(
                row["benchmark"],
                row["case"],
                *(f"{row[k]:.3f}" if k in row else "" for k in QUALITY_KEYS),
                row.get("baseline", ""),
                row.get("published", ""),
            )
            continue
        speed.add_row(
            row["benchmark"],
            row["case"],
            f"{row['seconds']:.3f}",
            f"{row['rows_per_s']:,}",
            f"{row['ratio']} ({row['ratio_meaning']})" if "ratio" in row else "",
            row.get("target", ""),
            {True: "yes", False: "NO"}.get(row.get("met"), ""),
        )
    console.print(speed)
    console.print(quality)
    if calibration.rows:
        console.print(calibration)
    for row in rows:
        if "per_task_s" in row:
            console.print(f"{row['benchmark']}, seconds per task: {row['per_task_s']}")


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
    rows = [row for name, run in benchmarks.items() if not only or name in only for row in run()]
    print_tables(rows, machine())
    typer.echo(f"Results: {save('latest', rows)}")


if __name__ == "__main__":
    app()
