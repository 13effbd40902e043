import base64
import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from container_component_src.evaluation import report
from container_component_src.evaluation.evaluate import EvaluateOptions, evaluate_scores, event_table


def test_decimate_keeps_extremes_within_budget() -> None:
    values = np.random.default_rng(0).normal(size=100_001)
    values[12_345], values[54_321] = 100.0, -100.0
    kept = report.decimate(values, 1000)
    assert len(kept) <= 1000 and 12_345 in kept and 54_321 in kept and (np.diff(kept) > 0).all()
    assert report.decimate(values[:10], 1000).tolist() == list(range(10))


def test_decimate_keeps_every_flagged_row_of_twenty_million() -> None:
    values = np.zeros(20_000_000, dtype=np.float32)
    flagged = np.zeros(values.size, dtype=bool)
    flagged[[7, 7_000_001, 19_999_999]] = True  # flat scores: only the flags tell these rows apart
    values[123_456] = 9.0
    kept = report.decimate(values, 2000, keep=flagged)
    assert {7, 7_000_001, 19_999_999, 123_456} <= set(kept.tolist()) and len(kept) <= 2003
    # A long alarm keeps its first and last row, not each of its million rows.
    flagged[1_000_000:2_000_000] = True
    kept = report.decimate(values, 2000, keep=flagged)
    assert {7, 1_000_000, 1_999_999, 7_000_001, 19_999_999} <= set(kept.tolist()) and len(kept) <= 2005


def test_symlog_keeps_sign_and_order() -> None:
    x = np.array([-1000.0, -1.0, 0.0, 1.0, 9.0, 1000.0])
    y = report.symlog(x)
    assert (np.diff(y) > 0).all() and y[2] == 0 and y[4] == 1.0


def _report() -> tuple[str, dict, pd.DataFrame]:
    """A report of 500 test rows with one event: the page, its summary and its test rows."""
    rng = np.random.default_rng(1)
    times = pd.date_range("2021-01-01", periods=600, freq="1min", tz="UTC")
    labels = np.zeros(500, dtype=int)
    labels[200:220] = 1
    test_scores = rng.normal(size=500) + 5 * labels
    val_scores = rng.normal(size=100)
    summary, sweep, flags = evaluate_scores(
        val_scores, test_scores, labels, EvaluateOptions(n_thresholds=50, threshold_follow="none")
    )
    summary |= {
        "model": "m",
        "options": {"smoothing_window": 1, "val_quantile": 0.99},
        "counts": {"val_rows": 100, "test_rows": 500, "test_events": 1, "anomaly_share": 0.04},
    }
    scores = np.concatenate((val_scores, test_scores))
    results = pd.DataFrame(
        {
            "split": ["val"] * 100 + ["test"] * 500,
            "segment": [0] * 100 + [1] * 500,
            "smoothed_score": scores,
            "label": np.concatenate((np.zeros(100, dtype=int), labels)),
            "prediction": np.concatenate((val_scores > summary["label_free"]["threshold"], flags)).astype(int),
        },
        index=times,
    )
    events = event_table(labels, times[100:], test_scores)
    test = results[results["split"] == "test"]
    threshold = summary["label_free"]["threshold"]
    summary["operations"] = report.operations(test, report.event_outcomes(events, test))
    summary["deploy"] = {"fc1": summary["label_free"]["fc1"], "fc1_name": "Fc1", "threshold": threshold}
    summary["decision"] = {"gate": 0.5, "deploy": summary["label_free"]["fc1"] > 0.5}
    view = report.EventView(
        title="Event 1",
        times=times[280:340],
        channels=["a", "b"],
        contributions=rng.random((2, 60)),
        values=rng.random((2, 60)),
        start=times[300],
        end=times[319],
    )
    page = report.render_report(results, sweep, summary, events, [view], dataset="Pump <7>")
    return page, summary, results[results["split"] == "test"]


