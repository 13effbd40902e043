"""End to end: the DAG through kfp.local, on generated data, as `--local` runs it."""

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

from container_component_src.config import load_settings
from pipeline.compile_and_run_pipeline import RUN_RECORD, ensure_local_data, run_local

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
    "evaluate": ["results", "summary", "report"],
}
IF_DEPLOYED = {"deploy": ["endpoint"]}


def _non_empty(path: Path) -> bool:
    return (path.is_file() and path.stat().st_size > 0) or (
        path.is_dir() and any(f.stat().st_size for f in path.rglob("*"))
    )


@pytest.mark.e2e
def test_local_pipeline_run(project_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `--local` does, on the default generated data set; short tuning and training."""
    settings = load_settings(project_root / "config.toml", environ={})
    settings = dataclasses.replace(
        settings,
        data=dataclasses.replace(
            settings.data, root=str(tmp_path / "data"), local_pipeline_root=str(tmp_path / "runs")
        ),
        serving=dataclasses.replace(settings.serving, local_model_dir=str(tmp_path / "served")),
    )
    ensure_local_data(settings)
    monkeypatch.chdir(project_root)
    params = {"max_trials": 2, "epochs_per_trial": 1, "max_epochs": 3}
    # Fc1 is always above -1: the deploy branch must run.
    run = run_local(settings, {**params, "deploy_threshold": -1.0}, caching=True)
    outputs, run_dir = run.outputs, run.folder
    assert json.loads((run_dir / RUN_RECORD).read_text())["outputs"] == outputs
    logged = {task.name for task in run.tasks}
    assert {"split-archive [0]", "split-archive [1]", "train", "deploy"} <= logged and all(t.ok for t in run.tasks)
    assert all(task.log.is_file() and task.log.parent == run_dir / "logs" for task in run.tasks)
    assert "Fc1" in next(t.figure for t in run.tasks if t.name == "evaluate")
    for task, names in {**EXPECTED_OUTPUTS, **IF_DEPLOYED}.items():
        for name in names:
            assert _non_empty(run_dir / task / name), f"{task}/{name} is missing or empty"
    splits = [
        run_dir / "for-loop-1-iteration-0" / "split-archive" / "partitions",
        run_dir / "for-loop-1-iteration-1" / "split-archive" / "partitions",
    ]
    assert all(_non_empty(p) for p in splits), "both archives are split in the ParallelFor"
    train, test = pd.read_parquet(outputs["train"]), pd.read_parquet(outputs["test"])
    assert train["label"].sum() == 0 and test["label"].sum() > 0
    assert set(outputs) == {
        "quality_report",
        "scaler",
        "train",
        "val",
        "test",
        "best_params",
        "model",
        "results",
        "evaluation_summary",
        "report",
    }
    assert (Path(outputs["model"]) / "model.torchscript.pt").is_file()
    best = json.loads(Path(outputs["best_params"]).read_text())
    assert best["trials"] == 2 and best["objective"]["name"] == "val_nll"
    summary = json.loads(Path(outputs["evaluation_summary"]).read_text())
    # Metrics and ClassificationMetrics live in the artifacts' metadata, which the KFP UI shows.
    executor_output = json.loads((run_dir / "evaluate" / "executor_output.json").read_text())["artifacts"]
    metrics = executor_output["metrics"]["artifacts"][0]["metadata"]
    assert metrics["fc1"] == summary["deploy"]["fc1"] and "pr_auc" in metrics and "best_fc1" in metrics
    assert metrics["fc1"] > metrics["baseline_all_positive_fc1"] + 0.2, "even a short training finds the anomalies"
    classification = executor_output["classification"]["artifacts"][0]["metadata"]
    assert classification["confusionMatrix"]["rows"] and classification["confidenceMetrics"]
    endpoint = json.loads((run_dir / "deploy" / "endpoint").read_text())
    assert endpoint["threshold"] == summary["deploy"]["threshold"]
    assert (tmp_path / "served" / "serving.json").is_file() and endpoint["smoke"]["anomaly"][1] is True
    # The printed command serves gRPC beside REST, on the configured ports.
    assert "--grpc-port 8081" in endpoint["command"] and endpoint["grpc_target"] == "localhost:8081"

    _execute_notebook(project_root, tmp_path, monkeypatch)

    # Fc1 is never above 1.01: the same run (from the cache) must skip the deploy.
    runs = set((tmp_path / "runs").glob("eclss-*"))
    run_local(settings, {**params, "deploy_threshold": 1.01}, caching=True)
    (second_run,) = set((tmp_path / "runs").glob("eclss-*")) - runs
    assert not (second_run / "deploy").exists()


def _execute_notebook(project_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The notebook runs top to bottom on this run, from its own folder, as a user opens it."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("ECLSS_DATA__ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("ECLSS_DATA__LOCAL_PIPELINE_ROOT", str(tmp_path / "runs"))
    # An interrupted run (no run record) is newer, and must not be picked.
    (tmp_path / "runs" / "eclss-anomaly-detection-interrupted" / "preprocess").mkdir(parents=True)
    notebook = nbformat.read(project_root / "notebooks" / "explore_telemetry.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, resources={"metadata": {"path": str(project_root / "notebooks")}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("application/vnd.plotly.v1+json" in o.get("data", {}) for o in outputs) >= 2, "interactive plots"
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4, "a static picture of every figure"
    from nbconvert import HTMLExporter

    page, _ = HTMLExporter().from_notebook_node(notebook)
    assert page.count("data:image/png;base64") >= 4, "the HTML export shows the plots"
