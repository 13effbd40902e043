"""SKAB (real sensor data) through import-telemetry and the whole local pipeline, when the data set
is present beside the project (../shared/datasets/skab); skipped otherwise."""

from pathlib import Path

import pytest

from benchmarks.bench_skab import SKAB, protocol_a_rows, run_protocol_a


@pytest.mark.e2e
@pytest.mark.skipif(not (SKAB / "anomaly-free" / "anomaly-free.csv").is_file(), reason=f"SKAB not in {SKAB}")
def test_skab_protocol_a_end_to_end(tmp_path: Path, project_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project_root)
    summary = run_protocol_a(SKAB, tmp_path, {"max_trials": 2, "epochs_per_trial": 1, "max_epochs": 5})
    counts, baselines = summary["counts"], summary["baselines"]
    # Protocol A: every experiment is test data (the test periods import-telemetry gave), the
    # anomaly-free recording trains and validates.
    assert counts["test_events"] == 34 and counts["test_rows"] == 39_482
    assert counts["anomaly_share"] == pytest.approx(0.35, abs=0.01)
    assert counts["test_rows"] + counts["val_rows"] > 40_000
    # SOURCE.md measured every-row-flagged at Fc1 0.518 on these files: the same labels here.
    assert baselines["all_positive_fc1"] == pytest.approx(0.518, abs=0.005)
    assert 0 < summary["pr_auc"] <= 1
    # Each recording is taken relative to its first minute (without: label-free Fc1 0.535, about
    # the all-positive baseline); even this short training stays well above the 0.60.
    assert summary["channel_notes"][0].startswith("all channels: each run relative to the mean of its first 60 rows")
    assert summary["label_free"]["fc1"] >= 0.60
    *rows, served, quantile, pot = protocol_a_rows(summary, 1.0)
    assert [r["case"] for r in rows] == [
        f"label-free (quantile, threshold_follow auto: {summary['threshold_follow']}) threshold",
        "top-k (test labels) threshold",
        "best-Fc1 (test labels) threshold",
    ]
    assert all("raw signal" in r["baseline"] and "Garg" in r["published"] for r in rows)
    # The gate serves the highest label-free Fc1 among the detectors whose false alarms stay within
    # twice their promise and that pass the gate (0.5), else of all (on SKAB A by default, PCA).
    deploy = summary["deploy"]
    found = deploy["detectors"]
    assert found["pca"]["fc1"] == baselines["pca_fc1"] and found["model"]["fc1"] == summary["label_free"]["fc1"]
    trusted = [
        name
        for name, d in found.items()
        if d["false_alarm_rate"] <= 2 * deploy["promised_false_alarm_rate"] and d["fc1"] > 0.5
    ]
    assert deploy["fc1"] == max(found[name]["fc1"] for name in trusted or found)
    assert served["case"].startswith("served by the deploy gate: ") and served["fc1"] == round(deploy["fc1"], 3)
    assert summary["decision"] == {"gate": 0.5, "deploy": True}  # deployed: the real server smoke-tested it
    # Calibration rows: the quantile's observed false-alarm rate is the label-free one's.
    assert quantile["case"] == "quantile threshold" and pot["case"] == "pot threshold"
    assert quantile["observed_far"] == summary["label_free"]["false_alarm_rate"]
