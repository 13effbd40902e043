"""The bridge from keyword options to command lines, and a check of every command line the
project builds against the real options of its subcommand."""

import json
import shlex
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer

from container_component_src.choices import Accelerator, ServeRole
from container_component_src.cli_args import MODULE_COMMAND, to_argv
from container_component_src.config import load_settings, settings_to_json
from container_component_src.main import app, cli_defaults


def _options_of(subcommand: str) -> set[str]:
    command = typer.main.get_command(app)
    params = command.commands[subcommand].params
    return {opt for p in params for opt in (*p.opts, *p.secondary_opts)}


def _group_options() -> set[str]:
    return {opt for p in typer.main.get_command(app).params for opt in (*p.opts, *p.secondary_opts)}


def unknown_flags(argv: list[str]) -> list[str]:
    """Flags of `argv` (`[group options] subcommand [options]`) that its subcommand does not have."""
    if argv[:3] == list(MODULE_COMMAND):
        argv = argv[3:]
    position = 0
    unknown = []
    while argv[position].startswith("--"):
        if argv[position] not in _group_options():
            unknown.append(argv[position])
        position += 2
    options = _options_of(argv[position])
    return unknown + [a for a in argv[position + 1 :] if a.startswith("--") and a not in options]


def test_to_argv() -> None:
    argv = to_argv(
        "preprocess",
        {
            "partitions": ["a", "b"],
            "profile_workers": False,
            "keep": True,
            "skip": None,
            "accelerator": Accelerator.gpu,
        },
        settings="{}",
    )
    assert argv == [
        "--settings",
        "{}",
        "preprocess",
        "--partitions",
        "a",
        "--partitions",
        "b",
        "--no-profile-workers",
        "--keep",
        "--accelerator",
        "gpu",
    ]


def test_the_check_catches_a_typo() -> None:
    assert unknown_flags(to_argv("train", {"max_epoch": 3})) == ["--max-epoch"]
    assert unknown_flags(to_argv("train", {"max_epochs": 3}, settings="{}")) == []


class _Artifact(SimpleNamespace):
    pass


def _artifact(name: str) -> _Artifact:
    return _Artifact(path=f"/tmp/{name}", uri=f"minio://bucket/{name}")


class _Stop(Exception):
    pass


def _component_argv(component: Any, overrides: dict[str, Any]) -> list[str]:
    """Run a component's body with stand-in artifacts; return the command line it ran."""
    import inspect

    import container_component_src.main as main

    captured: list[list[str]] = []

    def fake_run(*args: str) -> None:
        captured.append(list(args))
        raise _Stop

    func = component.python_func
    arguments = {}
    for name, parameter in inspect.signature(func).parameters.items():
        annotation = str(parameter.annotation)
        if "List[" in annotation:
            arguments[name] = [_artifact(f"{name}-0"), _artifact(f"{name}-1")]
        elif "Input" in annotation or "Output" in annotation:
            arguments[name] = _artifact(name)
        elif parameter.annotation is bool:
            arguments[name] = True
        elif parameter.annotation is int:
            arguments[name] = 2
        elif parameter.annotation is float:
            arguments[name] = 0.5
        else:
            arguments[name] = "value"
    arguments |= {k: v for k, v in overrides.items() if k in arguments}
    original = main.run_subcommand
    main.run_subcommand = fake_run
    try:
        func(**arguments)
    except _Stop:
        pass
    finally:
        main.run_subcommand = original
    (argv,) = captured
    return argv


BACKENDS = [
    {"cluster": "local", "backend": "local"},
    {"cluster": "kubernetes", "backend": "katib"},
    {"backend": "pytorchjob"},
    {"backend": "kserve"},
]


@pytest.mark.parametrize("overrides", BACKENDS)
def test_every_component_passes_only_real_options(overrides: dict[str, Any]) -> None:
    from kfp.dsl.base_component import BaseComponent

    from pipeline import components

    found = [c for c in vars(components).values() if isinstance(c, BaseComponent)]
    assert len(found) == 12
    for component in found:
        argv = _component_argv(component, {"settings": "{}", **overrides})
        assert argv[:2] == ["--settings", "{}"], component.name
        assert unknown_flags(argv) == [], component.name


