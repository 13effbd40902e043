"""Preprocessing throughput (split partitions -> grid) against a plain pyarrow scan of the same files."""

from __future__ import annotations

from operator import itemgetter
from pathlib import Path
from typing import Any

import pyarrow.dataset as pads

from benchmarks.common import benchmark_data, best_of
from container_component_src import storage
from container_component_src.cluster.dask import ClusterOptions, dask_client
from container_component_src.data.preprocess import PreprocessOptions, run_preprocess
from container_component_src.data.split_archive import list_archives, run_split_archive


def _scan(files: list[str]) -> int:
    """The baseline: read and decode every column of every row, multi-threaded."""
    return sum(batch.num_rows for batch in pads.dataset(files, format="parquet").to_batches())


def run(data_dir: Path, size: str = "full", n_workers: int = 2, repeats: int = 3) -> list[dict[str, Any]]:
    urls = benchmark_data(data_dir, size)
    partitions_root = Path(urls["archives"]).parent / "partitions"
    archives = list_archives(urls["archives"])
    split_s, split_rows = best_of(
        1, lambda: sum(run_split_archive(a, str(partitions_root / Path(a).stem))["rows"] for a in archives)
    )
    folders = [str(partitions_root / Path(a).stem) for a in archives]
    files = [f for folder in folders for f in storage.list_files(folder, ".parquet")]
    out = Path(urls["archives"]).parent / "preprocessed"
    options = PreprocessOptions()
    with dask_client(ClusterOptions(cluster="local", n_workers=n_workers)) as client:

        def preprocess(inputs: list[str]) -> dict[str, Any]:
            return run_preprocess(inputs, str(out / "telemetry"), str(out / "quality.json"), client, options)

        # Interleaved, so that both see the same state of the machine.
        scans, with_manifest, with_footers = [], [], []
        for _ in range(repeats):
            scans.append(best_of(1, lambda: _scan(files)))
            with_manifest.append(best_of(1, lambda: preprocess(folders)))
            with_footers.append(best_of(1, lambda: preprocess(files)))
    (scan_s, rows), (pre_s, report), (footers_s, _) = (
        min(runs, key=itemgetter(0)) for runs in (scans, with_manifest, with_footers)
    )
    if report["raw_rows"] != rows:
        raise AssertionError(f"preprocessing saw {report['raw_rows']} rows, the scan {rows}")
    ratio = scan_s / pre_s
    return [
        {
            "benchmark": "split archives",
            "case": f"{len(archives)} archives, {split_rows / 1e6:.1f} M rows",
            "seconds": round(split_s, 2),
            "rows_per_s": round(split_rows / split_s),
        },
        {
            "benchmark": "pyarrow scan (baseline)",
            "case": f"{len(files)} partitions, {rows / 1e6:.1f} M rows",
            "seconds": round(scan_s, 2),
            "rows_per_s": round(rows / scan_s),
        },
        {
            "benchmark": "preprocess (Dask, 1min grid)",
            "case": f"{n_workers} local worker threads, 100 % of rows -> {report['output_rows']:,} grid rows",
            "seconds": round(pre_s, 2),
            "rows_per_s": round(rows / pre_s),
            "ratio": round(ratio, 3),
            "ratio_meaning": "throughput / pyarrow scan throughput",
            "target": ">= 0.5x the scan",
            "met": ratio >= 0.5,
        },
        {
            "benchmark": "preprocess, no manifest",
            "case": "the same, given the partition files: one footer read per partition",
            "seconds": round(footers_s, 2),
            "rows_per_s": round(rows / footers_s),
            "ratio": round(scan_s / footers_s, 3),
            "ratio_meaning": "throughput / pyarrow scan throughput",
        },
    ]
