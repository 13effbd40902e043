"""The benchmarks run (on tiny sizes) and report what they claim; timings are not asserted."""

import sys
from pathlib import Path

import pytest
import torch

from benchmarks import (
    bench_gpu,
    bench_label_join,
    bench_preprocess,
    bench_serving,
    bench_sizing,
    bench_step_sizing,
    bench_threshold_sweep,
    bench_training,
)


def test_label_join_benchmark_runs() -> None:
    (row,) = bench_label_join.run(n_rows=20_000, n_intervals=20, n_naive_rows=500)
    assert row["ratio"] > 0 and row["rows_per_s"] > 0 and isinstance(row["met"], bool)


def test_preprocess_benchmark_runs(tmp_path: Path) -> None:
    rows = bench_preprocess.run(tmp_path, sizes=("tiny",), n_workers=1, repeats=1)
    assert [r["benchmark"] for r in rows] == [
        "split archives",
        "pyarrow scan (baseline)",
        "preprocess (project CLI)",
        "Polars (group_by_dynamic)",
        "DuckDB (time_bucket)",
        "preprocess against Polars",
    ]
    assert all(r["peak_memory_mb"] > 0 for r in rows[1:5]) and isinstance(rows[5]["met"], bool)
    # The contenders compute the same grid: the same rows, values within float32 rounding.
    for row in rows[3:5]:
        assert row["agreement"].startswith("same "), row["agreement"]


def test_output_agreement_sees_every_difference(tmp_path: Path) -> None:
    import pandas as pd

    index = pd.date_range("2021-01-01", periods=4, freq="1min", tz="UTC", name="t")
    pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]}, index=index).to_parquet(tmp_path / "a.parquet")
    pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.5]}, index=index).to_parquet(tmp_path / "b.parquet")
    pd.DataFrame({"x": [1.0, 2.0, 3.0]}, index=index[:3]).to_parquet(tmp_path / "c.parquet")
    assert bench_preprocess.agreement(tmp_path / "a.parquet", tmp_path / "a.parquet")["cells_differing"] == 0
    different = bench_preprocess.agreement(tmp_path / "a.parquet", tmp_path / "b.parquet")
    assert different["cells_differing"] == 1 and different["max_rel_difference"] == pytest.approx(0.125)
    assert not bench_preprocess.agreement(tmp_path / "a.parquet", tmp_path / "c.parquet")["same_rows"]


def test_training_benchmark_runs() -> None:
    row, windowed = bench_training.run(n_rows=4_096, n_features=4, batch_size=512, epochs=1, windowed_rows=2_048)
    assert windowed["ratio"] > 0 and windowed["target"] == "<= 3"
    assert row["rows_per_s"] > 0 and row["ratio"] > -1


def test_sizing_benchmark_measures_one_epoch_and_its_memory() -> None:
    (row, *_) = bench_sizing.run(n_rows=8_192, n_channels=12)
    assert row["rows_per_s"] > 0 and row["peak_memory_gib"] > 0 and "ten years" in row["case"]
    rows = bench_sizing.generated_rows(1_000, 5)
    assert rows.shape == (1_000, 5) and torch.isfinite(rows).all() and rows.std() > 0.3


def test_threshold_sweep_benchmark_checks_itself_against_the_loop() -> None:
    (row,) = bench_threshold_sweep.run(n_rows=50_000, n_thresholds=100, n_naive_thresholds=5)
    assert row["ratio"] > 0 and row["speedup_vs_loop"] > 0 and isinstance(row["met"], bool)


def test_serving_benchmark_runs_against_the_real_server() -> None:
    *rows, pair, windowed = bench_serving.run(n_channels=4, batch_sizes=(1,), concurrencies=(2,), seconds=0.5)
    cases = ["V1, 1 row(s), 2 client(s)", "V2, 1 row(s), 2 client(s)", "gRPC (V2), 1 row(s), 1 client(s)"]
    assert [r["case"] for r in rows] == cases
    assert all(r["failed"] == 0 and r["requests"] > 0 and r["ratio"] > 1 for r in rows)
    assert pair["case"].endswith("transformer + predictor") and pair["requests"] > 0 and pair["ratio"] > 0
    assert "windowed model (16 rows sent)" in windowed["case"] and windowed["requests"] > 0 and windowed["failed"] == 0


