"""Sizing of every pipeline step at the Columbus archive's shape: the project's generator makes
181 channels on a 10-second grid for two lengths (91 and 365 days by default), then each step
runs through the CLI, one fresh process each, as a pipeline task does. For each step: wall time,
CPU time (the process tree's), peak memory of the process tree (RSS summed over the process and
its children, polled every 50 ms) and output size; memory is fitted as a straight line in the
days of archive and projected to ten years, against the shipped pod memory of the step.

    poetry run python -m benchmarks.run_all --only step-sizing          # 91 and 365 days (long)
    poetry run python -m benchmarks.bench_step_sizing --days 7 --days 28 # a quick look
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

CHANNELS = 181
PERIOD_S = 10.0
TEN_YEARS_DAYS = 10 * 365
POLL_S = 0.05
GIB = 2**30


@dataclass(frozen=True)
class StepRun:
    step: str
    wall_s: float
    cpu_s: float
    peak_bytes: int
    output_bytes: int


def measure(argv: list[str], outputs: list[Path], step: str) -> StepRun:
    """Run `argv`, polling its process tree's RSS; its figures.

    Raises:
        RuntimeError: The step failed (with the end of its output).
    """
    import psutil

    started, peak = time.monotonic(), 0
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    tree = psutil.Process(process.pid)
    output: list[bytes] = []
    reader = threading.Thread(target=lambda: output.append(process.stdout.read()), daemon=True)
    reader.start()
    cpu = 0.0
    while process.poll() is None:
        try:
            members = [tree, *tree.children(recursive=True)]
            peak = max(peak, sum(_rss(p) for p in members))
            cpu = max(cpu, sum(_cpu(p) for p in members))
        except psutil.Error:
            pass
        time.sleep(POLL_S)
    reader.join()
    if process.returncode != 0:
        tail = b"".join(output).decode(errors="replace")[-2000:]
        raise RuntimeError(f"{step} failed (exit {process.returncode}):\n{tail}")
    size = sum(_size(path) for path in outputs)
    return StepRun(step, time.monotonic() - started, cpu, peak, size)


def _rss(process: Any) -> int:
    try:
        return process.memory_info().rss
    except Exception:  # it ended between the listing and the read
        return 0


def _cpu(process: Any) -> float:
    try:
        times = process.cpu_times()
        return times.user + times.system + times.children_user + times.children_system
    except Exception:
        return 0.0


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def _cli(subcommand: str, **options: Any) -> list[str]:
    from container_component_src.cli_args import to_argv

    return [sys.executable, "-m", "container_component_src.main", *to_argv(subcommand, options)]


def run_steps(folder: Path, days: int, epochs: int = 1) -> tuple[int, list[StepRun]]:
    """Generate `days` of data in `folder` and run every step on it; the grid rows and the runs."""
    import pyarrow.parquet as pq

    f = {name: folder / name for name in ("archives", "parts", "telemetry", "intervals", "labelled", "model")}
    f |= {name: folder / f"{name}.parquet" for name in ("train", "val", "test", "strain", "sval", "stest", "results")}
    generate = _cli(
        "generate-data",
        archives=str(f["archives"]),
        reports=str(folder / "reports.xlsx"),
        ground_truth=str(folder / "truth.parquet"),
        years=[2021],
        days_per_year=days,
        sampling_period_s=PERIOD_S,
        n_channels=CHANNELS,
        seed=7,
        timestamp_column="normalizedTime",
    )
    measure(generate, [], "generate-data")
    steps = [
        ("split-archive", {"archive": str(f["archives"] / "eclss_2021.parquet"), "out": str(f["parts"])}, ["parts"]),
        (
            "preprocess",
            {
                "partitions": [str(f["parts"])],
                "out": str(f["telemetry"]),
                "quality_report": str(folder / "quality.json"),
                "resample_period": f"{PERIOD_S:.0f}s",
            },
            ["telemetry"],
        ),
        ("parse-reports", {"reports": str(folder / "reports.xlsx"), "out": str(f["intervals"])}, ["intervals"]),
        (
            "label-series",
            {"telemetry": str(f["telemetry"]), "intervals": str(f["intervals"]), "out": str(f["labelled"])},
            ["labelled"],
        ),
        (
            "split-dataset",
            {
                "labelled": str(f["labelled"]),
                "intervals": str(f["intervals"]),
                "train": str(f["train"]),
                "val": str(f["val"]),
                "test": str(f["test"]),
            },
            ["train", "val", "test"],
        ),
        ("fit-scaler", {"train": str(f["train"]), "out": str(folder / "scaler.json")}, []),
        (
            "apply-scaler",
            {
                "scaler": str(folder / "scaler.json"),
                **{k: str(f[k]) for k in ("train", "val", "test")},
                **{f"{k}_out": str(f[f"s{k}"]) for k in ("train", "val", "test")},
            },
            ["strain", "sval", "stest"],
        ),
        (
            "train",
            {
                "train": str(f["strain"]),
                "val": str(f["sval"]),
                "scaler": str(folder / "scaler.json"),
                "out": str(f["model"]),
                "max_epochs": epochs,
                "min_steps": 0,
                "accelerator": "cpu",
            },
            ["model"],
        ),
        (
            "evaluate",
            {
                "model": str(f["model"]),
                "val": str(f["sval"]),
                "test": str(f["stest"]),
                "results": str(f["results"]),
                "summary": str(folder / "summary.json"),
                "report": str(folder / "report.html"),
            },
            ["results"],
        ),
    ]
    runs = []
    for step, options, outputs in steps:
        runs.append(measure(_cli(step, **options), [f[o] for o in outputs], step))
        print(f"  {days} days  {step:<14} {runs[-1].wall_s:7.1f} s  {runs[-1].peak_bytes / GIB:6.2f} GiB", flush=True)
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in f["telemetry"].rglob("*.parquet"))
    return rows, runs


def pod_memory(step: str) -> float:
    """The shipped memory limit of a step's pod in GiB (`[kubernetes.resources]`, else default)."""
    from container_component_src.config import load_settings

    resources = load_settings(Path(__file__).resolve().parents[1] / "config.toml").kubernetes.resources
    task = resources.get(step) or resources.get(step.replace("-", "_")) or resources["default"]
    return _gib(task["memory"])


