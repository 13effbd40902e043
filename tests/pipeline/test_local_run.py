"""End to end: the DAG through kfp.local, on generated data, as `--local` runs it."""

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

from container_component_src.config import load_settings
from container_component_src.data.generate import GeneratorOptions, run_generate_data
from pipeline.compile_and_run_pipeline import run_local

EXPECTED_OUTPUTS = {
    "list-archives": ["listing"],
    "preprocess": ["telemetry", "quality_report"],
    "parse-reports": ["intervals"],
    "label-series": ["labelled"],
    "split-dataset": ["train", "val", "test"],
    "fit-scaler": ["scaler"],
    "apply-scaler": ["scaled_train", "scaled_val", "scaled_test"],
    "tune": ["best_params"],
    "train": ["model"],
}


def _non_empty(path: Path) -> bool:
    return (path.is_file() and path.stat().st_size > 0) or (
        path.is_dir() and any(f.stat().st_size for f in path.rglob("*"))
    )


@pytest.mark.e2e
def test_local_pipeline_run(project_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options = GeneratorOptions(
        years=(2021, 2022), days_per_year=5, sampling_period_s=60.0, n_channels=6, seed=1, anomalies_per_day=0.8
    )
    run_generate_data(
        str(tmp_path / "data/archives"),
        str(tmp_path / "data/anomaly_reports.xlsx"),
        str(tmp_path / "data/truth.parquet"),
        options,
    )
    settings = load_settings(project_root / "config.toml", environ={})
    settings = dataclasses.replace(
        settings,
        data=dataclasses.replace(
            settings.data, root=str(tmp_path / "data"), local_pipeline_root=str(tmp_path / "runs")
        ),
    )
    monkeypatch.chdir(project_root)
    params = {"dask_workers": 1, "block_hours": 6.0, "max_trials": 2, "epochs_per_trial": 1, "max_epochs": 2}
    outputs = run_local(settings, params, caching=False)
    run_dir = Path(outputs["train"]).parent.parent
    for task, names in EXPECTED_OUTPUTS.items():
        for name in names:
            assert _non_empty(run_dir / task / name), f"{task}/{name} is missing or empty"
    splits = [
        run_dir / "for-loop-1-iteration-0" / "split-archive" / "partitions",
        run_dir / "for-loop-1-iteration-1" / "split-archive" / "partitions",
    ]
    assert all(_non_empty(p) for p in splits), "both archives are split in the ParallelFor"
    train, test = pd.read_parquet(outputs["train"]), pd.read_parquet(outputs["test"])
    assert train["label"].sum() == 0 and test["label"].sum() > 0
    assert set(outputs) == {"quality_report", "scaler", "train", "val", "test", "best_params", "model"}
    assert (Path(outputs["model"]) / "model.torchscript.pt").is_file()
    best = json.loads(Path(outputs["best_params"]).read_text())
    assert best["trials"] == 2 and best["objective"]["name"] == "val_nll"
