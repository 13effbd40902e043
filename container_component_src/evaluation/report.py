"""The evaluation report: one self-contained HTML page of interactive plotly figures.

plotly.js is inlined once, so the page opens from a local folder or the Kubeflow UI with no
network. Long series are decimated (per-bucket minimum and maximum, so peaks survive), and long
stretches without validation or test rows are cut from the time axis.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from container_component_src.evaluation.decision import DETECTOR_LABELS, MODEL, PCA, RAW_SIGNAL, DeployDecision

MAX_POINTS = 20_000
SPLIT_COLOURS = {"val": "#7f8c8d", "test": "#1f77b4"}
THRESHOLD_COLOURS = {"label-free": "#d62728", "best Fc1 (test labels)": "#2ca02c"}


@dataclass(frozen=True)
class EventView:
    """Rows around one anomaly event, for the per-channel view.

    Attributes:
        title: Heading of the event (id, time, peak score).
        times: Timestamps of the rows shown.
        channels: Channel names.
        contributions: Each channel's share of the score, shape (channels, rows).
        values: Scaled channel values, shape (channels, rows).
        start: First timestamp of the event.
        end: Last timestamp of the event.
    """

    title: str
    times: pd.DatetimeIndex
    channels: list[str]
    contributions: np.ndarray
    values: np.ndarray
    start: pd.Timestamp
    end: pd.Timestamp


def decimate(values: np.ndarray, max_points: int = MAX_POINTS, keep: np.ndarray | None = None) -> np.ndarray:
    """Indices of at most `max_points` rows that keep each bucket's minimum and maximum (so every
    peak), and besides the first and last row of each run where `keep` is true (the flagged rows:
    every alarm shows, however long, and the points grow with the alarms, not with their rows)."""
    n = len(values)
    if n <= max_points:
        return np.arange(n)
    if keep is not None:
        edges = np.flatnonzero(np.diff(np.concatenate(([False], keep, [False])).astype(np.int8)))
        return np.union1d(decimate(values, max_points), np.concatenate((edges[::2], edges[1::2] - 1)))
    bucket = -(-n // (max_points // 2))
    padded = np.full(-(-n // bucket) * bucket, np.nan)
    padded[:n] = values
    grid = padded.reshape(-1, bucket)
    offsets = np.arange(grid.shape[0]) * bucket
    low = np.nanargmin(np.where(np.isnan(grid), np.inf, grid), axis=1) + offsets
    high = np.nanargmax(np.where(np.isnan(grid), -np.inf, grid), axis=1) + offsets
    return np.unique(np.concatenate((low, high)))


def symlog(values: np.ndarray | float) -> np.ndarray:
    """sign(x) * log10(1 + |x|): a log scale that keeps sign and zero (scores span decades)."""
    values = np.asarray(values, dtype=np.float64)
    return np.sign(values) * np.log10(1.0 + np.abs(values))


def symlog_axis(low: float, high: float, title: str) -> dict[str, Any]:
    """A plotly axis for symlog-transformed data whose ticks read in the original units."""
    decades = [10.0**k for k in range(0, 10)]
    raw = sorted({0.0, *decades, *(-d for d in decades)})
    ticks = [v for v in raw if symlog(low) - 0.5 <= symlog(v) <= symlog(high) + 0.5]
    return {
        "title": f"{title} (symmetric log scale)",
        "tickvals": symlog(np.array(ticks)).tolist(),
        "ticktext": [f"{v:g}" for v in ticks],
        "range": [float(symlog(low)) - 0.1, float(symlog(high)) + 0.1],
    }


def _with_gaps(times: pd.DatetimeIndex, values: np.ndarray, segments: np.ndarray) -> tuple[list[Any], list[Any]]:
    """x/y lists with a None between segments, so lines do not bridge gaps in time."""
    breaks = np.flatnonzero(np.diff(segments)) + 1
    xs: list[Any] = []
    ys: list[Any] = []
    for part_x, part_y in zip(np.split(np.asarray(times), breaks), np.split(values, breaks), strict=True):
        xs += [*part_x, None]
        ys += [*part_y.tolist(), None]
    return xs, ys


def time_breaks(times: pd.DatetimeIndex, share: float = 0.05) -> list[dict[str, Any]]:
    """Plotly axis breaks hiding each stretch without data longer than a day and `share` of the span."""
    if len(times) < 2:
        return []
    ordered = times.sort_values()
    steps = ordered[1:] - ordered[:-1]
    limit = max(pd.Timedelta(days=1), share * (ordered[-1] - ordered[0]))
    return [
        {"values": [start.isoformat()], "dvalue": step.total_seconds() * 1e3}
        for start, step in zip(ordered[:-1][steps > limit], steps[steps > limit], strict=True)
    ]


def _runs(flagged: np.ndarray, segment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First row and end (exclusive) of each run of consecutive flagged rows within one segment."""
    new_segment = np.r_[True, segment[1:] != segment[:-1]]
    starts = np.flatnonzero(flagged & (new_segment | ~np.r_[False, flagged[:-1]]))
    ends = np.flatnonzero(flagged & (np.r_[new_segment[1:], True] | ~np.r_[flagged[1:], False])) + 1
    return starts, ends


def alarm_episodes(test: pd.DataFrame) -> pd.DataFrame:
    """Runs of consecutive flagged test rows (within one segment), in time order: start, end,
    rows, peak score, and whether any of its rows is labelled (`false`: none is).

    Args:
        test: Test rows with `prediction`, `label`, `segment` and `smoothed_score`, indexed by time.
    """
    starts, ends = _runs(test["prediction"].to_numpy() == 1, test["segment"].to_numpy())
    scores, labels = test["smoothed_score"].to_numpy(), test["label"].to_numpy()
    return pd.DataFrame(
        {
            "start": test.index[starts],
            "end": test.index[ends - 1],
            "rows": ends - starts,
            "peak_score": [float(scores[a:b].max()) for a, b in zip(starts, ends, strict=True)],
            "false": [not labels[a:b].any() for a, b in zip(starts, ends, strict=True)],
        }
    )


