import json
from dataclasses import replace
from pathlib import Path

import pytest

from container_component_src.cluster.pytorchjob import (
    PyTorchJobOptions,
    build_pytorchjob,
    job_name,
    run_pytorchjob,
    run_pytorchjob_train,
)
from tests.cluster.fake_kube import FakeKube, api_client, serve, write_kubeconfig
from tests.dataset_files import tiny_sets

OPTIONS = PyTorchJobOptions(
    image="registry.example/eclss:abc",
    namespace="team",
    replicas=3,
    gpus_per_replica=1,
    s3_secret_name="minio-creds",
    s3_endpoint="http://minio:9000",
    timeout_s=100,
    poll_s=1,
)
COMMAND = ["python", "-m", "container_component_src.main", "train", "--out", "s3://b/scratch"]
RUNNING = {"conditions": [{"type": "Created", "status": "True"}, {"type": "Running", "status": "True"}]}
SUCCEEDED = {"conditions": [{"type": "Running", "status": "False"}, {"type": "Succeeded", "status": "True"}]}
FAILED = {
    "conditions": [
        {
            "type": "Failed",
            "status": "True",
            "reason": "PyTorchJobFailed",
            "message": "PyTorchJob team/x is failed because 1 Master replica(s) failed.",
        }
    ]
}


def _serialised(job) -> dict:
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(job)


def test_job_structure() -> None:
    spec = _serialised(build_pytorchjob("eclss-train-x", COMMAND, OPTIONS))
    assert spec["apiVersion"] == "kubeflow.org/v1" and spec["kind"] == "PyTorchJob"
    assert spec["metadata"] == {"name": "eclss-train-x", "namespace": "team"}
    replicas = spec["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 2
    assert spec["spec"]["runPolicy"]["activeDeadlineSeconds"] == 100
    pod = replicas["Master"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["name"] == "pytorch" and container["image"] == "registry.example/eclss:abc"
    assert container["command"] == COMMAND
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
    assert pod["volumes"][0]["emptyDir"]["medium"] == "Memory"
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio:9000"
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "minio-creds", "key": "AWS_ACCESS_KEY_ID"}
    single = _serialised(build_pytorchjob("n", COMMAND, replace(OPTIONS, replicas=1, gpus_per_replica=0)))
    assert set(single["spec"]["pytorchReplicaSpecs"]) == {"Master"}
    assert (
        "nvidia.com/gpu"
        not in single["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["resources"][
            "limits"
        ]
    )


def test_no_credential_values_and_unique_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sentinel-secret-456")
    assert "sentinel-secret-456" not in json.dumps(_serialised(build_pytorchjob("n", COMMAND, OPTIONS)))
    assert len({job_name() for _ in range(50)}) == 50


def test_bad_shapes() -> None:
    with pytest.raises(ValueError, match="--replicas must be >= 1"):
        build_pytorchjob("n", COMMAND, replace(OPTIONS, replicas=0))
    with pytest.raises(ValueError, match="one GPU per replica"):
        build_pytorchjob("n", COMMAND, replace(OPTIONS, gpus_per_replica=4))


def test_run_streams_master_log_and_deletes(capsys) -> None:
    fake = FakeKube(
        [RUNNING, RUNNING, SUCCEEDED], logs=["epoch=0 val_nll=3.1\n", "epoch=0 val_nll=3.1\nepoch=1 val_nll=2.5\n"]
    )
    job = build_pytorchjob("eclss-train-ok", COMMAND, OPTIONS)
    with serve(fake) as url:
        run_pytorchjob(api_client(url), job, OPTIONS, sleep=lambda s: None)
    out = capsys.readouterr().out
    assert out.count("epoch=0 val_nll=3.1") == 1 and "epoch=1 val_nll=2.5" in out, "each log line printed once"
    assert fake.requests[0][1] == "/apis/kubeflow.org/v1/namespaces/team/pytorchjobs"
    assert fake.requests[0][2] == _serialised(job)
    assert fake.requests[-1][0] == "DELETE" and not fake.objects


def test_failed_job_reports_the_master_log() -> None:
    fake = FakeKube([RUNNING, FAILED], logs=["loading data\nNonFiniteLossError: train loss is nan\n"])
    with serve(fake) as url, pytest.raises(RuntimeError, match="(?s)PyTorchJobFailed.*train loss is nan"):
        run_pytorchjob(
            api_client(url), build_pytorchjob("eclss-train-bad", COMMAND, OPTIONS), OPTIONS, sleep=lambda s: None
        )
    assert not fake.objects


def test_timeout_fails_and_deletes() -> None:
    ticks = iter(range(0, 1000, 60))
    fake = FakeKube([RUNNING])
    with serve(fake) as url, pytest.raises(TimeoutError, match="did not finish within 100 s"):
        run_pytorchjob(
            api_client(url),
            build_pytorchjob("eclss-train-slow", COMMAND, OPTIONS),
            OPTIONS,
            clock=lambda: next(ticks),
            sleep=lambda s: None,
        )
    assert not fake.objects


def test_train_copies_the_masters_model_and_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "scratch"
    (scratch).mkdir()
    (scratch / "model.torchscript.pt").write_bytes(b"weights")
    monkeypatch.setattr("container_component_src.cluster.pytorchjob.time.sleep", lambda s: None)
    fake = FakeKube([SUCCEEDED])
    with serve(fake) as url:
        run_pytorchjob_train(
            tiny_sets(str(tmp_path / "sets")),
            str(tmp_path / "model"),
            str(scratch),
            OPTIONS,
            api_client=api_client(url),
        )
    assert (tmp_path / "model" / "model.torchscript.pt").read_bytes() == b"weights"
    assert not scratch.exists()
    command = fake.requests[0][2]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0][
        "command"
    ]
    assert command[command.index("--out") + 1] == str(scratch)
    assert command[command.index("--num-nodes") + 1] == "3" and command[command.index("--accelerator") + 1] == "gpu"


