import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from container_component_src.cluster.katib import (
    KatibOptions,
    build_experiment,
    experiment_body,
    experiment_name,
    run_experiment,
    trial_command,
    tune_result,
)
from container_component_src.model.train import ModelParams
from container_component_src.model.tune import parse_search_space
from tests.cluster.fake_kube import FakeKube, api_client, serve, write_kubeconfig
from tests.dataset_files import tiny_sets
from tests.emulator.controllers import validate_experiment, wrap_worker_container
from tests.emulator.pods import expand

SPACE = parse_search_space(
    {
        "learning_rate": {"type": "double", "min": 1e-4, "max": 1e-2, "log": True},
        "batch_size": {"type": "discrete", "values": [256, 512]},
        "latent_dim": {"type": "int", "min": 2, "max": 8, "step": 2},
    }
)
OPTIONS = KatibOptions(
    image="registry.example/eclss:abc",
    namespace="team",
    s3_secret_name="minio-creds",
    s3_endpoint="http://minio:9000",
    gpus=1,
    timeout_s=100,
    poll_s=1,
)
DATA = {"train": "s3://b/train", "val": "s3://b/val", "scaler": "s3://b/scaler"}


def _experiment(name: str = "eclss-tune-test", options: KatibOptions = OPTIONS):
    command = trial_command(DATA, SPACE, ModelParams(), {"max_epochs": 3}, settings='{"x":1}')
    return build_experiment(name, SPACE, command, options, algorithm="tpe", max_trials=6, max_failed_trials=2)


def _serialised(experiment) -> dict:
    return experiment_body(experiment)


def test_experiment_structure() -> None:
    spec = _serialised(_experiment())
    assert spec["apiVersion"] == "kubeflow.org/v1beta1" and spec["kind"] == "Experiment"
    assert spec["metadata"] == {"name": "eclss-tune-test", "namespace": "team"}
    s = spec["spec"]
    assert s["objective"] == {
        "type": "minimize",
        "objectiveMetricName": "val_nll",
        "additionalMetricNames": ["val_loss"],
    }
    assert s["algorithm"]["algorithmName"] == "tpe"
    assert (s["maxTrialCount"], s["parallelTrialCount"], s["maxFailedTrialCount"]) == (6, 2, 2)
    assert s["metricsCollectorSpec"]["collector"]["kind"] == "StdOut"
    params = {p["name"]: p for p in s["parameters"]}
    assert params["learning_rate"]["parameterType"] == "double"
    assert params["learning_rate"]["feasibleSpace"] == {"min": "0.0001", "max": "0.01", "distribution": "logUniform"}
    assert params["batch_size"]["feasibleSpace"] == {"list": ["256", "512"]}
    assert params["latent_dim"]["feasibleSpace"] == {"min": "2", "max": "8", "step": "2"}
    template = s["trialTemplate"]
    assert template["primaryContainerName"] == "training"
    assert [p["name"] for p in template["trialParameters"]] == ["learning_rate", "batch_size", "latent_dim"]
    container = template["trialSpec"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/eclss:abc"
    assert container["command"][:2] == ["sh", "-c"] and len(container["command"]) == 3
    command = shlex.split(container["command"][2])
    assert command[:6] == ["python", "-m", "container_component_src.main", "--settings", '{"x":1}', "train"]
    assert command[command.index("--learning-rate") + 1] == "${trialParameters.learning_rate}"
    assert command[command.index("--beta") + 1] == "1.0", "unsearched parameters keep their base value"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "minio-creds",
        "key": "AWS_SECRET_ACCESS_KEY",
    }
    assert "value" not in env["AWS_ACCESS_KEY_ID"]


def test_no_credential_values_in_the_experiment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sentinel-secret-123")
    assert "sentinel-secret-123" not in json.dumps(_serialised(_experiment()))


def test_names_are_unique() -> None:
    assert len({experiment_name() for _ in range(50)}) == 50


SUCCEEDED = {
    "conditions": [{"type": "Created", "status": "True"}, {"type": "Succeeded", "status": "True"}],
    "trialsSucceeded": 5,
    "trialsFailed": 1,
    "currentOptimalTrial": {
        "parameterAssignments": [{"name": "learning_rate", "value": "0.003"}, {"name": "batch_size", "value": "512"}],
        "observation": {"metrics": [{"name": "val_nll", "min": "-12.5", "latest": "-12.1"}]},
    },
}
RUNNING = {"conditions": [{"type": "Running", "status": "True"}], "trialsRunning": 2}


def test_run_creates_waits_returns_best_and_deletes() -> None:
    fake = FakeKube([RUNNING, RUNNING, SUCCEEDED])
    with serve(fake) as url:
        best = run_experiment(api_client(url), _experiment(), OPTIONS, sleep=lambda s: None)
    assert best == {
        "assignments": {"learning_rate": "0.003", "batch_size": "512"},
        "objective": -12.5,
        "trials": 6,
        "failed_trials": 1,
    }
    methods = [m for m, _, _ in fake.requests]
    assert methods == ["POST", "GET", "GET", "GET", "DELETE"]
    assert fake.requests[0][1] == "/apis/kubeflow.org/v1beta1/namespaces/team/experiments"
    assert fake.requests[0][2] == _serialised(_experiment())
    assert not fake.objects
    result = tune_result(ModelParams(), best, "tpe")
    assert result["parameters"]["learning_rate"] == 0.003 and result["parameters"]["batch_size"] == 512
    assert isinstance(result["parameters"]["batch_size"], int)


