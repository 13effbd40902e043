"""KFP lightweight components: each runs exactly one subcommand of the shared image.

The image is a placeholder here; `build_pipeline` sets the configured one on every task. Bodies
are hermetic (imports inside), as KFP requires. Each passes its artifact paths and the run's
parameters as keyword options (the subcommand's own parameter names; `run_step` makes the
command line) and `settings`, the JSON of the settings the pipeline was compiled with, which the
subcommand uses in place of the image's config.toml for every option not passed.
"""

from typing import List

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

PLACEHOLDER_IMAGE = "eclss-anomaly-pipeline"


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def list_archives(settings: str, archives: str, listing: Output[Artifact]) -> List[str]:
    """Runs `list-archives`."""
    import json

    from container_component_src.main import run_step

    run_step(settings, "list-archives", archives=archives, out=listing.path)
    with open(listing.path) as handle:
        return json.load(handle)


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def split_archive(
    settings: str, archive: str, timestamp_column: str, partition_period: str, partitions: Output[Dataset]
):
    """Runs `split-archive`."""
    from container_component_src.main import run_step

    run_step(
        settings,
        "split-archive",
        archive=archive,
        out=partitions.path,
        timestamp_column=timestamp_column,
        partition_period=partition_period,
    )


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def preprocess(
    settings: str,
    partitions: Input[List[Dataset]],
    timestamp_column: str,
    resample_period: str,
    aggregation: str,
    max_gap_periods: int,
    max_missing_share: float,
    sample_frac: float,
    cluster: str,
    n_workers: int,
    worker_cpu: str,
    worker_memory: str,
    telemetry: Output[Dataset],
    quality_report: Output[Artifact],
):
    """Runs `preprocess`."""
    from container_component_src.main import run_step

    # Kubernetes workers cannot see this pod's files: they read the artifacts from object storage
    # and write the parts to a scratch folder there, which this task copies into its output.
    kubernetes = cluster == "kubernetes"
    run_step(
        settings,
        "preprocess",
        partitions=[p.uri if kubernetes else p.path for p in partitions],
        out=telemetry.path,
        scratch=f"{telemetry.uri}-dask" if kubernetes else None,
        quality_report=quality_report.path,
        timestamp_column=timestamp_column,
        resample_period=resample_period,
        aggregation=aggregation,
        max_gap_periods=max_gap_periods,
        max_missing_share=max_missing_share,
        sample_frac=sample_frac,
        cluster=cluster,
        n_workers=n_workers,
        worker_cpu=worker_cpu,
        worker_memory=worker_memory,
    )


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def parse_reports(settings: str, reports: str, intervals: Output[Dataset]):
    """Runs `parse-reports`."""
    from container_component_src.main import run_step

    run_step(settings, "parse-reports", reports=reports, out=intervals.path)


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def label_series(
    settings: str,
    telemetry: Input[Dataset],
    intervals: Input[Dataset],
    cluster: str,
    n_workers: int,
    worker_cpu: str,
    worker_memory: str,
    labelled: Output[Dataset],
):
    """Runs `label-series`."""
    from container_component_src.main import run_step

    # As preprocess: Kubernetes workers read from object storage and write to a scratch folder there.
    kubernetes = cluster == "kubernetes"
    run_step(
        settings,
        "label-series",
        telemetry=telemetry.uri if kubernetes else telemetry.path,
        intervals=intervals.path,
        out=labelled.path,
        scratch=f"{labelled.uri}-dask" if kubernetes else None,
        cluster=cluster,
        n_workers=n_workers,
        worker_cpu=worker_cpu,
        worker_memory=worker_memory,
    )


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def split_dataset(
    settings: str,
    labelled: Input[Dataset],
    intervals: Input[Dataset],
    test_window_hours: float,
    val_share: float,
    block_hours: float,
    split_seed: int,
    test_periods: str,
    cluster: str,
    n_workers: int,
    worker_cpu: str,
    worker_memory: str,
    train: Output[Dataset],
    val: Output[Dataset],
    test: Output[Dataset],
):
    """Runs `split-dataset`."""
    from container_component_src.main import run_step

    kubernetes = cluster == "kubernetes"
    run_step(
        settings,
        "split-dataset",
        labelled=labelled.uri if kubernetes else labelled.path,
        intervals=intervals.path,
        train=train.path,
        val=val.path,
        test=test.path,
        scratch=f"{train.uri}-dask" if kubernetes else None,
        test_window_hours=test_window_hours,
        val_share=val_share,
        block_hours=block_hours,
        seed=split_seed,
        test_periods=test_periods,
        cluster=cluster,
        n_workers=n_workers,
        worker_cpu=worker_cpu,
        worker_memory=worker_memory,
    )


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def fit_scaler(settings: str, train: Input[Dataset], scaler_kind: str, reference_rows: int, scaler: Output[Artifact]):
    """Runs `fit-scaler`."""
    from container_component_src.main import run_step

    run_step(settings, "fit-scaler", train=train.path, out=scaler.path, kind=scaler_kind, reference_rows=reference_rows)


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def apply_scaler(
    settings: str,
    scaler: Input[Artifact],
    train: Input[Dataset],
    val: Input[Dataset],
    test: Input[Dataset],
    cluster: str,
    n_workers: int,
    worker_cpu: str,
    worker_memory: str,
    scaled_train: Output[Dataset],
    scaled_val: Output[Dataset],
    scaled_test: Output[Dataset],
):
    """Runs `apply-scaler`."""
    from container_component_src.main import run_step

    kubernetes = cluster == "kubernetes"
    run_step(
        settings,
        "apply-scaler",
        scaler=scaler.path,
        train=train.uri if kubernetes else train.path,
        val=val.uri if kubernetes else val.path,
        test=test.uri if kubernetes else test.path,
        train_out=scaled_train.path,
        val_out=scaled_val.path,
        test_out=scaled_test.path,
        scratch=f"{scaled_train.uri}-dask" if kubernetes else None,
        cluster=cluster,
        n_workers=n_workers,
        worker_cpu=worker_cpu,
        worker_memory=worker_memory,
    )


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def tune(
    settings: str,
    train: Input[Dataset],
    val: Input[Dataset],
    scaler: Input[Artifact],
    search_space: str,
    algorithm: str,
    max_trials: int,
    max_failed_trials: int,
    epochs_per_trial: int,
    accelerator: str,
    devices: int,
    seed: int,
    backend: str,
    parallel_trials: int,
    keep_experiment: bool,
    drift_weight: float,
    best_params: Output[Artifact],
):
    """Runs `tune`."""
    from container_component_src.main import run_step

    # Katib trials run in their own pods: they read the artifacts from object storage.
    train_data, val_data, scaler_data = [(a.uri if backend == "katib" else a.path) for a in (train, val, scaler)]
    run_step(
        settings,
        "tune",
        train=train_data,
        val=val_data,
        scaler=scaler_data,
        out=best_params.path,
        search_space=search_space,
        algorithm=algorithm,
        max_trials=max_trials,
        max_failed_trials=max_failed_trials,
        epochs_per_trial=epochs_per_trial,
        accelerator=accelerator,
        devices=devices,
        seed=seed,
        backend=backend,
        parallel_trials=parallel_trials,
        keep_experiment=keep_experiment,
        drift_weight=drift_weight,
    )


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def train(
    settings: str,
    train: Input[Dataset],
    val: Input[Dataset],
    scaler: Input[Artifact],
    best_params: Input[Artifact],
    max_epochs: int,
    patience: int,
    accelerator: str,
    devices: int,
    seed: int,
    drift_weight: float,
    backend: str,
    replicas: int,
    model: Output[Model],
):
    """Runs `train`."""
    from container_component_src.main import run_step

    # PyTorchJob replicas run in their own pods: they read the artifacts from object storage,
    # and the master writes the model next to this task's output, from where it is copied.
    cluster = backend == "pytorchjob"
    data = [(a.uri if cluster else a.path) for a in (train, val, scaler, best_params)]
    run_step(
        settings,
        "train",
        train=data[0],
        val=data[1],
        scaler=data[2],
        params=data[3],
        out=model.path,
        scratch=f"{model.uri}-pytorchjob" if cluster else None,
        max_epochs=max_epochs,
        patience=patience,
        accelerator=accelerator,
        devices=devices,
        seed=seed,
        drift_weight=drift_weight,
        backend=backend,
        replicas=replicas,
    )


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def evaluate(
    settings: str,
    model: Input[Model],
    val: Input[Dataset],
    test: Input[Dataset],
    smoothing_window: int,
    threshold_method: str,
    val_quantile: float,
    n_thresholds: int,
    low_quantile: float,
    high_quantile: float,
    worst_events: int,
    deploy_threshold: float,
    promise_tolerance: float,
    threshold_follow: str,
    follow_window: int,
    results: Output[Dataset],
    summary: Output[Artifact],
    report: Output[HTML],
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
) -> float:
    """Runs `evaluate`; returns Fc1 at the label-free threshold, which the deploy gate compares."""
    import json

    from container_component_src.evaluation.decision import DeployDecision
    from container_component_src.main import run_step

    run_step(
        settings,
        "evaluate",
        model=model.path,
        val=val.path,
        test=test.path,
        results=results.path,
        summary=summary.path,
        report=report.path,
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
    )
    with open(summary.path) as handle:
        content = json.load(handle)
    for name, value in content["metrics"].items():
        metrics.log_metric(name, value)
    confusion, roc = content["confusion_matrix"], content["roc"]
    classification.log_confusion_matrix(confusion["categories"], confusion["matrix"])
    classification.log_roc_curve(roc["fpr"], roc["tpr"], roc["thresholds"])
    return DeployDecision.from_summary(content, summary.path).fc1


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def deploy(
    settings: str,
    model: Input[Model],
    summary: Input[Artifact],
    backend: str,
    run_id: str,
    gpus: int,
    endpoint: Output[Artifact],
):
    """Runs `deploy`."""
    from container_component_src.main import run_step

    run_step(
        settings,
        "deploy",
        model=model.path,
        summary=summary.path,
        out=endpoint.path,
        artifact_uri=model.uri,
        run_id=run_id,
        backend=backend,
        gpus=gpus,
    )
