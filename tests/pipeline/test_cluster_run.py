"""The whole DAG with every cluster backend on, through kfp.local against the emulated Kubeflow:
the way to rehearse a cluster run on a laptop (README, "Rehearse a cluster run")."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from container_component_src.config import load_settings
from pipeline.compile_and_run_pipeline import ensure_local_data, run_local
from tests.emulator.cluster import NAMESPACE, RBAC, emulated_kubeflow

CLUSTER_PARAMS = {
    "dask_cluster": "kubernetes",
    "tune_backend": "katib",
    "train_backend": "pytorchjob",
    "serving_backend": "kserve",
    "replicas": 2,
    "max_trials": 2,
    "epochs_per_trial": 1,
    "max_epochs": 2,
    "deploy_threshold": -1.0,
}


@pytest.mark.cluster
@pytest.mark.e2e
@pytest.mark.timeout(420)
def test_the_dag_with_every_cluster_backend(
    project_root: Path, tmp_path: Path, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        "ECLSS_PLATFORM__NAMESPACE": NAMESPACE,
        "ECLSS_PLATFORM__IMAGE": "eclss:rehearsal",
        "ECLSS_SERVING__MODEL_STORE": f"{s3_bucket}/models",
        "ECLSS_TUNING__POLL_S": "0.5",
        "ECLSS_TRAINING__POLL_S": "0.5",
        "ECLSS_SERVING__POLL_S": "0.5",
        "ECLSS_SERVING__SERVICE_ACCOUNT": "kserve-minio",
    }
    settings = load_settings(project_root / "config.toml", environ=env)
    settings = dataclasses.replace(
        settings,
        data=dataclasses.replace(
            settings.data, root=str(tmp_path / "data"), local_pipeline_root=str(tmp_path / "runs")
        ),
        generator=dataclasses.replace(settings.generator, years=[2021], days_per_year=4, n_channels=6),
    )
    ensure_local_data(settings)
    monkeypatch.chdir(project_root)
    with emulated_kubeflow(tmp_path / "cluster", images={"eclss:rehearsal"}) as emulator:
        # kfp.local's artifacts are paths of this machine (a cluster's are in object storage): the
        # rehearsal gives every pod its folders, as a volume shared by all pods would.
        emulator.pods.shared = [str(tmp_path / "data"), str(tmp_path / "runs")]
        emulator.apply(RBAC)
        keys = {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": "test-secret"}
        endpoint = emulator.add_object_storage(os.environ["AWS_ENDPOINT_URL"], "s3-credentials", keys, "kserve-minio")
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        emulator.add_launcher_pod()
        for name, value in emulator.launcher_env().items():
            monkeypatch.setenv(name, value)
        run = run_local(settings, CLUSTER_PARAMS, caching=False)
        started = {p.name.rsplit("-", 1)[0] if "-trial-" not in p.name else "trial" for p in emulator.pods.history}
        isvc = emulator.objects("inferenceservices")
    assert all(task.ok for task in run.tasks)
    names = [p.name for p in emulator.pods.history]
    assert sum("-trial-" in n for n in names) == 2, names
    assert any(n.endswith("-master-0") for n in names) and any(n.endswith("-worker-0") for n in names), names
    # Preprocess and the table steps that run a task per part each had their DaskCluster, two workers each.
    for step in ("preprocess", "label-series", "split-dataset", "apply-scaler"):
        pods = [n for n in names if n.startswith(f"{step}-")]
        assert sum(n.endswith("-scheduler") for n in pods) == 1, (step, names)
        assert sum("-default-worker-" in n for n in pods) == 2, (step, names)
    assert {"eclss-anomaly-predictor", "eclss-anomaly-transformer"} <= set(names), started
    assert isvc and isvc[0]["status"]["conditions"][0]["status"] == "True", "the InferenceService is served"
    endpoint = json.loads((run.folder / "deploy" / "endpoint").read_text())
    assert endpoint["backend"] == "kserve" and endpoint["storage_uri"].startswith(f"{s3_bucket}/models/")
    best = json.loads(Path(run.outputs["best_params"]).read_text())
    assert best["trials"] == 2 and (Path(run.outputs["model"]) / "model.torchscript.pt").is_file()
