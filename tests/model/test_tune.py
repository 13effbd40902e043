import json
from dataclasses import fields
from pathlib import Path

import pytest

from container_component_src.model.train import ModelParams, TrainOptions
from container_component_src.model.tune import grid_values, parse_search_space, run_tune

OPTIONS = TrainOptions(max_epochs=1, min_steps=0, patience=1, accelerator="cpu", progress=False)
BASE = ModelParams(batch_size=512, hidden_size=16, latent_dim=2)


def test_parse_search_space() -> None:
    space = parse_search_space(
        '{"learning_rate": {"type": "double", "min": 1e-4, "max": 1e-2, "log": true},'
        ' "batch_size": {"type": "discrete", "values": [256, 512]},'
        ' "latent_dim": {"type": "int", "min": 2, "max": 6, "step": 2}}'
    )
    assert [p.name for p in space] == ["learning_rate", "batch_size", "latent_dim"]
    assert space[0].log and space[1].values == (256, 512)
    assert grid_values(space[2]) == [2, 4, 6] and grid_values(space[1]) == [256, 512]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"dropout": {"type": "double", "min": 0, "max": 1}}, "unknown parameter 'dropout'"),
        ({"beta": {"type": "float", "min": 0, "max": 1}}, "beta: type must be one of"),
        ({"beta": {"type": "double", "min": 2, "max": 1}}, "beta: needs min <= max"),
        ({"batch_size": {"type": "discrete", "values": []}}, "batch_size: needs a non-empty list"),
        ({"beta": {"type": "double", "min": 0, "max": 1, "scale": 2}}, "beta: unknown key"),
        ({}, "non-empty JSON object"),
    ],
)
def test_bad_search_spaces_name_the_parameter(spec: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_search_space(json.dumps(spec))


def test_grid_needs_a_step() -> None:
    (beta,) = parse_search_space({"beta": {"type": "double", "min": 0.1, "max": 1.0}})
    with pytest.raises(ValueError, match="grid algorithm needs a step"):
        grid_values(beta)


def test_local_tuning_writes_best_parameters(scaled_sets: dict[str, str], tmp_path: Path) -> None:
    space = {
        "learning_rate": {"type": "double", "min": 1e-3, "max": 1e-2, "log": True},
        "latent_dim": {"type": "discrete", "values": [2, 3]},
    }
    out = tmp_path / "best.json"
    result = run_tune(
        scaled_sets["train"],
        scaled_sets["val"],
        scaled_sets["scaler"],
        str(out),
        space,
        BASE,
        OPTIONS,
        algorithm="random",
        max_trials=2,
    )
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    assert set(saved["parameters"]) == {f.name for f in fields(ModelParams)}
    assert 1e-3 <= saved["parameters"]["learning_rate"] <= 1e-2 and saved["parameters"]["latent_dim"] in (2, 3)
    assert saved["parameters"]["hidden_size"] == 16, "parameters outside the space keep their base value"
    assert saved["objective"]["name"] == "val_nll" and saved["trials"] == 2


def test_tuning_searches_the_model_kind_and_window(scaled_sets: dict[str, str], tmp_path: Path) -> None:
    space = {
        "model": {"type": "categorical", "values": ["point", "window"]},
        "window": {"type": "discrete", "values": [4, 8]},
    }
    out = tmp_path / "best.json"
    data = (scaled_sets["train"], scaled_sets["val"], scaled_sets["scaler"])
    result = run_tune(*data, str(out), space, BASE, OPTIONS, algorithm="grid", max_trials=4)
    tried = result["trials"]
    assert (
        tried == 4 and result["parameters"]["model"] in ("point", "window") and result["parameters"]["window"] in (4, 8)
    )
    best = ModelParams(**result["parameters"])
    best.validate()


def test_failing_trials_end_tuning_with_their_reason(scaled_sets: dict[str, str], tmp_path: Path) -> None:
    space = {"learning_rate": {"type": "discrete", "values": [1e12]}}
    with pytest.raises(RuntimeError, match="more than --max-failed-trials 1.*loss is"):
        run_tune(
            scaled_sets["train"],
            scaled_sets["val"],
            scaled_sets["scaler"],
            str(tmp_path / "b.json"),
            space,
            BASE,
            OPTIONS,
            algorithm="random",
            max_trials=4,
            max_failed_trials=1,
        )
    assert not (tmp_path / "b.json").exists()


def test_parallel_trials_train_the_same_models_in_worker_processes(scaled_sets: dict[str, str], tmp_path: Path) -> None:
    space = {"latent_dim": {"type": "discrete", "values": [2, 3, 4]}}
    data = (scaled_sets["train"], scaled_sets["val"], scaled_sets["scaler"])
    alone = run_tune(*data, str(tmp_path / "a.json"), space, BASE, OPTIONS, algorithm="grid", max_trials=3)
    together = run_tune(
        *data, str(tmp_path / "b.json"), space, BASE, OPTIONS, algorithm="grid", max_trials=3, parallel_trials=2
    )
    assert (together["trials"], together["parallel_trials"], together["trial_processes"]) == (3, 2, 2)
    assert (alone["parallel_trials"], alone["trial_processes"]) == (1, 1)
    assert together["parameters"] == alone["parameters"]
    # Workers use fewer threads: sums may round differently, the models are the same.
    assert together["objective"]["value"] == pytest.approx(alone["objective"]["value"], rel=1e-4)


def test_failing_parallel_trials_end_tuning_with_their_reason(scaled_sets: dict[str, str], tmp_path: Path) -> None:
    space = {"learning_rate": {"type": "discrete", "values": [1e12]}}
    data = (scaled_sets["train"], scaled_sets["val"], scaled_sets["scaler"])
    with pytest.raises(RuntimeError, match="more than --max-failed-trials 1.*loss is"):
        run_tune(*data, str(tmp_path / "b.json"), space, BASE, OPTIONS, "random", 4, 1, parallel_trials=2)
    assert not (tmp_path / "b.json").exists()


def test_parallel_trials_need_one_device_each(scaled_sets: dict[str, str], tmp_path: Path) -> None:
    space = {"latent_dim": {"type": "discrete", "values": [2, 3]}}
    data = (scaled_sets["train"], scaled_sets["val"], scaled_sets["scaler"])
    options = TrainOptions(max_epochs=1, min_steps=0, accelerator="cpu", devices=2, progress=False)
    with pytest.raises(ValueError, match="--parallel-trials 2 trains each trial on one device: give --devices 1"):
        run_tune(*data, str(tmp_path / "b.json"), space, BASE, options, "grid", 2, parallel_trials=2)
    with pytest.raises(ValueError, match="--parallel-trials must be >= 1, got 0"):
        run_tune(*data, str(tmp_path / "b.json"), space, BASE, OPTIONS, "grid", 2, parallel_trials=0)
    with pytest.raises(ValueError, match="--max-failed-trials must be >= 0, got -1"):
        run_tune(*data, str(tmp_path / "b.json"), space, BASE, OPTIONS, "grid", 2, max_failed_trials=-1)
    assert not (tmp_path / "b.json").exists()
