"""The whole local pipeline on the default generated data: wall time per task, and detection quality.

A task's time is from the previous task's end to its own (each task writes its
executor_output.json when it ends): exact for kfp.local's sequential tasks; iterations of a
ParallelFor run at once, and the later ones show only the time after the first ended.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from benchmarks.common import calibration_rows

PROJECT = Path(__file__).resolve().parents[1]


def run(params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    from container_component_src.config import load_settings
    from pipeline.compile_and_run_pipeline import ensure_local_data, run_local

    with tempfile.TemporaryDirectory() as folder:
        settings = load_settings(PROJECT / "config.toml", environ={})
        settings = dataclasses.replace(
            settings,
            data=dataclasses.replace(settings.data, root=f"{folder}/data", local_pipeline_root=f"{folder}/runs"),
            serving=dataclasses.replace(settings.serving, local_model_dir=f"{folder}/served"),
        )
        ensure_local_data(settings)
        raw_rows = sum(pq.ParquetFile(p).metadata.num_rows for p in Path(settings.data.archives_url).glob("*.parquet"))
        start = time.time()
        local_run = run_local(settings, params or {}, caching=False)
        total = time.time() - start
        seconds = {task.name: round(task.seconds, 1) for task in local_run.tasks}
        summary = json.loads(Path(local_run.outputs["evaluation_summary"]).read_text())
    rows = [
        {
            "benchmark": "local pipeline (default data)",
            "case": "all tasks",
            "seconds": round(total, 1),
            "rows_per_s": round(raw_rows / total),
            "per_task_s": seconds,
        }
    ]
    base = summary["baselines"]
    cases = (
        (f"label-free ({summary['threshold_method']})", summary["label_free"], "raw_signal_fc1"),
        ("top-k (test labels)", summary["top_k"], "raw_signal_top_k_fc1"),
        ("best-Fc1 (test labels)", summary["best_fc1"], "raw_signal_best_fc1"),
    )
    for threshold, values, raw_key in cases:
        rows.append(
            {
                "benchmark": "detection quality (generated data)",
                "case": f"{threshold} threshold",
                "seconds": round(total, 1),
                "rows": summary["counts"]["test_rows"],
                "fc1": round(values["fc1"], 3),
                "f1": round(values["f1"], 3),
                "pr_auc": round(summary["pr_auc"], 3),
                "baseline": (
                    f"all-positive Fc1 {base['all_positive_fc1']:.3f}, random {base['random_fc1']:.3f}, "
                    f"raw signal {base[raw_key]:.3f}"
                    + (f", PCA {base[raw_key.replace('raw_signal', 'pca')]:.3f}" if "pca_fc1" in base else "")
                ),
            }
        )
    return rows + calibration_rows("detection quality (generated data)", summary["calibration"])
