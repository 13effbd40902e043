"""One name and one default per setting: where a library options dataclass has a field named like
a config key of its section, its default is config.toml's value."""

import dataclasses
from pathlib import Path

import pytest

from container_component_src.cluster.dask import ClusterOptions
from container_component_src.cluster.inference_service import InferenceServiceOptions
from container_component_src.cluster.katib import KatibOptions
from container_component_src.cluster.pytorchjob import PyTorchJobOptions
from container_component_src.config import load_settings
from container_component_src.data.generate import GeneratorOptions
from container_component_src.data.preprocess import PreprocessOptions
from container_component_src.data.split import SplitOptions
from container_component_src.evaluation.evaluate import EvaluateOptions
from container_component_src.model.train import ModelParams, TrainOptions
from container_component_src.serving.deploy import DeployOptions
from container_component_src.serving.server import ServeOptions

PAIRS = [
    (GeneratorOptions, "generator"),
    (PreprocessOptions, "preprocessing"),
    (ClusterOptions, "preprocessing"),
    (SplitOptions, "split"),
    (ModelParams, "training"),
    (TrainOptions, "training"),
    (PyTorchJobOptions, "training"),
    (KatibOptions, "tuning"),
    (EvaluateOptions, "evaluation"),
    (ServeOptions, "serving"),
    (DeployOptions, "serving"),
    (InferenceServiceOptions, "serving"),
]


@pytest.mark.parametrize(("options", "section"), PAIRS, ids=[p[0].__name__ for p in PAIRS])
def test_library_defaults_are_the_config_defaults(project_root: Path, options: type, section: str) -> None:
    config = dataclasses.asdict(getattr(load_settings(project_root / "config.toml", environ={}), section))
    shared = [f for f in dataclasses.fields(options) if f.name in config and f.default is not dataclasses.MISSING]
    assert shared, "the options share names with their config section"
    for field in shared:
        expected = config[field.name]
        default = list(field.default) if isinstance(field.default, tuple) else field.default
        assert default == expected, f"{options.__name__}.{field.name} = {field.default!r}, config.toml: {expected!r}"
