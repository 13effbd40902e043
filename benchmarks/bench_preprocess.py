"""Preprocessing (split partitions -> grid) against a plain pyarrow scan of the same files and
against what a user who knows the field would write instead (Polars, DuckDB; see
`benchmarks.preprocess_contenders`). Every contender runs as a fresh process, as a user runs it
(its imports and start included), in interleaved rounds; best of the rounds, peak memory from the
kernel's accounting of that process. Outputs are compared with ours cell by cell."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.common import benchmark_data
from container_component_src import storage
from container_component_src.data.split_archive import list_archives, run_split_archive

CONTENDERS = ("scan", "project", "polars", "duckdb")
LABELS = {
    "scan": "pyarrow scan (baseline)",
    "project": "preprocess (project CLI)",
    "polars": "Polars (group_by_dynamic)",
    "duckdb": "DuckDB (time_bucket)",
}


def _command(name: str, folders: list[str], files: list[str], out: Path, n_workers: int) -> list[str]:
    if name == "project":
        inputs = [arg for folder in folders for arg in ("--partitions", folder)]
        return [
            sys.executable,
            *("-m", "container_component_src.main", "preprocess", *inputs),
            *("--out", str(out), "--quality-report", f"{out}.json", "--n-workers", str(n_workers)),
        ]
    return [sys.executable, "-m", "benchmarks.preprocess_contenders", name, str(out), *files]


# Runs a command and prints its wall seconds and peak memory (KiB). Linux carries a process's
# peak over to what it executes, so a contender started from this (large) process would report
# this process's peak: the small starter in between makes each figure the contender's own.
_STARTER = (
    "import os, subprocess, sys, time; start = time.perf_counter(); "
    "child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL); _, status, usage = os.wait4(child.pid, 0); "
    "print(time.perf_counter() - start, usage.ru_maxrss); sys.exit(os.waitstatus_to_exitcode(status))"
)


def _timed(command: list[str]) -> tuple[float, int]:
    """Wall seconds and peak resident memory (bytes) of one process."""
    with tempfile.TemporaryFile() as errors:
        done = subprocess.run([sys.executable, "-c", _STARTER, *command], stdout=subprocess.PIPE, stderr=errors)
        if done.returncode != 0:
            errors.seek(0)
            raise RuntimeError(f"{command[:4]} failed: {errors.read().decode()[-2000:]}")
    seconds, peak_kib = done.stdout.split()
    return float(seconds), int(peak_kib) * 1024


def _grid(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A contender's output: times (ns), values (rows x channels, float64) and channel names, by time."""
    table = pq.read_table(path)
    time_column = next(f.name for f in table.schema if pa.types.is_timestamp(f.type))
    names = [n for n in table.column_names if n != time_column]
    # DuckDB writes microseconds, the others nanoseconds.
    times = table.column(time_column).cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64()).to_numpy()
    order = np.argsort(times, kind="stable")
    values = np.column_stack([table.column(n).to_numpy(zero_copy_only=False).astype(np.float64) for n in names])
    return times[order], values[order], names


def agreement(ours: Path, theirs: Path) -> dict[str, Any]:
    """How close another tool's grid is to ours: same rows and channels, and the largest differences."""
    times, values, names = _grid(ours)
    other_times, other_values, other_names = _grid(theirs)
    same = other_names == names and np.array_equal(other_times, times)
    result: dict[str, Any] = {"rows": len(times), "their_rows": len(other_times), "same_rows": bool(same)}
    if same:
        difference = np.abs(other_values - values)
        relative = difference / np.maximum(np.abs(values), np.finfo(np.float32).tiny)
        result |= {
            "cells_differing": int((difference > 0).sum()),
            "max_abs_difference": float(difference.max(initial=0.0)),
            "max_rel_difference": float(relative.max(initial=0.0)),
        }
    return result


def _agreement_text(check: dict[str, Any]) -> str:
    if not check["same_rows"]:
        return f"rows differ: {check['their_rows']:,} against our {check['rows']:,}"
    if not check["cells_differing"]:
        return f"same {check['rows']:,} rows, every value identical"
    return (
        f"same {check['rows']:,} rows; {check['cells_differing']:,} values differ, by at most "
        f"{check['max_rel_difference']:.1e} (relative)"
    )


def _measure(data_dir: Path, size: str, n_workers: int, repeats: int) -> list[dict[str, Any]]:
    urls = benchmark_data(data_dir, size)
    partitions_root = Path(urls["archives"]).parent / "partitions"
    archives = list_archives(urls["archives"])
    start = time.perf_counter()
    split_rows = sum(run_split_archive(a, str(partitions_root / Path(a).stem))["rows"] for a in archives)
    split_s = time.perf_counter() - start
    folders = [str(partitions_root / Path(a).stem) for a in archives]
    files = [f for folder in folders for f in storage.list_files(folder, ".parquet")]
    outputs = Path(urls["archives"]).parent / "contenders"
    outputs.mkdir(exist_ok=True)
    out = {name: outputs / (name if name == "project" else f"{name}.parquet") for name in CONTENDERS}
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in CONTENDERS}
    for _ in range(repeats):  # interleaved: every contender meets the same state of the machine
        for name in CONTENDERS:
            runs[name].append(_timed(_command(name, folders, files, out[name], n_workers)))
    seconds = {name: min(s for s, _ in runs[name]) for name in CONTENDERS}
    peak = {name: max(m for _, m in runs[name]) for name in CONTENDERS}
    case = f"{size} data: {len(files):,} partitions, {split_rows / 1e6:.2f} M rows, 1 min grid"
    rows: list[dict[str, Any]] = [
        {
            "benchmark": "split archives",
            "case": f"{len(archives)} archives, {split_rows / 1e6:.2f} M rows",
            "seconds": round(split_s, 2),
            "rows_per_s": round(split_rows / split_s),
        }
    ]
    for name in CONTENDERS:
        row = {
            "benchmark": LABELS[name],
            "case": case + (f", {n_workers} threads" if name == "project" else ""),
            "seconds": round(seconds[name], 2),
            "rows_per_s": round(split_rows / seconds[name]),
            "peak_memory_mb": round(peak[name] / 2**20),
        }
        if name != "scan":
            row |= {"ratio": round(seconds["scan"] / seconds[name], 3), "ratio_meaning": "scan time / its time"}
        if name in ("polars", "duckdb"):
            row["agreement"] = _agreement_text(agreement(out["project"], out[name]))
        rows.append(row)
    ratio = seconds["polars"] / seconds["project"]
    lighter = peak["project"] <= peak["polars"]
    rows.append(
        {
            "benchmark": "preprocess against Polars",
            "case": f"{size} data, same run, best of {repeats} interleaved rounds",
            "seconds": round(seconds["project"], 2),
            "ratio": round(ratio, 3),
            "ratio_meaning": (
                f"Polars' time / ours; peak memory {peak['project'] / 2**20:,.0f} MB against "
                f"{peak['polars'] / 2**20:,.0f} MB"
            ),
            "target": ">= 1.0x Polars, peak memory no higher",
            "met": ratio >= 1.0 and lighter,
        }
    )
    return rows


def run(
    data_dir: Path, sizes: tuple[str, ...] = ("full", "default"), n_workers: int = 2, repeats: int = 3
) -> list[dict[str, Any]]:
    """Measure each data size in turn (the benchmark set, then the pipeline's default data)."""
    return [row for size in dict.fromkeys(sizes) for row in _measure(data_dir, size, n_workers, repeats)]