def test_report_is_one_self_contained_page() -> None:
    page, summary, test = _report()
    threshold = summary["label_free"]["threshold"]
    assert "<h1>Pump &lt;7&gt; anomaly detection: evaluation</h1>" in page, "the title follows the data set"
    assert "<p class='lead'><b>Deployed</b>" in page and "false alarms per day" in page
    assert f"deployed threshold (label-free) {threshold:.4g}" in page, "the deployed threshold is named"
    assert page.count("<tr><td>2021-") == len(report.false_alarms(test)) > 0, "every false alarm is listed"
    assert "download='false_alarms.csv'" in page and "download='events.csv'" in page
    assert page.startswith("<!DOCTYPE html>") and page.count("Plotly.newPlot") == 4
    assert "<script src" not in page.replace(" ", ""), "no script may come from the network"
    assert "Fc1 (composite)" in page and "Event 1" in page
    assert "Labelled events: 1 found, 0 missed" in page and "False alarms:" in page
    assert "false-alarm rate (normal rows)" in page
    better = summary["calibration"]["better_calibrated"]
    assert "quantile promises 1.00% and flags" in page and f"<b>{better}</b> keeps its promise best" in page


def test_false_alarms_are_runs_of_flagged_normal_rows_within_a_segment() -> None:
    times = pd.date_range("2021-01-01", periods=10, freq="1min", tz="UTC")
    test = pd.DataFrame(
        {
            "prediction": [1, 1, 0, 1, 1, 1, 1, 0, 1, 1],
            "label": [0, 0, 0, 1, 1, 0, 0, 0, 0, 0],
            "segment": [0, 0, 0, 0, 0, 0, 1, 1, 1, 1],
            "smoothed_score": np.arange(10.0),
        },
        index=times,
    )
    alarms = report.false_alarms(test)
    # Rows 0-1; row 5 (the segment ends there); row 6 (a new segment); rows 8-9. The event's rows are no alarm.
    assert sorted(alarms["rows"].tolist()) == [1, 1, 2, 2]
    assert alarms["peak_score"].tolist() == [9.0, 6.0, 5.0, 1.0] and alarms["start"].iloc[0] == times[8]


def test_decision_range_and_time_ticks() -> None:
    scores = np.r_[np.linspace(-20, -10, 1000), 5000.0]
    low, high = report.decision_range(scores, {"label-free": -12.0, "best Fc1 (test labels)": -11.0})
    assert low <= -19.9 and -11.0 < high < 100, "the far outlier does not squeeze the decision region"
    times = pd.DatetimeIndex(
        [*pd.date_range("2021-01-01", periods=50, freq="1h"), *pd.date_range("2022-06-01", periods=50, freq="1h")]
    )
    ticks = report.time_ticks(times, count=10)["tickvals"]
    assert len(ticks) == 10 and sum(t.year == 2022 for t in ticks) >= 4, "both years get ticks"


def test_event_outcomes_time_to_detection_and_operations() -> None:
    times = pd.date_range("2021-01-01", periods=12, freq="10min", tz="UTC")
    test = pd.DataFrame(
        {
            "smoothed_score": [0, 5, 0, 0, 1, 3, 6, 0, 2, 1, 0, 9.0],
            "label": [0, 0, 0, 1, 1, 1, 1, 0, 1, 1, 0, 0],
            "segment": [0] * 12,
        },
        index=times,
    )
    test["prediction"] = (test["smoothed_score"] > 4).astype(int)
    events = event_table(test["label"].to_numpy(), times, test["smoothed_score"].to_numpy())
    outcomes = report.event_outcomes(events, test)
    assert outcomes["found"].tolist() == [True, False]
    # The first event starts at row 3 and is first flagged at row 6: 30 minutes later.
    assert outcomes["time_to_detection"].iloc[0] == pd.Timedelta("30min") and pd.isna(outcomes["detected"].iloc[1])
    ops = report.operations(test, outcomes)
    # Alarm episodes: rows 1, 6 and 11; two of them touch no labelled row. 6 normal rows = 1 hour.
    assert ops["alarm_episodes"] == 3 and ops["false_alarm_episodes"] == 2
    assert ops["normal_days"] == 1 / 24 and ops["false_alarms_per_day"] == 48.0
    assert ops["events_found"] == 1 and ops["median_time_to_detection_s"] == 1800.0
    assert ops["median_episode_s"] == 600.0 and report.duration(1800.0) == "30 min"
    # Rates a person reads: never in scientific notation.
    assert [report.rate(v) for v in (8.041, 57.34, 3230.4, float("nan"))] == ["8.04", "57.3", "3,230", "-"]


