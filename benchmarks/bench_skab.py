"""Detection quality on SKAB (real sensor data of a water-circulation test bed), two protocols.

A (Garg et al. 2021): the whole pipeline through `import-telemetry` and kfp.local: train on
anomaly-free.csv, test on the 34 experiment files (stacked in time, an hour apart, named as the
test periods of the split).
B (SKAB's leaderboard): per experiment file, fit the scaler and the VAE on its first 400 rows,
score the rest; per-point F1, false-alarm and missed-alarm rates over all files.

Every figure comes with the all-positive, random and raw-signal baselines of the same run, and
the published figures listed in the data set's SOURCE.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import at_promise_sentence, calibration_rows, threshold_rows, watch_sentence

SKAB = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "skab"
CHANNELS = [
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
]
PUBLISHED_A = "Garg et al. 2021 Fc1: UAE 0.560, LSTM-VAE 0.543, raw signal 0.541"
PUBLISHED_B = "SKAB leaderboard F1: Conv-AE 0.78 (FAR 13.55 %, MAR 28.02 %), LSTM-VAE 0.56, Isolation Forest 0.29"
# Protocol A's pipeline parameters: SKAB is sampled at 1 Hz, recordings last ~20 min; the test
# set is the experiment files (test_periods from import-telemetry), training anomaly-free.csv.
# The recordings differ in level (another set-up of the test bed each time) and each starts in
# normal operation: every run is scaled relative to its first minute (reference_rows).
PROTOCOL_A_PARAMS = {"resample_period": "1s", "block_hours": 0.25, "reference_rows": 60}


def experiment_files(root: Path = SKAB) -> list[Path]:
    return sorted(p for folder in ("valve1", "valve2", "other") for p in (root / folder).glob("*.csv"))


def import_skab(root: Path, folder: Path) -> dict[str, str]:
    """Import anomaly-free.csv and the experiments (stacked) into archives and reports; the
    experiments' time spans are the test periods."""
    from container_component_src.data.import_telemetry import ImportOptions, run_import_telemetry

    sources = [str(root / "anomaly-free" / "anomaly-free.csv"), *map(str, experiment_files(root))]
    urls = {"archives": str(folder / "archives"), "reports": str(folder / "reports.xlsx")}
    options = ImportOptions(
        timestamp_column="datetime",
        label_column="anomaly",
        separator=";",
        drop_columns=("changepoint",),
        stack=True,
        test_sources=tuple(str(p) for p in experiment_files(root)),
    )
    result = run_import_telemetry(sources, urls["archives"], urls["reports"], options)
    return urls | {"test_periods": result["test_periods"]}


def run_protocol_a(
    root: Path, folder: Path, extra_params: dict[str, Any] | None = None, environ: dict[str, str] | None = None
) -> dict[str, Any]:
    """The pipeline, locally, on SKAB; returns the evaluation summary.

    Args:
        extra_params: Pipeline parameters beside `PROTOCOL_A_PARAMS`.
        environ: Settings overrides, as ECLSS_<SECTION>__<KEY> variables (the real environment
            is not read, so that the figures do not depend on the shell).
    """
    import json

    from container_component_src.config import load_settings
    from pipeline.compile_and_run_pipeline import run_local

    urls = import_skab(root, folder)
    settings = load_settings(Path(__file__).resolve().parents[1] / "config.toml", environ=environ or {})
    settings = dataclasses.replace(
        settings,
        data=dataclasses.replace(
            settings.data,
            root=str(folder),
            archives=Path(urls["archives"]).name,
            reports=Path(urls["reports"]).name,
            local_pipeline_root=str(folder / "runs"),
        ),
    )
    params = {**PROTOCOL_A_PARAMS, "test_periods": urls["test_periods"], **(extra_params or {})}
    local_run = run_local(settings, params, caching=False)
    return json.loads(Path(local_run.outputs["evaluation_summary"]).read_text())


def protocol_a_rows(summary: dict[str, Any], seconds: float) -> list[dict[str, Any]]:
    benchmark = "SKAB protocol A (pipeline)"
    rows = threshold_rows(benchmark, summary, seconds, PUBLISHED_A)
    return [*rows, _deployed_row(summary, seconds), *calibration_rows(benchmark, summary["calibration"])]


def _deployed_row(summary: dict[str, Any], seconds: float) -> dict[str, Any]:
    """What the deploy gate serves: the detector with the highest label-free Fc1, and by how much."""
    deploy = summary["deploy"]
    return {
        "benchmark": "SKAB protocol A (pipeline)",
        "case": f"served by the deploy gate: {deploy.get('detector', 'model')}, label-free threshold",
        "seconds": round(seconds, 1),
        "rows": summary["counts"]["test_rows"],
        "fc1": round(deploy["fc1"], 3),
        "far": round(deploy["false_alarm_rate"], 3),
        "baseline": f"{deploy['choice']}; false alarms {deploy['false_alarm_rate']:.1%} of normal rows against "
        f"{deploy['promised_false_alarm_rate']:.1%} promised"
        + (f"; the server's watch {watch_sentence(summary['watch'])}" if "watch" in summary else "")
        + (f"; {sentence}" if (sentence := at_promise_sentence(deploy)) else ""),
        "published": PUBLISHED_A,
    }


