"""The whole local pipeline on the default generated data: wall time per task, and detection quality.

A task's time is from the previous task's end to its own (each task writes its
executor_output.json when it ends): exact for kfp.local's sequential tasks; iterations of a
ParallelFor run at once, and the later ones show only the time after the first ended.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from benchmarks.common import calibration_rows, default_data_settings, threshold_rows


def run(params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    from pipeline.compile_and_run_pipeline import run_local

    with tempfile.TemporaryDirectory() as folder:
        settings = default_data_settings(folder)
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
    rows += threshold_rows("detection quality (generated data)", summary, total)
    return rows + calibration_rows("detection quality (generated data)", summary["calibration"])