def test_failed_experiment_is_reported_and_deleted() -> None:
    failed = {
        "conditions": [
            {
                "type": "Failed",
                "status": "True",
                "reason": "ExperimentMaxFailedTrialsReached",
                "message": "Experiment has failed because max failed count has reached",
            }
        ]
    }
    fake = FakeKube([RUNNING, failed])
    with serve(fake) as url, pytest.raises(RuntimeError, match="failed: ExperimentMaxFailedTrialsReached"):
        run_experiment(api_client(url), _experiment(), OPTIONS, sleep=lambda s: None)
    assert not fake.objects


def test_timeout_fails_and_deletes() -> None:
    ticks = iter(range(0, 1000, 60))
    fake = FakeKube([RUNNING])
    with serve(fake) as url, pytest.raises(TimeoutError, match="did not finish within 100 s"):
        run_experiment(api_client(url), _experiment(), OPTIONS, clock=lambda: next(ticks), sleep=lambda s: None)
    assert not fake.objects


def test_nan_objective_is_an_error() -> None:
    nan_best = {
        **SUCCEEDED,
        "currentOptimalTrial": {
            "parameterAssignments": [],
            "observation": {"metrics": [{"name": "val_nll", "min": "nan"}]},
        },
    }
    fake = FakeKube([nan_best])
    with serve(fake) as url, pytest.raises(RuntimeError, match="no trial with a finite val_nll"):
        run_experiment(api_client(url), _experiment(), OPTIONS, sleep=lambda s: None)


def test_keep_leaves_the_experiment() -> None:
    from dataclasses import replace

    fake = FakeKube([SUCCEEDED])
    with serve(fake) as url:
        run_experiment(api_client(url), _experiment(), replace(OPTIONS, keep=True), sleep=lambda s: None)
    assert len(fake.objects) == 1 and [m for m, _, _ in fake.requests] == ["POST", "GET"]


