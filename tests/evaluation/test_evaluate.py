import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from container_component_src.evaluation import report
from container_component_src.evaluation.decision import DeployDecision
from container_component_src.evaluation.evaluate import (
    ChannelSums,
    EvaluateOptions,
    calibration,
    detector_baseline,
    evaluate_scores,
    label_free_flags,
    nominal_false_alarm_rates,
    replay_watch,
    run_evaluate,
)
from container_component_src.storage import InputError
from tests.dataset_files import write_dataset


@pytest.fixture(scope="module")
def evaluated(
    trained_model: dict[str, Any], scaled_sets: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("evaluation")
    paths = {name: str(out / name) for name in ("results.parquet", "summary.json", "report.html")}
    returned = run_evaluate(
        trained_model["model"],
        scaled_sets["val"],
        scaled_sets["test"],
        paths["results.parquet"],
        paths["summary.json"],
        paths["report.html"],
        EvaluateOptions(n_thresholds=200, worst_events=2, threshold_follow="none"),
    )
    return {"returned": returned, "summary": json.loads(Path(paths["summary.json"]).read_text()), **paths}


def test_the_model_finds_the_injected_anomalies_better_than_trivial_detectors(evaluated: dict[str, Any]) -> None:
    m = evaluated["summary"]["metrics"]
    assert m["fc1"] > m["baseline_all_positive_fc1"] + 0.15, m
    assert m["fc1"] > m["baseline_random_fc1"] + 0.15, m
    assert {"baseline_raw_signal_fc1", "baseline_raw_signal_best_fc1", "baseline_raw_signal_pr_auc"} <= set(m)
    assert {"baseline_pca_fc1", "baseline_pca_top_k_fc1", "baseline_pca_best_fc1", "baseline_pca_pr_auc"} <= set(m)
    assert 1 <= evaluated["summary"]["baselines"]["pca_components"] < 16
    assert "<h2>Detectors at the same thresholds</h2>" in Path(evaluated["report.html"]).read_text()
    detectors = evaluated["summary"]["deploy"]["detectors"]
    assert detectors["model"]["fc1_at_promise"] == m["fc1_at_promise"]
    assert detectors["pca"]["fc1_at_promise"] == m["baseline_pca_fc1_at_promise"]
    assert DeployDecision.from_summary(evaluated["summary"]).detectors == detectors
    assert m["pr_auc"] > m["anomaly_share"] + 0.2, m
    assert m["best_fc1"] >= m["fc1"] - 1e-9


def test_results_hold_every_row_with_its_prediction(evaluated: dict[str, Any], scaled_sets: dict[str, str]) -> None:
    results = pd.read_parquet(evaluated["results.parquet"])
    val, test = pd.read_parquet(scaled_sets["val"]), pd.read_parquet(scaled_sets["test"])
    assert list(results.columns) == ["split", "score", "smoothed_score", "label", "prediction", "raw_signal", "pca"]
    assert (results["split"] == "val").sum() == len(val) and (results["split"] == "test").sum() == len(test)
    assert isinstance(results.index, pd.DatetimeIndex)
    threshold = evaluated["summary"]["label_free"]["threshold"]
    val_rows, test_rows = results[results["split"] == "val"], results[results["split"] == "test"]
    assert (val_rows["prediction"] == (val_rows["smoothed_score"] > threshold)).all()
    # Test rows: flagged by the run's rule (fixed here; one run: no references).
    flags = label_free_flags(
        val_rows["smoothed_score"].to_numpy(),
        test_rows["smoothed_score"].to_numpy(),
        threshold,
        EvaluateOptions(threshold_follow="none"),
    )
    assert (test_rows["prediction"].to_numpy() == flags).all()
    assert evaluated["summary"]["label_free"]["flagged_share"] == flags.mean()
    tested = results[results["split"] == "test"]
    assert (tested["label"].to_numpy() == test["label"].to_numpy()).all()
    confusion = np.array(evaluated["summary"]["confusion_matrix"]["matrix"])
    assert confusion[1, 1] == ((tested["label"] == 1) & (tested["prediction"] == 1)).sum()
    assert confusion.sum() == len(test)


def test_summary_carries_the_deploy_inputs_and_kfp_metrics(evaluated: dict[str, Any]) -> None:
    summary = evaluated["summary"]
    # The model is ahead of the classical detectors on these data: it is what the gate judges.
    fc1 = {name: summary["baselines"][f"{name}_fc1"] for name in ("raw_signal", "pca")}
    assert summary["deploy"]["detector"] == "model" and summary["label_free"]["fc1"] > max(fc1.values()), fc1
    assert "served_detector" not in summary
    assert summary["deploy"]["fc1"] == summary["label_free"]["fc1"] == summary["metrics"]["fc1"]
    assert evaluated["returned"]["deploy"] == summary["deploy"]
    assert all(isinstance(v, float) and np.isfinite(v) for v in summary["metrics"].values())
    assert {"quantile_false_alarm_rate", "pot_false_alarm_rate"} <= summary["metrics"].keys()
    deploy = summary["deploy"]
    assert summary["metrics"]["served_fc1"] == deploy["fc1"]
    assert (
        summary["metrics"]["served_false_alarm_rate"]
        == deploy["false_alarm_rate"]
        <= 2 * deploy["promised_false_alarm_rate"]
    ), "the generated data's model keeps its promise"
    assert summary["calibration"]["better_calibrated"] in {"quantile", "pot"}
    # The server's watch replayed over the served flags: what the report tells an operator of it.
    watch, flags = (
        summary["watch"],
        pd.read_parquet(evaluated["results.parquet"]).query("split == 'test'")["prediction"],
    )
    assert watch == replay_watch(flags.to_numpy(), deploy["promised_false_alarm_rate"], 2.0)
    assert summary["metrics"]["watch_warnings"] == watch["warnings"]
    assert report._watch_note(watch, deploy) in Path(evaluated["report.html"]).read_text()
    roc = summary["roc"]
    assert len(roc["fpr"]) == len(roc["tpr"]) == len(roc["thresholds"]) <= 200
    page = Path(evaluated["report.html"]).read_text()
    assert "<script src" not in page and "Plotly.newPlot" in page


def test_the_watch_replays_the_servers_blocks_and_warnings() -> None:
    flags = np.zeros(2_500, bool)  # promise 10 %: blocks of 1,000 rows, broken above 20 % flagged
    flags[:300] = True  # block 1: 30 %, broken (a warning)
    flags[1_000:1_100] = True  # block 2: 10 %, kept
    flags[2_000:2_500] = True  # the last, partial block is not judged
    watch = replay_watch(flags, 0.1, 2.0)
    assert watch == {"block_rows": 1_000, "blocks": 2, "broken_blocks": 1, "warnings": 1, "largest_share": 0.3}
    flags[1_000:1_250] = True  # block 2: 25 %: the same run of broken blocks, no second warning
    assert replay_watch(flags, 0.1, 2.0) == watch | {"broken_blocks": 2}
    assert replay_watch(flags, 0.1, 0.0)["warnings"] == 0, "tolerance 0 judges nothing"
    assert replay_watch(flags[:999], 0.1, 2.0) == {
        "block_rows": 1_000,
        "blocks": 0,
        "broken_blocks": 0,
        "warnings": 0,
        "largest_share": None,
    }


def test_calibration_names_the_threshold_that_keeps_its_promise() -> None:
    nominal = {"quantile": 0.01, "pot": 0.001}
    # 1.1x against 2.1x its promise: the quantile is the better calibrated ...
    judged = calibration({"quantile": {"false_alarm_rate": 0.011}, "pot": {"false_alarm_rate": 0.0021}}, nominal, 1000)
    assert judged["better_calibrated"] == "quantile"
    assert judged["methods"]["pot"] == {
        "nominal_false_alarm_rate": 0.001,
        "false_alarm_rate": 0.0021,
        "ratio": pytest.approx(2.1),
    }
    # ... though flagging fewer normal rows is not the test: 0.1x is further from 1 than 2x.
    judged = calibration({"quantile": {"false_alarm_rate": 0.001}, "pot": {"false_alarm_rate": 0.002}}, nominal, 1000)
    assert judged["better_calibrated"] == "pot"
    # No false alarm counts as half of one: 0.5 / 100 rows is 5x pot's promise, worse than 2x.
    judged = calibration({"quantile": {"false_alarm_rate": 0.02}, "pot": {"false_alarm_rate": 0.0}}, nominal, 100)
    assert judged["better_calibrated"] == "quantile"
    assert (
        calibration({"quantile": {"false_alarm_rate": 0.0}, "pot": {"false_alarm_rate": 0.0}}, nominal, 0)[
            "better_calibrated"
        ]
        is None
    )


def test_the_largest_validation_score_promises_one_in_n_plus_one() -> None:
    rates = nominal_false_alarm_rates(99, EvaluateOptions(val_quantile=1.0, pot_risk=0.002))
    assert rates == {"quantile": pytest.approx(0.01), "pot": 0.002}
    assert nominal_false_alarm_rates(99, EvaluateOptions(val_quantile=0.95))["quantile"] == pytest.approx(0.05)


def test_on_normal_rows_like_validation_the_quantile_keeps_its_promise() -> None:
    rng = np.random.default_rng(0)
    labels = np.zeros(200_000, dtype=int)
    labels[1000:1100] = 1
    summary, _, _ = evaluate_scores(
        rng.normal(size=50_000), rng.normal(size=200_000) + 6 * labels, labels, EvaluateOptions(threshold_follow="none")
    )
    quantile = summary["calibration"]["methods"]["quantile"]
    assert quantile["nominal_false_alarm_rate"] == pytest.approx(0.01)
    assert quantile["false_alarm_rate"] == pytest.approx(0.01, rel=0.1)
    assert quantile["false_alarm_rate"] == summary["label_free_by_method"]["quantile"]["false_alarm_rate"]


def test_at_the_promise_each_detector_flags_the_promised_share_of_normal_rows() -> None:
    # Validation like the test's normal rows, but the test's normal operation has shifted up:
    # the label-free threshold breaks its promise, the one read off the test labels keeps it.
    rng = np.random.default_rng(1)
    labels = np.zeros(20_000, dtype=int)
    labels[5000:5300] = 1
    test = rng.normal(size=labels.size) + 1.0 + 5 * labels
    summary, _, _ = evaluate_scores(rng.normal(size=5_000), test, labels, EvaluateOptions(threshold_follow="none"))
    at_promise = summary["at_promise"]
    assert summary["label_free"]["false_alarm_rate"] > 0.05
    assert at_promise["promised_false_alarm_rate"] == pytest.approx(0.01)
    assert 0.0099 < at_promise["false_alarm_rate"] <= 0.01
    assert at_promise["threshold"] > summary["label_free"]["threshold"]
    raw = detector_baseline(
        "raw_signal", rng.normal(size=5_000), test, labels, EvaluateOptions(threshold_follow="none")
    )
    assert 0 < raw["raw_signal_fc1_at_promise"] <= 1


def test_smoothing_changes_scores_but_not_the_row_count(
    trained_model: dict[str, Any], scaled_sets: dict[str, str], tmp_path: Path
) -> None:
    run_evaluate(
        trained_model["model"],
        scaled_sets["val"],
        scaled_sets["test"],
        str(tmp_path / "r.parquet"),
        str(tmp_path / "s.json"),
        str(tmp_path / "r.html"),
        EvaluateOptions(smoothing_window=5, n_thresholds=50, worst_events=0),
    )
    results = pd.read_parquet(tmp_path / "r.parquet")
    assert not np.allclose(results["score"], results["smoothed_score"])
    assert json.loads((tmp_path / "s.json").read_text())["deploy"]["smoothing_window"] == 5


def test_bad_inputs_are_named_and_nothing_is_written(
    trained_model: dict[str, Any], scaled_sets: dict[str, str], tmp_path: Path
) -> None:
    unlabelled = tmp_path / "unlabelled.parquet"
    pd.read_parquet(scaled_sets["test"]).drop(columns="label").to_parquet(unlabelled)
    outputs = [str(tmp_path / n) for n in ("r.parquet", "s.json", "r.html")]
    with pytest.raises(InputError, match="unlabelled.parquet has no label column 'label'"):
        run_evaluate(trained_model["model"], scaled_sets["val"], str(unlabelled), *outputs, EvaluateOptions())
    with pytest.raises(InputError, match="has no model.torchscript.pt"):
        run_evaluate(str(tmp_path), scaled_sets["val"], scaled_sets["test"], *outputs, EvaluateOptions())
    assert not any(Path(o).exists() for o in outputs)


def test_a_split_streamed_in_many_parts_scores_as_the_whole_series(tmp_path: Path) -> None:
    import torch

    from container_component_src.data.segments import segment_ids
    from container_component_src.evaluation import scoring
    from container_component_src.evaluation.evaluate import score_split
    from container_component_src.model.vae import WindowVAE

    torch.manual_seed(0)
    model = torch.jit.script(WindowVAE(3, [8], 2, window=6).eval())
    with torch.no_grad():
        model.channel_weight.copy_(torch.tensor([1.0, 0.1, 0.0]))  # a few-valued channel, a drifting one
    times = pd.date_range("2021-01-01", periods=400, freq="10s", tz="UTC", name="normalizedTime")
    times = times.delete(range(150, 170))  # a gap: two segments
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(rng.normal(size=(len(times), 3)).astype(np.float32), columns=["a", "b", "c"], index=times)
    frame["label"] = np.int8(0)
    write_dataset(str(tmp_path / "split"), frame, part_rows=37)  # part edges inside windows
    from container_component_src.model.residual import ResidualDetector

    raw_signal = ResidualDetector.raw_signal(np.array([1.0, 0.1, 0.0]))
    sums = ChannelSums()
    scored = score_split(
        model,
        str(tmp_path / "split"),
        ["a", "b", "c"],
        5,
        "label",
        progress=False,
        detectors={"raw_signal": raw_signal},
        channel_sums=sums,
    )
    segments = segment_ids(frame.index)
    raw = scoring.score_rows(model, frame[["a", "b", "c"]].to_numpy(), segments)
    np.testing.assert_array_equal(scored["score"], raw)  # the sum of the channel shares is `score`, to the bit
    shares = scoring.score_rows(model, frame[["a", "b", "c"]].to_numpy(), segments, method="channel_scores")
    assert sums.rows == len(frame)
    np.testing.assert_allclose(sums.means("model"), shares.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(scored["smoothed_score"], scoring.smooth_scores(raw, 5, segments), rtol=1e-6)
    np.testing.assert_array_equal(scored["segment"], segments)
    assert scored.index.equals(frame.index) and (scored["label"] == 0).all()
    # The raw signal weighs each channel as the model does.
    squares = np.square(frame[["a", "b", "c"]].to_numpy(np.float64)) @ np.array([1.0, 0.1, 0.0])
    np.testing.assert_allclose(scored["raw_signal_row"], squares, rtol=1e-12)
    np.testing.assert_allclose(
        sums.means("raw_signal"), np.square(frame[["a", "b", "c"]].to_numpy(np.float64)).mean(axis=0) * [1, 0.1, 0]
    )
    np.testing.assert_allclose(scored["raw_signal"], scoring.smooth_scores(squares, 5, segments), rtol=1e-12)
    # Without per-row scores (the test split's): the same columns less `<name>_row`.
    lean = score_split(
        model, str(tmp_path / "split"), ["a", "b", "c"], 5, "label", progress=False,
        detectors={"raw_signal": raw_signal}, per_row=False,
    )  # fmt: skip
    assert list(lean.columns) == [c for c in scored.columns if c != "raw_signal_row"]
    pd.testing.assert_frame_equal(lean, scored.drop(columns="raw_signal_row"))


def test_the_results_table_holds_validation_then_test_rows_once() -> None:
    from container_component_src.evaluation.evaluate import results_table

    times = pd.date_range("2021-01-01", periods=6, freq="10s", tz="UTC")
    val = pd.DataFrame({"smoothed_score": [1.0, 5.0], "pca": [0.1, 0.2], "pca_row": [0.3, 0.4]}, index=times[:2])
    test = pd.DataFrame({"smoothed_score": [2.0, 6.0, 3.0, 7.0], "pca": 0.5, "label": [0, 1, 0, 1]}, index=times[2:])
    results = results_table(val, test, threshold=4.0, test_flags=np.array([0, 1, 1, 1]))
    assert results.index.equals(times) and "pca_row" not in results.columns
    assert results["split"].tolist() == ["val"] * 2 + ["test"] * 4
    assert results["label"].tolist() == [0, 0, 0, 1, 0, 1] and results["label"].dtype == np.int8, "none in val: 0"
    assert results["prediction"].tolist() == [0, 1, 0, 1, 1, 1], "validation above the threshold, test as flagged"


def test_pca_finds_rows_off_the_plane_of_the_validation_rows(tmp_path: Path) -> None:
    from container_component_src.evaluation.evaluate import fit_pca

    rng = np.random.default_rng(4)
    a, b = rng.normal(size=2000), rng.normal(size=2000)
    times = pd.date_range("2021-01-01", periods=2000, freq="1min", tz="UTC", name="normalizedTime")
    frame = pd.DataFrame({"a": a, "b": b, "c": a + b + rng.normal(0, 1e-3, 2000)}, index=times).astype(np.float32)
    write_dataset(str(tmp_path / "val"), frame, part_rows=300)  # streamed in parts
    pca = fit_pca(str(tmp_path / "val"), ["a", "b", "c"], np.ones(3))
    assert pca.components.shape == (3, 2), "two directions explain the plane"
    on, off = pca.scores(np.array([[1.0, 2.0, 3.0], [1.0, 2.0, -3.0]]))
    assert on < 1e-3 and off > 10
    lighter = fit_pca(str(tmp_path / "val"), ["a", "b", "c"], np.array([0.0, 0.0, 0.0]))
    assert lighter.scores(np.array([[1.0, 2.0, -3.0]]))[0] == 0, "weights apply to the error"


def test_the_report_says_when_a_classical_detector_does_as_well() -> None:
    from container_component_src.evaluation.report import detectors_table

    summary = {
        "label_free": {"fc1": 0.72},
        "top_k": {"fc1": 0.73},
        "best_fc1": {"fc1": 0.75},
        "pr_auc": 0.66,
        "baselines": {
            f"raw_signal_{k}": v for k, v in (("fc1", 0.74), ("top_k_fc1", 0.7), ("best_fc1", 0.76), ("pr_auc", 0.6))
        },
    }
    assert "the model is <b>not ahead</b> of raw signal (0.020 Fc1 behind or level)" in detectors_table(summary)
    summary["label_free"]["fc1"] = 0.80
    assert "ahead of the best classical detector (raw signal) by 0.060 Fc1" in detectors_table(summary)


def test_the_channels_behind_false_alarms_are_those_that_carry_more_there_than_on_validation() -> None:
    from container_component_src.evaluation.evaluate import false_alarm_channels

    scaler = {"channel_kinds": {"mode": "mode"}, "drifting_channels": {"flow": 0.77}}
    channels = ["flow", "temp", "mode", "calm"]
    explained = false_alarm_channels(
        np.array([9.0, 3.0, 1.5, -0.5]), np.array([1.0, 1.0, 0.5, 0.0]), channels, np.ones(4), scaler
    )
    assert [c["channel"] for c in explained["channels"]] == ["flow", "temp", "mode"], "less than on validation: 0"
    assert [c["share"] for c in explained["channels"]] == pytest.approx([8 / 11, 2 / 11, 1 / 11])
    assert explained["channels"][0]["drift_share"] == 0.77 and explained["channels"][2]["kind"] == "mode"
    assert explained["drifting_share"] == pytest.approx(8 / 11)
    # Left out already (weight 0), or every continuous channel drifting: drift_weight has nothing to leave out.
    left_out = false_alarm_channels(np.array([9.0, 3.0]), np.zeros(2), ["flow", "temp"], np.array([0.0, 1.0]), scaler)
    assert left_out["drifting_share"] == 0.0
    scaler["drifting_channels"] |= {"temp": 0.6, "calm": 0.5}
    everything_drifts = false_alarm_channels(np.array([9.0, 3.0, 1.0, 0.0]), np.zeros(4), channels, np.ones(4), scaler)
    assert everything_drifts["drifting_share"] == 0.0


def test_channel_scores_at_sampled_rows_are_those_of_the_whole_series(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from container_component_src.data.segments import segment_ids
    from container_component_src.evaluation import evaluate, scoring
    from container_component_src.model.vae import WindowVAE

    torch.manual_seed(0)
    model = torch.jit.script(WindowVAE(3, [8], 2, window=6).eval())
    times = pd.date_range("2021-01-01", periods=400, freq="10s", tz="UTC", name="normalizedTime").delete(
        range(150, 170)
    )
    frame = pd.DataFrame(np.random.default_rng(3).normal(size=(len(times), 3)), columns=["a", "b", "c"], index=times)
    write_dataset(str(tmp_path / "split"), frame.astype(np.float32), part_rows=37)
    segments = segment_ids(times)
    whole = scoring.score_rows(model, frame.to_numpy(np.float32), segments, method="channel_scores")
    mask = np.zeros(len(times), dtype=bool)
    mask[[0, 3, 40, 41, 42, 148, 150, 151, 300, 379]] = True  # series start, a run, the rows around the gap
    for count in (100, 4):
        monkeypatch.setattr(evaluate, "EXPLAIN_ROWS", count)
        sample = evaluate.FalseAlarmSample.of(mask, int(model.context))
        assert sample.rows == 10 and len(sample.positions) == min(count, 10)
        assert set(sample.positions) <= set(np.flatnonzero(mask))
        pieces = evaluate.rows_at(str(tmp_path / "split"), sample.ranges, ["a", "b", "c"])
        means = evaluate.mean_channel_scores(model, sample, pieces, ["a", "b", "c"], segments)
        np.testing.assert_allclose(means, whole[sample.positions].mean(axis=0), rtol=1e-5, atol=1e-6)
    assert evaluate.window_ranges(np.array([0, 3, 20, 40, 41]), 5) == [(0, 4), (15, 21), (35, 42)]


def test_a_channel_that_leaves_its_level_in_normal_test_rows_is_named_behind_the_false_alarms(
    trained_model: dict[str, Any], scaled_sets: dict[str, str], tmp_path: Path
) -> None:
    test = pd.read_parquet(scaled_sets["test"])
    channels = [c for c in test.columns if c != "label"]
    normal = np.flatnonzero(test["label"].to_numpy() == 0)
    stretch = test.index[normal[len(normal) // 3 : len(normal) // 3 + 200]]
    shifted = channels[1]
    test.loc[stretch, shifted] += 12.0  # a normal stretch where one channel sits far from its training level
    write_dataset(str(tmp_path / "test"), test, part_rows=500)
    paths = [str(tmp_path / n) for n in ("r.parquet", "s.json", "r.html")]
    run_evaluate(
        trained_model["model"], scaled_sets["val"], str(tmp_path / "test"), *paths,
        # Over whole runs: a window would let the stretch become its run's normal after 15 rows.
        EvaluateOptions(n_thresholds=50, worst_events=0, follow_window=0),
    )  # fmt: skip
    summary = json.loads(Path(paths[1]).read_text())
    explained = summary["false_alarms"]
    assert summary["metrics"]["false_alarm_drifting_share"] == explained["drifting_share"] < 0.5
    assert explained["detector"] == "model" and explained["rows"] >= 100, explained
    assert explained["sampled"] == min(explained["rows"], 2000)
    top = explained["channels"][0]
    assert top["channel"] == shifted and top["share"] > 0.8, explained
    assert top["false_alarm_mean"] > 10 * max(top["validation_mean"], 0.1)
    page = Path(paths[2]).read_text()
    assert "<h3 id='false-alarm-channels'>Where they come from</h3>" in page
    assert f"<td class='text'>{shifted}</td>" in page


def test_the_classical_detectors_bound_the_inputs_the_model_bounds(tmp_path: Path) -> None:
    import torch

    from container_component_src.evaluation.evaluate import fit_pca, input_bounds
    from container_component_src.model.residual import ResidualDetector
    from container_component_src.model.vae import VAE

    vae = VAE(3, [8], 2)
    assert input_bounds(vae) is None
    vae.bound_inputs(torch.tensor([-np.inf, -1.0, -np.inf]), torch.tensor([np.inf, 1.0, np.inf]))
    bounds = input_bounds(vae)
    assert bounds is not None and bounds[0].tolist() == [-np.inf, -1.0, -np.inf]
    rng = np.random.default_rng(5)
    a = rng.normal(size=1000)
    times = pd.date_range("2021-01-01", periods=1000, freq="1min", tz="UTC", name="normalizedTime")
    frame = pd.DataFrame({"a": a, "b": a + rng.normal(0, 0.1, 1000), "c": rng.normal(size=1000)}, index=times)
    write_dataset(str(tmp_path / "val"), frame.astype(np.float32), part_rows=300)
    pca = fit_pca(str(tmp_path / "val"), ["a", "b", "c"], np.array([1.0, 0.0, 1.0]), bounds=bounds)
    rows = np.array([[0.5, 1.0, 0.0], [0.5, 40.0, 0.0]])
    on_edge, far = pca.scores(rows)
    assert far == on_edge, "b beyond its bound moves no other channel's error"
    served = ResidualDetector.from_dict(pca.to_dict())
    assert served.to_dict()["input_low"] == [None, -1.0, None] and served.scores(rows).tolist() == [on_edge, far]
    old = {k: v for k, v in pca.to_dict().items() if not k.startswith("input_")}  # written before bounds
    assert not ResidualDetector.from_dict(old).bounded_inputs


def test_rows_read_for_the_report_hold_only_themselves(tmp_path: Path) -> None:
    """A few rows from each of many batches (false alarms spread over the test split) are copies:
    a slice would keep its whole batch, every channel, alive, and the split with it."""
    import tracemalloc

    import pyarrow as pa

    from container_component_src import storage
    from container_component_src.evaluation.evaluate import rows_at

    rows, channels = 8 * storage.ROW_GROUP_ROWS, [f"c{i}" for i in range(8)]
    times = pd.date_range("2021-01-01", periods=rows, freq="10s", tz="UTC", name="normalizedTime")
    frame = pd.DataFrame(np.ones((rows, len(channels)), np.float32), columns=channels, index=times)
    write_dataset(str(tmp_path / "split"), frame, part_rows=rows)
    del frame
    ranges = [(start, start + 10) for start in range(0, rows, storage.ROW_GROUP_ROWS)]
    rows_at(str(tmp_path / "split"), ranges[:1], channels)  # what a first read sets up, once
    # Python's allocations and Arrow's (frames read from parquet may keep Arrow's buffers).
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0] + pa.total_allocated_bytes()
        pieces = rows_at(str(tmp_path / "split"), ranges, channels)
        held = tracemalloc.get_traced_memory()[0] + pa.total_allocated_bytes() - before
    finally:
        tracemalloc.stop()
    assert [len(piece) for piece in pieces] == [10] * 8
    assert held < rows * len(channels) * 4 / 8, f"{held:,} bytes held for 80 rows: a batch's worth or more"


def test_an_event_view_stays_within_the_runs_of_rows_the_event_touches() -> None:
    """Rows across a gap are another run (SKAB's stacked recordings): drawn beside the event they
    would be joined to it by a line over the gap."""
    from container_component_src.evaluation.evaluate import event_table, event_views
    from container_component_src.model.residual import ResidualDetector

    first = pd.date_range("2021-01-01 00:00", periods=60, freq="1min", tz="UTC")
    second = pd.date_range("2021-01-01 02:00", periods=60, freq="1min", tz="UTC")
    times = first.append(second)
    labels = np.zeros(120, dtype=int)
    labels[70:80] = 1
    rows = pd.DataFrame({"a": np.where(labels == 1, 5.0, 0.1), "b": 0.0}, index=times)
    events = event_table(labels, times, rows["a"].to_numpy())
    (view,) = event_views(ResidualDetector.raw_signal(np.ones(2)), ["a", "b"], events, [rows], labels == 1)
    assert "(found at the label-free threshold)" in view.title
    assert view.times[0] == second[0] and view.times[-1] == second[-1]
    assert view.values.shape == (2, 60) and view.contributions.shape == (2, 60)
    # An event across the gap keeps both runs.
    labels[55:65] = 1
    labels[70:80] = 0
    events = event_table(labels, times, rows["a"].to_numpy())
    (view,) = event_views(ResidualDetector.raw_signal(np.ones(2)), ["a", "b"], events, [rows], np.zeros(120, bool))
    assert len(view.times) == 120 and "(missed at the label-free threshold)" in view.title


@pytest.mark.parametrize(
    ("rule", "window", "described"),
    [
        ("median", 0, "as they follow each run's median score"),
        ("spread", 0, "median and lower-quartile spread"),
        ("iqr", 0, "median and interquartile range"),
        ("iqr", 40, "its newest 40 rows only, so that a state lasting half as long becomes the run's normal"),
    ],
)
def test_a_following_threshold_is_evaluated_and_published_as_the_server_applies_it(
    rule: str,
    window: int,
    described: str,
    trained_model: dict[str, Any],
    scaled_sets: dict[str, str],
    evaluated: dict[str, Any],
    tmp_path: Path,
) -> None:
    from container_component_src.evaluation.follow import follow_from_dict, follow_of
    from container_component_src.serving.deploy import publish_model
    from container_component_src.serving.inference import AnomalyScorer

    paths = [str(tmp_path / name) for name in ("r.parquet", "s.json", "r.html")]
    run_evaluate(
        trained_model["model"],
        scaled_sets["val"],
        scaled_sets["test"],
        *paths,
        EvaluateOptions(n_thresholds=50, worst_events=1, threshold_follow=rule, follow_window=window),
    )
    summary = json.loads(Path(paths[1]).read_text())
    results = pd.read_parquet(paths[0])
    val_rows, test_rows = results[results["split"] == "val"], results[results["split"] == "test"]
    threshold = summary["label_free"]["threshold"]
    # No references: the test rows are one run, as one server process's rows.
    follow = follow_of(rule, val_rows["smoothed_score"].to_numpy(), threshold, window)
    flags = follow.replay(test_rows["smoothed_score"].to_numpy(), threshold)
    assert (test_rows["prediction"].to_numpy() == flags).all()
    assert summary["threshold_follow"] == rule and summary["label_free"]["flagged_share"] == flags.mean()
    assert described in Path(paths[2]).read_text()
    # What is served follows the per-row validation scores, as evaluation computed them.
    deploy = summary["deploy"]
    assert deploy["follow"] == follow_of(rule, val_rows["score"].to_numpy(), deploy["threshold"], window).to_dict()
    assert (deploy["follow"]["rule"], deploy["follow"]["window"]) == (rule, window)
    publish_model(trained_model["model"], summary, str(tmp_path / "served"))
    scorer = AnomalyScorer.load(str(tmp_path / "served"))
    assert scorer.streams is not None and scorer.streams.follow == follow_from_dict(deploy["follow"])
    assert AnomalyScorer.load(str(tmp_path / "served"), threshold=5.0).streams is None, "a hand-set threshold is fixed"
    # Each run says what the fixed rule would have given, exactly what the run with it found, and
    # the fixed run what this rule would have given (over whole runs: the fixed run's window).
    fixed = evaluated["summary"]
    others = {(other["threshold_follow"], other["follow_window"]) for other in summary["other_follows"]}
    following = {"median", "spread", "iqr"}
    candidates = {(name, 0) for name in {"none", *following}} | {(name, window) for name in following if window}
    assert others == candidates - {(rule, window)}
    for run, other in ((summary, fixed), (fixed, summary))[: 1 if window else 2]:
        (by_rule,) = (
            found
            for found in run["other_follows"]
            if (found["threshold_follow"], found["follow_window"])
            == (other["threshold_follow"], other["follow_window"])
        )
        assert by_rule["detectors"]["model"] == {k: other["label_free"][k] for k in ("fc1", "f1", "false_alarm_rate")}
        for name in ("raw_signal", "pca"):
            found = {k: other["baselines"][f"{name}_{k}"] for k in ("fc1", "f1", "false_alarm_rate")}
            assert by_rule["detectors"][name] == found
        assert by_rule["served"] == other["deploy"]["detector"]
        named = by_rule["threshold_follow"]
        assert run["metrics"][f"follow_{named}_served_fc1"] == other["metrics"]["served_fc1"]
        assert run["metrics"][f"follow_{named}_served_false_alarm_rate"] == other["metrics"]["served_false_alarm_rate"]
    assert f'(<code>threshold_follow = "{rule}"</code>) instead' in Path(evaluated["report.html"]).read_text()
    assert 'With a fixed threshold (<code>threshold_follow = "none"</code>) instead' in Path(paths[2]).read_text()


def test_every_follow_rule_is_judged_by_the_same_gate() -> None:
    from container_component_src.evaluation.evaluate import compare_follows

    rng = np.random.default_rng(8)
    val = rng.exponential(size=4_000)
    # The test run's normal level sits higher than validation's: the model's fixed threshold
    # flags most of it, a following one little; the raw signal is unchanged and keeps its promise.
    labels = np.zeros(6_000, dtype=int)
    labels[3_000:3_050] = 1
    model_test = rng.exponential(size=6_000) + 6.0 + 60.0 * labels
    raw_test = rng.exponential(size=6_000) + 4.0 * labels
    scores = {"model": (val, model_test), "raw_signal": (val, raw_test)}
    fixed, *following = compare_follows(scores, labels, EvaluateOptions(threshold_follow="median", follow_window=30))
    assert fixed["threshold_follow"] == "none" and fixed["served"] == "raw_signal", "the model breaks its promise"
    threshold = float(np.quantile(val, 0.99))
    assert fixed["detectors"]["model"]["false_alarm_rate"] == (model_test[labels == 0] > threshold).mean() > 0.9
    # Each following rule over whole runs, then over each run's newest 30 rows.
    rules = [(rule, window) for window in (0, 30) for rule in ("median", "spread", "iqr")]
    assert [(entry["threshold_follow"], entry["follow_window"]) for entry in following] == rules
    for entry in following[:4]:
        model = entry["detectors"]["model"]  # the promise kept, the anomaly found
        assert entry["served"] == "model" and model["false_alarm_rate"] < 0.02 and model["fc1"] > 0.6
    # 30 rows place a run's quartiles less surely than its median: more false alarms than over the run.
    for whole, windowed in zip(following[1:3], following[4:], strict=True):
        assert windowed["detectors"]["model"]["false_alarm_rate"] > 2 * whole["detectors"]["model"]["false_alarm_rate"]


def _entry(rule: str, served: str, fc1: float, false_alarm_rate: float, window: int = 0) -> dict[str, Any]:
    found = {"fc1": fc1, "f1": fc1, "false_alarm_rate": false_alarm_rate}
    return {"threshold_follow": rule, "follow_window": window, "detectors": {served: found}, "served": served}


@pytest.mark.parametrize(
    ("entries", "chosen"),
    [
        # A rule whose served detector keeps its promise goes before a higher Fc1 that breaks it.
        ([("none", "pca", 0.9, 0.15), ("median", "pca", 0.8, 0.03), ("spread", "model", 0.7, 0.015)], "spread"),
        # Of those that keep it, the highest Fc1.
        ([("none", "model", 0.9, 0.01), ("median", "model", 0.92, 0.01), ("spread", "pca", 0.91, 0.005)], "median"),
        # None keeps it: the highest Fc1 of all.
        ([("none", "pca", 0.82, 0.15), ("median", "pca", 0.88, 0.047), ("spread", "pca", 0.91, 0.022)], "spread"),
        # A promise kept below the deploy threshold does not count as trusted.
        ([("none", "model", 0.45, 0.01), ("median", "pca", 0.7, 0.05), ("spread", "pca", 0.6, 0.04)], "median"),
        # A tie goes to the model, then to the simpler rule.
        ([("none", "pca", 0.9, 0.01), ("median", "model", 0.9, 0.01), ("spread", "model", 0.9, 0.01)], "median"),
        ([("none", "model", 0.9, 0.01), ("median", "model", 0.9, 0.01), ("spread", "model", 0.9, 0.01)], "none"),
        # SKAB A's case: the iqr rule alone keeps PCA's promise, at the highest Fc1.
        (
            [
                ("none", "pca", 0.82, 0.15),
                ("median", "pca", 0.884, 0.047),
                ("spread", "pca", 0.912, 0.0218),
                ("iqr", "pca", 0.920, 0.0117),
            ],
            "iqr",
        ),
        # SKAB B's case: no rule over whole runs keeps a promise, the median rule over a window does.
        (
            [
                ("none", "model", 0.856, 0.307),
                ("median", "model", 0.912, 0.0543),
                ("iqr", "pca", 0.748, 0.0314),
                ("median", "pca", 0.740, 0.0168, 30),
                ("iqr", "pca", 0.726, 0.0175, 30),
            ],
            ("median", 30),
        ),
        # Both ways alike: the whole run, which forgets nothing.
        ([("none", "pca", 0.8, 0.15), ("iqr", "pca", 0.9, 0.01), ("iqr", "pca", 0.9, 0.01, 30)], "iqr"),
    ],
)
def test_auto_takes_the_rule_whose_served_detector_the_gate_prefers(
    entries: list[tuple[Any, ...]], chosen: str | tuple[str, int]
) -> None:
    from container_component_src.evaluation.evaluate import gate_follow

    options = EvaluateOptions(threshold_follow="auto", promise_tolerance=2.0, deploy_threshold=0.5)
    expected = chosen if isinstance(chosen, tuple) else (chosen, 0)
    assert gate_follow([_entry(*entry) for entry in entries], 0.01, options) == expected


def test_auto_is_no_rule_to_flag_by() -> None:
    with pytest.raises(ValueError, match="auto"):
        label_free_flags(np.arange(10.0), np.arange(10.0), 5.0, EvaluateOptions(threshold_follow="auto"))


@pytest.mark.parametrize("window", [0, 30])
def test_auto_serves_and_reports_the_rule_the_gate_chose(
    window: int, trained_model: dict[str, Any], scaled_sets: dict[str, str], tmp_path: Path
) -> None:
    from container_component_src.evaluation.evaluate import gate_follow
    from container_component_src.evaluation.follow import follow_of

    paths = [str(tmp_path / name) for name in ("r.parquet", "s.json", "r.html")]
    options = EvaluateOptions(n_thresholds=50, worst_events=1, threshold_follow="auto", follow_window=window)
    run_evaluate(trained_model["model"], scaled_sets["val"], scaled_sets["test"], *paths, options)
    summary = json.loads(Path(paths[1]).read_text())
    rule, chosen_window = summary["threshold_follow"], summary["follow_window"]
    assert summary["threshold_follow_setting"] == "auto" and rule in ("none", "median", "spread", "iqr")
    assert summary["follow_window_setting"] == window and chosen_window in {0, window}
    # The gate's choice over all four rules over whole runs, and the three following ones over the
    # window: the run's own figures and the others'.
    keys = ("fc1", "f1", "false_alarm_rate")
    own = {"model": {k: summary["label_free"][k] for k in keys}}
    own |= {name: {k: summary["baselines"][f"{name}_{k}"] for k in keys} for name in ("raw_signal", "pca")}
    entries = [
        *summary["other_follows"],
        {
            "threshold_follow": rule,
            "follow_window": chosen_window,
            "detectors": own,
            "served": summary["deploy"]["detector"],
        },
    ]
    order = ["none", "median", "spread", "iqr"]
    candidates = [(name, 0) for name in order] + [(name, window) for name in order[1:] if window]
    assert sorted((entry["threshold_follow"], entry["follow_window"]) for entry in entries) == sorted(candidates)
    entries.sort(key=lambda entry: candidates.index((entry["threshold_follow"], entry["follow_window"])))
    assert gate_follow(entries, summary["deploy"]["promised_false_alarm_rate"], options) == (rule, chosen_window)
    # Every rule's served figures are named in the run's metrics, the chosen one's too.
    metrics = summary["metrics"]
    named = rule + (f"_{chosen_window}" if chosen_window else "")
    assert metrics[f"follow_{named}_served_fc1"] == metrics["served_fc1"] == summary["deploy"]["fc1"]
    names = [name + (f"_{size}" if size else "") for name, size in candidates]
    assert {f"follow_{name}_served_false_alarm_rate" for name in names} <= set(metrics)
    # What is served and replayed is the chosen rule's.
    results = pd.read_parquet(paths[0])
    val_rows, test_rows = results[results["split"] == "val"], results[results["split"] == "test"]
    threshold, deploy = summary["label_free"]["threshold"], summary["deploy"]
    if rule == "none":
        assert deploy["follow"] is None
        assert (test_rows["prediction"].to_numpy() == (test_rows["smoothed_score"] > threshold).to_numpy()).all()
    else:
        assert (deploy["follow"]["rule"], deploy["follow"]["window"]) == (rule, chosen_window)
        flags = follow_of(rule, val_rows["smoothed_score"].to_numpy(), threshold, chosen_window).replay(
            test_rows["smoothed_score"].to_numpy(), threshold
        )
        assert (test_rows["prediction"].to_numpy() == flags).all()
    sentence = 'The gate chose the threshold rule as it chooses the detector (<code>threshold_follow = "auto"</code>'
    report = Path(paths[2]).read_text()
    assert (
        sentence + (f", <code>follow_window = {window}</code>: each rule over whole runs" if window else ")") in report
    )
