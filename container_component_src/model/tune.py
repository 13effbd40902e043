"""Hyperparameter search: one search-space specification for Katib (cluster) and optuna (local).

Optuna is the library behind Katib's tpe and grid suggestions; locally its trials run through
the same `fit` as training, in this process, on data loaded once.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from container_component_src import storage
from container_component_src.errors import OptionError
from container_component_src.model.train import (
    OBJECTIVE,
    InputBounds,
    ModelParams,
    TrainOptions,
    channel_weights,
    left_out_bounds,
    mode_channel_indices,
)
from container_component_src.resources import check_step_fits

ALGORITHMS = ("random", "tpe", "grid", "bayesianoptimization")
PARAMETER_TYPES = ("double", "int", "discrete", "categorical")


@dataclass(frozen=True)
class Parameter:
    """One searched hyperparameter, in Katib's terms.

    Attributes:
        name: A field of ModelParams.
        type: "double", "int", "discrete" or "categorical".
        min: Lower bound (double, int).
        max: Upper bound (double, int).
        step: Grid step (double, int; required by the grid algorithm).
        log: Sample on a log scale (double, int).
        values: The choices (discrete, categorical).
    """

    name: str
    type: str
    min: float | None = None
    max: float | None = None
    step: float | None = None
    log: bool = False
    values: tuple[Any, ...] = ()


def parse_search_space(spec: str | dict[str, Any]) -> list[Parameter]:
    """Parse a JSON object {name: {"type": ..., ...}} into parameters; errors name the parameter.

    Example: {"learning_rate": {"type": "double", "min": 1e-4, "max": 1e-2, "log": true},
    "batch_size": {"type": "discrete", "values": [256, 512]}}
    """
    raw = json.loads(spec) if isinstance(spec, str) else spec
    if not isinstance(raw, dict) or not raw:
        raise OptionError("--search-space must be a non-empty JSON object")
    known = {f.name for f in fields(ModelParams)}
    parameters = []
    for name, body in raw.items():
        if name not in known:
            raise OptionError(f"--search-space: unknown parameter {name!r} (known: {', '.join(sorted(known))})")
        kind = body.get("type")
        if kind not in PARAMETER_TYPES:
            raise OptionError(f"--search-space {name}: type must be one of {', '.join(PARAMETER_TYPES)}")
        if kind in ("double", "int"):
            if body.get("min") is None or body.get("max") is None or body["min"] > body["max"]:
                raise OptionError(f"--search-space {name}: needs min <= max")
        elif not body.get("values"):
            raise OptionError(f"--search-space {name}: needs a non-empty list of values")
        extra = set(body) - {"type", "min", "max", "step", "log", "values"}
        if extra:
            raise OptionError(f"--search-space {name}: unknown key(s) {', '.join(sorted(extra))}")
        parameters.append(
            Parameter(
                name,
                kind,
                body.get("min"),
                body.get("max"),
                body.get("step"),
                bool(body.get("log")),
                tuple(body.get("values", ())),
            )
        )
    return parameters


def grid_values(parameter: Parameter) -> list[Any]:
    """All values of a parameter on the grid (Katib's grid needs a step for ranges)."""
    if parameter.values:
        return list(parameter.values)
    if parameter.step is None:
        raise OptionError(f"--search-space {parameter.name}: the grid algorithm needs a step")
    count = math.floor((parameter.max - parameter.min) / parameter.step + 1e-9) + 1
    values = [parameter.min + i * parameter.step for i in range(count)]
    return [int(v) for v in values] if parameter.type == "int" else values


def _sampler(algorithm: str, parameters: list[Parameter], seed: int) -> Any:
    import optuna

    if algorithm == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if algorithm == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if algorithm == "grid":
        return optuna.samplers.GridSampler({p.name: grid_values(p) for p in parameters}, seed=seed)
    if algorithm == "bayesianoptimization":
        return optuna.samplers.GPSampler(seed=seed)
    raise OptionError(f"--algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")


def _suggest(trial: Any, parameter: Parameter) -> Any:
    if parameter.type == "double":
        step = None if parameter.log else parameter.step
        return trial.suggest_float(parameter.name, parameter.min, parameter.max, log=parameter.log, step=step)
    if parameter.type == "int":
        return trial.suggest_int(
            parameter.name, int(parameter.min), int(parameter.max), log=parameter.log, step=int(parameter.step or 1)
        )
    return trial.suggest_categorical(parameter.name, list(parameter.values))


def run_tune(
    train_url: str,
    val_url: str,
    scaler_url: str,
    best_url: str,
    search_space: str | dict[str, Any],
    base: ModelParams,
    options: TrainOptions,
    algorithm: str = "tpe",
    max_trials: int = 8,
    max_failed_trials: int = 3,
    parallel_trials: int = 1,
) -> dict[str, Any]:
    """Search hyperparameters locally with optuna and write the best ones as JSON.

    Args:
        train_url: Scaled training set.
        val_url: Scaled validation set.
        scaler_url: Fitted scaler (gives the channels).
        best_url: JSON output: {"parameters": ..., "objective": ..., "trials": ...}.
        search_space: The search space (see `parse_search_space`).
        base: Values of the parameters that are not searched.
        options: Training options of each trial (few epochs).
        algorithm: One of ALGORITHMS.
        max_trials: Trials to run.
        max_failed_trials: Failed trials (non-finite loss) tolerated before giving up.
        parallel_trials: Trials at once: 1 runs them in this process, one after another; more
            run them in batches of that many, in as many worker processes on the same device (a
            small model leaves a GPU, or a many-core CPU, mostly idle). A batch is proposed, and
            its results told to the sampler, in trial order: the search is the same run to run,
            and while the sampler is still drawing at random (TPE's first 10 trials, random,
            grid) the same as one trial at a time.

    Returns:
        What was written to `best_url`.
    """
    parameters = parse_search_space(search_space)
    if max_trials < 1:
        raise OptionError(f"--max-trials must be >= 1, got {max_trials}")
    if parallel_trials < 1:
        raise OptionError(f"--parallel-trials must be >= 1, got {parallel_trials}")
    if max_failed_trials < 0:
        raise OptionError(f"--max-failed-trials must be >= 0, got {max_failed_trials}")
    if min(parallel_trials, max_trials) > 1 and options.devices * options.num_nodes > 1:
        raise OptionError(
            f"--parallel-trials {parallel_trials} trains each trial on one device: give --devices 1 (got "
            f"{options.devices} device(s) x {options.num_nodes} node(s)), or --parallel-trials 1 for DDP trials"
        )
    workers = min(parallel_trials, max_trials)
    # The workers share one mapped copy of the sets: stop now if they will not fit this pod.
    check_step_fits("tune", [train_url, val_url], processes=workers)
    sampler = _sampler(algorithm, parameters, options.seed)
    scaler = storage.read_json(scaler_url)
    with tempfile.TemporaryDirectory(prefix="eclss-tune-") as folder:
        data = _TrialData.mapped(train_url, val_url, scaler, base.batch_size, options, folder)
        best, trials, failed = _search(data, sampler, parameters, base, options, max_trials, max_failed_trials, workers)
    result = {
        "parameters": asdict(best),
        "objective": {"name": OBJECTIVE, "value": trials.best_value},
        "algorithm": algorithm,
        "trials": len(trials.trials),
        "failed_trials": failed,
        "parallel_trials": workers,
        "trial_processes": len({t.user_attrs.get("process") for t in trials.trials}),
    }
    storage.write_json(result, best_url)
    return result


def _search(
    data: _TrialData,
    sampler: Any,
    parameters: list[Parameter],
    base: ModelParams,
    options: TrainOptions,
    max_trials: int,
    max_failed_trials: int,
    workers: int,
) -> tuple[ModelParams, Any, int]:
    """Run the trials (see `run_tune`): the best parameters, the study and the failed trials."""
    import optuna

    failures: list[str] = []

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=sampler)

    def propose(trial: optuna.Trial) -> ModelParams:
        return replace(base, **{p.name: _suggest(trial, p) for p in parameters})

    def record(trial: optuna.Trial, error: str | None, process: int) -> None:
        trial.set_user_attr("process", process)
        if error is not None:
            failures.append(f"trial {trial.number}: {error}")
            print(f"Trial {trial.number} failed: {error}", flush=True)

    if workers == 1:

        def objective(trial: optuna.Trial) -> float:
            value, error, process = data.objective(propose(trial), options)
            record(trial, error, process)
            if error is not None:
                if len(failures) > max_failed_trials:
                    trial.study.stop()
                raise optuna.TrialPruned(error)
            return value

        study.optimize(objective, n_trials=max_trials, show_progress_bar=options.progress)
    else:
        with _worker_pool(data, workers) as pool:
            while len(study.trials) < max_trials and len(failures) <= max_failed_trials:
                # A batch: asked, and told, in trial order; so the search is the same run to run.
                batch = [study.ask() for _ in range(min(workers, max_trials - len(study.trials)))]
                results = pool.map(_worker_objective, [propose(t) for t in batch], [options] * len(batch))
                for trial, (value, error, process) in zip(batch, results, strict=True):
                    record(trial, error, process)
                    _tell(study, trial, value, error)
    if len(failures) > max_failed_trials:
        raise RuntimeError(
            f"{len(failures)} trials failed (more than --max-failed-trials {max_failed_trials}): {failures[-1]}"
        )
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise RuntimeError(f"no trial finished: {failures[-1] if failures else 'no trial ran'}")
    return replace(base, **study.best_trial.params), study, len(failures)


