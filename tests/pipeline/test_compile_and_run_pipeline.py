"""Submitting: the real kfp.Client logs in through the fake Dex and posts to the fake Pipelines API."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import compile_and_run_pipeline
from pipeline.compile_and_run_pipeline import app, cron_expression, parse_params
from tests.pipeline.fake_kubeflow import FakeKubeflow, serve

runner = CliRunner()
SENTINELS = {"AWS_ACCESS_KEY_ID": "sentinel-key-123", "AWS_SECRET_ACCESS_KEY": "sentinel-secret-456"}


@pytest.fixture
def remote_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    monkeypatch.setenv("HOME", str(tmp_path))  # no kfp context file of the developer's
    for name, value in SENTINELS.items():
        monkeypatch.setenv(name, value)
    env = {"KFP_NAMESPACE": "team", "KFP_USERNAME": "user@example.com", "KFP_PASSWORD": "sentinel-password-789"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def _config(project_root: Path) -> list[str]:
    return ["--config", str(project_root / "config.toml")]


def test_remote_run_logs_in_and_submits_without_credentials(
    remote_env: dict[str, str], project_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeKubeflow({"user@example.com": "sentinel-password-789"})
    with serve(fake) as url:
        monkeypatch.setenv("KFP_ENDPOINT", url)
        result = runner.invoke(
            app, ["--remote", "--run-name", "nightly-1", "--param", "max_trials=3", *_config(project_root)]
        )
    assert result.exit_code == 0, result.output
    assert "Submitted nightly-1 to namespace team" in result.output
    (run,) = fake.runs
    assert run["display_name"] == "nightly-1" and run["experiment_id"] == "exp-1"
    assert fake.experiments[0]["display_name"] == "eclss-anomaly-detection"
    assert fake.experiments[0]["namespace"] == "team"
    assert run["runtime_config"]["parameters"]["max_trials"] == 3
    assert "pipeline_spec" in run, "the compiled pipeline travels inline"
    api_calls = [r for r in fake.requests if r["path"].startswith("/pipeline/apis/")]
    assert api_calls and all(fake.session in r["headers"].get("Cookie", "") for r in api_calls)
    everything_sent = json.dumps(fake.requests)
    for secret in [*SENTINELS.values(), "sentinel-password-789"]:
        assert everything_sent.count(secret) == (1 if secret == "sentinel-password-789" else 0), secret
    login = next(r for r in fake.requests if r["method"] == "POST" and r["path"].startswith("/dex/"))
    assert "sentinel-password-789" in login["body"], "the password goes to Dex's login form only"


def test_recurring_run_on_a_schedule(remote_env: dict[str, str], project_root: Path, monkeypatch) -> None:
    fake = FakeKubeflow({"user@example.com": "sentinel-password-789"})
    with serve(fake) as url:
        monkeypatch.setenv("KFP_ENDPOINT", url)
        result = runner.invoke(
            app, ["--remote", "--schedule", "0 3 * * *", "--run-name", "nightly", "--caching", *_config(project_root)]
        )
    assert result.exit_code == 0, result.output
    (job,) = fake.recurring_runs
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert job["display_name"] == "nightly" and "sentinel" not in json.dumps(job)


def test_bad_login_is_one_line(remote_env: dict[str, str], project_root: Path, monkeypatch) -> None:
    with serve(FakeKubeflow({"user@example.com": "other"})) as url:
        monkeypatch.setenv("KFP_ENDPOINT", url)
        result = runner.invoke(app, ["--remote", *_config(project_root)])
    assert result.exit_code == 1
    assert "Error: Dex did not accept the login" in result.output and "sentinel" not in result.output


def test_default_outside_a_cluster_says_what_to_do(project_root: Path, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(compile_and_run_pipeline, "SERVICE_ACCOUNT_NAMESPACE", tmp_path / "none")
    result = runner.invoke(app, _config(project_root))
    assert result.exit_code == 1 and "use --remote (from a laptop) or --local" in result.output


def test_conflicting_modes_are_refused(project_root: Path) -> None:
    result = runner.invoke(app, ["--local", "--remote", *_config(project_root)])
    assert result.exit_code == 1 and "choose one of" in result.output


def test_cron_expressions() -> None:
    assert cron_expression("0 3 * * *") == "0 0 3 * * *"
    assert cron_expression("30 0 3 * * 1") == "30 0 3 * * 1"
    with pytest.raises(ValueError, match="5 .or 6"):
        cron_expression("daily")


def test_params_are_typed_and_checked(project_root: Path) -> None:
    from container_component_src.config import load_settings
    from pipeline.pipeline_definition import build_pipeline

    func = build_pipeline(load_settings(project_root / "config.toml", environ={}))
    assert parse_params(func, ["max_trials=3", "keep_experiment=true", "val_share=0.3"]) == {
        "max_trials": 3,
        "keep_experiment": True,
        "val_share": 0.3,
    }
    with pytest.raises(ValueError, match="no such pipeline parameter"):
        parse_params(func, ["nope=1"])
    with pytest.raises(ValueError, match="is not a int"):
        parse_params(func, ["max_trials=many"])
    assert parse_params(func, ["tune_backend=katib"]) == {"tune_backend": "katib"}
    with pytest.raises(ValueError, match="--param aggregation must be one of mean, min, max"):
        parse_params(func, ["aggregation=avg"])
    # What a task would refuse minutes later is refused at submission.
    for pair, message in (
        ("val_share=nan", "--param val_share: nan is not a finite number"),
        ("block_hours=inf", "--param block_hours: inf is not a finite number"),
        ("resample_period=1MS", "--param resample_period: '1MS' is not a time span"),
        ("partition_period=0s", "--param partition_period: '0s' must be longer than 0"),
        ("test_periods=2021-01-02", "--test-periods: '2021-01-02' is not start/end"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_params(func, [pair])


def test_a_wrong_archive_folder_is_reported_before_the_dag_starts(project_root: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["--local", "--param", f"archives={tmp_path / 'nope'}", *_config(project_root)])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: archives={tmp_path / 'nope'}: no such folder"


def test_archives_without_reports_are_reported_before_the_dag_starts(project_root: Path, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.parquet").write_bytes(b"")
    args = ["--local", "--param", f"archives={tmp_path / 'a'}", "--param", f"reports={tmp_path / 'r.csv'}"]
    result = runner.invoke(app, [*args, *_config(project_root)])
    assert result.exit_code == 1 and f"reports={tmp_path / 'r.csv'}: no such file" in result.output


def test_the_script_runs_by_path_and_its_help_lists_the_parameters(project_root: Path) -> None:
    import subprocess
    import sys

    script = project_root / "pipeline" / "compile_and_run_pipeline.py"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(project_root), "TERMINAL_WIDTH": "200"}
    result = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, cwd=project_root, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "max_trials = 6: Tuning trials." in result.stdout
    assert "deploy_threshold = 0.5" in result.stdout and "<bool>" not in result.stdout


def test_the_local_summary_says_when_drifting_channels_carry_the_false_alarms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = {
        "label_free": {"fc1": 0.72, "f1": 0.6},
        "best_fc1": {"fc1": 0.75},
        "pr_auc": 0.66,
        "false_alarms": {"drifting_share": 0.998},
    }
    (tmp_path / "summary").write_text(json.dumps(summary))
    run = compile_and_run_pipeline.LocalRun(tmp_path, {"evaluation_summary": str(tmp_path / "summary")}, [])
    compile_and_run_pipeline.print_summary(run, 1.0)
    said = capsys.readouterr().out
    assert "Evaluation: Fc1 0.720" in said
    assert "Channels that drift in training carry 99.8% of the false alarms' excess score" in said
    assert "drift_weight" in said
    summary["false_alarms"]["drifting_share"] = 0.1
    (tmp_path / "summary").write_text(json.dumps(summary))
    compile_and_run_pipeline.print_summary(run, 1.0)
    assert "drift" not in capsys.readouterr().out


def test_the_local_summary_says_what_is_served_and_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.decisions import skab_a_decision

    summary = {"label_free": {"fc1": 0.649, "f1": 0.5}, "best_fc1": {"fc1": 0.7}, "pr_auc": 0.37}
    summary["deploy"] = skab_a_decision().to_dict()
    (tmp_path / "summary").write_text(json.dumps(summary))
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "endpoint").write_text(json.dumps({"model_dir": "served", "command": "serve it"}))
    run = compile_and_run_pipeline.LocalRun(tmp_path, {"evaluation_summary": str(tmp_path / "summary")}, [])
    compile_and_run_pipeline.print_summary(run, 1.0)
    said = " ".join(capsys.readouterr().out.split())
    assert "Served: the model: its false alarms keep their promise (1.15% of normal rows against 1.00%" in said
    assert "Deployed: the model is published to served; serve it with: serve it" in said
    # The model with nothing passed over is worth a line when its threshold follows each run.
    summary["deploy"] = skab_a_decision().to_dict() | {
        "detectors": {},
        "follow": {"rule": "median", "level": 0.0, "spread": 1.0},
    }
    (tmp_path / "summary").write_text(json.dumps(summary))
    compile_and_run_pipeline.print_summary(run, 1.0)
    said = " ".join(capsys.readouterr().out.split())
    served = "Served: the model: no classical detector scores a higher Fc1 at the same threshold rule"
    assert f"{served}; its threshold follows each run (median rule)." in said
