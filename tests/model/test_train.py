import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from container_component_src.errors import OptionError
from container_component_src.model.data import TelemetryDataModule
from container_component_src.model.io import load_scripted
from container_component_src.model.rows import MemoryRows
from container_component_src.model.train import ModelParams, TrainOptions, calibrate, fit, run_train
from container_component_src.model.vae import MIN_LOG_VAR
from container_component_src.storage import InputError

FAST = TrainOptions(max_epochs=6, min_steps=0, patience=2, accelerator="cpu", progress=False)
PARAMS = ModelParams(batch_size=256, hidden_size=32, latent_dim=3)


def test_artifact_has_what_serving_needs(trained_model: dict[str, Any], scaled_sets: dict[str, str]) -> None:
    out, metrics = trained_model["model"], trained_model["metrics"]
    names = {p.name for p in Path(out).iterdir()}
    assert names == {
        "model.pt",
        "model.torchscript.pt",
        "scaler.json",
        "channels.json",
        "hparams.json",
        "metrics.json",
        "typical_rows.json",
    }
    scaler = json.loads(Path(scaled_sets["scaler"]).read_text())
    (typical,) = json.loads((Path(out) / "typical_rows.json").read_text())
    model, _ = load_scripted(out)
    scaled = (torch.tensor([typical[c] for c in scaler["channels"]]) - torch.tensor(scaler["center"])) / torch.tensor(
        scaler["scale"]
    )
    val = torch.tensor(pd.read_parquet(scaled_sets["val"])[scaler["channels"]].to_numpy("float32"))
    with torch.no_grad():
        typical_score, val_scores = float(model.score(scaled[None].float())[0]), model.score(val)
    low, high = torch.quantile(val_scores, torch.tensor([0.45, 0.55])).tolist()
    assert low <= typical_score <= high, "the typical row is the median-score validation row"
    assert json.loads((Path(out) / "channels.json").read_text()) == scaler["channels"]
    assert json.loads((Path(out) / "hparams.json").read_text())["hidden_size"] == 32
    assert math.isfinite(metrics["val_nll"]) and metrics["train_rows"] > 0
    assert metrics["steps"] >= 1000 and metrics["epochs"] > 6, "the step budget raised the epoch bound"


def test_scores_out_of_distribution_rows_higher(trained_model: dict[str, Any], scaled_sets: dict[str, str]) -> None:
    model, scaler = load_scripted(trained_model["model"])
    val = torch.tensor(pd.read_parquet(scaled_sets["val"])[scaler["channels"]].to_numpy("float32"))
    with torch.no_grad():
        normal, shifted = model.score(val), model.score(val + 4.0)
    assert shifted.mean() > normal.mean() + 10
    test = pd.read_parquet(scaled_sets["test"])
    with torch.no_grad():
        scores = model.score(torch.tensor(test[scaler["channels"]].to_numpy("float32"))).numpy()
    labels = test["label"].to_numpy() == 1
    assert scores[labels].mean() > scores[~labels].mean(), "the injected anomalies score higher"