def _point_rates(flags: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    from container_component_src.evaluation.metrics import metrics_at

    m = metrics_at(flags.astype(float), labels, 0.5)
    negatives, positives = int((labels == 0).sum()), int((labels == 1).sum())
    return {
        "f1": m["f1"],
        "far": m["fp"] / negatives if negatives else 0.0,
        "mar": m["fn"] / positives if positives else 0.0,
    }


# Protocol B's model: the product's windowed VAE, trained on the first 400 rows of each file, its
# scores smoothed by a trailing median over 30 rows (half a minute at 1 Hz). The model scores rows
# up to three times as far past the fitted ones as they span: the channels `fit_scaler` finds
# drifting in them (mostly Temperature and Thermocouple, warming through each run) are left out
# of the score (drift_weight 0).
PROTOCOL_B_PARAMS = {"learning_rate": 3e-3, "batch_size": 64, "hidden_size": 32, "latent_dim": 3, "model": "window"}
PROTOCOL_B_DRIFT_WEIGHT = 0.0
PROTOCOL_B_FIT_ROWS = 400
PROTOCOL_B_SMOOTHING = 30
# The diagnostic's new reference after a labelled anomaly: the mean of its next minute's rows.
PROTOCOL_B_REBASE_ROWS = 60
# An operator's rule on protocol B: SKAB's two temperature channels, which the drift rule names in
# most files' first 400 rows but not in all, left out by name in every file (`named_weights`).
PROTOCOL_B_NAMED_WEIGHTS = {"Temperature": 0.0, "Thermocouple": 0.0}


def _scores(
    vae: Any, rows: np.ndarray, segments: np.ndarray, weights: list[float], smoothing_window: int
) -> list[np.ndarray]:
    """The smoothed scores of scaled rows by the model, the raw signal, the raw signal with the
    model's channel weights and PCA (of the fitted rows, with those weights; the pipeline's second
    classical detector)."""
    from container_component_src.evaluation.scoring import score_rows, smooth_scores
    from container_component_src.model.residual import ResidualDetector

    squares = np.square(rows, dtype=np.float64)
    fitted = np.asarray(rows[:PROTOCOL_B_FIT_ROWS], dtype=np.float64)
    pca = ResidualDetector.principal(len(fitted), fitted.sum(axis=0), fitted.T @ fitted, np.asarray(weights))
    return [
        smooth_scores(score, smoothing_window, segments)
        for score in (
            score_rows(vae, rows, segments),
            squares.sum(axis=1),
            squares @ np.asarray(weights),
            pca.scores(rows),
        )
    ]


def _flags(scores: list[np.ndarray], options: Any) -> dict[str, list[np.ndarray]]:
    """By label-free threshold method: each detector's flags by the product's rule
    (`evaluate.label_free_flags`), its threshold from the fitted rows' scores. The rows after them
    are the stream a served model would meet (one run: a threshold that follows the median score
    follows theirs); the fitted rows, in-sample like validation, are judged by the threshold as set."""
    from container_component_src.evaluation.evaluate import label_free_flags, label_free_thresholds

    fit = PROTOCOL_B_FIT_ROWS
    by_method = [label_free_thresholds(s[:fit], options) for s in scores]
    return {
        str(method): [
            np.concatenate([s[:fit] > limits[method], label_free_flags(s[:fit], s[fit:], limits[method], options)])
            for s, limits in zip(scores, by_method, strict=True)
        ]
        for method in by_method[0]
    }


def run_protocol_b(
    root: Path = SKAB,
    params: dict[str, Any] | None = None,
    smoothing_window: int = PROTOCOL_B_SMOOTHING,
    threshold: str = "quantile",
    max_epochs: int = 200,
    named_weights: dict[str, float] | None = None,
    threshold_follow: str = "none",
    follow_window: int = 0,
) -> dict[str, Any]:
    """Per file: fit the scaler and the model on the first 400 rows (the last fifth of them
    validates), score every row, flag by the label-free threshold of the first 400 rows' scores
    (following the scores of the rows after them with `threshold_follow` "median", "spread" or
    "iqr", over the whole file or its newest `follow_window` rows).
    Rates are counted over whole files, as SKAB's leaderboard does (its notebooks score and count
    the fitted rows too), and over the rows after the first 400 only. `named_weights`: as
    `train`'s, in every file."""
    import torch
    from tqdm.auto import tqdm

    from container_component_src.choices import ThresholdMethod
    from container_component_src.data.scaling import fit_scaler, scale_values
    from container_component_src.evaluation.evaluate import EvaluateOptions, calibration, nominal_false_alarm_rates
    from container_component_src.evaluation.metrics import baselines, find_events
    from container_component_src.model.data import TelemetryDataModule
    from container_component_src.model.rows import MemoryRows
    from container_component_src.model.train import (
        ModelParams,
        TrainOptions,
        calibrate,
        channel_weights,
        fit,
        left_out_bounds,
        mode_channel_indices,
    )

    model_params = ModelParams(**{**PROTOCOL_B_PARAMS, **(params or {})})
    options = TrainOptions(
        max_epochs=max_epochs,
        patience=20,
        accelerator="cpu",
        progress=False,
        drift_weight=PROTOCOL_B_DRIFT_WEIGHT,
        named_weights=named_weights or {},
    )
    thresholds = EvaluateOptions(
        threshold_method=threshold, threshold_follow=threshold_follow, follow_window=follow_window
    )
    fit_rows, n_val = PROTOCOL_B_FIT_ROWS, PROTOCOL_B_FIT_ROWS // 5
    # Each detector at the deployed threshold (`threshold`), the model and the raw signals at the
    # other label-free one, and the diagnostic's model and raw signal.
    other = next(str(m) for m in ThresholdMethod if m != threshold)
    detectors = ("model", "raw_signal", "raw_signal_weighted", "pca")
    per_file: dict[str, list[np.ndarray]] = {
        name: []
        for name in (*detectors, *(f"{name} ({other})" for name in detectors), "model_rebased", "raw_signal_rebased")
    }
    per_file_scores: dict[str, list[np.ndarray]] = {name: [] for name in detectors}
    drifting: dict[str, int] = {}
    all_labels = []
    for path in tqdm(experiment_files(root), desc="protocol B", unit="file"):
        frame = pd.read_csv(path, sep=";", parse_dates=["datetime"]).sort_values("datetime")
        values, labels = frame[CHANNELS].to_numpy(np.float64), frame["anomaly"].to_numpy().astype(int)
        scaler = fit_scaler(frame.iloc[:fit_rows], CHANNELS)
        scaled = scale_values(values, scaler)
        # Contiguous, so that windows stay whole: the first 320 rows train, the next 80 validate.
        train = torch.from_numpy(scaled[: fit_rows - n_val])
        val = torch.from_numpy(scaled[fit_rows - n_val : fit_rows])
        # As `train` does: the scaler's mode channels (Pressure sits at a few levels in some
        # files' first 400 rows) weigh `mode_weight`, its drifting ones `drift_weight`.
        weights = channel_weights(scaler, options.mode_weight, options.drift_weight, options.named_weights)
        # The per-epoch objective lines are for Katib: keep them out of the benchmark's output.
        with tempfile.TemporaryDirectory() as checkpoints, contextlib.redirect_stdout(io.StringIO()):
            _, best = fit(
                TelemetryDataModule.from_rows(train, val, model_params.batch_size),
                len(CHANNELS),
                model_params,
                options,
                checkpoints,
                mode_channel_indices(scaler),
                left_out_bounds(scaler, weights),
            )
        calibrate(best.vae, MemoryRows(val), weights)
        for channel in scaler["drifting_channels"]:
            drifting[channel] = drifting.get(channel, 0) + 1
        score = functools.partial(_scores, best.vae, weights=weights, smoothing_window=smoothing_window)
        scores = score(scaled, np.zeros(len(scaled), np.int64))
        for name, series in zip(detectors, scores, strict=True):
            per_file_scores[name].append(series)
        flags = _flags(scores, thresholds)
        # The diagnostic: each labelled anomaly's end starts a new segment scaled relative to its
        # next rows, which are not flagged while they are measured.
        ends = find_events(labels)[1]
        ends = ends[ends < len(labels)]
        rebased = scaled.copy()
        for end in ends:
            rebased[end:] = scale_values(values[end:], scaler, values[end : end + PROTOCOL_B_REBASE_ROWS].mean(axis=0))
        rebased_scores = score(rebased, np.searchsorted(ends, np.arange(len(labels)), side="right"))
        rebased_flags = _flags(rebased_scores, thresholds)[threshold][:2]
        for end in ends:
            for f in rebased_flags:
                f[end : end + PROTOCOL_B_REBASE_ROWS] = False
        for store, f in zip(per_file.values(), (*flags[threshold], *flags[other], *rebased_flags), strict=True):
            store.append(f)
        all_labels.append(labels)
    result: dict[str, Any] = {
        "files": len(all_labels),
        "drifting": drifting,
        "threshold": threshold,
        "other": other,
        # Each file's smoothed scores by detector, and its labels: other threshold rules replay them.
        "scores": per_file_scores,
        "labels": all_labels,
    }
    for counting, start in (("whole files", 0), ("after the fitted rows", fit_rows)):
        labels = np.concatenate([y[start:] for y in all_labels])
        stacked = {name: np.concatenate([f[start:] for f in store]) for name, store in per_file.items()}
        result[counting] = {
            **{name: _point_rates(f, labels) for name, f in stacked.items()},
            "all_positive": _point_rates(np.ones_like(labels, dtype=bool), labels),
            "random_f1": baselines(labels, float(stacked["model"].mean()))["random_f1"],
            "rows": int(labels.size),
        }
    # Calibration on the rows the thresholds did not see: the model's false-alarm rate after the
    # fitted rows at each label-free threshold, against the rate it promises.
    after = result["after the fitted rows"]
    observed = {threshold: after["model"], other: after[f"model ({other})"]}
    result["calibration"] = calibration(
        {method: {"false_alarm_rate": rates["far"]} for method, rates in observed.items()},
        nominal_false_alarm_rates(PROTOCOL_B_FIT_ROWS, thresholds),
        int(sum((y[fit_rows:] == 0).sum() for y in all_labels)),
    )
    return result


def protocol_b_rows(result: dict[str, Any], seconds: float) -> list[dict[str, Any]]:
    drifting = ", ".join(
        f"{channel} in {count}" for channel, count in sorted(result["drifting"].items(), key=lambda item: -item[1])
    )

    def row(case: str, part: dict[str, Any], model: dict[str, float], baseline: str, published: str) -> dict[str, Any]:
        return {
            "benchmark": "SKAB protocol B (leaderboard)",
            "case": case,
            "seconds": round(seconds, 1),
            "rows": part["rows"],
            "f1": round(model["f1"], 3),
            "far": round(model["far"], 3),
            "mar": round(model["mar"], 3),
            "baseline": baseline,
            "published": published,
        }

    def rates(name: str, rate: dict[str, float]) -> str:
        return f"{name} F1 {rate['f1']:.3f} (FAR {rate['far']:.3f}, MAR {rate['mar']:.3f})"

    rows = []
    cases = [(counting, result["threshold"], "") for counting in ("whole files", "after the fitted rows")]
    for counting, method, suffix in [*cases, ("whole files", result["other"], f" ({result['other']})")]:
        part = result[counting]
        weighted = rates("raw signal with the model's channel weights", part["raw_signal_weighted" + suffix])
        pca = rates("PCA", part["pca" + suffix])
        baseline = f"{rates('raw signal', part['raw_signal' + suffix])}; {weighted}; {pca}"
        if not suffix:
            baseline += f"; all-positive F1 {part['all_positive']['f1']:.3f}; random F1 {part['random_f1']:.3f}"
        case = (
            f"{result['files']} files, fit on first 400 rows each, {method} threshold, counted over {counting}; "
            f"drifting channels (weight {PROTOCOL_B_DRIFT_WEIGHT:g}): {drifting or 'none'}"
        )
        rows.append(row(case, part, part["model" + suffix], baseline, PUBLISHED_B))
    part = result["whole files"]
    case = (
        "diagnostic, labels used: whole files, each run re-baselined at the end of its labelled "
        f"anomaly (the next {PROTOCOL_B_REBASE_ROWS} rows' mean, not flagged)"
    )
    rows.append(row(case, part, part["model_rebased"], rates("raw signal", part["raw_signal_rebased"]), ""))
    return rows + calibration_rows("SKAB protocol B, rows after the fitted 400", result["calibration"])


def run(root: Path = SKAB, folder: Path | None = None) -> list[dict[str, Any]]:
    """Both protocols, protocol B also with `PROTOCOL_B_NAMED_WEIGHTS`; no rows when the data set is absent."""
    import time

    if not (root / "anomaly-free" / "anomaly-free.csv").is_file():
        print(f"SKAB not found in {root}: skipped")
        return []
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        summary = run_protocol_a(root, folder or Path(scratch))
        rows = protocol_a_rows(summary, time.perf_counter() - start)
    start = time.perf_counter()
    rows += protocol_b_rows(run_protocol_b(root), time.perf_counter() - start)
    start = time.perf_counter()
    named = run_protocol_b(root, named_weights=PROTOCOL_B_NAMED_WEIGHTS)
    rule = f"operator's rule, {' and '.join(PROTOCOL_B_NAMED_WEIGHTS)} left out by name in every file"
    # The deployed threshold's rows, over whole files and after the fitted rows (the first two).
    return rows + [
        {**row, "case": f"{rule}: {row['case']}"} for row in protocol_b_rows(named, time.perf_counter() - start)[:2]
    ]