def _gib(quantity: str) -> float:
    from container_component_src.resources import memory_bytes

    return memory_bytes(quantity, "[kubernetes.resources]") / GIB


def table(sizes: list[tuple[int, int, list[StepRun]]]) -> list[dict[str, Any]]:
    """One row per step: its figures at each length, the growth, and the ten-year projection."""
    (days_a, _, runs_a), (days_b, rows_b, runs_b) = sizes[0], sizes[-1]
    results = []
    for a, b in zip(runs_a, runs_b, strict=True):
        # Per day of archive, not per grid row: the generated data's gaps then scale with it.
        slope = (b.peak_bytes - a.peak_bytes) / max(days_b - days_a, 1)
        # More data never needs less memory: a step whose peak fell is projected at its last one.
        ten_years = max(b.peak_bytes, b.peak_bytes + slope * (TEN_YEARS_DAYS - days_b)) / GIB
        limit = pod_memory(a.step)
        growth = b.peak_bytes / max(a.peak_bytes, 1)
        results.append(
            {
                "benchmark": f"step sizing: {CHANNELS} channels, 10 s grid",
                "case": (
                    f"{a.step}: {days_a} d {a.peak_bytes / GIB:.2f} GiB, {days_b} d {b.peak_bytes / GIB:.2f} GiB "
                    f"({growth:.2f}x; {b.wall_s:.0f} s wall, {b.cpu_s:.0f} s CPU, "
                    f"output {b.output_bytes / 2**20:.0f} MiB); ten years ~{ten_years:.1f} GiB against the pod's "
                    f"{limit:.0f} GiB"
                ),
                "seconds": round(b.wall_s, 2),
                "rows_per_s": round(rows_b / b.wall_s) if b.wall_s else None,
                "ratio": f"{growth:.2f}x peak from {days_a} to {days_b} days",
                "target": "<= 1.25x and <= 3 GiB",
                "met": growth <= 1.25 and b.peak_bytes <= 3 * GIB,
                "peak_gib": {days_a: round(a.peak_bytes / GIB, 3), days_b: round(b.peak_bytes / GIB, 3)},
                "ten_year_gib": round(ten_years, 2),
                "fits_pod": ten_years <= limit,
            }
        )
    return results


def run(days: tuple[int, ...] = (91, 365)) -> list[dict[str, Any]]:
    sizes = []
    with tempfile.TemporaryDirectory(prefix="step-sizing-") as tmp:
        for length in days:
            folder = Path(tmp) / f"{length}d"
            folder.mkdir()
            rows, runs = run_steps(folder, length)
            sizes.append((length, rows, runs))
    return table(sizes)


def main(days: Annotated[list[int], typer.Option("--days", help="Lengths to measure (two).")] = [91, 365]) -> None:  # noqa: B006
    for row in run(tuple(days)):
        print(f"{'met ' if row['met'] else 'MISS'}  {row['case']}")


if __name__ == "__main__":
    typer.run(main)
