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


def _compile(project_root: Path, tmp_path: Path) -> dict:
    path = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(build_pipeline(_settings(project_root)), str(path))
    return yaml.safe_load(path.read_text())


def test_dag_tasks_and_edges(project_root: Path, tmp_path: Path) -> None:
    spec = _compile(project_root, tmp_path)
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == EXPECTED_TASKS | {"split-archives"}
    deps = {name: set(task.get("dependentTasks", [])) for name, task in tasks.items()}
    assert deps["preprocess"] == {"split-archives"}
    assert deps["label-series"] == {"preprocess", "parse-reports"}
    assert deps["split-dataset"] == {"label-series", "parse-reports"}
    assert deps["apply-scaler"] == {"fit-scaler", "split-dataset"}
    assert deps["tune"] == {"apply-scaler", "fit-scaler"}
    assert deps["train"] == {"apply-scaler", "fit-scaler", "tune"}
    assert deps["evaluate"] == {"train", "apply-scaler"}
    sub = spec["components"]["comp-split-archives"]["dag"]["tasks"]
    loop = next(t for t in sub.values() if "parameterIterator" in t)
    assert loop["parameterIterator"]["items"]["inputParameter"].endswith("list-archives-Output")


def test_every_task_uses_the_configured_image(project_root: Path, tmp_path: Path) -> None:
    spec = _compile(project_root, tmp_path)
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) == 11
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