def test_false_and_missed_alarm_rates() -> None:
    import numpy as np

    from benchmarks.bench_skab import _point_rates

    flags = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    labels = np.array([1, 0, 0, 0, 1, 1])
    rates = _point_rates(flags, labels)
    assert rates == {"f1": 2 * (2 / 3) * (2 / 3) / (4 / 3), "far": 1 / 3, "mar": 1 / 3}


def test_suite_names() -> None:
    from benchmarks.run_all import NAMES, suite

    assert tuple(suite("tiny", Path("x"), 1)) == NAMES, "the docs list the benchmarks by NAMES"


def test_gpu_benchmark_compares_the_project_with_the_plain_loop_at_each_batch_size() -> None:
    rows = bench_gpu.run(n_rows=4_096, n_features=4, batch_sizes=(256, 1_024), epochs=1)
    assert [r["case"].rsplit("batch ", 1)[1] for r in rows] == ["256", "1,024"]
    assert all(r["ratio"] > 0 and r["rows_per_s"] > 0 for r in rows)
    # Without a GPU nothing is claimed: the target is the GPU's.
    assert torch.cuda.is_available() or all(r["met"] is None and r["target"] == "" for r in rows)


def test_the_gpu_check_runs_here_as_it_would_there(tmp_path: Path) -> None:
    """`gpu_check.sh --dry-run`: every step of the GPU machine's one command, small, on the CPU,
    with the packages that machine lacks unimportable unless carried, so that its one run there
    does not fail on an import or a missing file."""
    import json
    import os
    import subprocess

    bench_gpu.prepare_default_data(tmp_path / "data")
    env = os.environ | {
        "GPU_CHECK_DATA": str(tmp_path / "data"),
        "OUT": str(tmp_path / "out"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--dry-run"], cwd=root, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    back = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(back) <= 8, "the device tool brings back 8 files"
    (compared,) = json.loads((tmp_path / "out" / "default.json").read_text())
    assert compared["ratio"] > 0 and isinstance(compared["met"], bool)
    assert {r["benchmark"].split(":")[0] for r in json.loads((tmp_path / "out" / "results.json").read_text())} == {
        "training throughput (CPU)",
        "sizing",
    }
    # What the dry run makes unimportable, unless carried.
    simulated = os.environ | {"PYTHONPATH": str(root / "benchmarks" / "device_sim")}
    for carried, fails in (("", True), ("plotly", False)):
        imported = subprocess.run(
            [sys.executable, "-c", "import plotly, torch"],
            env=simulated | {"GPU_CHECK_CARRIED": carried},
            capture_output=True,
            text=True,
            check=False,
        )
        assert (imported.returncode != 0) == fails, imported.stderr[-2000:]
        assert not fails or "No module named 'plotly' (not on the GPU machine, not carried)" in imported.stderr


def test_protocol_b_fits_each_run_on_its_first_rows_and_leaves_its_drift_out(tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd

    from benchmarks.bench_skab import CHANNELS, protocol_b_rows, run_protocol_b

    rng = np.random.default_rng(0)
    for folder, n in (("valve1", 700), ("other", 650)):
        values = rng.normal(size=(n, len(CHANNELS)))
        values[:, CHANNELS.index("Temperature")] += np.arange(n) / 40.0  # warms through the run
        labels = np.zeros(n, dtype=int)
        labels[500:600] = 1
        values[500:600, CHANNELS.index("Volume Flow RateRMS")] += 8.0  # the fault: the flow jumps
        frame = pd.DataFrame(values, columns=CHANNELS)
        frame.insert(0, "datetime", pd.date_range("2020-03-01", periods=n, freq="1s"))
        frame["anomaly"], frame["changepoint"] = labels, 0
        (tmp_path / folder).mkdir()
        frame.to_csv(tmp_path / folder / "0.csv", sep=";", index=False)
    result = run_protocol_b(tmp_path, max_epochs=1)
    assert result["files"] == 2 and result["drifting"] == {"Temperature": 2}
    assert result["whole files"]["rows"] == 1350 and result["whole files"]["all_positive"]["far"] == 1.0
    # After the fitted rows the warming temperature alarms the raw signal at a fixed threshold; the
    # model leaves it out.
    part = result["after the fitted rows"]
    assert part["rows"] == 550 and part["raw_signal"]["far"] > 0.5 > 0.2 > part["model"]["far"]
    # A threshold that follows each file's median score follows the warming too.
    followed = run_protocol_b(tmp_path, max_epochs=1, threshold_follow="median")["after the fitted rows"]
    assert followed["raw_signal"]["far"] < part["raw_signal"]["far"] / 3
    assert followed["model"]["mar"] < 0.3, "the fault, a minority of the rows, is still found"
    assert part["model"]["mar"] < 0.3 and part["raw_signal_weighted"]["far"] < 0.2
    assert {"pca", "pca (pot)"} <= set(part) and part["pca"]["mar"] < 0.3, "PCA finds the jump as well"
    # Calibration is judged on the rows after the fitted ones, against each threshold's promise.
    promised = result["calibration"]["methods"]["quantile"]
    assert promised["false_alarm_rate"] == part["model"]["far"]
    assert promised["nominal_false_alarm_rate"] == pytest.approx(0.01)
    *rows, quantile, pot = protocol_b_rows(result, 1.0)
    assert [quantile["case"], pot["case"]] == ["quantile threshold", "pot threshold"]
    assert quantile["better_calibrated"] != pot["better_calibrated"] and pot["nominal_far"] == 0.001
    assert ["quantile threshold" in r["case"] for r in rows] == [True, True, False, False]
    assert "pot threshold, counted over whole files" in rows[2]["case"] and rows[3]["case"].startswith("diagnostic")
    assert "drifting channels (weight 0): Temperature in 2" in rows[0]["case"] and "; PCA F1 " in rows[0]["baseline"]
    # An operator who names the flow as wandering by nature leaves the fault's channel out: missed.
    named = run_protocol_b(tmp_path, max_epochs=1, named_weights={"Volume Flow RateRMS": 0.0})
    assert named["after the fitted rows"]["model"]["mar"] > 0.7 > part["model"]["mar"]
    # The threshold candidates replay each file's scores: its fitted rows calibrate, the rest are judged.
    from benchmarks.bench_thresholds import judge, protocol_b_streams

    streams = protocol_b_streams(result)
    assert [len(labels) for _, _, labels, _ in streams] == [250, 300] and set(streams[0][0]) == {
        "smoothed_score",
        "raw_signal",
        "pca",
    }
    judged = judge(streams, "B")
    deployed = judged[0]
    assert len(judged) == 41, "three detectors, thirteen rules each, and the gate's choice over whole runs and a window"
    assert deployed["case"] == "model: quantile of all validation rows (threshold_follow none)"
    assert deployed["observed_far"] == pytest.approx(part["model"]["far"])


def test_step_sizing_measures_the_peak_of_the_whole_process_tree(tmp_path: Path) -> None:
    """A child holding 256 MiB for a second counts in the peak (a Dask or DDP step's workers)."""
    child = "x = bytearray(256 * 2**20); import time; time.sleep(1)"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}], check=True)"
    (tmp_path / "out").write_bytes(b"1234")
    run = bench_step_sizing.measure([sys.executable, "-c", parent], [tmp_path / "out"], "tree")
    assert run.peak_bytes > 256 * 2**20 and run.output_bytes == 4 and run.wall_s >= 1
    with pytest.raises(RuntimeError, match="fails failed"):
        bench_step_sizing.measure([sys.executable, "-c", "raise SystemExit(3)"], [], "fails")