def test_tune_command_with_katib_backend(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI path: kubeconfig -> real client -> fake API; the best parameters land in --out."""
    from typer.testing import CliRunner

    from container_component_src.main import app

    fake = FakeKube([RUNNING, SUCCEEDED])
    sets = tiny_sets(str(tmp_path / "sets"))  # the launcher sizes them against the trials' memory
    with serve(fake) as url:
        write_kubeconfig(tmp_path / "kubeconfig", url)
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
        monkeypatch.setattr("container_component_src.cluster.katib.time.sleep", lambda s: None)
        result = CliRunner().invoke(
            app,
            [
                "tune",
                "--backend",
                "katib",
                "--train",
                sets["train"],
                "--val",
                sets["val"],
                "--scaler",
                "s3://b/s",
                "--out",
                str(tmp_path / "best.json"),
                "--image",
                "registry.example/eclss:abc",
                "--namespace",
                "team",
                "--max-trials",
                "4",
            ],
        )
    assert result.exit_code == 0, result.output
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["parameters"]["learning_rate"] == 0.003 and best["objective"] == {"name": "val_nll", "value": -12.5}
    created = fake.requests[0][2]
    assert created["spec"]["maxTrialCount"] == 4
    command = created["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["command"]
    words = shlex.split(command[2])
    assert words[words.index("--train") + 1] == sets["train"]
    assert not fake.objects, "the Experiment is deleted"


def test_katib_backend_needs_an_image(tmp_path) -> None:
    from typer.testing import CliRunner

    from container_component_src.main import app

    result = CliRunner().invoke(
        app,
        [
            "tune",
            "--backend",
            "katib",
            "--train",
            "t",
            "--val",
            "v",
            "--scaler",
            "s",
            "--out",
            str(tmp_path / "b.json"),
            "--image",
            "",
            "--namespace",
            "team",
        ],
    )
    assert result.exit_code == 1 and "--image is required to tune with Katib" in result.output


def test_missing_kubernetes_credentials_are_one_line(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from container_component_src.cluster.kube import kube_api_client

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ValueError, match="no Kubernetes credentials"):
        kube_api_client()


# A settings JSON that a shell or the kubelet would mangle if it were not quoted and escaped.
HOSTILE_SETTINGS = json.dumps(
    {"a b": 'it\'s "quoted"', "d": "$HOME $(HOME) $$ ${x} `id` \\ ; && | > * ~ #", "e": "ünï\ncode"}
)
# Stands in for the image's python: writes its arguments (NUL-separated) to ARGV_OUT, prints a metric.
FAKE_PYTHON = """#!/bin/sh
printf '%s\\0' "$@" > "$ARGV_OUT"
echo "epoch=0 val_nll=-1.25"
"""


def _trial_container(experiment: dict, assignments: dict[str, str]) -> dict:
    """The primary container of one trial, with the values substituted as Katib does (in the text)."""
    template = experiment["spec"]["trialTemplate"]
    text = json.dumps(template["trialSpec"])
    for parameter in template["trialParameters"]:
        text = text.replace(f"${{trialParameters.{parameter['name']}}}", assignments[parameter["reference"]])
    return json.loads(text)["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("model", ["point", "window"])
def test_every_trial_command_survives_katibs_sh_c_rewrite(tmp_path: Path, model: str) -> None:
    """The trial runs exactly as the rewritten container would: the kubelet's expansion, then
    `sh -c` of the joined line; the program gets every argument intact and its metric reaches
    the metrics file."""
    space = parse_search_space(
        {
            "learning_rate": {"type": "double", "min": 1e-4, "max": 1e-2, "log": True},
            "batch_size": {"type": "discrete", "values": [256, 512]},
            "model": {"type": "categorical", "values": ["point", "window"]},
        }
    )
    data = {"train": "s3://b/my train", "val": "s3://b/val's", "scaler": "s3://b/$(HOME)/s"}
    command = trial_command(data, space, ModelParams(), {"max_epochs": 3}, settings=HOSTILE_SETTINGS)
    body = experiment_body(build_experiment("eclss-tune-test", space, command, OPTIONS, max_trials=4))
    validate_experiment(body)
    assignments = {"learning_rate": "0.00123", "batch_size": "512", "model": model}
    container = wrap_worker_container(_trial_container(body, assignments), str(tmp_path))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(FAKE_PYTHON)
    (bin_dir / "python").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": "/home/trial", "ARGV_OUT": str(tmp_path / "argv")}
    argv = expand([*container["command"], *container["args"]], env)
    assert argv[:2] == ["sh", "-c"] and len(argv) == 3
    subprocess.run(argv, env=env, check=True, timeout=30)
    received = (tmp_path / "argv").read_bytes().decode().split("\0")[:-1]
    words = ["python", *received]
    expected = shlex.split(command[2].replace("$$", "$"))  # the words as built, before quoting and escaping
    expected = [assignments.get(w.removeprefix("${trialParameters.").rstrip("}"), w) for w in expected]
    assert words == expected
    assert words[words.index("--settings") + 1] == HOSTILE_SETTINGS
    assert words[words.index("--scaler") + 1] == "s3://b/$(HOME)/s"
    assert words[words.index("--model") + 1] == model
    assert "val_nll=-1.25" in (tmp_path / "metrics.log").read_text()
    assert [p.read_text().strip() for p in tmp_path.glob("*.pid")] == ["completed"]


def test_the_plain_argv_of_old_did_not_survive_the_rewrite(tmp_path: Path) -> None:
    """Why the trial is `sh -c <line>`: Katib joins a plain argv with spaces, and the shell then
    splits the settings JSON apart."""
    container = {"name": "training", "command": ["echo", "--settings", '{"a": 1}']}
    wrapped = wrap_worker_container(container, str(tmp_path))
    argv = wrapped["command"] + wrapped["args"]
    subprocess.run(expand(argv, {}), check=True, timeout=30, env={"PATH": os.environ["PATH"]})
    assert (tmp_path / "metrics.log").read_text().strip() == "--settings {a: 1}"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"parallel_trials": 0}, "--parallel-trials must be >= 1"),
        ({"max_failed_trials": -1}, "--max-failed-trials must be >= 0"),
        ({"max_trials": 0}, "--max-trials must be >= 1"),
        ({"algorithm": "grid"}, "learning_rate: the grid algorithm needs a step"),
    ],
)
def test_values_katib_refuses_are_refused_here_with_the_option_named(change: dict, message: str) -> None:
    from dataclasses import replace

    from container_component_src.errors import OptionError

    options = replace(OPTIONS, parallel_trials=change.pop("parallel_trials", 2))
    arguments = {"algorithm": "tpe", "max_trials": 6, "max_failed_trials": 2, **change}
    command = trial_command(DATA, SPACE, ModelParams(), {})
    with pytest.raises(OptionError, match=message):
        build_experiment("eclss-tune-test", SPACE, command, options, **arguments)


def test_a_grid_with_steps_passes_katibs_rules() -> None:
    space = parse_search_space(
        {
            "learning_rate": {"type": "double", "min": 1e-3, "max": 3e-3, "step": 1e-3},
            "latent_dim": {"type": "int", "min": 2, "max": 8, "step": 2},
        }
    )
    command = trial_command(DATA, space, ModelParams(), {})
    validate_experiment(experiment_body(build_experiment("eclss-tune-test", space, command, OPTIONS, "grid", 6, 0)))


@pytest.mark.parametrize("value", ["it's", 'say "hi"', "a\\b", "$HOME", ""])
def test_a_categorical_value_that_cannot_reach_a_trial_is_refused(value: str) -> None:
    from container_component_src.errors import OptionError

    space = parse_search_space({"model": {"type": "categorical", "values": ["point", value]}})
    with pytest.raises(OptionError, match="--search-space model: value"):
        build_experiment("eclss-tune-test", space, trial_command(DATA, space, ModelParams(), {}), OPTIONS)
