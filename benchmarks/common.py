"""Shared helpers of the benchmarks: timing, the benchmark data set, result tables."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from container_component_src.data.generate import GeneratorOptions, run_generate_data
from container_component_src.evaluation.decision import DETECTOR_LABELS

RESULTS_DIR = Path(__file__).parent / "results"
# Tens of millions of rows: three years at a 3 s nominal period, 16 channels (~30 M rows).
FULL = GeneratorOptions(years=(2021, 2022, 2023), days_per_year=365, sampling_period_s=3.0, n_channels=16, seed=7)
SMALL = GeneratorOptions(years=(2021, 2022), days_per_year=30, sampling_period_s=3.0, n_channels=16, seed=7)
# For the benchmarks' own smoke test.
TINY = GeneratorOptions(years=(2021,), days_per_year=3, sampling_period_s=60.0, n_channels=4, seed=7)
# The data the pipeline runs on by default (two years of 21 days at 10 s).
DEFAULT = GeneratorOptions(seed=7)
SIZES = {"full": FULL, "small": SMALL, "default": DEFAULT, "tiny": TINY}


def default_data_settings(folder: str) -> Any:
    """The project's settings with the default data, the local runs and the served model all
    under `folder`, the data generated there when absent (the real environment is not read, so
    that the figures do not depend on the shell)."""
    import dataclasses

    from container_component_src.config import load_settings
    from pipeline.compile_and_run_pipeline import ensure_local_data

    settings = load_settings(Path(__file__).resolve().parents[1] / "config.toml", environ={})
    settings = dataclasses.replace(
        settings,
        data=dataclasses.replace(settings.data, root=f"{folder}/data", local_pipeline_root=f"{folder}/runs"),
        serving=dataclasses.replace(settings.serving, local_model_dir=f"{folder}/served"),
    )
    ensure_local_data(settings)
    return settings


def threshold_rows(
    benchmark: str, summary: dict[str, Any], seconds: float, published: str = ""
) -> list[dict[str, Any]]:
    """One detection-quality row per threshold of an evaluation summary (label-free, top-k,
    best Fc1), each with the baselines of the same run at that threshold."""
    base = summary["baselines"]
    # The threshold rule too, where the run followed one (`auto`: the one the gate chose).
    rule = summary.get("threshold_follow", "none")
    setting = summary.get("threshold_follow_setting", rule)
    named = rule if setting == rule else f"{setting}: {rule}"
    follow = "" if named == "none" else f", threshold_follow {named}"
    cases = (
        (f"label-free ({summary['threshold_method']}{follow})", summary["label_free"], "raw_signal_fc1"),
        ("top-k (test labels)", summary["top_k"], "raw_signal_top_k_fc1"),
        ("best-Fc1 (test labels)", summary["best_fc1"], "raw_signal_best_fc1"),
    )
    return [
        {
            "benchmark": benchmark,
            "case": f"{threshold} threshold",
            "seconds": round(seconds, 1),
            "rows": summary["counts"]["test_rows"],
            "fc1": round(values["fc1"], 3),
            "f1": round(values["f1"], 3),
            "pr_auc": round(summary["pr_auc"], 3),
            "baseline": (
                f"all-positive Fc1 {base['all_positive_fc1']:.3f}, random {base['random_fc1']:.3f}, "
                f"raw signal {base[raw_key]:.3f}"
                + (f", PCA {base[raw_key.replace('raw_signal', 'pca')]:.3f}" if "pca_fc1" in base else "")
            ),
            **({"published": published} if published else {}),
        }
        for threshold, values, raw_key in cases
    ]


def best_of(repeats: int, func: Callable[[], Any]) -> tuple[float, Any]:
    """Run `func` `repeats` times; return the fastest wall time and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - start)
    return best, result


def benchmark_data(root: Path, size: str) -> dict[str, str]:
    """Generate (once) the archives of the `size` data set under `root`."""
    options = SIZES[size]
    folder = root / f"eclss-{size}"
    urls = {
        "archives": str(folder / "archives"),
        "reports": str(folder / "anomaly_reports.xlsx"),
        "truth": str(folder / "ground_truth.parquet"),
    }
    if not Path(urls["truth"]).exists():
        run_generate_data(urls["archives"], urls["reports"], urls["truth"], options)
    return urls


def calibration_rows(benchmark: str, judged: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per label-free threshold: its promised and observed false-alarm rates on normal
    rows, as `evaluate.calibration` judged them."""
    return [
        {
            "benchmark": benchmark,
            "case": f"{method} threshold",
            "nominal_far": values["nominal_false_alarm_rate"],
            "observed_far": values["false_alarm_rate"],
            "far_ratio": values["ratio"],
            "better_calibrated": method == judged["better_calibrated"],
        }
        for method, values in judged["methods"].items()
    ]


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def save(name: str, rows: list[dict[str, Any]]) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), "results": rows}, indent=2))
    return path


def watch_sentence(watch: dict[str, Any]) -> str:
    """The replayed watch (`evaluate.replay_watch`) in a few words."""
    if not watch["blocks"]:
        return f"fewer test rows than a block of {watch['block_rows']:,}"
    return (
        f"would have warned {watch['warnings']} time(s): {watch['broken_blocks']} of {watch['blocks']} block(s) of "
        f"{watch['block_rows']:,} rows broken, at most {watch['largest_share']:.1%} flagged"
    )


def at_promise_sentence(deploy: dict[str, Any]) -> str:
    """Each detector's Fc1 held to the promised false-alarm rate (`evaluate`'s `fc1_at_promise`:
    thresholds read off the test labels), in a few words; empty for a summary without it."""
    found = {name: d["fc1_at_promise"] for name, d in deploy.get("detectors", {}).items() if "fc1_at_promise" in d}
    if not found:
        return ""
    figures = ", ".join(f"{DETECTOR_LABELS.get(name, name)} {value:.3f}" for name, value in found.items())
    return f"Fc1 held to {deploy['promised_false_alarm_rate']:.1%} false alarms (test labels): {figures}"