def test_every_false_alarm_is_listed_and_downloadable() -> None:
    starts = pd.date_range("2021-01-01", periods=120, freq="1h", tz="UTC")
    alarms = pd.DataFrame({"start": starts, "end": starts, "rows": 1, "peak_score": np.linspace(9, 5, 120)})
    outcomes = pd.DataFrame(
        {
            "start": starts[:1],
            "end": starts[:1],
            "peak_score": [3.0],
            "found": [False],
            "detected": pd.DatetimeIndex([pd.NaT], tz="UTC"),
            "time_to_detection": pd.TimedeltaIndex([pd.NaT]),
        }
    )
    page = report.outcome_tables(outcomes, alarms)
    assert page.count("<tr><td>2021-") == 120 and "120 run(s)" in page
    encoded = page.split("download='false_alarms.csv' href='data:text/csv;base64,")[1].split("'")[0]
    assert len(pd.read_csv(io.BytesIO(base64.b64decode(encoded)))) == 120
    assert "1 missed" in page and "<td>missed</td><td>-</td>" in page


@pytest.mark.skipif(
    not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")), reason="needs Chromium"
)
def test_the_report_renders_in_a_headless_browser(tmp_path: Path) -> None:
    """Chromium draws the page: the lead paragraph's box and the plots, not a blank page."""
    import matplotlib.image

    from pipeline.readme_figures import screenshot

    page = tmp_path / "report.html"
    page.write_text(_report()[0])
    screenshot(page, tmp_path / "report.png", width=1200, height=1400)
    pixels = matplotlib.image.imread(tmp_path / "report.png")
    assert pixels.shape[:2] == (1400, 1200)
    assert pixels[..., :3].std() > 0.05, "more than a blank page"
    # The lead paragraph's red bar on its left (#d62728) is drawn near the top.
    red = (pixels[:400, :200, 0] > 0.75) & (pixels[:400, :200, 1] < 0.3) & (pixels[:400, :200, 2] < 0.3)
    assert red.sum() > 100


def test_the_false_alarms_section_says_when_drifting_channels_carry_them() -> None:
    from container_component_src.evaluation.report import false_alarm_sources

    def channel(name: str, share: float, drift: float | None, weight: float = 1.0) -> dict[str, Any]:
        return {
            "channel": name, "share": share, "false_alarm_mean": 9.0, "validation_mean": 0.1,
            "weight": weight, "kind": "continuous", "drift_share": drift,
        }  # fmt: skip

    explained = {
        "detector": "pca",
        "rows": 3850,
        "sampled": 2000,
        "channels": [channel("Flow <RMS>", 0.6, 0.77), channel("Current", 0.4, None)],
        "drifting_share": 0.6,
    }
    html = false_alarm_sources(explained)
    assert "3,850 false-alarm rows (2,000 of them scored again) of the served detector (PCA" in html
    assert "<td class='text'>Flow &lt;RMS&gt;</td><td>60%</td>" in html
    assert "drifts in training (77% of its variance" in html
    assert "carry <b>60%</b> of it (Flow &lt;RMS&gt;)" in html and "<code>drift_weight</code> 0 (now 1)" in html
    # The setting that leaves out only the named ones, as config.toml takes it.
    import tomllib
    from html import unescape

    setting = unescape(html.split("<code>[training] named_weights</code>, e.g. <code>")[1].split("</code>")[0])
    assert tomllib.loads(f"named_weights = {setting}")["named_weights"] == {"Flow <RMS>": 0}
    explained |= {"drifting_share": 0.3}
    assert "drift_weight" not in false_alarm_sources(explained), "a minority: not the advice"
    assert false_alarm_sources({**explained, "channels": []}) == "" and false_alarm_sources(None) == ""