def false_alarms(test: pd.DataFrame) -> pd.DataFrame:
    """Runs of consecutive flagged test rows outside every labelled event (within one segment):
    start, end, rows and peak score, highest peak first.

    Args:
        test: Test rows with `prediction`, `label`, `segment` and `smoothed_score`, indexed by time.
    """
    alarm = (test["prediction"].to_numpy() == 1) & (test["label"].to_numpy() == 0)
    starts, ends = _runs(alarm, test["segment"].to_numpy())
    scores = test["smoothed_score"].to_numpy()
    return pd.DataFrame(
        {
            "start": test.index[starts],
            "end": test.index[ends - 1],
            "rows": ends - starts,
            "peak_score": [float(scores[a:b].max()) for a, b in zip(starts, ends, strict=True)],
        }
    ).sort_values("peak_score", ascending=False, ignore_index=True)


def grid_step(times: pd.DatetimeIndex) -> pd.Timedelta:
    """The rows' usual spacing (the median step; zero for fewer than two rows)."""
    if len(times) < 2:
        return pd.Timedelta(0)
    return pd.Timedelta(int(np.median(np.diff(times.asi8))), "ns")


def event_outcomes(events: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """Each labelled event at the deployed threshold: found or missed, its first flagged row and
    the time from the event's start to it (the time to detection), and its peak score.

    Args:
        events: `first_row`, `last_row`, `start`, `end`, `peak_score` per event (row positions in `test`).
        test: Test rows with `prediction` (the deployed label-free rule's flags), indexed by time.
    """
    flagged = test["prediction"].to_numpy() == 1
    detected, delays = [], []
    for first, last, start in zip(events["first_row"], events["last_row"], events["start"], strict=True):
        hits = np.flatnonzero(flagged[first : last + 1])
        detected.append(test.index[first + hits[0]] if len(hits) else pd.NaT)
        delays.append(test.index[first + hits[0]] - start if len(hits) else pd.NaT)
    return events.assign(
        found=pd.notna(detected) if len(events) else np.zeros(0, dtype=bool),
        detected=pd.DatetimeIndex(detected, tz=test.index.tz) if len(events) else pd.DatetimeIndex([]),
        time_to_detection=pd.TimedeltaIndex(delays) if len(events) else pd.TimedeltaIndex([]),
    )


def operations(test: pd.DataFrame, outcomes: pd.DataFrame) -> dict[str, Any]:
    """What an operator would live with at the deployed threshold: alarm episodes and false alarms
    per day of test data, how long episodes last, and how fast events are detected.

    Days are the test rows' own time (rows x the grid step), not the calendar span, so gaps between
    test windows do not dilute the rates.
    """
    episodes = alarm_episodes(test)
    step = grid_step(test.index)
    day = pd.Timedelta(days=1)
    normal_rows = int((test["label"].to_numpy() == 0).sum())
    test_days = len(test) * step / day
    normal_days = normal_rows * step / day
    lasting = episodes["rows"].to_numpy() * step.total_seconds()
    delays = outcomes.loc[outcomes["found"], "time_to_detection"].dropna().dt.total_seconds()
    false_count = int(episodes["false"].sum()) if len(episodes) else 0
    return {
        "grid_step_s": step.total_seconds(),
        "test_days": test_days,
        "normal_days": normal_days,
        "alarm_episodes": len(episodes),
        "false_alarm_episodes": false_count,
        "alarm_episodes_per_day": len(episodes) / test_days if test_days else float("nan"),
        "false_alarms_per_day": false_count / normal_days if normal_days else float("nan"),
        "median_episode_s": float(np.median(lasting)) if len(lasting) else float("nan"),
        "longest_episode_s": float(lasting.max()) if len(lasting) else float("nan"),
        "events_found": int(outcomes["found"].sum()),
        "events": len(outcomes),
        "median_time_to_detection_s": float(delays.median()) if len(delays) else float("nan"),
        "max_time_to_detection_s": float(delays.max()) if len(delays) else float("nan"),
    }


def decision_range(scores: np.ndarray, thresholds: dict[str, float]) -> list[float]:
    """The score range where the decision happens: from the bulk of the scores to a margin above
    the highest threshold (scores far above it are clearly flagged; zooming out shows them)."""
    low = float(np.quantile(scores, 0.005))
    top = max(thresholds.values())
    high = top + 2.0 * max(top - float(np.median(scores)), 1e-9)
    return [min(low, *thresholds.values()), high]


def time_ticks(times: pd.DatetimeIndex, count: int = 10) -> dict[str, Any]:
    """Ticks spread over the rows rather than over time: with the empty stretches cut from the
    axis, plotly's own ticks leave one tick for two years."""
    if len(times) == 0:
        return {}
    ordered = times.sort_values()
    picks = ordered[np.linspace(0, len(ordered) - 1, count).round().astype(int)].unique()
    return {"tickvals": list(picks), "ticktext": [f"{t:%Y-%m-%d}<br>{t:%H:%M}" for t in picks]}


def _shade(figure: Any, events: pd.DataFrame, colour: str, name: str) -> None:
    """One step-shaped area on a hidden 0-1 axis shades every interval, however many there are."""
    import plotly.graph_objects as go

    starts, ends = events["start"].to_numpy(), events["end"].to_numpy()
    figure.add_trace(
        go.Scatter(
            x=np.stack((starts, starts, ends, ends), axis=1).ravel(),
            y=np.tile([0, 1, 1, 0], len(events)),
            fill="tozeroy",
            mode="none",
            yaxis="y2",
            fillcolor=colour,
            name=name,
            hoverinfo="skip",
        )
    )


def score_figure(
    results: pd.DataFrame, thresholds: dict[str, float], events: pd.DataFrame, alarms: pd.DataFrame | None = None
) -> Any:
    """Anomaly score over time, zoomed on the decision region: labelled events shaded (found and
    missed apart: `events` as `event_outcomes` gives them), thresholds drawn, false alarms marked."""
    import plotly.graph_objects as go

    figure = go.Figure()
    label_free = thresholds["label-free"]
    if len(events):
        found = events["found"].to_numpy()
        _shade(figure, events[found], "rgba(255,127,14,0.3)", "labelled event, found")
        _shade(figure, events[~found], "rgba(214,39,40,0.35)", "labelled event, missed")
    # Positions of each split's rows, not a copy of its rows: the table can hold years of them.
    splits, scores, segments = (results[c].to_numpy() for c in ("split", "smoothed_score", "segment"))
    predictions = results["prediction"].to_numpy() if "prediction" in results.columns else None
    for split in pd.unique(splits):
        rows = np.flatnonzero(splits == split)
        flagged = predictions[rows] == 1 if predictions is not None else None
        kept = rows[decimate(scores[rows], keep=flagged)]
        xs, ys = _with_gaps(results.index[kept], scores[kept], segments[kept])
        figure.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines",
                name=f"{split} score",
                line={"color": SPLIT_COLOURS.get(split), "width": 1},
                hovertemplate="%{x}<br>score %{y:.4g}<extra></extra>",
            )
        )
    if alarms is not None and len(alarms):
        figure.add_trace(
            go.Scatter(
                x=alarms["start"],
                y=alarms["peak_score"],
                mode="markers",
                marker={"symbol": "x", "color": "#d62728", "size": 8},
                name="false alarm (label-free threshold)",
                customdata=alarms["rows"],
                hovertemplate="false alarm %{x}<br>%{customdata} rows, peak %{y:.4g}<extra></extra>",
            )
        )
    if len(events):
        # Events last minutes on an axis of months: a marker above each keeps every one visible.
        for found_here, colour, name in ((True, "#ff7f0e", "found"), (False, "#d62728", "missed")):
            part = events[(events["peak_score"] > label_free) == found_here]
            figure.add_trace(
                go.Scatter(
                    x=part["start"],
                    y=np.full(len(part), 0.97),
                    yaxis="y2",
                    mode="markers",
                    marker={"symbol": "triangle-down", "color": colour, "size": 9},
                    name=f"event start, {name}",
                    hovertemplate=f"event {name}, starts %{{x}}<extra></extra>",
                )
            )
    span = [results.index.min(), results.index.max()]
    # The deployed threshold is drawn last (on top), solid and thick, and named at the right edge:
    # another threshold close to it can never hide it.
    for name, value in sorted(thresholds.items(), key=lambda item: item[0] == "label-free"):
        deployed = name == "label-free"
        figure.add_trace(
            go.Scatter(
                x=span,
                y=[value, value],
                mode="lines",
                line={
                    "color": THRESHOLD_COLOURS[name],
                    "dash": "solid" if deployed else "dot",
                    "width": 3 if deployed else 1.5,
                },
                name=f"{'deployed threshold (label-free)' if deployed else name + ' threshold'} {value:.4g}",
                hoverinfo="name",
            )
        )
    figure.add_annotation(
        xref="paper",
        x=1.0,
        y=label_free,
        xanchor="left",
        showarrow=False,
        text=f" deployed {label_free:.4g}",
        font={"color": THRESHOLD_COLOURS["label-free"]},
    )
    figure.update_layout(
        title="Anomaly score over time (validation and test rows), zoomed on the decision region",
        yaxis={
            "title": "negative log-likelihood (double-click: all scores)",
            "range": decision_range(results["smoothed_score"].to_numpy(), thresholds),
        },
        yaxis2={"range": [0, 1], "overlaying": "y", "visible": False},
        xaxis={"title": "time (UTC)", "rangebreaks": time_breaks(results.index), **time_ticks(results.index)},
        height=600,
        margin={"r": 110},
        legend={"orientation": "h", "y": -0.32},
    )
    return figure


