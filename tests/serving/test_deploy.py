import json
import subprocess
import sys
from pathlib import Path

import pytest

from container_component_src.serving.deploy import (
    DeployOptions,
    publish_model,
    publish_target,
    wait_for_server,
)

SUMMARY = {
    "deploy": {"threshold": 3.5, "fc1": 0.91, "evaluated_threshold": 3.5, "smoothing_window": 1, "val_quantile": 0.99}
}


def test_publish_targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert publish_target(DeployOptions(local_model_dir="served"), "", "r") == str(tmp_path / "served")
    store = DeployOptions(backend="kserve", model_store="s3://models/eclss")
    assert publish_target(store, "minio://mlpipeline/a/model", "run-3") == "s3://models/eclss/eclss-anomaly/run-3"


def test_publish_replaces_the_folder_with_model_and_threshold(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.torchscript.pt").write_bytes(b"new")
    (model / "scaler.json").write_text(json.dumps({"channels": ["a", "b"], "center": [1.0, 2.0], "scale": [1, 1]}))
    (model / "typical_rows.json").write_text(json.dumps([{"a": 0.5, "b": 2.5}]))
    target = tmp_path / "served"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    publish_model(str(model), SUMMARY, str(target))
    assert sorted(p.name for p in target.iterdir()) == [
        "example_v1.json",
        "example_v2.json",
        "model.torchscript.pt",
        "scaler.json",
        "serving.json",
        "typical_rows.json",
    ]
    # Requests to send as they are: the typical row, in both protocols.
    assert json.loads((target / "example_v1.json").read_text()) == {"instances": [{"a": 0.5, "b": 2.5}]}
    assert [i["data"] for i in json.loads((target / "example_v2.json").read_text())["inputs"]] == [[0.5], [2.5]]
    assert json.loads((target / "serving.json").read_text()) == {
        "threshold": 3.5,
        "fc1": 0.91,
        "fc1_name": "Fc1",
        "val_quantile": 0.99,
    }


def test_a_summary_without_a_deploy_block_is_refused(tmp_path: Path) -> None:
    from container_component_src.evaluation.decision import DeployDecision
    from container_component_src.storage import InputError

    with pytest.raises(InputError, match="s.json has no complete 'deploy' block"):
        DeployDecision.from_summary({"deploy": {"fc1": 0.5}}, "s.json")
    smoothed = DeployDecision.from_summary({"deploy": {**SUMMARY["deploy"], "smoothing_window": 5}})
    assert smoothed.fc1_name.startswith("Fc1 of scores smoothed over 5 rows")


def test_a_server_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with open(log, "w") as handle:
        process = subprocess.Popen(
            [sys.executable, "-c", "print('cannot load model'); raise SystemExit(3)"], stdout=handle
        )
    process.wait()
    with pytest.raises(RuntimeError, match="(?s)exited with 3.*cannot load model"):
        wait_for_server("http://127.0.0.1:9", "m", process, 5, log)


def test_unknown_backend_is_refused(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from container_component_src.main import app

    args = ["deploy", "--model", "m", "--summary", "s", "--out", "o", "--backend", "docker"]
    result = CliRunner().invoke(app, args)
    text = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2 and "'docker' is not one of 'local', 'kserve'" in text
