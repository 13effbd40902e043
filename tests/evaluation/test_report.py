import numpy as np
import pandas as pd

from container_component_src.evaluation import report
from container_component_src.evaluation.evaluate import EvaluateOptions, evaluate_scores


def test_decimate_keeps_extremes_within_budget() -> None:
    values = np.random.default_rng(0).normal(size=100_001)
    values[12_345], values[54_321] = 100.0, -100.0
    kept = report.decimate(values, 1000)
    assert len(kept) <= 1000 and 12_345 in kept and 54_321 in kept and (np.diff(kept) > 0).all()
    assert report.decimate(values[:10], 1000).tolist() == list(range(10))


def test_symlog_keeps_sign_and_order() -> None:
    x = np.array([-1000.0, -1.0, 0.0, 1.0, 9.0, 1000.0])
    y = report.symlog(x)
    assert (np.diff(y) > 0).all() and y[2] == 0 and y[4] == 1.0


def test_report_is_one_self_contained_page() -> None:
    rng = np.random.default_rng(1)
    times = pd.date_range("2021-01-01", periods=600, freq="1min", tz="UTC")
    labels = np.zeros(500, dtype=int)
    labels[200:220] = 1
    test_scores = rng.normal(size=500) + 5 * labels
    val_scores = rng.normal(size=100)
    summary, sweep = evaluate_scores(val_scores, test_scores, labels, EvaluateOptions(n_thresholds=50))
    summary |= {
        "model": "m",
        "options": {"smoothing_window": 1, "val_quantile": 0.99},
        "counts": {"val_rows": 100, "test_rows": 500, "test_events": 1, "anomaly_share": 0.04},
    }
    results = pd.DataFrame(
        {
            "split": ["val"] * 100 + ["test"] * 500,
            "segment": [0] * 100 + [1] * 500,
            "smoothed_score": np.concatenate((val_scores, test_scores)),
        },
        index=times,
    )
    events = pd.DataFrame({"start": [times[300]], "end": [times[319]]})
    view = report.EventView(
        title="Event 1",
        times=times[280:340],
        channels=["a", "b"],
        contributions=rng.random((2, 60)),
        values=rng.random((2, 60)),
        start=times[300],
        end=times[319],
    )
    page = report.render_report(results, sweep, summary, events, [view])
    assert page.startswith("<!DOCTYPE html>") and page.count("Plotly.newPlot") == 4
    assert "<script src" not in page.replace(" ", ""), "no script may come from the network"
    assert "Fc1 (composite)" in page and "Event 1" in page
