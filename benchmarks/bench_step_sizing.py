"""Sizing of every pipeline step at the Columbus archive's shape: the project's generator makes
181 channels on a 10-second grid for two lengths (91 and 365 days by default), then each step
runs through the CLI, one fresh process each, as a pipeline task does. For each step: wall time,
CPU time (the process tree's), peak memory of the process tree (RSS summed over the process and
its children, polled every 50 ms) and output size; memory is fitted as a straight line in the
days of archive and projected to ten years, against the shipped pod memory of the step.

Training and tuning are measured as they scale out too: training with 2 DDP ranks (each rank's
own peak RSS: on the cluster each rank is a pod), tuning with 1 and 2 parallel workers (the
tree's proportional set size, PSS: the mapped copy the workers share counts once, as in the
pod's memory). A rank's peak is modelled as a + b x days / ranks and projected to ten years at
4 ranks, against the PyTorchJob replica's memory (`[training] replica_memory`).

    poetry run python -m benchmarks.run_all --only step-sizing          # 91 and 365 days (long)
    poetry run python -m benchmarks.bench_step_sizing --days 7 --days 28 # a quick look
    poetry run python -m benchmarks.bench_step_sizing --model-only --data /tmp/sizing  # reuse data
    poetry run python -m benchmarks.bench_step_sizing --days 365 --days 1460 --lean     # years, on less disk
"""

from __future__ import annotations

import shutil
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
    """One step's figures.

    Attributes:
        peak_bytes: Peak of the tree's RSS summed over its processes.
        pss_bytes: Peak of the tree's PSS summed (shared pages counted once).
        child_peak_bytes: The largest peak RSS of one child process (a DDP rank, a tuning worker);
            the main process's when it has no child.
    """

    step: str
    wall_s: float
    cpu_s: float
    peak_bytes: int
    output_bytes: int
    pss_bytes: int = 0
    child_peak_bytes: int = 0


def measure(argv: list[str], outputs: list[Path], step: str) -> StepRun:
    """Run `argv`, polling its process tree's memory; its figures.

    Raises:
        RuntimeError: The step failed (with the end of its output).
    """
    import psutil

    started, peak, pss = time.monotonic(), 0, 0
    own: dict[int, int] = {}
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    tree = psutil.Process(process.pid)
    output: list[bytes] = []
    reader = threading.Thread(target=lambda: output.append(process.stdout.read()), daemon=True)
    reader.start()
    cpu = 0.0
    while process.poll() is None:
        try:
            members = [tree, *tree.children(recursive=True)]
            memory = {p.pid: _memory(p) for p in members}
            peak = max(peak, sum(rss for rss, _ in memory.values()))
            pss = max(pss, sum(share for _, share in memory.values()))
            own = {pid: max(own.get(pid, 0), rss) for pid, (rss, _) in memory.items()} | {
                pid: value for pid, value in own.items() if pid not in memory
            }
            cpu = max(cpu, sum(_cpu(p) for p in members))
        except psutil.Error:
            pass
        time.sleep(POLL_S)
    reader.join()
    if process.returncode != 0:
        tail = b"".join(output).decode(errors="replace")[-2000:]
        raise RuntimeError(f"{step} failed (exit {process.returncode}):\n{tail}")
    size = sum(_size(path) for path in outputs)
    children = [value for pid, value in own.items() if pid != process.pid]
    child_peak = max(children) if children else own.get(process.pid, 0)
    return StepRun(step, time.monotonic() - started, cpu, peak, size, pss, child_peak)


def _memory(process: Any) -> tuple[int, int]:
    """RSS and PSS of a process (0, 0 when it ended between the listing and the read)."""
    try:
        info = process.memory_full_info()
        return info.rss, info.pss
    except Exception:
        return 0, 0


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


# The scale-out runs of training and tuning: (name, subcommand, extra options).
SCALE_OUT = (
    ("train, 2 ranks", "train", {"devices": 2}),
    ("tune, 1 worker", "tune", {"parallel_trials": 1}),
    ("tune, 2 workers", "tune", {"parallel_trials": 2}),
)


# With `lean`, what each step leaves no later step reading, deleted once it has run: a length of
# years then needs about two copies of the data on disk instead of seven.
SPENT = {
    "preprocess": ("archives", "parts"),
    "label-series": ("telemetry",),
    "split-dataset": ("labelled",),
    "apply-scaler": ("train", "val", "test"),
}