def rate(value: float) -> str:
    """A count per day the way a person says it: `8.04`, `57.3`, `3,230` (never `3.23e+03`)."""
    if not np.isfinite(value):
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def duration(seconds: float) -> str:
    """A duration the way a person says it: `40 s`, `12 min`, `3.5 h`, `2.1 d`."""
    if not np.isfinite(seconds):
        return "-"
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def _csv_link(frame: pd.DataFrame, name: str) -> str:
    """A link that downloads `frame` as a CSV file from the page itself (no server needed)."""
    encoded = base64.b64encode(frame.to_csv(index=False).encode()).decode()
    return f"<a download='{name}' href='data:text/csv;base64,{encoded}'>download as CSV ({name})</a>"


def _channel_note(channel: dict[str, Any]) -> str:
    if channel["drift_share"] is not None:
        return f"drifts in training ({channel['drift_share']:.0%} of its variance between blocks in time)"
    if channel["kind"] != "continuous":
        return f"{html.escape(channel['kind'])} channel"
    return ""


# From this share of the false alarms' excess score on drifting channels, the report names `drift_weight`.
DRIFTING_MAJORITY = 0.5


def percent(share: float) -> str:
    """A share in percent, to one decimal where whole percents would round a part up to all of it."""
    return f"{share:.1%}" if 0.99 < share < 1 else f"{share:.0%}"


