"""Run every benchmark, print one table and write benchmarks/results/latest.json.

uv run python -m benchmarks.run_all              # benchmark size (~30 M rows), generated once
uv run python -m benchmarks.run_all --size small # a quick look (~1.7 M rows)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False)


@app.command()
def main(
    size: Annotated[str, typer.Option(help="'full' (tens of millions of rows) or 'small'.")] = "full",
    data_dir: Annotated[Path, typer.Option(help="Where the benchmark data is generated (once).")] = Path(
        "local_data/benchmarks"
    ),
    workers: Annotated[int, typer.Option(help="Local Dask workers for preprocessing.")] = 2,
) -> None:
    """Run the benchmark suite."""
    from rich.console import Console
    from rich.table import Table

    from benchmarks import bench_label_join, bench_preprocess, bench_serving, bench_threshold_sweep, bench_training
    from benchmarks.common import SIZES, machine, save

    if size not in SIZES:
        raise typer.BadParameter(f"--size must be one of {', '.join(SIZES)}")
    rows = (
        bench_preprocess.run(data_dir, size, workers)
        + bench_label_join.run()
        + bench_threshold_sweep.run()
        + bench_training.run()
        + bench_serving.run()
    )
    table = Table(title=f"ECLSS pipeline benchmarks ({machine()})")
    for column in ("benchmark", "case", "seconds", "rows/s", "ratio", "target", "met"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["benchmark"],
            row["case"],
            f"{row['seconds']:.2f}",
            f"{row['rows_per_s']:,}",
            f"{row['ratio']} ({row['ratio_meaning']})" if "ratio" in row else "",
            row.get("target", ""),
            {True: "yes", False: "NO"}.get(row.get("met"), ""),
        )
    Console(width=200).print(table)
    typer.echo(f"Results: {save('latest', rows)}")


if __name__ == "__main__":
    app()
