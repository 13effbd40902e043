"""The local run's console: one line per task, logs in files, key figures from the reports."""

import io
import json
import sys
from pathlib import Path

import pytest

from pipeline.local_progress import LocalRunConsole, key_figure, last_json_report, task_of

TASK_SCRIPT = """
import json, sys, time
sys.stdout.write("progress  10%\\r"); sys.stdout.flush()
sys.stdout.write("progress 100%\\n")
print("some library chatter")
print(json.dumps({"rows": 1234, "partitions": 7, "path": "/x"}, indent=2))
print("[KFP Executor] Wrote executor output file")
sys.exit(int(sys.argv[1]))
"""


def _command(tmp_path: Path, task: str, code: int) -> list[str]:
    """A stand-in for a kfp.local task command: executor input naming the task's folder."""
    executor_input = {"outputs": {"outputFile": str(tmp_path / "root" / "run-1" / task / "executor_output.json")}}
    script = tmp_path / "task.py"
    script.write_text(TASK_SCRIPT)
    return [sys.executable, str(script), str(code), "--executor_input", json.dumps(executor_input)]


def test_a_task_gets_one_line_its_figure_and_a_log(tmp_path: Path) -> None:
    out = io.StringIO()
    console = LocalRunConsole(tmp_path / "root", out=out)
    assert console.run_task(_command(tmp_path, "split-dataset", 0)) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == "  split-dataset ..."
    assert lines[1].startswith("✓ split-dataset") and lines[1].endswith("1,234 rows, 7 partitions")
    assert len(lines) == 2, "library output stays out of the console"
    (record,) = console.tasks
    assert record.log == tmp_path / "root" / "run-1" / "logs" / "split-dataset.log"
    assert "some library chatter" in record.log.read_text()


def test_a_failed_task_shows_its_log_tail(tmp_path: Path) -> None:
    out = io.StringIO()
    console = LocalRunConsole(tmp_path / "root", out=out)
    assert console.run_task(_command(tmp_path, "train", 3)) == 3
    text = out.getvalue()
    assert "✗ train" in text and "failed (exit 3)" in text and "some library chatter" in text
    assert not console.tasks[0].ok


def test_verbose_streams_everything(tmp_path: Path) -> None:
    out = io.StringIO()
    LocalRunConsole(tmp_path / "root", verbose=True, out=out).run_task(_command(tmp_path, "fit-scaler", 0))
    assert "some library chatter" in out.getvalue()


def test_iterations_of_a_parallel_for_are_named_apart(tmp_path: Path) -> None:
    console = LocalRunConsole(tmp_path / "root", out=io.StringIO())
    for i in (0, 1):
        console.run_task(_command(tmp_path, f"for-loop-1-iteration-{i}/split-archive", 0))
    assert [t.name for t in console.tasks] == ["split-archive [0]", "split-archive [1]"]
    assert len({t.log for t in console.tasks}) == 2


def test_task_of_needs_an_executor_input() -> None:
    with pytest.raises(ValueError, match="executor_input"):
        task_of(["python", "-m", "x"])


def test_last_json_report() -> None:
    text = 'noise\n{\n  "a": 1\n}\nmore noise {not json\n[KFP] done\n'
    assert last_json_report(text) == {"a": 1}
    assert last_json_report("no report here") is None


@pytest.mark.parametrize(
    ("task", "report", "expected"),
    [
        ("list-archives", ["a.parquet", "b.parquet"], "2 archive(s)"),
        ("tune", {"objective": {"name": "val_nll", "value": -16.05}, "trials": 6}, "best val_nll -16.05 over 6 trials"),
        ("train", {"val_nll": -25.28, "best_epoch": 27, "epochs": 30}, "val_nll -25.28 (best epoch 28 of 30)"),
        ("evaluate", {"metrics": {"fc1": 0.9615}}, "Fc1 0.962 at the label-free threshold"),
        (
            "evaluate",
            {"metrics": {"fc1": 0.719}, "deploy": {"detector": "pca", "fc1": 0.82}},
            "Fc1 0.719 at the label-free threshold; serves pca (Fc1 0.820)",
        ),
        (
            "evaluate",
            {"metrics": {"fc1": 0.757}, "deploy": {"detector": "pca", "fc1": 0.912, "follow": {"rule": "spread"}}},
            "Fc1 0.757 at the label-free threshold; serves pca (Fc1 0.912); "
            "the threshold follows each run (spread rule)",
        ),
        (
            "apply-scaler",
            {"/r/apply-scaler/scaled_train": 10, "/r/apply-scaler/scaled_val": 2},
            "10 scaled train, 2 scaled val",
        ),
    ],
)
def test_key_figures(task: str, report: object, expected: str) -> None:
    assert key_figure(task, report) == expected