def drifting_behind(explained: dict[str, Any] | None) -> bool:
    """Whether channels that drift in training carry most of the false alarms' excess score
    (`explained`: the summary's `false_alarms`)."""
    return bool(explained) and explained.get("drifting_share", 0.0) >= DRIFTING_MAJORITY


def false_alarm_sources(explained: dict[str, Any] | None) -> str:
    """HTML: the channels behind the false alarms (see `evaluate.explain_false_alarms`), and what
    to do when channels that drift in training carry most of them."""
    if not explained or not explained["channels"]:
        return ""
    rows = "".join(
        f"<tr><td class='text'>{html.escape(c['channel'])}</td><td>{c['share']:.0%}</td>"
        f"<td>{c['false_alarm_mean']:.3g}</td><td>{c['validation_mean']:.3g}</td><td>{c['weight']:.3g}</td>"
        f"<td class='text'>{_channel_note(c)}</td></tr>"
        for c in explained["channels"]
    )
    drifting = [c for c in explained["channels"] if c["drift_share"] is not None and c["weight"] > 0]
    advice = ""
    if drifting_behind(explained) and drifting:
        names = ", ".join(html.escape(c["channel"]) for c in drifting[:3])
        # A TOML inline table, as config.toml or ECLSS_TRAINING__NAMED_WEIGHTS takes it.
        example = f"{{{json.dumps(drifting[0]['channel'])} = 0}}"
        advice = (
            f" Channels that drift in training carry <b>{percent(explained['drifting_share'])}</b> of it ({names}"
            f"{', ...' if len(drifting) > 3 else ''}): the test rows reach levels their training never settled "
            "on. If that is their nature rather than a fault, <code>drift_weight</code> 0 (now "
            f"{drifting[0]['weight']:.3g}) leaves their level out of the score; to leave out only the ones you "
            "know to wander by nature (not those where faults show), name them in <code>[training] "
            f"named_weights</code>, e.g. <code>{html.escape(example)}</code>. The other channels still score."
        )
    sampled = "" if explained["sampled"] == explained["rows"] else f" ({explained['sampled']:,} of them scored again)"
    return (
        f"<h3 id='false-alarm-channels'>Where they come from</h3><p>Each channel's share of the score that the "
        f"{explained['rows']:,} false-alarm rows{sampled} of the served detector "
        f"({html.escape(DETECTOR_LABELS[explained['detector']])}) carry above the validation rows its threshold "
        f"was fitted on.{advice}</p><table><tr><th>channel</th><th>share</th><th>mean score, false alarms</th>"
        f"<th>mean score, validation</th><th>weight in the score</th><th></th></tr>{rows}</table>"
    )


def outcome_tables(outcomes: pd.DataFrame, alarms: pd.DataFrame, explained: dict[str, Any] | None = None) -> str:
    """HTML tables of every labelled event (found or missed at the deployed threshold, time to
    detection, peak score) and of every false alarm, highest peak first, also as CSV, with the
    channels behind the false alarms (`explained`, see `evaluate.explain_false_alarms`)."""
    rows = []
    for number, event in outcomes.sort_values("start").reset_index(drop=True).iterrows():
        found = bool(event["found"])
        delay = event["time_to_detection"]
        rows.append(
            f"<tr class='{'' if found else 'missed'}'><td>{number + 1}</td><td>{event['start']:%Y-%m-%d %H:%M}</td>"
            f"<td>{duration((event['end'] - event['start']).total_seconds())}</td>"
            f"<td>{'found' if found else 'missed'}</td>"
            f"<td>{duration(delay.total_seconds()) if found and not pd.isna(delay) else '-'}</td>"
            f"<td>{event['peak_score']:.4g}</td></tr>"
        )
    missed = int((~outcomes["found"]).sum())
    alarm_rows = "".join(
        f"<tr><td>{a['start']:%Y-%m-%d %H:%M:%S}</td><td>{a['end']:%Y-%m-%d %H:%M:%S}</td><td>{a['rows']}</td>"
        f"<td>{a['peak_score']:.4g}</td></tr>"
        for _, a in alarms.iterrows()
    )
    events_csv = outcomes[["start", "end", "found", "detected", "time_to_detection", "peak_score"]].assign(
        time_to_detection_s=outcomes["time_to_detection"].dt.total_seconds()
    )
    return (
        f"<h2 id='events'>Labelled events: {len(outcomes) - missed} found, {missed} missed</h2>"
        f"<p class='note'>{_csv_link(events_csv.drop(columns='time_to_detection'), 'events.csv')}</p>"
        "<div class='scroll'><table><tr><th>event</th><th>start (UTC)</th><th>duration</th>"
        "<th>at the deployed threshold</th><th>detected after</th><th>peak score</th></tr>"
        f"{''.join(rows)}</table></div>"
        f"<h2 id='false-alarms'>False alarms: {len(alarms)} run(s) of flagged rows outside every labelled event</h2>"
        + (
            f"<p class='note'>Every one, highest peak first. {_csv_link(alarms, 'false_alarms.csv')}</p>"
            "<div class='scroll'><table><tr><th>start (UTC)</th><th>end (UTC)</th><th>rows</th>"
            f"<th>peak score</th></tr>{alarm_rows}</table></div>"
            if len(alarms)
            else "<p>None at the deployed threshold.</p>"
        )
        + false_alarm_sources(explained)
    )