def test_step_sizing_projects_the_growth_to_ten_years() -> None:
    def runs(peak_gib: float) -> list:
        return [bench_step_sizing.StepRun("fit-scaler", 1.0, 1.0, int(peak_gib * 2**30), 0)]

    (growing,) = bench_step_sizing.table([(91, 1_000_000, runs(1.0)), (365, 4_000_000, runs(2.0))])
    assert growing["ten_year_gib"] == pytest.approx(2.0 + (3650 - 365) / 274, abs=0.01), "1 GiB per 274 days"
    assert not growing["met"] and not growing["fits_pod"]
    (flat,) = bench_step_sizing.table([(91, 1_000_000, runs(1.0)), (365, 4_000_000, runs(1.05))])
    assert flat["met"] and flat["ten_year_gib"] < 2 and flat["fits_pod"], "2Gi: the default pod's memory"


def test_step_sizing_runs_every_step_through_the_cli(tmp_path: Path) -> None:
    rows, runs = bench_step_sizing.run_steps(tmp_path, days=1, lean=True)
    assert rows > 0 and runs[0].step == "split-archive" and runs[-1].step == "evaluate"
    # Lean: the inputs no later step reads are gone; the scaled sets and the model stay.
    left = {p.name for p in tmp_path.iterdir()}
    assert not left & {"archives", "parts", "telemetry", "labelled", "train.parquet", "val.parquet", "test.parquet"}
    assert {"strain.parquet", "sval.parquet", "stest.parquet", "model", "results.parquet"} <= left
    assert all(r.peak_bytes > 0 for r in runs) and len(runs) == 12
    ranks = next(r for r in runs if r.step == "train, 2 ranks")
    assert 0 < ranks.child_peak_bytes < ranks.peak_bytes, "a rank is one process of the tree"
    table = bench_step_sizing.table([(1, rows, runs), (2, rows, runs)])
    assert [row["case"].split(":")[0] for row in table[-2:]] == ["train per rank", "tune (2 trials)"]