def run_steps(
    folder: Path, days: int, epochs: int = 1, model_only: bool = False, lean: bool = False
) -> tuple[int, list[StepRun]]:
    """Generate `days` of data in `folder` and run every step on it; the grid rows and the runs.
    With `model_only`, only training and tuning run, on the data a run left in `folder` (made
    first when it is not there); with `lean`, each step's inputs go once no later step reads them."""

    f = {name: folder / name for name in ("archives", "parts", "telemetry", "intervals", "labelled", "model")}
    f |= {name: folder / f"{name}.parquet" for name in ("train", "val", "test", "strain", "sval", "stest", "results")}
    if model_only and f["sval"].exists():
        runs = _model_steps(folder, f, days, epochs)
        return _grid_rows(f), runs
    # Beyond a year, whole years (one archive each, as the mission's are) of equal length.
    years = list(range(2021, 2021 + -(-days // 365)))
    generate = _cli(
        "generate-data",
        archives=str(f["archives"]),
        reports=str(folder / "reports.xlsx"),
        ground_truth=str(folder / "truth.parquet"),
        years=years,
        days_per_year=-(-days // len(years)),
        sampling_period_s=PERIOD_S,
        n_channels=CHANNELS,
        seed=7,
        timestamp_column="normalizedTime",
    )
    measure(generate, [], "generate-data")
    # Each yearly archive is split by a task of its own: the step's figures are its largest task's.
    parts = [f["parts"] / str(year) for year in years]
    split = [
        _run("split-archive", {"archive": str(f["archives"] / f"eclss_{year}.parquet"), "out": str(out)}, [out], days)
        for year, out in zip(years, parts, strict=True)
    ]
    steps: list[tuple[str, dict[str, Any], list[str]]] = [
        (
            "preprocess",
            {
                "partitions": [str(out) for out in parts],
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
    ]
    runs, rows = [_largest(split)], 0
    for step, options, outputs in steps:
        runs.append(_run(step, options, [f[o] for o in outputs], days))
        if step == "apply-scaler":
            rows = _grid_rows(f)
        for spent in SPENT.get(step, ()) if lean else ():
            shutil.rmtree(f[spent]) if f[spent].is_dir() else f[spent].unlink()
    runs += _model_steps(folder, f, days, epochs)
    if not model_only:
        evaluate = {
            "model": str(f["model"]),
            "val": str(f["sval"]),
            "test": str(f["stest"]),
            "results": str(f["results"]),
            "summary": str(folder / "summary.json"),
            "report": str(folder / "report.html"),
        }
        runs.append(_run("evaluate", evaluate, [f["results"]], days))
    return rows, runs


def _largest(runs: list[StepRun]) -> StepRun:
    """Tasks of one step as one run: the largest task's memory, all tasks' time and output."""
    return StepRun(
        runs[0].step,
        sum(r.wall_s for r in runs),
        sum(r.cpu_s for r in runs),
        max(r.peak_bytes for r in runs),
        sum(r.output_bytes for r in runs),
        max(r.pss_bytes for r in runs),
        max(r.child_peak_bytes for r in runs),
    )


def _grid_rows(f: dict[str, Path]) -> int:
    """The grid's rows: those of the three scaled sets (every grid row is in one of them)."""
    import pyarrow.parquet as pq

    sets = [f[name] for name in ("strain", "sval", "stest")]
    return sum(pq.ParquetFile(p).metadata.num_rows for s in sets for p in s.rglob("*.parquet"))


def _run(step: str, options: dict[str, Any], outputs: list[Path], days: int, name: str | None = None) -> StepRun:
    run = measure(_cli(step, **options), outputs, name or step)
    print(
        f"  {days} days  {run.step:<16} {run.wall_s:7.1f} s  {run.peak_bytes / GIB:6.2f} GiB RSS  "
        f"{run.pss_bytes / GIB:6.2f} GiB PSS  {run.child_peak_bytes / GIB:6.2f} GiB largest process",
        flush=True,
    )
    return run


def _model_steps(folder: Path, f: dict[str, Path], days: int, epochs: int) -> list[StepRun]:
    """Training (1 and 2 DDP ranks) and local tuning (1 and 2 workers, 2 trials of `epochs`)."""
    data = {"train": str(f["strain"]), "val": str(f["sval"]), "scaler": str(folder / "scaler.json")}
    train = {**data, "out": str(f["model"]), "max_epochs": epochs, "min_steps": 0, "accelerator": "cpu"}
    tune = {
        **data,
        "out": str(folder / "best.json"),
        "max_trials": 2,
        "epochs_per_trial": epochs,
        "min_steps_per_trial": 0,
        "accelerator": "cpu",
    }
    runs = [_run("train", train, [f["model"]], days)]
    for name, step, extra in SCALE_OUT:
        options = {**(train if step == "train" else tune), **extra}
        if step == "train":  # the model evaluate scores is the one-rank run's
            options["out"] = str(folder / "model-ranks")
        runs.append(_run(step, options, [], days, name))
    return runs


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
    scale_out = {name for name, _, _ in SCALE_OUT}
    for a, b in zip(runs_a, runs_b, strict=True):
        if a.step in scale_out:
            continue
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
    named = ({r.step: r for r in runs_a}, {r.step: r for r in runs_b})
    if "train, 2 ranks" in named[1]:
        results += scale_out_rows(days_a, days_b, *named)
    return results


def scale_out_rows(
    days_a: int, days_b: int, runs_a: dict[str, StepRun], runs_b: dict[str, StepRun]
) -> list[dict[str, Any]]:
    """Training per rank at 1 and 2 ranks, with the ten-year projection at 4; tuning at 1 and 2 workers."""
    from container_component_src.config import load_settings

    settings = load_settings(Path(__file__).resolve().parents[1] / "config.toml")
    replica = _gib(settings.training.replica_memory)
    one, two = runs_b["train"].peak_bytes, runs_b["train, 2 ranks"].child_peak_bytes
    # A rank holds base + k x days / ranks: k from the two rank counts and from the two lengths,
    # the larger one (the projection errs on the side of more memory).
    k = max(2 * (one - two) / days_b, (one - runs_a["train"].peak_bytes) / max(days_b - days_a, 1), 0.0)
    ten_years = (two + k * (TEN_YEARS_DAYS / 4 - days_b / 2)) / GIB
    tune_one, tune_two = runs_b["tune, 1 worker"], runs_b["tune, 2 workers"]
    benchmark = f"step sizing: {CHANNELS} channels, 10 s grid, {days_b} days"
    return [
        {
            "benchmark": benchmark,
            "case": (
                f"train per rank: 1 rank {one / GIB:.2f} GiB, 2 ranks {two / GIB:.2f} GiB ({two / one:.2f}x); "
                f"ten years at 4 ranks ~{ten_years:.1f} GiB a rank against the replica's {replica:.0f} GiB"
            ),
            "seconds": round(runs_b["train, 2 ranks"].wall_s, 2),
            "ratio": f"{two / one:.2f}x a rank's peak from 1 to 2 ranks",
            "target": "<= 0.6x, and ten years at 4 ranks within [training] replica_memory",
            "met": two <= 0.6 * one and ten_years <= replica,
            "rank_gib": {1: round(one / GIB, 3), 2: round(two / GIB, 3)},
            "ten_year_rank_gib_at_4": round(ten_years, 2),
        },
        {
            "benchmark": benchmark,
            "case": (
                f"tune (2 trials): 1 worker {tune_one.pss_bytes / GIB:.2f} GiB, 2 workers "
                f"{tune_two.pss_bytes / GIB:.2f} GiB ({tune_two.pss_bytes / tune_one.pss_bytes:.2f}x; PSS of the "
                f"tree, a worker {tune_two.child_peak_bytes / GIB:.2f} GiB RSS; {tune_one.wall_s:.0f} s and "
                f"{tune_two.wall_s:.0f} s)"
            ),
            "seconds": round(tune_two.wall_s, 2),
            "ratio": f"{tune_two.pss_bytes / tune_one.pss_bytes:.2f}x the pod's memory from 1 to 2 workers",
            "target": "<= 1.3x",
            "met": tune_two.pss_bytes <= 1.3 * tune_one.pss_bytes,
        },
    ]


def run(
    days: tuple[int, ...] = (91, 365), model_only: bool = False, data: Path | None = None, lean: bool = False
) -> list[dict[str, Any]]:
    """Measure at each length; `data` keeps (and reuses) the generated data in `data/<days>d`;
    `lean` deletes what no later step reads (and a length's data once it is measured)."""
    sizes = []
    with tempfile.TemporaryDirectory(prefix="step-sizing-") as tmp:
        for length in days:
            folder = (data or Path(tmp)) / f"{length}d"
            folder.mkdir(parents=True, exist_ok=True)
            rows, runs = run_steps(folder, length, model_only=model_only, lean=lean)
            sizes.append((length, rows, runs))
            if lean and data is None:
                shutil.rmtree(folder)
    return table(sizes)


def main(
    days: Annotated[list[int], typer.Option("--days", help="Lengths to measure (two).")] = [91, 365],  # noqa: B006
    model_only: Annotated[bool, typer.Option(help="Only training and tuning, on data kept in --data.")] = False,
    data: Annotated[Path | None, typer.Option(help="Keep the generated data here, and reuse it.")] = None,
    lean: Annotated[bool, typer.Option(help="Delete each step's inputs once no later step reads them.")] = False,
) -> None:
    for row in run(tuple(days), model_only, data, lean):
        print(f"{'met ' if row['met'] else 'MISS'}  {row['case']}")


if __name__ == "__main__":
    typer.run(main)