def lead(summary: dict[str, Any], dataset: str) -> str:
    """The first paragraph: what was evaluated, the decision, and what an operator would live with."""
    ops, deploy, decision = summary["operations"], summary["deploy"], summary.get("decision", {})
    counts = summary["counts"]
    if decision:
        verdict = (
            f"<b>Deployed</b>: {deploy['fc1_name']} {deploy['fc1']:.3f} is above the gate of {decision['gate']:.3g}."
            if decision["deploy"]
            else f"<b>Not deployed</b>: {deploy['fc1_name']} {deploy['fc1']:.3f} is not above the gate of "
            f"{decision['gate']:.3g}."
        )
    else:
        verdict = f"{deploy['fc1_name']} {deploy['fc1']:.3f} at the deployed threshold."
    if deploy.get("detector", MODEL) != MODEL:
        verdict += (
            f" <b>Served: {html.escape(deploy['choice'])}</b>. The alarms counted next are the served "
            "detector's; the charts and tables after this paragraph are the model's."
        )
    elif deploy.get("detectors") and DeployDecision.from_summary(summary).passed_over:
        verdict += f" <b>Served: {html.escape(deploy['choice'])}</b>."
    explained = summary.get("false_alarms")
    drifting = (
        f" Channels that drift in training carry {percent(explained['drifting_share'])} of the false alarms' excess "
        "score: <a href='#false-alarm-channels'>where they come from</a>."
        if drifting_behind(explained)
        else ""
    )
    return (
        f"<p class='lead'>{verdict} On {counts['test_rows']:,} test rows of {html.escape(dataset)} "
        f"({duration(ops['test_days'] * 86_400)} of data) the deployed threshold "
        f"({summary.get('threshold_method', 'quantile')}, {deploy['threshold']:.4g}) found "
        f"<b>{ops['events_found']} of {ops['events']}</b> labelled events, a median "
        f"{duration(ops['median_time_to_detection_s'])} after they started, and raised "
        f"<b>{ops['false_alarm_episodes']} false alarm(s)</b> in {duration(ops['normal_days'] * 86_400)} of "
        f"normal operation: expect about <b>{rate(ops['false_alarms_per_day'])} false alarms per day</b> "
        f"({rate(ops['alarm_episodes_per_day'])} alarms a day in all; an alarm lasts a median "
        f"{duration(ops['median_episode_s'])}, at most {duration(ops['longest_episode_s'])}).{drifting}</p>"
    )


def curves_figure(sweep: pd.DataFrame, thresholds: dict[str, float]) -> Any:
    """Precision, recall, F1, event recall, Fc1 and point-adjusted F1 against the threshold."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for column, name in (
        ("precision", "precision"),
        ("recall", "recall (point)"),
        ("f1", "F1 (point)"),
        ("event_recall", "recall (event)"),
        ("fc1", "Fc1 (composite)"),
        ("pa_f1", "F1 (point-adjusted)"),
    ):
        figure.add_trace(
            go.Scatter(
                x=symlog(sweep["threshold"].to_numpy()),
                y=sweep[column],
                customdata=sweep["threshold"],
                mode="lines",
                name=name,
                hovertemplate="threshold %{customdata:.4g}: %{y:.3f}",
            )
        )
    for name, value in thresholds.items():
        figure.add_trace(
            go.Scatter(
                x=[float(symlog(value))] * 2,
                y=[0, 1.02],
                mode="lines",
                line={"color": THRESHOLD_COLOURS[name], "dash": "dash"},
                name=f"{name} threshold",
                hoverinfo="name",
            )
        )
    figure.update_layout(
        title="Test metrics against the threshold",
        xaxis=symlog_axis(sweep["threshold"].min(), sweep["threshold"].max(), "threshold (negative log-likelihood)"),
        yaxis={"title": "score", "range": [0, 1.02]},
        height=460,
    )
    return figure


def pr_figure(sweep: pd.DataFrame, pr_auc: float) -> Any:
    """The point-wise precision-recall curve of the test set."""
    import plotly.graph_objects as go

    figure = go.Figure(
        go.Scatter(
            x=sweep["recall"],
            y=sweep["precision"],
            mode="lines",
            name="precision-recall",
            customdata=sweep["threshold"],
            hovertemplate="recall %{x:.3f}<br>precision %{y:.3f}<br>threshold %{customdata:.4g}<extra></extra>",
        )
    )
    figure.update_layout(
        title=f"Precision-recall (point-wise), area {pr_auc:.3f}",
        xaxis={"title": "recall", "range": [0, 1.02]},
        yaxis={"title": "precision", "range": [0, 1.02]},
        height=460,
        width=560,
    )
    return figure


def event_figure(event: EventView, top_channels: int = 3) -> Any:
    """One event: each channel's share of the score as a heatmap, and the most involved channels."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    inside = (event.times >= event.start) & (event.times <= event.end)
    ranking = np.argsort(-event.contributions[:, inside].mean(axis=1))[:top_channels]
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.6, 0.4])
    figure.add_trace(
        go.Heatmap(
            x=event.times,
            y=event.channels,
            z=event.contributions,
            colorscale="Viridis",
            colorbar={"title": "NLL", "len": 0.6, "y": 0.7},
            name="channel NLL",
        ),
        row=1,
        col=1,
    )
    for index in ranking:
        figure.add_trace(
            go.Scatter(x=event.times, y=event.values[index], mode="lines", name=event.channels[index]), row=2, col=1
        )
    figure.add_vrect(x0=event.start, x1=event.end, fillcolor="#ff7f0e", opacity=0.2, line_width=0, row=2, col=1)
    figure.update_yaxes(title_text="scaled value", row=2, col=1)
    figure.update_layout(title=event.title, height=620, legend={"orientation": "h", "y": -0.12})
    return figure


