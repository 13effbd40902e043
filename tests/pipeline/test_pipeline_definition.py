import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from kfp import compiler

from container_component_src.config import ConfigError, load_settings
from pipeline.components import PLACEHOLDER_IMAGE
from pipeline.pipeline_definition import build_pipeline

EXPECTED_TASKS = {
    "preprocess",
    "parse-reports",
    "label-series",
    "split-dataset",
    "fit-scaler",
    "apply-scaler",
    "tune",
    "train",
    "evaluate",
}


def _settings(project_root: Path, image: str = "registry.example/eclss:test"):
    settings = load_settings(project_root / "config.toml", environ={})
    return dataclasses.replace(settings, platform=dataclasses.replace(settings.platform, image=image))


def _compile(project_root: Path, tmp_path: Path, settings=None) -> dict:
    path = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(build_pipeline(settings or _settings(project_root)), str(path))
    return next(yaml.safe_load_all(path.read_text()))


def _documents(tmp_path: Path) -> list[dict]:
    return list(yaml.safe_load_all((tmp_path / "pipeline.yaml").read_text()))


def test_dag_tasks_and_edges(project_root: Path, tmp_path: Path) -> None:
    spec = _compile(project_root, tmp_path)
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == EXPECTED_TASKS | {"split-archives", "condition-1"}
    deps = {name: set(task.get("dependentTasks", [])) for name, task in tasks.items()}
    assert deps["preprocess"] == {"split-archives"}
    assert deps["label-series"] == {"preprocess", "parse-reports"}
    assert deps["split-dataset"] == {"label-series", "parse-reports"}
    assert deps["apply-scaler"] == {"fit-scaler", "split-dataset"}
    assert deps["tune"] == {"apply-scaler", "fit-scaler"}
    assert deps["train"] == {"apply-scaler", "fit-scaler", "tune"}
    assert deps["evaluate"] == {"train", "apply-scaler"}
    gate = tasks["condition-1"]
    assert gate["taskInfo"]["name"] == "fc1-above-deploy-threshold"
    assert gate["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--evaluate-Output'] > "
        "inputs.parameter_values['pipelinechannel--deploy_threshold']"
    )
    assert set(spec["components"]["comp-condition-1"]["dag"]["tasks"]) == {"deploy"}
    sub = spec["components"]["comp-split-archives"]["dag"]["tasks"]
    loop = next(t for t in sub.values() if "parameterIterator" in t)
    assert loop["parameterIterator"]["items"]["inputParameter"].endswith("list-archives-Output")


def test_every_task_uses_the_configured_image(project_root: Path, tmp_path: Path) -> None:
    spec = _compile(project_root, tmp_path)
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) == 12
    for executor in executors.values():
        container = executor["container"]
        assert container["image"] == "registry.example/eclss:test"
        assert "pip install" not in " ".join(container["command"])
    assert PLACEHOLDER_IMAGE + '"' not in (tmp_path / "pipeline.yaml").read_text()


def test_parameters_have_config_defaults(project_root: Path, tmp_path: Path) -> None:
    spec = _compile(project_root, tmp_path)
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["resample_period"]["defaultValue"] == "1min"
    assert params["archives"]["defaultValue"] == "local_data/archives"
    assert all(p.get("description") for p in params.values()), "every parameter is documented"


def test_compiling_reads_no_environment(project_root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sentinel-secret-xyz")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://sentinel-endpoint:9000")
    _compile(project_root, tmp_path)
    text = (tmp_path / "pipeline.yaml").read_text()
    assert "sentinel" not in text


def test_dag_picture_source(project_root: Path, tmp_path: Path) -> None:
    from pipeline.render_dag import to_dot

    dot = to_dot(_compile(project_root, tmp_path))
    assert '"split-archives/for-loop-1/split-archive" -> "preprocess"' in dot
    assert '"split-archives/list-archives" -> "split-archives/for-loop-1/split-archive"' in dot
    assert '"fit-scaler" -> "apply-scaler"' in dot