def test_the_lead_points_to_the_drifting_channels_behind_the_false_alarms() -> None:
    _, summary, _ = _report()
    assert "false-alarm-channels" not in report.lead(summary, "x"), "nothing explained: nothing said"
    summary["false_alarms"] = {"detector": "model", "rows": 9, "sampled": 9, "channels": [], "drifting_share": 0.9}
    assert (
        "Channels that drift in training carry 90% of the false alarms' excess score: "
        "<a href='#false-alarm-channels'>where they come from</a>."
    ) in report.lead(summary, "x")
    summary["false_alarms"]["drifting_share"] = 0.4
    assert "false-alarm-channels" not in report.lead(summary, "x")


def test_the_detectors_table_shows_each_false_alarm_rate_and_why_the_served_one_was_chosen() -> None:
    from container_component_src.evaluation.report import detectors_table
    from tests.decisions import skab_a_decision

    summary = {
        "label_free": {"fc1": 0.649, "false_alarm_rate": 0.0115},
        "best_fc1": {"fc1": 0.7},
        "pr_auc": 0.37,
        "at_promise": {"fc1": 0.62},
        "baselines": {
            "pca_fc1": 0.833,
            "pca_false_alarm_rate": 0.106,
            "pca_fc1_at_promise": 0.41,
            "pca_best_fc1": 0.85,
            "pca_pr_auc": 0.5,
        },
        "deploy": skab_a_decision().to_dict(),
    }
    table = detectors_table(summary)
    assert "<th>false alarms, label-free (1.00% promised)</th>" in table
    assert "<th>Fc1 at 1.00% false alarms (test labels)</th>" in table
    assert "<th>the model</th><td>0.6490</td><td>1.15%</td><td>0.6200</td>" in table
    assert "<th>PCA reconstruction error</th><td>0.8330</td><td>10.60%</td><td>0.4100</td>" in table
    assert "Held to the same false-alarm rate, the 1.00% promised" in table
    assert "the model detects most: Fc1 0.620 (PCA reconstruction error 0.410)" in table
    del summary["at_promise"], summary["baselines"]["pca_fc1_at_promise"]  # a summary from before
    before = detectors_table(summary)
    assert "Held to" not in before and "<th>the model</th><td>0.6490</td><td>1.15%</td><td></td>" in before
    assert "The deploy step serves the model: its false alarms keep their promise (1.15% of normal rows" in table


