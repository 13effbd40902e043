import json
from dataclasses import replace
from pathlib import Path

import pytest

from container_component_src.cluster.inference_service import (
    InferenceServiceOptions,
    apply_inference_service,
    build_inference_service,
    run_inference_service_deploy,
    wait_until_ready,
)
from tests.cluster.fake_kube import FakeKube, api_client, serve, write_kubeconfig

OPTIONS = InferenceServiceOptions(
    name="eclss-anomaly",
    namespace="team",
    image="registry.example/eclss:abc",
    storage_uri="s3://models/eclss-anomaly/run-1",
    service_account="kserve-minio",
    gpus=1,
    timeout_s=100,
    poll_s=1,
)
NOT_READY = {
    "conditions": [
        {"type": "PredictorReady", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "pulling"},
        {"type": "Ready", "status": "False"},
    ]
}
READY = {"url": "http://eclss-anomaly.team.example.com", "conditions": [{"type": "Ready", "status": "True"}]}
FAILED_LOAD = {
    "conditions": [{"type": "Ready", "status": "False"}],
    "modelStatus": {
        "transitionStatus": "BlockedByFailedLoad",
        "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "no model.torchscript.pt"},
    },
}


def _serialised(isvc) -> dict:
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(isvc)


def test_inference_service_structure() -> None:
    spec = _serialised(build_inference_service(OPTIONS))
    assert spec["apiVersion"] == "serving.kserve.io/v1beta1" and spec["kind"] == "InferenceService"
    assert spec["metadata"]["annotations"] == {"serving.kserve.io/deploymentMode": "RawDeployment"}
    predictor, transformer = spec["spec"]["predictor"], spec["spec"]["transformer"]
    assert predictor["serviceAccountName"] == transformer["serviceAccountName"] == "kserve-minio"
    for role, component in (("predictor", predictor), ("transformer", transformer)):
        (container,) = component["containers"]
        assert container["name"] == "kserve-container" and container["image"] == "registry.example/eclss:abc"
        assert container["command"] == ["python", "-m", "container_component_src.main"]
        args = container["args"]
        assert args[0] == "serve", "KServe appends its own arguments after the subcommand's"
        assert args[args.index("--role") + 1] == role and args[args.index("--model-dir") + 1] == "/mnt/models"
        assert {"name": "STORAGE_URI", "value": "s3://models/eclss-anomaly/run-1"} in container["env"]
        assert args[args.index("--host") + 1] == "0.0.0.0" and container["ports"][0]["containerPort"] == 8080
        assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert predictor["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in transformer["containers"][0]["resources"]["limits"]


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match=r"s3://"):
        build_inference_service(replace(OPTIONS, storage_uri="/tmp/model"))
    with pytest.raises(ValueError, match="--image"):
        build_inference_service(replace(OPTIONS, image=""))


def test_no_credential_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sentinel-secret-789")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "sentinel-key-789")
    assert "sentinel" not in json.dumps(_serialised(build_inference_service(OPTIONS)))


def test_create_then_patch() -> None:
    fake = FakeKube([READY])
    isvc = build_inference_service(OPTIONS)
    with serve(fake) as url:
        client = api_client(url)
        assert apply_inference_service(client, isvc) == "created"
        changed = build_inference_service(replace(OPTIONS, storage_uri="s3://models/eclss-anomaly/run-2"))
        assert apply_inference_service(client, changed) == "patched"
    methods = [method for method, _, _ in fake.requests]
    assert methods == ["POST", "POST", "PATCH"]
    assert fake.requests[-1][1] == "/apis/serving.kserve.io/v1beta1/namespaces/team/inferenceservices/eclss-anomaly"
    stored = fake.objects[("team", "inferenceservices", "eclss-anomaly")]
    assert stored["spec"]["predictor"]["containers"][0]["env"][0]["value"].endswith("run-2")


def test_waits_until_ready(capsys) -> None:
    fake = FakeKube([NOT_READY, NOT_READY, READY])
    with serve(fake) as url:
        client = api_client(url)
        apply_inference_service(client, build_inference_service(OPTIONS))
        status = wait_until_ready(client, "eclss-anomaly", "team", 100, 1, sleep=lambda s: None)
    assert status["url"] == READY["url"] and fake.gets == 3
    assert "ProgressDeadlineExceeded" in capsys.readouterr().out