def test_every_pod_command_passes_only_real_options() -> None:
    from container_component_src.cluster.inference_service import InferenceServiceOptions, build_inference_service
    from container_component_src.cluster.katib import trial_command
    from container_component_src.cluster.pytorchjob import PyTorchJobOptions, replica_command
    from container_component_src.model.train import ModelParams
    from container_component_src.model.tune import parse_search_space
    from container_component_src.serving.deploy import serve_argv

    data = {"train": "s3://b/t", "val": "s3://b/v", "scaler": "s3://b/s"}
    space = parse_search_space({"beta": {"type": "double", "min": 0.1, "max": 1.0}})
    run = {
        "max_epochs": 3,
        "patience": 2,
        "accelerator": "cpu",
        "devices": 1,
        "seed": 0,
        "mode_weight": 0.1,
        "drift_weight": 0.0,
    }
    commands = [
        shlex.split(trial_command(data, space, ModelParams(), run, "{}")[2]),  # sh -c <line>
        replica_command({**data, **run}, "s3://b/scratch", PyTorchJobOptions(image="i", namespace="n"), "{}"),
        [*MODULE_COMMAND, *serve_argv("/m", "eclss", 8080, 10)],
    ]
    isvc = build_inference_service(
        InferenceServiceOptions(name="m", namespace="n", image="i", storage_uri="s3://b/m", settings="{}")
    )
    for spec in (isvc.spec.predictor, isvc.spec.transformer):
        (container,) = spec.containers
        commands.append([*container.command, *container.args])
    for command in commands:
        assert unknown_flags(command) == [], command
    assert ServeRole.transformer in commands[-1]


def test_every_config_default_is_an_option_of_its_subcommand(project_root: Path) -> None:
    defaults = cli_defaults(load_settings(project_root / "config.toml", environ={}))
    for subcommand, values in defaults.items():
        params = {p.name: p for p in typer.main.get_command(app).commands[subcommand].params}
        assert set(values) <= set(params), (subcommand, set(values) - set(params))
        restated = [name for name in values if params[name].default is not None]
        assert not restated, f"{subcommand}: {restated} restate config.toml's default in the CLI"


def test_settings_json_replaces_the_config_file(project_root: Path) -> None:
    import dataclasses

    from typer.testing import CliRunner

    settings = load_settings(project_root / "config.toml", environ={})
    settings = dataclasses.replace(
        settings, split_archives=dataclasses.replace(settings.split_archives, partition_period="6h")
    )
    result = CliRunner().invoke(app, ["--settings", settings_to_json(settings), "split-archive", "--help"])
    assert result.exit_code == 0 and "[default: 6h]" in result.output
    bad = json.loads(settings_to_json(settings))
    bad["preprocessing"]["aggregation"] = "avg"
    result = CliRunner().invoke(app, ["--settings", json.dumps(bad), "split-archive", "--help"])
    assert result.exit_code == 1
    assert "--settings [preprocessing] aggregation: expected one of mean" in result.output


def test_no_float_option_takes_nan_or_inf(tmp_path: Path) -> None:
    """A NaN passes every range check (`not 0 < nan < 1` is true): every float option of every
    subcommand refuses it as it parses."""
    from typer.testing import CliRunner

    from container_component_src.main import app

    args = ["split-dataset", "--labelled", "l", "--intervals", "i", "--train", "a", "--val", "b", "--test", "c"]
    for value in ("nan", "inf", "-inf"):
        result = CliRunner().invoke(app, [*args, "--val-share", value])
        assert result.exit_code == 2 and f"'{value}' is not a finite number" in result.output, result.output
    result = CliRunner().invoke(app, [*args, "--block-hours", "NaN"])
    assert result.exit_code == 2 and "--block-hours" in result.output


def test_a_map_of_weights_travels_as_a_repeated_option_and_comes_back_whole() -> None:
    from container_component_src.cli_args import parse_weight_pairs, weight_pairs
    from container_component_src.errors import OptionError

    weights = {"Volume Flow RateRMS": 0.0, "a=b": 0.25, "c": 1e-9}
    pairs = weight_pairs(weights)
    assert to_argv("train", {"named_weights": pairs})[1:3] == ["--named-weights", "Volume Flow RateRMS=0.0"]
    assert parse_weight_pairs(pairs, "--named-weights") == weights
    for bad, why in (("x", "expects NAME=WEIGHT"), ("=1", "expects NAME=WEIGHT"), ("x=one", "expects NAME=WEIGHT")):
        with pytest.raises(OptionError, match=f"--named-weights {why}, got '{bad}'"):
            parse_weight_pairs([bad], "--named-weights")
    with pytest.raises(OptionError, match="names 'x' twice"):
        parse_weight_pairs(["x=0", "x=1"], "--named-weights")