def test_each_benchmark_writes_the_figures_the_docs_show(tmp_path: Path) -> None:
    from benchmarks.run_all import NAMES, write_figures

    rows = [
        {"suite": "label-join", "benchmark": "label join", "case": "a|b", "seconds": 0.25, "rows_per_s": 40_000_000}
        | {"ratio": "300x", "ratio_meaning": "the per-row loop", "target": "< 2 s", "met": True},
        {"suite": "skab", "benchmark": "SKAB A", "case": "label-free", "fc1": 0.719, "f1": 0.596, "pr_auc": 0.664},
    ]
    written = write_figures(rows, ["label-join", "skab"], "x86_64, 2 cores", folder=tmp_path)
    assert [p.name for p in written] == ["label-join.md", "skab.md"] and set(NAMES) >= {"label-join", "skab"}
    join = written[0].read_text()
    assert join.startswith("Written by `python -m benchmarks.run_all --only label-join` on ")
    assert "| label join | a\\|b | 0.250 | 40,000,000 | 300x (the per-row loop) | < 2 s | yes |" in join
    assert (
        "Detection quality" not in join and "| SKAB A | label-free | 0.719 | 0.596 | 0.664 |" in written[1].read_text()
    )


def test_threshold_candidates_judge_each_row_by_the_rows_before_it() -> None:
    import numpy as np

    from benchmarks.threshold_candidates import newest_quantile, spot_replay

    rng = np.random.default_rng(3)
    val, test = rng.exponential(size=20_000), rng.exponential(size=20_000)
    assert newest_quantile(np.r_[np.zeros(300), np.arange(100.0)], 0.5, 0.25) == 49.5, "only the newest quarter"
    flags = spot_replay(val, test, risk=0.01)
    assert 0.005 < flags.mean() < 0.02, "like validation: about the promised 1 %"
    assert (spot_replay(val, test[:5_000], risk=0.01) == flags[:5_000]).all(), "causal: later rows change nothing"
    # A slow drift after validation: SPOT flags more and more of it, DSPOT follows the moving level.
    drifting = test + np.linspace(0.0, 10.0, test.size)
    assert spot_replay(val, drifting, risk=0.01).mean() > 0.5
    assert spot_replay(val, drifting, risk=0.01, depth=10).mean() < 0.02