def test_prints_objective_lines_for_katib(scaled_sets: dict[str, str], tmp_path: Path, capsys) -> None:
    options = TrainOptions(max_epochs=2, min_steps=0, patience=2, accelerator="cpu", progress=False, seed=3)
    first = run_train(
        scaled_sets["train"], scaled_sets["val"], scaled_sets["scaler"], str(tmp_path / "a"), PARAMS, options
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch=")]
    assert len(lines) == 2 and "val_nll=" in lines[0] and "val_loss=" in lines[0]
    second = run_train(
        scaled_sets["train"], scaled_sets["val"], scaled_sets["scaler"], str(tmp_path / "b"), PARAMS, options
    )
    assert first["val_nll"] == second["val_nll"], "seeded runs are deterministic"


def test_bad_hyperparameters(scaled_sets: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid hyperparameters"):
        run_train(
            scaled_sets["train"],
            scaled_sets["val"],
            scaled_sets["scaler"],
            str(tmp_path / "m"),
            ModelParams(learning_rate=-1.0),
            FAST,
        )
    assert not (tmp_path / "m").exists()


def test_ddp_with_two_local_processes(scaled_sets: dict[str, str], tmp_path: Path, capfd) -> None:
    options = TrainOptions(max_epochs=1, min_steps=0, patience=1, accelerator="cpu", devices=2, progress=False)
    metrics = run_train(
        scaled_sets["train"], scaled_sets["val"], scaled_sets["scaler"], str(tmp_path / "m"), PARAMS, options
    )
    assert metrics["epochs"] == 1 and metrics["val_nll"] > 0
    # Each rank validated its own shard; the objective printed is the mean over all of them,
    # the one calibration finds on the whole validation set.
    (line,) = [line for line in capfd.readouterr().out.splitlines() if line.startswith("epoch=0 ")]
    printed = float(line.split("val_nll=")[1].split()[0])
    assert printed == pytest.approx(metrics["val_nll"], rel=1e-4)
    model, _ = load_scripted(str(tmp_path / "m"))
    assert model.score(torch.zeros(2, len(json.loads(Path(scaled_sets["scaler"]).read_text())["channels"]))).shape == (
        2,
    )


def test_lightning_takes_rank_and_world_size_from_the_training_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PyTorchJob replica: the operator's variables make Lightning join the job's process group."""
    import pytorch_lightning as pl
    from lightning_fabric.plugins.environments import KubeflowEnvironment

    from container_component_src.model.train import _strategy, cluster_environment

    for name, value in {
        "KUBERNETES_PORT": "tcp://10.0.0.1:443",
        "MASTER_ADDR": "eclss-train-x-master-0",
        "MASTER_PORT": "23456",
        "WORLD_SIZE": "3",
        "RANK": "2",
    }.items():
        monkeypatch.setenv(name, value)
    options = TrainOptions(accelerator="cpu", devices=1, num_nodes=3)
    strategy = _strategy(options)
    assert strategy._start_method == "popen", "the operator started the processes"
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        num_nodes=3,
        strategy=_strategy(options),
        logger=False,
        plugins=cluster_environment(),
    )
    environment = trainer.strategy.cluster_environment
    assert isinstance(environment, KubeflowEnvironment)
    assert (environment.world_size(), environment.global_rank(), environment.main_address) == (
        3,
        2,
        "eclss-train-x-master-0",
    )


def test_missing_inputs_are_named(scaled_sets: dict[str, str], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from container_component_src.main import app

    result = CliRunner().invoke(
        app,
        [
            "train",
            "--train",
            scaled_sets["train"],
            "--val",
            scaled_sets["val"],
            "--scaler",
            scaled_sets["scaler"],
            "--out",
            str(tmp_path / "m"),
            "--params",
            str(tmp_path / "best.json"),
        ],
    )
    assert result.exit_code == 1 and f"JSON input {tmp_path / 'best.json'} does not exist" in result.output
    with pytest.raises(InputError, match="has no model.torchscript.pt: was it written by train"):
        load_scripted(str(tmp_path))


def _measured_channels_and_a_command(n: int = 3000) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    index = pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC")
    level = np.sin(np.arange(n) / 50.0)
    return pd.DataFrame(
        {
            "pressure": level + 0.1 * rng.normal(size=n),
            "temperature": 0.5 * level + 0.1 * rng.normal(size=n),
            "valve_command": np.zeros(n),  # a command, at 0 all through training
        },
        index=index,
    )


def _assert_a_fault_outscores_a_mode_switch(model: Any, val: torch.Tensor, command_step: float) -> None:
    switched, fault = val[:1].clone(), val[:1].clone()
    switched[0, 2] = command_step  # the command goes to 1: a change of mode, not a fault
    fault[0, 0] += 6.0  # the pressure reads six standard deviations off
    with torch.no_grad():
        threshold = torch.quantile(model.score(val), 0.99)
        assert model.score(fault)[0] > threshold, "a fault in a measured value is flagged"
        assert model.score(switched)[0] < threshold, "a change of mode alone is not an anomaly"


# Long enough for the decoder to learn that the command never moves (its variance at the floor).
LONG_ENOUGH = TrainOptions(max_epochs=4, min_steps=3000, patience=2, accelerator="cpu", progress=False)


def test_a_mode_switch_does_not_outscore_a_fault_in_a_measured_value(tmp_path: Path, thread_tasks: object) -> None:
    from container_component_src.data.scaling import run_apply_scaler, run_fit_scaler

    frame = _measured_channels_and_a_command()
    frame.iloc[:2400].to_parquet(tmp_path / "train.parquet")
    frame.iloc[2400:].to_parquet(tmp_path / "val.parquet")
    scaler = run_fit_scaler(str(tmp_path / "train.parquet"), str(tmp_path / "scaler.json"))
    assert scaler["channel_kinds"]["valve_command"] == "constant"
    pairs = [(str(tmp_path / f"{n}.parquet"), str(tmp_path / f"s_{n}.parquet")) for n in ("train", "val")]
    run_apply_scaler(str(tmp_path / "scaler.json"), pairs, thread_tasks)
    urls = [str(tmp_path / f"s_{n}.parquet") for n in ("train", "val")]
    run_train(*urls, str(tmp_path / "scaler.json"), str(tmp_path / "m"), ModelParams(batch_size=128), LONG_ENOUGH)
    model, _ = load_scripted(str(tmp_path / "m"))
    val = torch.tensor(pd.read_parquet(urls[1])[scaler["channels"]].to_numpy("float32"))
    _assert_a_fault_outscores_a_mode_switch(model, val, 1.0 / scaler["scale"][2])


def test_training_on_rows_without_a_scaler_finds_the_mode_channels_itself(tmp_path: Path) -> None:
    # A caller of the library that trains on its own scaled rows and passes no channel kinds
    # (as a benchmark harness does) gets the same protection as the pipeline: without it the
    # command's variance falls to the floor and one switch outscores any fault.
    values = _measured_channels_and_a_command().to_numpy("float32")
    values[:, :2] = (values[:, :2] - values[:2400, :2].mean(axis=0)) / values[:2400, :2].std(axis=0)
    train, val = torch.from_numpy(values[:2400]), torch.from_numpy(values[2400:])
    params = ModelParams(batch_size=128)
    _, best = fit(TelemetryDataModule.from_rows(train, val, params.batch_size), 3, params, LONG_ENOUGH, str(tmp_path))
    assert best.vae.log_var_floor.tolist()[2] > MIN_LOG_VAR, "the command has the wider floor of a mode channel"
    scores = calibrate(best.vae, MemoryRows(val)).scores
    assert best.vae.channel_weight.tolist() == pytest.approx([1.0, 1.0, TrainOptions.mode_weight])
    assert np.allclose(scores, best.vae.score(val).detach().numpy(), atol=1e-4)
    _assert_a_fault_outscores_a_mode_switch(best.vae, val, 1.0)


def test_the_learning_rate_follows_the_batch_as_asked() -> None:
    from container_component_src.model.train import scaled_learning_rate

    assert scaled_learning_rate(ModelParams(learning_rate=1e-3), 8192) == 1e-3
    assert scaled_learning_rate(ModelParams(learning_rate=1e-3, lr_scaling="sqrt"), 8192) == pytest.approx(4e-3)
    assert scaled_learning_rate(ModelParams(learning_rate=1e-3, lr_scaling="linear"), 128) == pytest.approx(2.5e-4)
    with pytest.raises(OptionError, match="--lr-scaling must be one of none, sqrt, linear"):
        ModelParams(lr_scaling="cubic").validate()


def test_mixed_precision_trains_with_the_scaled_learning_rate(scaled_sets: dict[str, str], tmp_path: Path) -> None:
    options = TrainOptions(
        max_epochs=2, min_steps=0, patience=2, accelerator="cpu", progress=False, precision="bf16-mixed"
    )
    params = ModelParams(batch_size=1024, hidden_size=16, latent_dim=2, lr_scaling="linear")
    metrics = run_train(
        scaled_sets["train"], scaled_sets["val"], scaled_sets["scaler"], str(tmp_path / "m"), params, options
    )
    assert math.isfinite(metrics["val_nll"])
    assert metrics["learning_rate"] == pytest.approx(1e-3 * metrics["batch_size"] / 512)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (ModelParams(model="lstm"), "--model must be one of point, window, got 'lstm'"),
        (ModelParams(model="window", window=1), "--window must be at least 2 rows, got 1"),
    ],
)
def test_bad_model_choices_are_named(params: ModelParams, message: str) -> None:
    with pytest.raises(OptionError, match=message):
        params.validate()


def test_a_window_longer_than_every_gapless_run_is_a_clear_error(scaled_sets: dict[str, str], tmp_path: Path) -> None:
    from container_component_src.storage import InputError

    params = ModelParams(model="window", window=100_000)
    with pytest.raises(InputError, match="0 training and 0 validation windows of 100000 gapless rows for 1 training"):
        run_train(scaled_sets["train"], scaled_sets["val"], scaled_sets["scaler"], str(tmp_path / "m"), params, FAST)


COMPILE_RUN = TrainOptions(max_epochs=2, min_steps=0, patience=2, accelerator="cpu", progress=False)


def _train(scaled_sets: dict[str, str], folder: Path, options: TrainOptions) -> dict[str, Any]:
    params = ModelParams(batch_size=512, hidden_size=16, latent_dim=2)
    return run_train(scaled_sets["train"], scaled_sets["val"], scaled_sets["scaler"], str(folder), params, options)


def test_a_compiled_step_trains_the_same_model(scaled_sets: dict[str, str], tmp_path: Path) -> None:
    from dataclasses import replace

    eager = _train(scaled_sets, tmp_path / "eager", COMPILE_RUN)
    compiled = _train(scaled_sets, tmp_path / "compiled", replace(COMPILE_RUN, compile="default"))
    # Fused kernels may round differently; the model and its objective are the same.
    assert compiled["val_nll"] == pytest.approx(eager["val_nll"], rel=1e-3)
    load_scripted(str(tmp_path / "compiled"))  # the artifact holds the plain network


def test_a_step_that_cannot_compile_trains_uncompiled(
    scaled_sets: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    from torch._dynamo.exc import BackendCompilerFailed

    def no_compiler(function: Any, mode: str) -> Any:
        def failing(*args: Any) -> Any:
            raise BackendCompilerFailed(function, RuntimeError("no C++ compiler found"), None)

        return failing

    eager = _train(scaled_sets, tmp_path / "eager", COMPILE_RUN)
    monkeypatch.setattr(torch, "compile", no_compiler)
    with pytest.warns(UserWarning, match="torch.compile failed, training uncompiled"):
        fallback = _train(scaled_sets, tmp_path / "fallback", replace(COMPILE_RUN, compile="reduce-overhead"))
    assert fallback["val_nll"] == eager["val_nll"]
    with pytest.raises(OptionError, match="--compile must be one of none, default, reduce-overhead, max-autotune"):
        _train(scaled_sets, tmp_path / "bad", replace(COMPILE_RUN, compile="fast"))


def test_drifting_channels_weigh_drift_weight_unless_every_continuous_channel_drifts() -> None:
    from container_component_src.model.train import channel_weights

    scaler = {
        "channels": ["a", "b", "c"],
        "channel_kinds": {"a": "continuous", "b": "continuous", "c": "mode"},
        "drifting_channels": {"b": 0.8},
    }
    assert channel_weights(scaler, 0.1, 0.0) == [1.0, 0.0, 0.1]
    assert channel_weights(scaler, 0.1) == [1.0, 1.0, 0.1], "kept whole by default"
    assert channel_weights({**scaler, "drifting_channels": {"a": 0.7, "b": 0.8}}, 0.1, 0.0) == [1.0, 1.0, 0.1]
    assert channel_weights({"channels": ["a"]}, 0.1, 0.0) == [1.0], "a scaler from before channel kinds"


def test_named_weights_go_over_the_rules_and_must_name_a_channel() -> None:
    from container_component_src.model.train import channel_weights

    scaler = {
        "channels": ["cabin temp", "b", "c"],
        "channel_kinds": {"c": "mode"},
        "drifting_channels": {"b": 0.8},
    }
    assert channel_weights(scaler, 0.1, 0.0, {"cabin temp": 0.0, "b": 2.0, "c": 1.0}) == [0.0, 2.0, 1.0]
    assert channel_weights(scaler, 0.1, 0.0, {}) == [1.0, 0.0, 0.1]
    with pytest.raises(
        OptionError, match=r"names 'cabin tmp', not one of the data's 3 channels: did you mean 'cabin temp'\?"
    ):
        channel_weights(scaler, 0.1, 0.0, {"cabin tmp": 0.0})
    with pytest.raises(OptionError, match="gives 'b' the weight -1.0: a weight is 0 or more"):
        channel_weights(scaler, 0.1, 0.0, {"b": -1.0})


def test_a_temperature_warming_past_its_training_range_alarms_only_while_it_weighs(tmp_path: Path) -> None:
    from container_component_src.data.scaling import fit_scaler, scale_values
    from container_component_src.model.train import channel_weights

    frame = _measured_channels_and_a_command(4000).drop(columns="valve_command")
    frame["temperature"] += np.arange(len(frame)) / 1000.0  # warms through the run
    scaler = fit_scaler(frame.iloc[:2400], ["pressure", "temperature"])
    assert list(scaler["drifting_channels"]) == ["temperature"]
    values = torch.from_numpy(scale_values(frame.to_numpy(), scaler))
    train, val, later = values[:2000], values[2000:2400], values[3800:3900].clone()
    fault = later[:1].clone()
    fault[0, 0] += 6.0  # the pressure reads six standard deviations off
    params = ModelParams(batch_size=128, latent_dim=2)
    options = TrainOptions(max_epochs=3, min_steps=600, patience=2, accelerator="cpu", progress=False)
    _, best = fit(TelemetryDataModule.from_rows(train, val, params.batch_size), 2, params, options, str(tmp_path))
    with torch.no_grad():
        calibrate(best.vae, MemoryRows(val), channel_weights(scaler, 0.1, 1.0))
        threshold = torch.quantile(best.vae.score(val), 0.99)
        assert (best.vae.score(later) > threshold).float().mean() > 0.9, "weighed whole, the warming alarms"
        calibrate(best.vae, MemoryRows(val), channel_weights(scaler, 0.1, 0.0))
        threshold = torch.quantile(best.vae.score(val), 0.99)
        assert (best.vae.score(later) > threshold).float().mean() < 0.1, "left out, it does not"
        assert best.vae.score(fault)[0] > threshold, "a fault in the pressure is still flagged"


def test_calibration_streams_the_validation_set_in_chunks_with_the_whole_set_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from container_component_src.evaluation.scoring import score_rows

    rng = np.random.default_rng(0)
    train = torch.from_numpy(rng.normal(size=(600, 3)).astype("float32"))
    val = torch.from_numpy(rng.normal(size=(250, 3)).astype("float32"))
    segments = np.repeat([0, 1, 2], [100, 3, 147])  # the middle one is shorter than a window
    params = ModelParams(batch_size=64, hidden_size=8, latent_dim=2, model="window", window=5)
    options = TrainOptions(max_epochs=1, min_steps=0, accelerator="cpu", progress=False)
    module = TelemetryDataModule.from_rows(train, val, params.batch_size, val_segments=segments)
    _, best = fit(module, 3, params, options, str(tmp_path))
    whole_set = calibrate(best.vae, MemoryRows(val, segments))
    monkeypatch.setattr("container_component_src.model.rows.CHUNK_ROWS", 7)
    chunked = calibrate(best.vae, MemoryRows(val, segments))
    # float32 network: a batch of other rows rounds its matrix products differently (1e-7).
    np.testing.assert_allclose(chunked.scores, whole_set.scores, rtol=1e-5, atol=1e-5)
    assert chunked.whole.sum() == 100 - 4 + 147 - 4
    raw = score_rows(best.vae, val.numpy(), segments, method="raw_channel_nll")
    assert chunked.val_nll == pytest.approx(raw[chunked.whole].sum(axis=1).mean(), rel=1e-6)
    scale = np.maximum(raw.std(axis=0), 0.25)
    np.testing.assert_allclose(best.vae.nll_center.numpy(), raw.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(best.vae.nll_scale.numpy(), scale, rtol=1e-6)


def test_only_the_channels_left_out_of_the_score_are_bounded() -> None:
    from container_component_src.model.train import left_out_bounds

    scaler = {"scaled_range": {"low": [-2.0, -3.0, -4.0], "high": [2.0, 3.0, 4.0]}}
    inf = float("inf")
    assert left_out_bounds(scaler, [1.0, 0.0, 0.1]) == ([-inf, -3.0, -inf], [inf, 3.0, inf])
    assert left_out_bounds({}, [1.0, 0.0, 1.0]) is None, "a scaler from before the ranges were kept"
    assert left_out_bounds(scaler, [1.0, 1.0, 0.1]) is None, "nothing left out"


def test_the_epoch_objective_is_the_scored_one_when_a_left_out_channel_leaves_its_range(tmp_path: Path) -> None:
    """Early stopping, the best checkpoint and Katib's metric read the validation step's objective:
    it sees a left-out channel bounded, as the calibrated scores and train's `val_nll` do."""
    from container_component_src.model.train import left_out_bounds

    rng = np.random.default_rng(3)
    shared = lambda rows: rng.normal(size=(rows, 1)) + rng.normal(0, 0.1, (rows, 3))  # noqa: E731 - one factor
    train, val = (torch.from_numpy(shared(rows).astype("float32")) for rows in (800, 200))
    val[:, 1] += 8.0  # the left-out channel sits far above anything training saw
    weights = [1.0, 0.0, 1.0]
    ranges = {"low": train.min(dim=0).values.tolist(), "high": train.max(dim=0).values.tolist()}
    bounds = left_out_bounds({"scaled_range": ranges}, weights)
    params = ModelParams(batch_size=64, hidden_size=8, latent_dim=2)
    options = TrainOptions(max_epochs=30, min_steps=0, patience=30, accelerator="cpu", progress=False)
    module = TelemetryDataModule.from_rows(train, val, params.batch_size)
    trainer, best = fit(module, 3, params, options, str(tmp_path), input_bounds=bounds)
    assert best.vae.bounded_inputs, "the restored best model is bounded too"
    scored = calibrate(best.vae, MemoryRows(val), weights).val_nll
    assert float(trainer.checkpoint_callback.best_model_score) == pytest.approx(scored, rel=1e-4)
    best.vae.bounded_inputs = False
    unbounded = calibrate(best.vae, MemoryRows(val), weights).val_nll
    assert unbounded != pytest.approx(scored, rel=1e-3), "unbounded, the objective would differ here"
