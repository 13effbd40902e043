import os
from pathlib import Path

import pytest

from pipeline.readme_figures import END, START, figures_markdown, newest_finished_run, replace_block

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
    with pytest.raises(ValueError, match="has no"):
        replace_block("no markers", "new")


def test_the_newest_finished_run_is_picked(tmp_path: Path) -> None:
    for name, finished, mtime in (("a", True, 1), ("b", True, 2), ("c", False, 3)):
        (tmp_path / name).mkdir()
        if finished:
            (tmp_path / name / "run.json").write_text("{}")
            os.utime(tmp_path / name / "run.json", (mtime, mtime))
    assert newest_finished_run(tmp_path) == tmp_path / "b"
    with pytest.raises(ValueError, match="no finished local run"):
        newest_finished_run(tmp_path / "c")