def test_spread_follow_standardises_each_run_by_its_own_rows() -> None:
    import numpy as np

    from benchmarks.threshold_candidates import spread_follow
    from container_component_src.evaluation.follow import SpreadFollow

    rng = np.random.default_rng(11)
    val, test = rng.exponential(size=20_000), rng.exponential(size=20_000)
    flags = spread_follow(val, test, 0.99)
    assert 0.005 < flags.mean() < 0.02, "a run like validation: about the promised 1 %"
    assert (spread_follow(val, test[:5_000], 0.99) == flags[:5_000]).all(), "causal"
    # A run twice as wide and shifted up: the fixed quantile flags a third of it, the rule
    # follows it once it has seen some of its rows.
    moved = 2.0 * test[:5_000] + 3.0
    assert (moved > np.quantile(val, 0.99)).mean() > 0.3
    assert spread_follow(val, moved, 0.99)[1_000:].mean() < 0.02
    # Each run starts again from the validation's threshold, whatever the run before it did.
    runs = np.repeat([0, 1], 5_000)
    both = spread_follow(val, np.r_[moved, test[:5_000]], 0.99, runs)
    assert (both[5_000:] == spread_follow(val, test[:5_000], 0.99)).all()
    # Anomalies in a third of a run widen its upper quartile (they go unflagged), not the lower one
    # the product's spread rule follows.
    spikes = rng.random(8_000) < 0.3
    spiked = test[:8_000] + 50.0 * spikes
    assert spread_follow(val, spiked, 0.99)[spikes][500:].mean() < 0.5
    base = float(np.quantile(val, 0.99))
    assert SpreadFollow.of(val, base).replay(spiked, base)[spikes][500:].mean() > 0.95


def test_conformal_candidates_calibrate_on_blocks_and_on_the_newest_rows() -> None:
    import numpy as np

    from benchmarks.threshold_candidates import block_conformal, weighted_conformal

    rng = np.random.default_rng(5)
    val = rng.exponential(size=10_000)
    # One block of ten runs hot: 9 times in 10 a new block is no hotter than the hottest seen.
    hot = val.copy()
    hot[3_000:4_000] += 5.0
    assert block_conformal(hot, 0.99, blocks=10, confidence=0.9) == np.quantile(hot[3_000:4_000], 0.99)
    assert block_conformal(hot, 0.99, blocks=10, confidence=0.5) < np.quantile(hot, 0.99), "the median block"
    # Equal weights: the ordinary conformal p-value, flagged at most 1 % of the time: above the
    # 10th largest of 999 (1 + 9 scores at or above it, of 1,000).
    scores = rng.permutation(999).astype(float)
    assert weighted_conformal(scores, 0.01, half_life=np.inf) == 989.0
    assert weighted_conformal(scores, 0.01, half_life=10.0) == np.inf, "too few rows weigh enough"
    # Weights halving every 500 rows follow the newest rows' level, not the old ones'.
    shifted = np.r_[rng.exponential(size=5_000), 10.0 + rng.exponential(size=5_000)]
    assert np.quantile(shifted[5_000:], 0.98) < weighted_conformal(shifted, 0.01, half_life=500.0) < 20.0
    assert weighted_conformal(shifted, 0.01, half_life=np.inf) < np.quantile(shifted, 0.995)


def test_threshold_benchmark_reports_every_rule_for_every_detector() -> None:
    import numpy as np
    import pandas as pd

    from benchmarks.bench_thresholds import PRODUCT_RULES, measure

    rng = np.random.default_rng(4)
    label = np.r_[np.zeros(4_000, np.int8), (rng.random(2_000) < 0.1).astype(np.int8)]
    scores = rng.exponential(size=6_000) + 8.0 * label
    results = pd.DataFrame(
        {"split": ["val"] * 4_000 + ["test"] * 2_000, "label": label, "smoothed_score": scores, "pca": scores * 2},
        index=pd.date_range("2021-01-01", periods=6_000, freq="1min", tz="UTC"),
    )
    rows = measure(results, "synthetic", by_segment=False)
    assert len(rows) == 28, "the model and PCA (no raw-signal column here), thirteen rules each, and the gate twice"
    whole, windowed = rows[-2:]
    assert whole["case"].startswith("the gate over these rules (auto, follow_window 0): the model, threshold_follow")
    assert windowed["case"].startswith("the gate over these rules (auto, follow_window 30): ")
    # Its choice is one of the rows above, with that row's figures.
    (chosen,) = [r for r in rows[:-2] if r["case"] == "model: " + PRODUCT_RULES[whole["case"].split()[-1]]]
    assert (chosen["observed_far"], chosen["fc1"]) == (whole["observed_far"], whole["fc1"])
    deployed = rows[0]
    assert deployed["case"] == "model: quantile of all validation rows (threshold_follow none)"
    normal = results[(results["split"] == "test") & (results["label"] == 0)]
    assert deployed["observed_far"] == (normal["smoothed_score"] > np.quantile(scores[:4_000], 0.99)).mean()
    assert deployed["verdict"] == ("within 2x" if deployed["far_ratio"] <= 2 else "") and deployed["fc1"] > 0.8