@dataclass
class _TrialData:
    """What every trial trains on: the scaled sets (mapped, shared by the worker processes)."""

    train: Any
    val: Any
    n_channels: int
    batch_size: int
    seed: int
    mode_channels: tuple[int, ...]
    input_bounds: InputBounds | None
    datamodule: Any = None

    @classmethod
    def mapped(
        cls, train_url: str, val_url: str, scaler: dict[str, Any], batch_size: int, options: TrainOptions, folder: str
    ) -> _TrialData:
        """The sets copied once into `folder` (local disk), for every trial and worker to map."""
        from container_component_src.model.rows import DatasetRows, MappedRows

        channels = scaler["channels"]
        train, val = DatasetRows(train_url, channels), DatasetRows(val_url, channels)
        return cls(
            MappedRows.write(train, f"{folder}/train.npy", options.progress),
            MappedRows.write(val, f"{folder}/val.npy", options.progress),
            len(channels),
            batch_size,
            options.seed,
            mode_channel_indices(scaler),
            left_out_bounds(
                scaler, channel_weights(scaler, options.mode_weight, options.drift_weight, options.named_weights)
            ),
        )

    def objective(self, params: ModelParams, options: TrainOptions) -> tuple[float | None, str | None, int]:
        """Train one trial: its best validation objective, or why it failed (a non-finite loss),
        and the process that trained it."""
        import os

        from container_component_src.model.system import NonFiniteLossError
        from container_component_src.model.train import fit

        if self.datamodule is None:
            from container_component_src.model.data import TelemetryDataModule

            self.datamodule = TelemetryDataModule(self.train, self.val, self.batch_size, self.seed)
        with tempfile.TemporaryDirectory() as checkpoints:
            try:
                trainer, _ = fit(
                    self.datamodule,
                    self.n_channels,
                    params,
                    options,
                    checkpoints,
                    self.mode_channels,
                    self.input_bounds,
                )
            except NonFiniteLossError as exc:
                return None, str(exc), os.getpid()
            return float(trainer.checkpoint_callback.best_model_score), None, os.getpid()