def test_compiled_yaml_loads_back_into_kfp(project_root: Path, tmp_path: Path) -> None:
    from kfp import components

    spec = _compile(project_root, tmp_path)
    loaded = components.load_component_from_file(str(tmp_path / "pipeline.yaml"))
    assert loaded.name == "eclss-anomaly-detection"
    space = json.loads(spec["root"]["inputDefinitions"]["parameters"]["search_space"]["defaultValue"])
    assert "learning_rate" in space


def test_invalid_search_space_in_config_is_named(project_root: Path) -> None:
    settings = _settings(project_root)
    broken = dataclasses.replace(settings, tuning=dataclasses.replace(settings.tuning, search_space="{oops"))
    with pytest.raises(ConfigError, match=r"\[tuning\] search_space is not valid JSON"):
        build_pipeline(broken)


def test_ir_parses_strictly_into_the_protobuf_messages(project_root: Path, tmp_path: Path) -> None:
    """No field unknown to KFP's PipelineSpec, PlatformSpec or KubernetesExecutorConfig."""
    from google.protobuf import json_format
    from kfp.kubernetes import kubernetes_executor_config_pb2
    from kfp.pipeline_spec import pipeline_spec_pb2

    _compile(project_root, tmp_path)
    pipeline, platform = _documents(tmp_path)
    json_format.ParseDict(pipeline, pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    platform_spec = json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec(), ignore_unknown_fields=False)
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == set(pipeline["deploymentSpec"]["executors"]), "every task has Kubernetes settings"
    for config in executors.values():
        json_format.ParseDict(config, kubernetes_executor_config_pb2.KubernetesExecutorConfig())
    assert "kubernetes" in platform_spec.platforms