def _metrics_table(summary: dict[str, Any]) -> str:
    method, base = summary.get("threshold_method", "quantile"), summary["baselines"]
    others = {f"label-free, {m}": v for m, v in summary.get("label_free_by_method", {}).items() if m != method}
    columns = {
        f"label-free, {method} (deployed)": summary["label_free"],
        **others,
        **({"top-k (test labels)": summary["top_k"]} if "top_k" in summary else {}),
        "best Fc1 (test labels)": summary["best_fc1"],
    }
    rows = [
        ("threshold", "threshold"),
        ("Fc1 (composite)", "fc1"),
        ("F1 (point)", "f1"),
        ("precision (point)", "precision"),
        ("recall (point)", "recall"),
        ("recall (event)", "event_recall"),
        ("F1 (point-adjusted)", "pa_f1"),
        ("flagged share", "flagged_share"),
        ("false-alarm rate (normal rows)", "false_alarm_rate"),
    ]
    head = "".join(f"<th>{html.escape(name)}</th>" for name in columns)
    body = "".join(
        f"<tr><th>{name}</th>" + "".join(f"<td>{values[key]:.4g}</td>" for values in columns.values()) + "</tr>"
        for name, key in rows
    )
    counts = summary["counts"]
    notes = summary.get("channel_notes", [])
    calibrated = summary.get("calibration", {})
    return (
        f"<table><tr><th></th>{head}</tr>{body}</table>"
        f"<p>Area under the precision-recall curve: <b>{summary['pr_auc']:.4f}</b>. "
        f"Baselines on the same labels: every row flagged Fc1 {base['all_positive_fc1']:.4f} "
        f"(F1 {base['all_positive_f1']:.4f}); random scores flagging the same share Fc1 {base['random_fc1']:.4f} "
        f"(F1 {base['random_f1']:.4f})"
        + (
            f"; the raw signal (sum of squared scaled values, each channel weighted as the model weighs it) at the "
            f"same kind of threshold Fc1 "
            f"{base['raw_signal_fc1']:.4f}, at top-k {base.get('raw_signal_top_k_fc1', float('nan')):.4f}, "
            f"at its best Fc1 {base['raw_signal_best_fc1']:.4f}, PR-AUC {base['raw_signal_pr_auc']:.4f}"
            if "raw_signal_fc1" in base
            else ""
        )
        + ".</p>"
        f"<p>{counts['test_rows']:,} test rows, {counts['test_events']} labelled events "
        f"({counts['anomaly_share']:.1%} of rows), {counts['val_rows']:,} validation rows.</p>"
        + _calibration_note(calibrated)
        + _watch_note(summary.get("watch"), summary.get("deploy", {}))
        + (
            "<p>Channels that are not plainly continuous:</p><ul>"
            + "".join(f"<li>{html.escape(line)}</li>" for line in notes)
            + "</ul>"
            if notes
            else ""
        )
    )


def _at_promise_note(rows: list[tuple[Any, ...]], promised: float | None) -> str:
    """One sentence: the detectors compared at one false-alarm rate, the promised one (each at the
    threshold that flags that share of the test's normal rows: read off the labels)."""
    held = [(r[0], r[3]) for r in rows if r[3] is not None]
    if promised is None or len(held) < 2:
        return ""
    name, value = max(held, key=lambda item: item[1])
    others = ", ".join(f"{html.escape(n)} {v:.3f}" for n, v in held if n != name)
    return (
        f" Held to the same false-alarm rate, the {promised:.2%} promised (each detector's threshold read off "
        f"the test labels, which an operator does not have), {html.escape(name)} detects most: Fc1 {value:.3f} "
        f"({others}). That is the like-for-like comparison, and what keeping the promise would cost."
    )


# How the report names each `threshold_follow` rule.
_FOLLOW_RULES = {
    "none": "a fixed threshold",
    "median": "following each run's median score",
    "spread": "following each run's median and lower-quartile spread",
    "iqr": "following each run's median and interquartile range",
}


# How a following rule moves the label-free thresholds, in the report's account of its methods.
_FOLLOW_DESCRIPTIONS = {
    "median": (
        " (the label-free ones as they follow each run's median score: their margin over the validation "
        "median grows with how far the median of the run's rows before it has risen above that median, in "
        "validation upper-quartile spreads, and never shrinks; the drawn line is where they start)"
    ),
    "spread": (
        " (the label-free ones as they follow each run's median and lower-quartile spread: the run's rows "
        "before it measured from their own median in their own median-to-lower-quartile spread, each "
        "threshold is the validation's in those units, and never below where it starts, the drawn line)"
    ),
    "iqr": (
        " (the label-free ones as they follow each run's median and interquartile range: the run's rows "
        "before it measured from their own median in their own interquartile range, each threshold is the "
        "validation's in those units, and never below where it starts, the drawn line)"
    ),
}


def _follow_description(rule: str, window: int) -> str:
    """How the rule `rule` moves the label-free thresholds, over each run's newest `window` rows (0: all)."""
    description = _FOLLOW_DESCRIPTIONS.get(rule, "")
    if description and window:
        description = (
            f"{description[:-1]}; of each run, its newest {window:,} rows only, so that a state lasting half as "
            "long becomes the run's normal)"
        )
    return description


def _follow_name(entry: dict[str, Any]) -> str:
    """A rule and its window (`threshold_follow`, `follow_window`), in words and as set."""
    rule, window = entry.get("threshold_follow", "none"), entry.get("follow_window", 0)
    over = f" over its newest {window:,} rows" if window else ""
    setting = f'<code>threshold_follow = "{html.escape(rule)}"</code>' + (
        f", <code>follow_window = {window}</code>" if window else ""
    )
    return f"{_FOLLOW_RULES.get(rule, html.escape(rule))}{over} ({setting})"