def test_never_ready_times_out_with_the_reasons() -> None:
    ticks = iter(range(0, 1000, 30))
    fake = FakeKube([NOT_READY])
    with (
        serve(fake) as url,
        pytest.raises(TimeoutError, match="did not finish within 100 s: not ready: PredictorReady: .*pulling"),
    ):
        client = api_client(url)
        apply_inference_service(client, build_inference_service(OPTIONS))
        wait_until_ready(client, "eclss-anomaly", "team", 100, 1, clock=lambda: next(ticks), sleep=lambda s: None)


def test_a_failed_model_load_fails_at_once() -> None:
    fake = FakeKube([FAILED_LOAD])
    with serve(fake) as url, pytest.raises(RuntimeError, match="BlockedByFailedLoad: ModelLoadFailed"):
        client = api_client(url)
        apply_inference_service(client, build_inference_service(OPTIONS))
        wait_until_ready(client, "eclss-anomaly", "team", 100, 1, sleep=lambda s: None)
    assert fake.gets == 1


def test_an_old_status_is_not_taken_for_the_new_spec() -> None:
    fake = FakeKube([{**READY, "observedGeneration": 1}, {**READY, "observedGeneration": 2}])
    with serve(fake) as url:
        client = api_client(url)
        apply_inference_service(client, build_inference_service(OPTIONS))
        fake.objects[("team", "inferenceservices", "eclss-anomaly")]["metadata"]["generation"] = 2
        wait_until_ready(client, "eclss-anomaly", "team", 100, 1, sleep=lambda s: None)
    assert fake.gets == 2


def test_run_deploy_returns_the_url() -> None:
    fake = FakeKube([NOT_READY, READY])
    with serve(fake) as url:
        result = run_inference_service_deploy(replace(OPTIONS, poll_s=0), api_client(url))
    assert result == {
        "name": "eclss-anomaly",
        "namespace": "team",
        "action": "created",
        "url": READY["url"],
        "storage_uri": OPTIONS.storage_uri,
    }


def test_deploy_command_publishes_to_object_storage_and_applies(
    tmp_path: Path, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI path: model published to S3 (moto), InferenceService through a kubeconfig to the fake API."""
    from typer.testing import CliRunner

    from container_component_src import storage
    from container_component_src.main import app

    model = tmp_path / "model"
    model.mkdir()
    (model / "model.torchscript.pt").write_bytes(b"weights")
    (model / "scaler.json").write_text(json.dumps({"channels": ["a"], "center": [0.0], "scale": [1.0]}))
    summary = {
        "deploy": {
            "threshold": 4.2,
            "fc1": 0.9,
            "evaluated_threshold": 4.2,
            "smoothing_window": 1,
            "val_quantile": 0.99,
        }
    }
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    fake = FakeKube([NOT_READY, READY])
    monkeypatch.setattr("container_component_src.cluster.inference_service.time.sleep", lambda s: None)
    with serve(fake) as url:
        write_kubeconfig(tmp_path / "kubeconfig", url)
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
        result = CliRunner().invoke(
            app,
            [
                "deploy",
                "--backend",
                "kserve",
                "--model",
                str(model),
                "--summary",
                str(tmp_path / "summary.json"),
                "--out",
                str(tmp_path / "endpoint.json"),
                "--model-store",
                f"{s3_bucket}/models",
                "--run-id",
                "run-7",
                "--image",
                "registry.example/eclss:abc",
                "--namespace",
                "team",
            ],
        )
    assert result.exit_code == 0, result.output
    target = f"{s3_bucket}/models/eclss-anomaly/run-7"
    assert storage.read_json(f"{target}/serving.json")["threshold"] == 4.2
    assert storage.exists(f"{target}/model.torchscript.pt")
    endpoint = json.loads((tmp_path / "endpoint.json").read_text())
    assert endpoint["url"] == READY["url"] and endpoint["storage_uri"] == target
    container = fake.requests[0][2]["spec"]["predictor"]["containers"][0]
    assert {"name": "STORAGE_URI", "value": target} in container["env"]


def test_publishing_next_to_the_kfp_artifact() -> None:
    from container_component_src.serving.deploy import DeployOptions, publish_target

    options = DeployOptions(backend="kserve")
    assert publish_target(options, "minio://mlpipeline/v2/artifacts/run/train/model", "r") == (
        "s3://mlpipeline/v2/artifacts/run/train/model-serving"
    )