def test_train_command_with_pytorchjob_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI path: kubeconfig -> real client -> fake API; the master's model lands in --out."""
    from typer.testing import CliRunner

    from container_component_src.main import app

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "metrics.json").write_text("{}")
    (tmp_path / "best.json").write_text(json.dumps({"parameters": {"learning_rate": 0.004, "batch_size": 256}}))
    fake = FakeKube([RUNNING, SUCCEEDED], logs=["epoch=0 val_nll=1.5\n"])
    sets = tiny_sets(str(tmp_path / "sets"))  # the launcher sizes them against the replicas' memory
    with serve(fake) as url:
        write_kubeconfig(tmp_path / "kubeconfig", url)
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
        monkeypatch.setattr("container_component_src.cluster.pytorchjob.time.sleep", lambda s: None)
        result = CliRunner().invoke(
            app,
            [
                "train",
                "--backend",
                "pytorchjob",
                "--train",
                sets["train"],
                "--val",
                sets["val"],
                "--scaler",
                "s3://b/s",
                "--params",
                str(tmp_path / "best.json"),
                "--out",
                str(tmp_path / "model"),
                "--scratch",
                str(scratch),
                "--image",
                "registry.example/eclss:abc",
                "--namespace",
                "team",
                "--replicas",
                "2",
                "--accelerator",
                "cpu",
            ],
        )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "model" / "metrics.json").is_file() and not scratch.exists()
    command = fake.requests[0][2]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0][
        "command"
    ]
    assert command[command.index("--learning-rate") + 1] == "0.004", "the tuned parameters reach the replicas"
    assert command[command.index("--num-nodes") + 1] == "2"
    assert fake.requests[-1][0] == "DELETE"


def test_pytorchjob_backend_needs_a_scratch_folder(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from container_component_src.main import app

    result = CliRunner().invoke(
        app,
        [
            "train",
            "--backend",
            "pytorchjob",
            "--train",
            "t",
            "--val",
            "v",
            "--scaler",
            "s",
            "--out",
            str(tmp_path / "m"),
            "--namespace",
            "team",
            "--image",
            "img",
        ],
    )
    assert result.exit_code == 1 and "--scratch is required" in result.output
