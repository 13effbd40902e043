import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from container_component_src.serving.deploy import (
    DeployOptions,
    publish_model,
    publish_target,
    serve_locally_once,
    wait_for_server,
)
from container_component_src.storage import InputError
from tests.dataset_files import write_dataset

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
        "detector": "model",
        "model_fc1": None,
        "choice": "the model: no classical detector scores a higher Fc1 at the same threshold rule",
        "promised_false_alarm_rate": None,
        "false_alarm_rate": None,
        "promise_tolerance": 0.0,
        "follow": None,
    }


def _plane_sets(tmp_path: Path) -> dict[str, str]:
    """Scaled validation and test rows on a plane (c = a + b), and test anomalies off it whose
    every channel stays in its normal range: PCA finds them all, the raw signal and an untrained
    VAE cannot."""
    rng = np.random.default_rng(5)
    sets = {}
    for name, rows in (("val", 3000), ("test", 2000)):
        a, b = rng.normal(0, 0.7, rows), rng.normal(0, 0.7, rows)
        frame = pd.DataFrame({"a": a, "b": b, "c": a + b + rng.normal(0, 0.01, rows)})
        label = np.zeros(rows, np.int8)
        if name == "test":
            for start in range(100, rows, 200):  # events of 20 rows: c's sign flipped
                label[start : start + 20] = 1
            frame.loc[label == 1, "c"] = -frame.loc[label == 1, "c"] + np.sign(frame.loc[label == 1, "c"]) * 0.5
        frame.index = pd.date_range("2021-01-01", periods=rows, freq="1min", tz="UTC", name="normalizedTime")
        sets[name] = str(tmp_path / name)
        write_dataset(sets[name], frame.astype(np.float32).assign(label=label), part_rows=700)
    return sets


def test_a_baseline_winning_data_set_deploys_the_baseline(tmp_path: Path) -> None:
    """The gate serves the detector with the highest Fc1 at the label-free threshold, here PCA,
    and the served folder scores exactly as evaluation scored it."""
    from container_component_src.evaluation.evaluate import EvaluateOptions, run_evaluate
    from container_component_src.model.io import write_model_artifact
    from container_component_src.model.vae import VAE
    from container_component_src.serving.inference import AnomalyScorer

    sets = _plane_sets(tmp_path)
    torch.manual_seed(0)
    scaler = {"channels": ["a", "b", "c"], "center": [0.0, 0.0, 0.0], "scale": [1.0, 1.0, 1.0]}
    typical = [{"a": 0.1, "b": 0.2, "c": 0.3}]  # on the plane
    write_model_artifact(str(tmp_path / "model"), VAE(3, [8], 2), scaler, {}, {}, typical)  # untrained
    paths = [str(tmp_path / name) for name in ("results.parquet", "summary.json", "report.html")]
    # A fixed threshold, so that the served flags below are the scores above it.
    options = EvaluateOptions(n_thresholds=100, worst_events=1, threshold_follow="none")
    run_evaluate(str(tmp_path / "model"), sets["val"], sets["test"], *paths, options)
    summary = json.loads(Path(paths[1]).read_text())
    deploy, baselines = summary["deploy"], summary["baselines"]
    assert deploy["detector"] == "pca", (deploy, baselines)
    assert deploy["fc1"] == baselines["pca_fc1"] > max(deploy["model_fc1"], baselines["raw_signal_fc1"])
    assert deploy["model_fc1"] == summary["label_free"]["fc1"]
    assert deploy["false_alarm_rate"] == baselines["pca_false_alarm_rate"] and deploy[
        "promised_false_alarm_rate"
    ] == pytest.approx(0.01)
    assert "PCA reconstruction error, not the model" in deploy["choice"]
    assert "The deploy step serves PCA reconstruction error" in Path(paths[2]).read_text()
    # The alarms an operator would live with are the served detector's.
    from container_component_src.evaluation import report
    from container_component_src.evaluation.evaluate import EvaluateOptions, event_table, label_free_flags

    results = pd.read_parquet(paths[0])
    tested = results[results["split"] == "test"].assign(segment=0)
    flags = label_free_flags(
        results.loc[results["split"] == "val", "pca"].to_numpy(),
        tested["pca"].to_numpy(),
        deploy["evaluated_threshold"],
        options,
    )
    served = tested.assign(smoothed_score=tested["pca"], prediction=flags.astype(np.int8))
    events = event_table(served["label"].to_numpy(), served.index, served["pca"].to_numpy())
    outcomes = report.event_outcomes(events, served)
    assert summary["operations"] == report.operations(served, outcomes)

    publish_model(str(tmp_path / "model"), summary, str(tmp_path / "served"))
    served = AnomalyScorer.load(str(tmp_path / "served"))
    serving = json.loads((tmp_path / "served" / "serving.json").read_text())
    assert serving["detector"] == "pca"
    # What the served threshold promises travels with it: the server watches it (`metrics.PromiseWatch`).
    assert (serving["promised_false_alarm_rate"], serving["false_alarm_rate"], serving["promise_tolerance"]) == (
        deploy["promised_false_alarm_rate"],
        deploy["false_alarm_rate"],
        2.0,
    )
    assert not (tmp_path / "served" / "model.pt").exists(), "the VAE's weights are not what is served"
    test = pd.read_parquet(sets["test"])
    scores, flags = served.score(served.scale(test[["a", "b", "c"]].to_numpy(np.float64)))
    from container_component_src.evaluation.evaluate import fit_pca

    expected = fit_pca(sets["val"], ["a", "b", "c"], np.ones(3)).scores(test[["a", "b", "c"]].to_numpy(np.float32))
    np.testing.assert_allclose(scores, expected, rtol=1e-9)
    assert served.threshold == deploy["threshold"]
    assert (flags == (expected > deploy["threshold"])).all() and flags[test["label"] == 1].mean() > 0.9
    # The real server, both protocols: PCA scores every row (no window), the outlier is flagged.
    smoke = serve_locally_once(str(tmp_path / "served"), DeployOptions(name="plane"))
    assert smoke["anomaly"] == [False, True] and len(smoke["v2_scores"]) == 2


def test_a_summary_choosing_a_baseline_must_describe_it(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "scaler.json").write_text(json.dumps({"channels": ["a"], "center": [0.0], "scale": [1.0]}))
    summary = {"deploy": {**SUMMARY["deploy"], "detector": "pca", "model_fc1": 0.5}}
    with pytest.raises(InputError, match="chose pca but has no 'served_detector'"):
        publish_model(str(model), summary, str(tmp_path / "served"))
    # Principal directions of unequal weights fitted before the weighted space would score otherwise.
    old = {"mean": [0.0, 0.0], "components": [[1.0], [0.0]], "weights": [1.0, 0.1]}
    with pytest.raises(InputError, match="served_detector: its principal directions .* evaluate again"):
        publish_model(str(model), summary | {"served_detector": old}, str(tmp_path / "served"))


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