def test_kubernetes_task_settings(project_root: Path, tmp_path: Path) -> None:
    settings = _settings(project_root)
    k8s = dataclasses.replace(
        settings.kubernetes,
        train_gpus=1,
        node_selector={"pool": "ml"},
        gpu_node_selector={"accelerator": "h100"},
        tolerations=[{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
        image_pull_secret="registry-pull",
        timeout_s=7200,
    )
    pipeline = _compile(project_root, tmp_path, dataclasses.replace(settings, kubernetes=k8s))
    executors = pipeline["deploymentSpec"]["executors"]
    train = executors["exec-train"]["container"]
    assert train["resources"]["resourceCpuLimit"] == "4" and train["resources"]["resourceMemoryLimit"] == "8Gi"
    assert train["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert "accelerator" not in executors["exec-fit-scaler"]["container"]["resources"]
    assert executors["exec-fit-scaler"]["container"]["resources"]["resourceMemoryLimit"] == "2Gi"
    assert {"name": "AWS_ENDPOINT_URL", "value": settings.platform.minio_endpoint} in train["env"]
    platform = _documents(tmp_path)[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert platform["exec-train"]["nodeSelector"]["labels"] == {"pool": "ml", "accelerator": "h100"}
    assert platform["exec-fit-scaler"]["nodeSelector"]["labels"] == {"pool": "ml"}
    assert platform["exec-evaluate"]["tolerations"][0]["key"] == "dedicated"
    assert platform["exec-evaluate"]["imagePullSecret"][0]["secretName"] == "registry-pull"
    assert platform["exec-evaluate"]["activeDeadlineSeconds"] == "7200"
    secret = platform["exec-deploy"]["secretAsEnv"][0]
    assert secret["secretName"] == settings.platform.s3_secret_name
    assert {k["envVar"] for k in secret["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def test_retries_only_where_a_rerun_is_harmless(project_root: Path, tmp_path: Path) -> None:
    spec = _compile(project_root, tmp_path)
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["preprocess"]["retryPolicy"]["maxRetryCount"] == 2
    assert tasks["evaluate"]["retryPolicy"]["maxRetryCount"] == 2
    assert "retryPolicy" not in tasks["train"] and "retryPolicy" not in tasks["tune"]
    deploy = spec["components"]["comp-condition-1"]["dag"]["tasks"]["deploy"]
    assert "retryPolicy" not in deploy


def test_resources_need_a_default(project_root: Path) -> None:
    settings = _settings(project_root)
    k8s = dataclasses.replace(settings.kubernetes, resources={"train": {"cpu": "1", "memory": "1Gi"}})
    with pytest.raises(ConfigError, match='cpu and memory for "list-archives" or "default"'):
        build_pipeline(dataclasses.replace(settings, kubernetes=k8s))


def _task_settings(spec: dict, dag: dict, task: str) -> dict:
    """The settings JSON a compiled task receives (a constant input)."""
    constant = dag["tasks"][task]["inputs"]["parameters"]["settings"]["runtimeValue"]["constant"]
    return json.loads(constant)


def test_compiled_settings_reach_every_task(project_root: Path, tmp_path: Path) -> None:
    """Settings no pipeline parameter carries travel with the run: edit config (or ECLSS_*), recompile,
    and the cluster tasks use the new value, not the image's config.toml."""
    env = {
        "ECLSS_SERVING__MEMORY": "5Gi",
        "ECLSS_SERVING__MAX_BATCH_ROWS": "777",
        "ECLSS_TRAINING__TIMEOUT_S": "99",
        "ECLSS_PREPROCESSING__PROFILE_WORKERS": "true",
        "ECLSS_TUNING__PARALLEL_TRIALS": "5",
    }
    settings = load_settings(project_root / "config.toml", environ=env)
    spec = _compile(project_root, tmp_path, settings)
    root = spec["root"]["dag"]
    deploy = _task_settings(spec, spec["components"]["comp-condition-1"]["dag"], "deploy")
    assert deploy["serving"]["memory"] == "5Gi" and deploy["serving"]["max_batch_rows"] == 777
    assert _task_settings(spec, root, "train")["training"]["timeout_s"] == 99
    assert _task_settings(spec, root, "preprocess")["preprocessing"]["profile_workers"] is True
    every = [_task_settings(spec, root, t) for t in EXPECTED_TASKS]
    assert all(s == every[0] for s in every), "one set of settings for the whole run"


def test_tune_receives_the_accelerator_and_devices(project_root: Path, tmp_path: Path) -> None:
    spec = _compile(project_root, tmp_path)
    inputs = spec["root"]["dag"]["tasks"]["tune"]["inputs"]["parameters"]
    assert inputs["accelerator"] == {"componentInputParameter": "accelerator"}
    assert inputs["devices"] == {"componentInputParameter": "devices"}


def test_fit_scaler_receives_the_scaler_parameters(project_root: Path, tmp_path: Path) -> None:
    spec = _compile(project_root, tmp_path)
    inputs = spec["root"]["dag"]["tasks"]["fit-scaler"]["inputs"]["parameters"]
    assert inputs["scaler_kind"] == {"componentInputParameter": "scaler_kind"}
    assert inputs["reference_rows"] == {"componentInputParameter": "reference_rows"}
    assert spec["root"]["inputDefinitions"]["parameters"]["reference_rows"]["defaultValue"] == 0


def test_train_receives_the_drift_weight_as_a_run_parameter(project_root: Path, tmp_path: Path) -> None:
    """Whether served data will leave the training range is the user's call per run."""
    spec = _compile(project_root, tmp_path)
    inputs = spec["root"]["dag"]["tasks"]["train"]["inputs"]["parameters"]
    assert inputs["drift_weight"] == {"componentInputParameter": "drift_weight"}
    assert spec["root"]["inputDefinitions"]["parameters"]["drift_weight"]["defaultValue"] == 1.0


def test_a_launcher_whose_training_runs_elsewhere_reserves_no_gpu(project_root: Path, tmp_path: Path) -> None:
    from container_component_src.choices import TuneBackend

    settings = _settings(project_root)
    settings = dataclasses.replace(
        settings,
        kubernetes=dataclasses.replace(settings.kubernetes, train_gpus=1),
        tuning=dataclasses.replace(settings.tuning, backend=TuneBackend.katib),
    )
    _compile(project_root, tmp_path, settings)
    executors = _documents(tmp_path)[0]["deploymentSpec"]["executors"]
    assert "accelerator" not in executors["exec-tune"]["container"]["resources"], "Katib's trials get the GPUs"
    assert executors["exec-train"]["container"]["resources"]["accelerator"]["resourceCount"] == "1"