def _other_follow_note(summary: dict[str, Any]) -> str:
    """A sentence a rule: what each other `threshold_follow` rule (over whole runs, or over a
    window) would have served and flagged on these rows, against what is served now, and that the
    gate chose the rule where it was asked to (absent from summaries written before it; one rule in
    those written before the spread rule)."""
    others, deploy = summary.get("other_follows") or [], summary.get("deploy", {})
    if "other_follow" in summary:
        others = [summary["other_follow"]]
    if not others or deploy.get("false_alarm_rate") is None:
        return ""
    served = deploy.get("detector", MODEL)
    now_f1 = summary["label_free"]["f1"] if served == MODEL else summary["baselines"].get(f"{served}_f1")

    def key(entry: dict[str, Any]) -> tuple[str, int]:
        return entry.get("threshold_follow", "none"), entry.get("follow_window", 0)

    # Point F1 by rule, the run's own included: a following rule below the fixed one has a price to name.
    f1_by_rule = {key(summary): now_f1}
    sentences = []
    for other in others:
        then = other["detectors"][other["served"]]
        f1_by_rule[key(other)] = then["f1"]
        f1 = "" if now_f1 is None else f", point F1 {then['f1']:.3f} against {now_f1:.3f}"
        label = html.escape(DETECTOR_LABELS.get(other["served"], other["served"]))
        sentences.append(
            f" With {_follow_name(other)} instead, the gate would serve {label}: {then['false_alarm_rate']:.2%} false "
            f"alarms against {deploy['false_alarm_rate']:.2%} now, Fc1 {then['fc1']:.3f} against "
            f"{deploy['fc1']:.3f}{f1}."
        )
    fixed_f1 = f1_by_rule.get(("none", 0))
    shorter = [
        (rule, window)
        for (rule, window), f1 in f1_by_rule.items()
        if rule != "none" and None not in (f1, fixed_f1) and f1 < fixed_f1
    ]
    clauses = ["a fault as long as the normal rows before it in its run becomes the run's level"]
    if ("iqr", 0) in shorter:
        clauses.append("under the iqr rule one a third as long widens the run's range")
    if any(window for _, window in shorter):
        clauses.append("over a window, one half the window long becomes the run's normal")
    price = (
        " A lower point F1 under a following rule than under the fixed one means alarms that clear while a fault "
        f"goes on: {', and '.join(clauses)}."
        if shorter
        else ""
    )
    window = summary.get("follow_window_setting", 0)
    chosen = (
        ' The gate chose the threshold rule as it chooses the detector (<code>threshold_follow = "auto"</code>'
        + (f", <code>follow_window = {window}</code>: each rule over whole runs and over the window" if window else "")
        + f"): {_follow_name(summary)}, of the rules' served detectors the highest Fc1 among those that keep their "
        "promise (else of all), a tie going to the simpler rule."
        if summary.get("threshold_follow_setting") == "auto"
        else ""
    )
    return chosen + "".join(sentences) + price


def detectors_table(summary: dict[str, Any]) -> str:
    """The model beside the classical detectors, each at the same thresholds, and one sentence on
    which wins at the deployed one and by how much."""
    base = summary["baselines"]
    rows = [
        (
            "the model",
            summary["label_free"]["fc1"],
            summary["label_free"].get("false_alarm_rate"),
            summary.get("at_promise", {}).get("fc1"),
            summary.get("top_k", {}).get("fc1"),
            summary["best_fc1"]["fc1"],
            summary["pr_auc"],
        )
    ]
    for key in (RAW_SIGNAL, PCA):
        name = DETECTOR_LABELS[key]
        if f"{key}_fc1" in base:
            label = (
                f"{name} ({base['pca_components']} components)" if key == "pca" and "pca_components" in base else name
            )
            rows.append(
                (
                    label,
                    base[f"{key}_fc1"],
                    base.get(f"{key}_false_alarm_rate"),
                    base.get(f"{key}_fc1_at_promise"),
                    base.get(f"{key}_top_k_fc1"),
                    base[f"{key}_best_fc1"],
                    base[f"{key}_pr_auc"],
                )
            )
    if len(rows) == 1:
        return ""
    cell = lambda value: "" if value is None else f"{value:.4f}"  # noqa: E731 - one use, here
    body = "".join(
        f"<tr><th>{html.escape(r[0])}</th><td>{cell(r[1])}</td><td>{'' if r[2] is None else f'{r[2]:.2%}'}</td>"
        + "".join(f"<td>{cell(v)}</td>" for v in r[3:])
        + "</tr>"
        for r in rows
    )
    best = max(rows[1:], key=lambda r: r[1])
    margin = rows[0][1] - best[1]
    verdict = (
        f"At the deployed threshold rule the model is ahead of the best classical detector ({html.escape(best[0])}) "
        f"by {margin:.3f} Fc1."
        if margin > 0
        else f"At the deployed threshold rule the model is <b>not ahead</b> of {html.escape(best[0])} "
        f"({-margin:.3f} Fc1 behind or level): a classical detector does as well on these data."
    )
    deploy = summary.get("deploy", {})
    if deploy.get("detector", MODEL) != MODEL or (margin <= 0 and "choice" in deploy):
        verdict += f" The deploy step serves {html.escape(deploy['choice'])}."
    method = summary.get("threshold_method", "quantile")
    promised = deploy.get("promised_false_alarm_rate")
    promise = "" if promised is None else f" ({promised:.2%} promised)"
    at_rate = f"at {promised:.2%} false alarms" if promised is not None else "at the promised false alarms"
    return (
        f"<h2>Detectors at the same thresholds</h2><table><tr><th></th><th>Fc1, label-free ({method})</th>"
        f"<th>false alarms, label-free{promise}</th><th>Fc1 {at_rate} (test labels)</th><th>Fc1, top-k</th>"
        f"<th>Fc1, best</th><th>PR-AUC</th></tr>{body}</table>"
        # The verdict, then each other way of comparing them, a paragraph each.
        + "".join(
            f"<p>{text.strip()}</p>"
            for text in (verdict, _at_promise_note(rows, promised), _other_follow_note(summary))
            if text
        )
    )


