"""The ECLSS anomaly-detection DAG. Only wiring: tasks, edges, names, images.

`build_pipeline(settings)` applies compile-time settings (image); per-run knobs are pipeline
parameters whose defaults come from the same settings.
"""

import json
from collections.abc import Callable
from typing import List, NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Model

from container_component_src.choices import (
    Accelerator,
    Aggregation,
    DaskCluster,
    ScalerKind,
    ServingBackend,
    ThresholdMethod,
    TrainBackend,
    TuneAlgorithm,
    TuneBackend,
)
from container_component_src.config import ConfigError, Settings, settings_to_json
from pipeline import components


def pipeline_name(settings: Settings) -> str:
    """The pipeline's name, after the data set (`eclss-anomaly-detection` for the default one)."""
    return f"{settings.data.slug}-anomaly-detection"


class PipelineOutputs(NamedTuple):
    quality_report: Artifact
    scaler: Artifact
    train: Dataset
    val: Dataset
    test: Dataset
    best_params: Artifact
    model: Model
    results: Dataset
    evaluation_summary: Artifact
    report: HTML


def _compact_json(text: str, where: str) -> str:
    """One-line JSON: a multi-line default would not survive KFP's YAML."""
    try:
        return json.dumps(json.loads(text), separators=(",", ":"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where} is not valid JSON: {exc}") from None


# Pipeline parameters that take one of a closed set of values: checked when --param sets them.
CHOICES = {
    "aggregation": Aggregation,
    "dask_cluster": DaskCluster,
    "scaler_kind": ScalerKind,
    "threshold_method": ThresholdMethod,
    "tune_backend": TuneBackend,
    "tune_algorithm": TuneAlgorithm,
    "train_backend": TrainBackend,
    "accelerator": Accelerator,
    "serving_backend": ServingBackend,
}

# Tasks whose rerun is harmless: they write their outputs atomically and start nothing that lives on.
SAFE_TO_RETRY = {
    "list-archives",
    "split-archive",
    "preprocess",
    "parse-reports",
    "label-series",
    "split-dataset",
    "fit-scaler",
    "apply-scaler",
    "evaluate",
}
# Tasks that train in their own pod when the backend is local.
GPU_TASKS = {"tune", "train"}
S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def configure_for_kubernetes(task: dsl.PipelineTask, name: str, settings: Settings) -> None:
    """Resources, placement, credentials, timeout and retries of one task on the cluster.

    Raises:
        ConfigError: [kubernetes] resources lack "default", or an entry lacks cpu or memory.
    """
    from kfp import kubernetes

    k8s = settings.kubernetes
    resources = k8s.resources.get(name) or k8s.resources.get("default")
    if not resources or not {"cpu", "memory"} <= set(resources):
        raise ConfigError(f'[kubernetes] resources need cpu and memory for "{name}" or "default"')
    task.set_cpu_request(resources["cpu"]).set_cpu_limit(resources["cpu"])
    task.set_memory_request(resources["memory"]).set_memory_limit(resources["memory"])
    node_selector = dict(k8s.node_selector)
    # A launcher whose Katib trials or PyTorchJob replicas train elsewhere needs no GPU itself
    # (decided by the compiled backend: a runtime --param backend does not change pod resources).
    trains_here = {
        "tune": settings.tuning.backend == TuneBackend.local,
        "train": settings.training.backend == TrainBackend.local,
    }
    if name in GPU_TASKS and k8s.train_gpus and trains_here[name]:
        task.set_accelerator_type(k8s.gpu_resource).set_accelerator_limit(k8s.train_gpus)
        node_selector |= k8s.gpu_node_selector
    for key, value in node_selector.items():
        kubernetes.add_node_selector(task, key, value)
    for toleration in k8s.tolerations:
        kubernetes.add_toleration(task, **toleration)
    if k8s.image_pull_secret:
        kubernetes.set_image_pull_secrets(task, [k8s.image_pull_secret])
    if k8s.timeout_s:
        kubernetes.set_timeout(task, k8s.timeout_s)
    if name in SAFE_TO_RETRY and k8s.retries:
        task.set_retry(num_retries=k8s.retries, backoff_duration="30s", backoff_factor=2.0)
    # Object storage: the endpoint is configuration, the keys come from the secret by reference.
    task.set_env_variable("AWS_ENDPOINT_URL", settings.platform.minio_endpoint)
    kubernetes.use_secret_as_env(task, settings.platform.s3_secret_name, {key: key for key in S3_KEYS})


def build_pipeline(settings: Settings, for_kubernetes: bool = True) -> Callable[..., object]:
    """Return the pipeline function, with the project image and defaults from `settings`.

    Args:
        settings: The project settings.
        for_kubernetes: Apply the [kubernetes] task settings (resources, placement, secrets);
            kfp.local runs leave them out.
    """
    image = settings.platform.image
    columns, pre, split = settings.columns, settings.preprocessing, settings.split
    training, tuning, evaluation, serving = settings.training, settings.tuning, settings.evaluation, settings.serving
    search_space_default = _compact_json(tuning.search_space, "[tuning] search_space")
    # Every task gets the settings compiled here: they, not the image's config.toml, fill the
    # options a task is not given, so editing config.toml and recompiling reaches the cluster.
    compiled = settings_to_json(settings)

    def task(t: dsl.PipelineTask, name: str) -> dsl.PipelineTask:
        t.set_container_image(image).set_display_name(name)
        if for_kubernetes:
            configure_for_kubernetes(t, name, settings)
        return t

    @dsl.pipeline(name="split-archives", description="List the yearly archives, split each in parallel.")
    def split_archives(archives: str, timestamp_column: str, partition_period: str) -> List[Dataset]:
        listing = task(components.list_archives(settings=compiled, archives=archives), "list-archives")
        with dsl.ParallelFor(listing.outputs["Output"]) as archive:
            split_task = task(
                components.split_archive(
                    settings=compiled,
                    archive=archive,
                    timestamp_column=timestamp_column,
                    partition_period=partition_period,
                ),
                "split-archive",
            )
        return dsl.Collected(split_task.outputs["partitions"])

    @dsl.pipeline(name=pipeline_name(settings), description=f"Anomaly detection on {settings.data.dataset} telemetry.")
    def eclss_pipeline(
        archives: str = settings.data.archives_url,
        reports: str = settings.data.reports_url,
        timestamp_column: str = columns.timestamp,
        partition_period: str = settings.split_archives.partition_period,
        resample_period: str = pre.resample_period,
        aggregation: str = pre.aggregation,
        max_gap_periods: int = pre.max_gap_periods,
        max_missing_share: float = pre.max_missing_share,
        sample_frac: float = pre.sample_frac,
        dask_cluster: str = pre.cluster,
        dask_workers: int = pre.n_workers,
        dask_worker_cpu: str = pre.worker_cpu,
        dask_worker_memory: str = pre.worker_memory,
        test_window_hours: float = split.test_window_hours,
        val_share: float = split.val_share,
        block_hours: float = split.block_hours,
        split_seed: int = split.seed,
        test_periods: str = split.test_periods,
        scaler_kind: str = settings.scaling.kind,
        reference_rows: int = settings.scaling.reference_rows,
        search_space: str = search_space_default,
        tune_backend: str = tuning.backend,
        parallel_trials: int = tuning.parallel_trials,
        keep_experiment: bool = False,
        tune_algorithm: str = tuning.algorithm,
        max_trials: int = tuning.max_trials,
        max_failed_trials: int = tuning.max_failed_trials,
        epochs_per_trial: int = tuning.epochs_per_trial,
        train_backend: str = training.backend,
        replicas: int = training.replicas,
        max_epochs: int = training.max_epochs,
        patience: int = training.patience,
        accelerator: str = training.accelerator,
        devices: int = training.devices,
        seed: int = training.seed,
        drift_weight: float = training.drift_weight,
        smoothing_window: int = evaluation.smoothing_window,
        threshold_method: str = evaluation.threshold_method,
        val_quantile: float = evaluation.val_quantile,
        n_thresholds: int = evaluation.n_thresholds,
        low_quantile: float = evaluation.low_quantile,
        high_quantile: float = evaluation.high_quantile,
        worst_events: int = evaluation.worst_events,
        deploy_threshold: float = evaluation.deploy_threshold,
        promise_tolerance: float = evaluation.promise_tolerance,
        threshold_follow: str = evaluation.threshold_follow,
        follow_window: int = evaluation.follow_window,
        serving_backend: str = serving.backend,
        serving_gpus: int = serving.gpus,
    ) -> PipelineOutputs:
        """Split archives -> preprocess (Dask) -> labels -> split -> scaling -> tuning -> training -> evaluation
        -> deploy (only when Fc1 beats `deploy_threshold`).

        Args:
            archives: Folder or s3:// URL of the yearly archive parquet files.
            reports: Anomaly reports file (.xls, .xlsx or .csv).
            timestamp_column: Timestamp column of the archives.
            partition_period: Time span of one partition file.
            resample_period: Period of the regular time grid.
            aggregation: How samples within a grid period combine (mean, min, max, ...).
            max_gap_periods: Gaps up to this many periods are interpolated, longer ones dropped.
            max_missing_share: Channels missing on more of the grid than this are dropped.
            sample_frac: Share of grid rows kept (1.0 keeps all).
            dask_cluster: "local" (in the task's pod) or "kubernetes" (a DaskCluster), for preprocess
                and the table steps that run a Dask task per part (label-series, split-dataset,
                apply-scaler).
            dask_workers: Dask worker count.
            dask_worker_cpu: CPU per Kubernetes Dask worker.
            dask_worker_memory: Memory per Kubernetes Dask worker.
            test_window_hours: Hours around each anomaly that form the test set.
            val_share: Share of the remaining time blocks used for validation.
            block_hours: Length of the train/validation time blocks.
            split_seed: Seed of the block assignment.
            test_periods: Empty, or the test set's time ranges ("start/end" ISO timestamps,
                comma-separated): separate test recordings, train and validation from the rest.
            scaler_kind: "standard", "robust" or "minmax".
            reference_rows: 0, or N: each gapless run is scaled relative to the mean of its first
                N rows (its operating point); requests to the served model carry that reference.
            search_space: Hyperparameter search space, Katib-style JSON (see config.toml).
            tune_backend: "local" (optuna in the task) or "katib" (a Katib Experiment).
            parallel_trials: Trials at once: worker processes on the tune task's device (local) or
                Katib trial pods.
            keep_experiment: Keep the Katib Experiment after it ends (for inspection); deleted otherwise.
            tune_algorithm: random, tpe, grid or bayesianoptimization.
            max_trials: Tuning trials.
            max_failed_trials: Failed trials tolerated before tuning fails.
            epochs_per_trial: Maximum epochs of each tuning trial.
            train_backend: "local" (Lightning in the task) or "pytorchjob" (a PyTorchJob).
            replicas: PyTorchJob replicas (one master, the rest workers).
            max_epochs: Maximum epochs of the final training (early stopping ends sooner).
            patience: Epochs without improvement of the validation objective before stopping.
            accelerator: "cpu", "gpu" or "auto".
            devices: Devices for training; more than one trains with DDP.
            seed: Seed of tuning and training.
            drift_weight: Weight in the score of the channels that drift in training (1 keeps
                them whole; 0 leaves their level out, when served data will leave its range).
            smoothing_window: Rows in the trailing rolling median of anomaly scores (1: none).
            threshold_method: The deployed label-free threshold: "quantile" or "pot" (peaks over threshold).
            val_quantile: Quantile of validation scores that gives the quantile threshold.
            n_thresholds: Thresholds in the sweep over test scores.
            low_quantile: Lowest swept threshold, as a quantile of test scores.
            high_quantile: Highest swept threshold, as a quantile of test scores.
            worst_events: Highest-scoring events shown channel by channel in the report.
            deploy_threshold: Deploy only when Fc1 at the label-free threshold is above this.
            promise_tolerance: The gate prefers the detectors whose false alarms stay within this
                many times what their threshold promises (0: Fc1 alone decides).
            threshold_follow: "median": the label-free threshold follows each run's median score,
                "spread": its median and lower-quartile spread, "iqr": its median and interquartile
                range, in evaluation and in the served model; "none": it stays as validation set
                it; "auto": the rule the deploy gate finds best, as it finds the detector.
            follow_window: Rows of each run a following threshold reads, the newest (0: the
                whole run): a state that lasts half of them becomes the run's normal.
            serving_backend: "local" (publish to a folder and smoke-test the KServe server in the task)
                or "kserve" (an InferenceService).
            serving_gpus: GPUs of the InferenceService predictor.
        """
        partitions = split_archives(
            archives=archives, timestamp_column=timestamp_column, partition_period=partition_period
        ).set_display_name("split-archives")
        preprocessed = task(
            components.preprocess(
                settings=compiled,
                partitions=partitions.output,
                timestamp_column=timestamp_column,
                resample_period=resample_period,
                aggregation=aggregation,
                max_gap_periods=max_gap_periods,
                max_missing_share=max_missing_share,
                sample_frac=sample_frac,
                cluster=dask_cluster,
                n_workers=dask_workers,
                worker_cpu=dask_worker_cpu,
                worker_memory=dask_worker_memory,
            ),
            "preprocess",
        )
        intervals = task(components.parse_reports(settings=compiled, reports=reports), "parse-reports")
        labelled = task(
            components.label_series(
                settings=compiled,
                telemetry=preprocessed.outputs["telemetry"],
                intervals=intervals.outputs["intervals"],
                cluster=dask_cluster,
                n_workers=dask_workers,
                worker_cpu=dask_worker_cpu,
                worker_memory=dask_worker_memory,
            ),
            "label-series",
        )
        splits = task(
            components.split_dataset(
                settings=compiled,
                labelled=labelled.outputs["labelled"],
                intervals=intervals.outputs["intervals"],
                test_window_hours=test_window_hours,
                val_share=val_share,
                block_hours=block_hours,
                split_seed=split_seed,
                test_periods=test_periods,
                cluster=dask_cluster,
                n_workers=dask_workers,
                worker_cpu=dask_worker_cpu,
                worker_memory=dask_worker_memory,
            ),
            "split-dataset",
        )
        scaler = task(
            components.fit_scaler(
                settings=compiled,
                train=splits.outputs["train"],
                scaler_kind=scaler_kind,
                reference_rows=reference_rows,
            ),
            "fit-scaler",
        )
        scaled = task(
            components.apply_scaler(
                settings=compiled,
                scaler=scaler.outputs["scaler"],
                train=splits.outputs["train"],
                val=splits.outputs["val"],
                test=splits.outputs["test"],
                cluster=dask_cluster,
                n_workers=dask_workers,
                worker_cpu=dask_worker_cpu,
                worker_memory=dask_worker_memory,
            ),
            "apply-scaler",
        )
        tuned = task(
            components.tune(
                settings=compiled,
                train=scaled.outputs["scaled_train"],
                val=scaled.outputs["scaled_val"],
                scaler=scaler.outputs["scaler"],
                search_space=search_space,
                algorithm=tune_algorithm,
                max_trials=max_trials,
                max_failed_trials=max_failed_trials,
                epochs_per_trial=epochs_per_trial,
                accelerator=accelerator,
                devices=devices,
                seed=seed,
                backend=tune_backend,
                parallel_trials=parallel_trials,
                keep_experiment=keep_experiment,
                drift_weight=drift_weight,
            ),
            "tune",
        )
        trained = task(
            components.train(
                settings=compiled,
                train=scaled.outputs["scaled_train"],
                val=scaled.outputs["scaled_val"],
                scaler=scaler.outputs["scaler"],
                best_params=tuned.outputs["best_params"],
                max_epochs=max_epochs,
                patience=patience,
                accelerator=accelerator,
                devices=devices,
                seed=seed,
                drift_weight=drift_weight,
                backend=train_backend,
                replicas=replicas,
            ),
            "train",
        )
        evaluated = task(
            components.evaluate(
                settings=compiled,
                model=trained.outputs["model"],
                val=scaled.outputs["scaled_val"],
                test=scaled.outputs["scaled_test"],
                smoothing_window=smoothing_window,
                threshold_method=threshold_method,
                val_quantile=val_quantile,
                n_thresholds=n_thresholds,
                low_quantile=low_quantile,
                high_quantile=high_quantile,
                worst_events=worst_events,
                deploy_threshold=deploy_threshold,
                promise_tolerance=promise_tolerance,
                threshold_follow=threshold_follow,
                follow_window=follow_window,
            ),
            "evaluate",
        )
        with dsl.If(evaluated.outputs["Output"] > deploy_threshold, name="fc1-above-deploy-threshold"):
            task(
                components.deploy(
                    settings=compiled,
                    model=trained.outputs["model"],
                    summary=evaluated.outputs["summary"],
                    backend=serving_backend,
                    run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                    gpus=serving_gpus,
                ),
                "deploy",
            )
        return PipelineOutputs(
            best_params=tuned.outputs["best_params"],
            model=trained.outputs["model"],
            results=evaluated.outputs["results"],
            evaluation_summary=evaluated.outputs["summary"],
            report=evaluated.outputs["report"],
            quality_report=preprocessed.outputs["quality_report"],
            scaler=scaler.outputs["scaler"],
            train=scaled.outputs["scaled_train"],
            val=scaled.outputs["scaled_val"],
            test=scaled.outputs["scaled_test"],
        )

    return eclss_pipeline