def test_the_detectors_table_says_what_the_other_threshold_rule_would_serve() -> None:
    from container_component_src.evaluation.report import detectors_table
    from tests.decisions import skab_a_decision

    summary = {
        "label_free": {"fc1": 0.649, "f1": 0.52, "false_alarm_rate": 0.0115},
        "best_fc1": {"fc1": 0.7},
        "pr_auc": 0.37,
        "baselines": {
            "pca_fc1": 0.833,
            "pca_f1": 0.66,
            "pca_false_alarm_rate": 0.106,
            "pca_best_fc1": 0.85,
            "pca_pr_auc": 0.5,
        },
        "deploy": skab_a_decision("model").to_dict(),
        "other_follows": [
            {
                "threshold_follow": "median",
                "detectors": {"pca": {"fc1": 0.884, "f1": 0.41, "false_alarm_rate": 0.0471}},
                "served": "pca",
            },
            {
                "threshold_follow": "spread",
                "detectors": {"pca": {"fc1": 0.913, "f1": 0.58, "false_alarm_rate": 0.0218}},
                "served": "pca",
            },
        ],
    }
    note = (
        'With following each run\'s median score (<code>threshold_follow = "median"</code>) instead, the gate '
        "would serve PCA reconstruction error: 4.71% false alarms against 1.15% now, Fc1 0.884 against 0.649, "
        "point F1 0.410 against 0.520. With following each run's median and lower-quartile spread "
        '(<code>threshold_follow = "spread"</code>) instead, the gate would serve PCA reconstruction error: 2.18% '
        "false alarms against 1.15% now, Fc1 0.913 against 0.649, point F1 0.580 against 0.520."
    )
    price = "A lower point F1 under a following rule than under the fixed one means alarms that clear while"
    assert note in detectors_table(summary) and price in detectors_table(summary), "the median rule's 0.410"
    assert "iqr rule" not in detectors_table(summary), "no iqr figures here"
    # Served under the spread rule, the fixed rule's point F1 above it: the price is named too.
    summary["threshold_follow"] = "spread"
    summary["other_follows"][1] |= {"threshold_follow": "none"}
    assert price in detectors_table(summary)
    # The iqr rule's point F1 below the fixed one's: its own, shorter, fault length is named.
    iqr = {"threshold_follow": "iqr", "detectors": {"pca": {"fc1": 0.92, "f1": 0.43, "false_alarm_rate": 0.012}}}
    summary["other_follows"].append(iqr | {"served": "pca"})
    assert "under the iqr rule one a third as long widens the run's range." in detectors_table(summary)
    summary["other_follows"].pop()
    # A rule over a window, its point F1 below the fixed one's: the window is named, and its price.
    windowed = {"threshold_follow": "median", "follow_window": 30, "served": "pca"}
    summary["other_follows"].append(
        windowed | {"detectors": {"pca": {"fc1": 0.74, "f1": 0.2, "false_alarm_rate": 0.017}}}
    )
    table = detectors_table(summary)
    assert (
        'With following each run\'s median score over its newest 30 rows (<code>threshold_follow = "median"</code>, '
        "<code>follow_window = 30</code>) instead, the gate would serve PCA reconstruction error: 1.70% false alarms"
    ) in table
    assert "run's level, and over a window, one half the window long becomes the run's normal." in table
    summary["other_follows"].pop()
    # A summary from before the spread rule: one other rule, the fixed one, below the median rule.
    summary["threshold_follow"] = "median"
    summary["other_follow"] = summary.pop("other_follows")[0] | {"threshold_follow": "none"}
    fixed = detectors_table(summary)
    assert 'With a fixed threshold (<code>threshold_follow = "none"</code>) instead' in fixed
    assert "clear while" not in fixed, "the following rule's point F1 is the higher"
    del summary["other_follow"]  # a summary from before
    assert "instead, the gate" not in detectors_table(summary)


def test_the_lead_says_why_the_model_is_served_over_a_higher_fc1() -> None:
    from tests.decisions import skab_a_decision

    _, summary, _ = _report()
    assert "Served:" not in report.lead(summary, "x"), "the model, and no detector ahead of it: nothing to say"
    summary["deploy"] = skab_a_decision("model").to_dict()
    served = "<b>Served: the model: its false alarms keep their promise (1.15% of normal rows"
    assert served in report.lead(summary, "x")


def test_the_watch_note_says_what_the_server_would_have_said() -> None:
    deploy = {"promised_false_alarm_rate": 0.01, "promise_tolerance": 2.0}
    watch = {"block_rows": 10_000, "blocks": 3, "broken_blocks": 2, "warnings": 1, "largest_share": 0.2077}
    note = report._watch_note(watch, deploy)
    assert "blocks of 10,000 rows" in note and "against the 1.00% promised" in note
    assert "it would have warned <b>1</b> time(s): 2 of 3 block(s) flagged more than 2x the promise" in note
    assert "(at most 20.77%)" in note
    assert "fewer than one block" in report._watch_note(watch | {"blocks": 0, "largest_share": None}, deploy)
    assert "judges nothing" in report._watch_note(watch, deploy | {"promise_tolerance": 0.0})
    assert report._watch_note(None, deploy) == "", "summaries from before the watch"