def _calibration_note(calibrated: dict[str, Any]) -> str:
    """One sentence: each label-free threshold's promised and observed false-alarm rate."""
    if not calibrated:
        return ""
    promises = "; ".join(
        f"{html.escape(method)} promises {values['nominal_false_alarm_rate']:.2%} and flags "
        f"{values['false_alarm_rate']:.2%} ({values['ratio']:.3g}x)"
        for method, values in calibrated["methods"].items()
    )
    better = calibrated["better_calibrated"]
    verdict = (
        f" <b>{html.escape(better)}</b> keeps its promise best here"
        " (<code>threshold_method</code> picks the deployed one)."
        if better
        else " No normal test row to judge them on."
    )
    return f"<p>Calibration of the label-free thresholds on the test's normal rows: {promises}.{verdict}</p>"


def _watch_note(watch: dict[str, Any] | None, deploy: dict[str, Any]) -> str:
    """One sentence: what the server's watch on its threshold's promise would have said over the
    test rows (`evaluate.replay_watch`)."""
    if not watch:
        return ""
    rows, promised = watch["block_rows"], deploy.get("promised_false_alarm_rate", 0.0)
    lead = (
        f"<p>Served, the model server watches the share of rows it flags against the {promised:.2%} promised, "
        f"label-free, in blocks of {rows:,} rows (see the docs' serving page): "
    )
    if not deploy.get("promise_tolerance"):
        return f"{lead}with <code>promise_tolerance</code> 0 it judges nothing.</p>"
    if not watch["blocks"]:
        return f"{lead}the test's rows are fewer than one block.</p>"
    return (
        f"{lead}over these test rows, anomalies included, it would have warned <b>{watch['warnings']}</b> time(s): "
        f"{watch['broken_blocks']} of {watch['blocks']} block(s) flagged more than "
        f"{deploy['promise_tolerance']:g}x the promise (at most {watch['largest_share']:.2%}).</p>"
    )


PAGE_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}"
    "th:first-child,td.text{text-align:left}.note{color:#555;font-size:0.9em}tr.missed td{background:#fde0e0}"
    ".lead{font-size:1.15em;line-height:1.5;background:#f4f6f8;border-left:4px solid #d62728;padding:0.8em 1em}"
    ".scroll{max-height:420px;overflow-y:auto;display:inline-block}"
)


def render_report(
    results: pd.DataFrame,
    sweep: pd.DataFrame,
    summary: dict[str, Any],
    events: pd.DataFrame,
    event_views: list[EventView],
    dataset: str = "ECLSS",
) -> str:
    """The whole report as one HTML string.

    Args:
        results: Rows with `split`, `segment`, `smoothed_score`, `prediction` and `label`, indexed by time.
        sweep: Output of `sweep_thresholds` on the test set.
        summary: The evaluation summary (see `evaluate.run_evaluate`).
        events: Labelled events of the test set (`start`, `end` timestamps).
        event_views: Per-channel views of the highest-scoring events.
        dataset: The data set's name, in the title.
    """
    from plotly.offline import get_plotlyjs

    thresholds = {
        "label-free": summary["label_free"]["threshold"],
        "best Fc1 (test labels)": summary["best_fc1"]["threshold"],
    }
    # The test rows: a view of them where they come last, as evaluation writes them (not a copy).
    is_test = results["split"].to_numpy() == "test"
    first = int(np.argmax(is_test))
    test = results.iloc[first:] if is_test[first:].all() else results.loc[is_test]
    del is_test
    alarms = false_alarms(test)
    outcomes = event_outcomes(events, test)
    figures = [
        score_figure(results, thresholds, outcomes, alarms),
        curves_figure(sweep, thresholds),
        pr_figure(sweep, summary["pr_auc"]),
        *[event_figure(view) for view in event_views],
    ]
    divs = "".join(f.to_html(full_html=False, include_plotlyjs=False) for f in figures)
    options = summary["options"]
    title = f"{html.escape(dataset)} anomaly detection: evaluation"
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{PAGE_STYLE}</style><script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
        f"<h1>{title}</h1>{lead(summary, dataset)}"
        f"<p class='note'>Model {html.escape(str(summary['model']))}. The score of a row is the sum over "
        "channels of its negative log-likelihood under the VAE (given the rows before it, for the windowed "
        "model), each channel's standardised by its spread on validation and weighted by its kind; smoothed "
        f"by a trailing median over {options['smoothing_window']} row(s). The label-free thresholds come from "
        f"validation scores only: their {options['val_quantile']} quantile, and peaks over threshold (a "
        f"generalised Pareto tail fitted above their {options.get('pot_level', 0.98)} quantile, risk "
        f"{options.get('pot_risk', 0.001)}); the {summary.get('threshold_method', 'quantile')} one is what the "
        "deployed model uses. The top-k threshold flags the k highest-scoring rows (k = anomalous test rows, "
        "ties not flagged), as published tables do. A row is flagged when its score is above the threshold"
        + _follow_description(summary.get("threshold_follow", "none"), options.get("follow_window", 0))
        + ". Fc1 is the "
        "harmonic mean of point-wise precision and event-wise recall (Garg et al. 2021); point-adjusted "
        "figures count a whole event as found when any row of it is flagged, and overstate quality.</p>"
        f"{_metrics_table(summary)}{detectors_table(summary)}{divs}"
        f"{outcome_tables(outcomes, alarms, summary.get('false_alarms'))}"
        "</body></html>"
    )
