import os
from pathlib import Path

import pytest

from pipeline.readme_figures import (
    END,
    START,
    figures_markdown,
    newest_finished_run,
    replace_block,
    run_output,
    serving_example,
)

METRICS = {"fc1": 0.96, "f1": 0.87, "precision": 0.96, "event_recall": 0.96, "false_alarm_rate": 0.011}
SUMMARY = {
    "label_free": METRICS,
    "best_fc1": {**METRICS, "fc1": 0.97},
    "pr_auc": 0.89,
    "baselines": {"all_positive_fc1": 0.39, "random_fc1": 0.387, "raw_signal_fc1": 0.755},
    "calibration": {
        "methods": {
            "quantile": {"nominal_false_alarm_rate": 0.01, "false_alarm_rate": 0.011},
            "pot": {"nominal_false_alarm_rate": 0.001, "false_alarm_rate": 0.0021},
        },
        "better_calibrated": "quantile",
    },
}
RECORD = {"seconds": 79.4, "tasks": [{"name": "train", "seconds": 22.7, "figure": "val_nll -25.28"}]}


def test_the_block_holds_the_runs_figures() -> None:
    block = figures_markdown(RECORD, SUMMARY, "run-1")
    assert "the whole DAG in 79 s" in block and "| train | 22.7 | val_nll -25.28 |" in block
    assert "| label-free (deployed) | 0.960 |" in block and "the raw signal 0.755" in block
    assert "| 1.10% |" in block and "quantile 1.00% and 1.10%; pot 0.10% and 0.21% (quantile keeps" in block


def test_only_the_block_is_replaced() -> None:
    text = f"intro\n{START}\nold figures\n{END}\noutro\n"
    assert replace_block(text, "new") == f"intro\n{START}\nnew\n{END}\noutro\n"
    with pytest.raises(ValueError, match="no <!-- run-figures:start --> ... <!-- run-figures:end --> block"):
        replace_block("no markers", "new")
    named = "a\n<!-- run-output:start -->\n<!-- run-output:end -->\n"
    assert replace_block(named, "x", "run-output") == "a\n<!-- run-output:start -->\nx\n<!-- run-output:end -->\n"


def test_the_run_output_is_the_consoles_lines() -> None:
    block = run_output(
        RECORD, SUMMARY | {"operations": {"events_found": 25, "events": 26, "false_alarms_per_day": 9.3}}
    )
    assert block.startswith(f"```text\n✓ {'train':<18}   22.7 s  val_nll -25.28\n"), "as the console prints it"
    assert "Found 25 of 26 events; 9.3 false alarms per day" in block and block.endswith("\n```")


def test_the_serving_example_is_a_complete_request_of_the_typical_row() -> None:
    import json
    import re

    endpoint = {"v1_url": "http://localhost:8080/v1/models/m:predict", "smoke": {"v1_scores": [-0.7654, 9e6]}}
    typical = [{f"channel_{i}": 1.0 + i / 3 for i in range(7)}]
    block = serving_example(endpoint, typical)
    body = re.search(r"-d '\n(.*)'\n", block, re.DOTALL).group(1)
    sent = json.loads(body)["instances"]
    assert list(sent[0]) == list(typical[0]) and sent[0]["channel_1"] == 1.33333
    assert block.startswith("```bash\ncurl -s localhost:8080/v1/models/m:predict ")
    assert '# -> {"predictions": [{"score": -0.765, "anomaly": false}]}' in block


def test_the_newest_finished_run_is_picked(tmp_path: Path) -> None:
    for name, finished, mtime in (("a", True, 1), ("b", True, 2), ("c", False, 3)):
        (tmp_path / name).mkdir()
        if finished:
            (tmp_path / name / "run.json").write_text("{}")
            os.utime(tmp_path / name / "run.json", (mtime, mtime))
    assert newest_finished_run(tmp_path) == tmp_path / "b"
    with pytest.raises(ValueError, match="no finished local run"):
        newest_finished_run(tmp_path / "c")
