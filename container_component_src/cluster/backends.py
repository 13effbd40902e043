"""Where `train`, `tune` and `deploy` do their work: here in the task (the local backend) or in
pods of the cluster (PyTorchJob, Katib Experiment, InferenceService). The CLI calls these; the
stage modules never import the cluster layer."""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

from container_component_src.choices import ServingBackend, TrainBackend, TuneBackend
from container_component_src.cli_args import weight_pairs
from container_component_src.errors import OptionError


def train_step(
    data: dict[str, str],
    out: str,
    params: Any,
    options: Any,
    backend: TrainBackend,
    job: Any = None,
    scratch: str = "",
    settings: str | None = None,
) -> dict[str, Any]:
    """Train here (Lightning) or as a PyTorchJob whose replicas run `train`.

    Args:
        data: train, val and scaler locations (object-storage URLs for a PyTorchJob).
        out: The Model artifact folder.
        params: The hyperparameters (`model.train.ModelParams`).
        options: How to train (`model.train.TrainOptions`).
        backend: local or pytorchjob.
        job: The PyTorchJob's shape (`cluster.pytorchjob.PyTorchJobOptions`), for pytorchjob.
        scratch: Object-storage folder, unique to the run, for the master's model (pytorchjob).
        settings: The settings JSON the replicas use.
    """
    if backend == TrainBackend.local:
        from container_component_src.model.train import run_train

        return run_train(data["train"], data["val"], data["scaler"], out, params, options)
    from container_component_src.cluster.pytorchjob import run_pytorchjob_train

    if not scratch:
        raise OptionError("--scratch is required to train with a PyTorchJob")
    run_options = {
        "max_epochs": options.max_epochs,
        "min_steps": options.min_steps,
        "patience": options.patience,
        "seed": options.seed,
        "mode_weight": options.mode_weight,
        "drift_weight": options.drift_weight,
        "named_weights": weight_pairs(options.named_weights),
        "deterministic": options.deterministic,
        "precision": options.precision,
        "compile": options.compile,
    }
    run_pytorchjob_train({**data, **run_options, **asdict(params)}, out, scratch, job, settings)
    return {"model": out, "replicas": job.replicas}


def tune_step(
    data: dict[str, str],
    out: str,
    search_space: str,
    base: Any,
    options: Any,
    algorithm: str,
    max_trials: int,
    max_failed_trials: int,
    backend: TuneBackend,
    katib: Any = None,
    settings: str | None = None,
    parallel_trials: int = 1,
) -> dict[str, Any]:
    """Search hyperparameters here (optuna) or as a Katib Experiment whose trials run `train`.

    Args:
        data: train, val and scaler locations (object-storage URLs for Katib).
        out: The best-parameters JSON.
        search_space: The search space (see `model.tune.parse_search_space`).
        base: Values of the parameters that are not searched (`model.train.ModelParams`).
        options: How each trial trains (`model.train.TrainOptions`).
        algorithm: random, tpe, grid or bayesianoptimization.
        max_trials: Trials to run.
        max_failed_trials: Failed trials tolerated.
        backend: local or katib.
        katib: Where and how the trials run (`cluster.katib.KatibOptions`), for katib.
        settings: The settings JSON the trials use.
        parallel_trials: Trials at once here (worker processes on this device); Katib's count
            travels in `katib`.
    """
    if backend == TuneBackend.local:
        from container_component_src.model.tune import run_tune

        data_urls = (data["train"], data["val"], data["scaler"])
        trials = (algorithm, max_trials, max_failed_trials, parallel_trials)
        return run_tune(*data_urls, out, search_space, base, options, *trials)
    from container_component_src.cluster.katib import run_katib_tune

    run = {
        "max_epochs": options.max_epochs,
        "min_steps": options.min_steps,
        "patience": options.patience,
        "accelerator": options.accelerator,
        "devices": options.devices,
        "seed": options.seed,
        "deterministic": options.deterministic,
        "precision": options.precision,
        "compile": options.compile,
        "mode_weight": options.mode_weight,
        "drift_weight": options.drift_weight,
        "named_weights": weight_pairs(options.named_weights),
    }
    return run_katib_tune(data, out, search_space, base, run, katib, algorithm, max_trials, max_failed_trials, settings)


def deploy_step(
    model: str,
    summary: str,
    options: Any,
    artifact_uri: str = "",
    run_id: str = "",
    cluster: Any = None,
) -> dict[str, Any]:
    """Publish the model with its threshold and serve it: here (start the KServe server,
    smoke-test it, stop it) or as an InferenceService.

    Args:
        model: The Model artifact folder written by train.
        summary: The summary JSON written by evaluate (gives the threshold).
        options: Where and how (`serving.deploy.DeployOptions`).
        artifact_uri: URI of the Model artifact (the cluster publishes next to it by default).
        run_id: Unique name of this run (a folder under `model_store`).
        cluster: The InferenceService (`cluster.inference_service.InferenceServiceOptions`), for kserve.
    """
    from container_component_src.serving.deploy import publish, smoke_test_locally

    target, serving = publish(model, summary, options, artifact_uri, run_id)
    if options.backend == ServingBackend.local:
        return smoke_test_locally(target, serving, options)
    from container_component_src.cluster.inference_service import run_inference_service_deploy

    return {"backend": "kserve", **run_inference_service_deploy(replace(cluster, storage_uri=target))}