def test_threshold_benchmark_says_whether_the_served_detector_keeps_its_promise() -> None:
    from benchmarks.bench_thresholds import served

    deploy = {"detector": "pca", "threshold_method": "quantile", "fc1": 0.8334, "false_alarm_rate": 0.106}
    (row,) = served({"deploy": {**deploy, "promised_false_alarm_rate": 0.01}}, "SKAB protocol A")
    assert row["case"] == "served by the deploy gate: PCA reconstruction error (quantile, threshold_follow none)"
    assert row["far_ratio"] == pytest.approx(10.6) and row["fc1"] == 0.833 and row["verdict"] == ""
    (kept,) = served({"deploy": {**deploy, "false_alarm_rate": 0.0115, "promised_false_alarm_rate": 0.01}}, "x")
    assert kept["verdict"] == "within 2x" and "watch" not in kept, "a summary from before the watch"
    watch = {"block_rows": 10_000, "blocks": 2, "broken_blocks": 2, "warnings": 1, "largest_share": 0.237}
    (watched,) = served({"deploy": {**deploy, "promised_false_alarm_rate": 0.01}, "watch": watch}, "x")
    assert (
        watched["watch"] == "would have warned 1 time(s): 2 of 2 block(s) of 10,000 rows broken, at most 23.7% flagged"
    )
    assert "at_promise" not in watched, "a summary from before the comparison at the promise"
    detectors = {"model": {"fc1_at_promise": 0.3334}, "pca": {"fc1_at_promise": 0.4302}}
    (held,) = served({"deploy": {**deploy, "promised_false_alarm_rate": 0.01, "detectors": detectors}}, "x")
    assert held["at_promise"] == (
        "Fc1 held to 1.0% false alarms (test labels): the model 0.333, PCA reconstruction error 0.430"
    )
    # The rule the run was not given, as evaluation replayed it: a row of its own.
    other = {
        "threshold_follow": "median",
        "served": "pca",
        "detectors": {"pca": {"fc1": 0.8839, "false_alarm_rate": 0.0471}},
    }
    summary = {
        "deploy": {**deploy, "promised_false_alarm_rate": 0.01},
        "threshold_follow": "none",
        "other_follows": [other],
    }
    fixed, following = served(summary, "x")
    assert fixed["case"] == row["case"]
    assert (
        following["case"] == "served by the deploy gate: PCA reconstruction error (quantile, threshold_follow median)"
    )
    assert following["far_ratio"] == pytest.approx(4.71) and following["fc1"] == 0.884 and following["verdict"] == ""
    # A gate that chose the rule says so beside the rule it chose.
    chosen, _ = served(summary | {"threshold_follow_setting": "auto"}, "x")
    assert (
        chosen["case"] == "served by the deploy gate: PCA reconstruction error (quantile, threshold_follow auto: none)"
    )
    # A rule over a window says so, served or replayed.
    windowed = summary | {"threshold_follow_setting": "auto", "threshold_follow": "median", "follow_window": 30}
    chosen, _ = served(windowed | {"other_follows": [other | {"follow_window": 30}]}, "x")
    assert chosen["case"].endswith("(quantile, threshold_follow auto: median over the newest 30 rows)")
    assert served(summary | {"other_follows": [other | {"follow_window": 30}]}, "x")[1]["case"].endswith(
        "(quantile, threshold_follow median over the newest 30 rows)"
    )


def test_budget_benchmark_trains_on_the_newest_rows(tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd

    from benchmarks.bench_budgets import _newest_rows
    from container_component_src import storage
    from tests.dataset_files import write_dataset

    times = pd.date_range("2021-01-01", periods=500, freq="1min", tz="UTC", name="normalizedTime")
    frame = pd.DataFrame({"a": np.arange(500, dtype=np.float32)}, index=times)
    write_dataset(str(tmp_path / "train"), frame, part_rows=120)
    newest = storage.read_parquet(_newest_rows(str(tmp_path / "train"), 50, str(tmp_path / "newest")))
    pd.testing.assert_frame_equal(newest, frame.iloc[-50:], check_freq=False)