# The trial data of a worker process (set by `_start_worker`).
_WORKER_DATA: _TrialData | None = None


def _start_worker(data: _TrialData, threads: int) -> None:
    global _WORKER_DATA
    import torch

    torch.set_num_threads(threads)  # the workers share the cores
    _WORKER_DATA = data


def _worker_objective(params: ModelParams, options: TrainOptions) -> tuple[float | None, str | None, int]:
    assert _WORKER_DATA is not None
    return _WORKER_DATA.objective(params, options)


@contextmanager
def _worker_pool(data: _TrialData, workers: int) -> Iterator[Any]:
    """`workers` processes on this device, each mapping the shared copy of the data and taking its
    share of the cores.

    Forked from a server process that imported torch and Lightning once, and never used them:
    the workers share those libraries' memory (half a gigabyte a process) instead of each loading
    its own, while a fork of this process could inherit a CUDA context or an OpenMP thread pool,
    which do not survive a fork.
    """
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, len(os.sched_getaffinity(0)) // workers)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([_PRELOAD])
    with ProcessPoolExecutor(workers, context, initializer=_start_worker, initargs=(data, threads)) as pool:
        yield pool


# What the workers' server process imports before forking them.
_PRELOAD = "container_component_src.model.preload"


def _tell(study: Any, trial: Any, value: float | None, error: str | None) -> None:
    import optuna

    try:
        if error is None:
            study.tell(trial, value)
            print(f"Trial {trial.number}: {OBJECTIVE}={value:.6g}", flush=True)
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    except RuntimeError:
        # The grid sampler asks the study to stop once its grid is done, which only an optimize
        # loop can (the trial is told all the same); the batches end with max_trials.
        if not isinstance(study.sampler, optuna.samplers.GridSampler):
            raise
