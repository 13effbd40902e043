"""KFP lightweight components: each runs exactly one subcommand of the shared image.

The image is a placeholder here; `build_pipeline` sets the configured one on every task.
Bodies are hermetic (imports inside), as KFP requires.
"""

from typing import List

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

PLACEHOLDER_IMAGE = "eclss-anomaly-pipeline"


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def list_archives(archives: str, listing: Output[Artifact]) -> List[str]:
    """Runs `list-archives`."""
    import json

    from container_component_src.main import run_subcommand

    run_subcommand("list-archives", "--archives", archives, "--out", listing.path)
    with open(listing.path) as handle:
        return json.load(handle)


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def split_archive(archive: str, timestamp_column: str, partition_period: str, partitions: Output[Dataset]):
    """Runs `split-archive`."""
    from container_component_src.main import run_subcommand

    run_subcommand(
        "split-archive",
        "--archive",
        archive,
        "--out",
        partitions.path,
        "--timestamp-column",
        timestamp_column,
        "--partition-period",
        partition_period,
    )


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def preprocess(
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
    worker_image: str,
    namespace: str,
    s3_secret_name: str,
    telemetry: Output[Dataset],
    quality_report: Output[Artifact],
):
    """Runs `preprocess`."""
    from container_component_src.main import run_subcommand

    # Kubernetes workers cannot see this pod's files: they read the artifacts from object storage.
    sources = [p.uri if cluster == "kubernetes" else p.path for p in partitions]
    run_subcommand(
        "preprocess",
        *[arg for s in sources for arg in ("--partitions", s)],
        "--out",
        telemetry.path,
        "--quality-report",
        quality_report.path,
        "--timestamp-column",
        timestamp_column,
        "--resample-period",
        resample_period,
        "--aggregation",
        aggregation,
        "--max-gap-periods",
        str(max_gap_periods),
        "--max-missing-share",
        str(max_missing_share),
        "--sample-frac",
        str(sample_frac),
        "--cluster",
        cluster,
        "--n-workers",
        str(n_workers),
        "--worker-cpu",
        worker_cpu,
        "--worker-memory",
        worker_memory,
        "--worker-image",
        worker_image,
        "--namespace",
        namespace,
        "--s3-secret-name",
        s3_secret_name,
    )


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def parse_reports(reports: str, id_column: str, start_column: str, end_column: str, intervals: Output[Dataset]):
    """Runs `parse-reports`."""
    from container_component_src.main import run_subcommand

    run_subcommand(
        "parse-reports",
        "--reports",
        reports,
        "--out",
        intervals.path,
        "--id-column",
        id_column,
        "--start-column",
        start_column,
        "--end-column",
        end_column,
    )


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def label_series(telemetry: Input[Dataset], intervals: Input[Dataset], label_column: str, labelled: Output[Dataset]):
    """Runs `label-series`."""
    from container_component_src.main import run_subcommand

    run_subcommand(
        "label-series",
        "--telemetry",
        telemetry.path,
        "--intervals",
        intervals.path,
        "--out",
        labelled.path,
        "--label-column",
        label_column,
    )


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def split_dataset(
    labelled: Input[Dataset],
    intervals: Input[Dataset],
    test_window_hours: float,
    val_share: float,
    block_hours: float,
    seed: int,
    label_column: str,
    train: Output[Dataset],
    val: Output[Dataset],
    test: Output[Dataset],
):
    """Runs `split-dataset`."""
    from container_component_src.main import run_subcommand

    run_subcommand(
        "split-dataset",
        "--labelled",
        labelled.path,
        "--intervals",
        intervals.path,
        "--train",
        train.path,
        "--val",
        val.path,
        "--test",
        test.path,
        "--test-window-hours",
        str(test_window_hours),
        "--val-share",
        str(val_share),
        "--block-hours",
        str(block_hours),
        "--seed",
        str(seed),
        "--label-column",
        label_column,
    )


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def fit_scaler(train: Input[Dataset], kind: str, label_column: str, scaler: Output[Artifact]):
    """Runs `fit-scaler`."""
    from container_component_src.main import run_subcommand

    run_subcommand(
        "fit-scaler", "--train", train.path, "--out", scaler.path, "--kind", kind, "--label-column", label_column
    )


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def apply_scaler(
    scaler: Input[Artifact],
    train: Input[Dataset],
    val: Input[Dataset],
    test: Input[Dataset],
    scaled_train: Output[Dataset],
    scaled_val: Output[Dataset],
    scaled_test: Output[Dataset],
):
    """Runs `apply-scaler`."""
    from container_component_src.main import run_subcommand

    run_subcommand(
        "apply-scaler",
        "--scaler",
        scaler.path,
        "--train",
        train.path,
        "--val",
        val.path,
        "--test",
        test.path,
        "--train-out",
        scaled_train.path,
        "--val-out",
        scaled_val.path,
        "--test-out",
        scaled_test.path,
    )


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def tune(
    train: Input[Dataset],
    val: Input[Dataset],
    scaler: Input[Artifact],
    search_space: str,
    algorithm: str,
    max_trials: int,
    max_failed_trials: int,
    epochs_per_trial: int,
    seed: int,
    backend: str,
    parallel_trials: int,
    keep_experiment: bool,
    image: str,
    namespace: str,
    s3_secret_name: str,
    best_params: Output[Artifact],
):
    """Runs `tune`."""
    from container_component_src.main import run_subcommand

    # Katib trials run in their own pods: they read the artifacts from object storage.
    data = [(a.uri if backend == "katib" else a.path) for a in (train, val, scaler)]
    run_subcommand(
        "tune",
        "--train",
        data[0],
        "--val",
        data[1],
        "--scaler",
        data[2],
        "--out",
        best_params.path,
        "--backend",
        backend,
        "--parallel-trials",
        str(parallel_trials),
        "--keep-experiment" if keep_experiment else "--no-keep-experiment",
        "--image",
        image,
        "--namespace",
        namespace,
        "--s3-secret-name",
        s3_secret_name,
        "--search-space",
        search_space,
        "--algorithm",
        algorithm,
        "--max-trials",
        str(max_trials),
        "--max-failed-trials",
        str(max_failed_trials),
        "--max-epochs",
        str(epochs_per_trial),
        "--seed",
        str(seed),
    )


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def train(
    train: Input[Dataset],
    val: Input[Dataset],
    scaler: Input[Artifact],
    best_params: Input[Artifact],
    max_epochs: int,
    patience: int,
    accelerator: str,
    devices: int,
    seed: int,
    backend: str,
    replicas: int,
    image: str,
    namespace: str,
    s3_secret_name: str,
    model: Output[Model],
):
    """Runs `train`."""
    from container_component_src.main import run_subcommand

    # PyTorchJob replicas run in their own pods: they read the artifacts from object storage,
    # and the master writes the model next to this task's output, from where it is copied.
    cluster = backend == "pytorchjob"
    data = [(a.uri if cluster else a.path) for a in (train, val, scaler, best_params)]
    run_subcommand(
        "train",
        "--train",
        data[0],
        "--val",
        data[1],
        "--scaler",
        data[2],
        "--params",
        data[3],
        "--out",
        model.path,
        "--backend",
        backend,
        "--replicas",
        str(replicas),
        "--image",
        image,
        "--namespace",
        namespace,
        "--s3-secret-name",
        s3_secret_name,
        "--scratch",
        f"{model.uri}-pytorchjob" if cluster else "",
        "--max-epochs",
        str(max_epochs),
        "--patience",
        str(patience),
        "--accelerator",
        accelerator,
        "--devices",
        str(devices),
        "--seed",
        str(seed),
    )


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    val: Input[Dataset],
    test: Input[Dataset],
    smoothing_window: int,
    val_quantile: float,
    n_thresholds: int,
    low_quantile: float,
    high_quantile: float,
    worst_events: int,
    label_column: str,
    results: Output[Dataset],
    summary: Output[Artifact],
    report: Output[HTML],
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
) -> float:
    """Runs `evaluate`; returns Fc1 at the label-free threshold, which the deploy gate compares."""
    import json

    from container_component_src.main import run_subcommand

    run_subcommand(
        "evaluate",
        "--model",
        model.path,
        "--val",
        val.path,
        "--test",
        test.path,
        "--results",
        results.path,
        "--summary",
        summary.path,
        "--report",
        report.path,
        "--smoothing-window",
        str(smoothing_window),
        "--val-quantile",
        str(val_quantile),
        "--n-thresholds",
        str(n_thresholds),
        "--low-quantile",
        str(low_quantile),
        "--high-quantile",
        str(high_quantile),
        "--worst-events",
        str(worst_events),
        "--label-column",
        label_column,
    )
    with open(summary.path) as handle:
        content = json.load(handle)
    for name, value in content["metrics"].items():
        metrics.log_metric(name, value)
    confusion, roc = content["confusion_matrix"], content["roc"]
    classification.log_confusion_matrix(confusion["categories"], confusion["matrix"])
    classification.log_roc_curve(roc["fpr"], roc["tpr"], roc["thresholds"])
    return content["deploy"]["fc1"]


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def deploy(
    model: Input[Model],
    summary: Input[Artifact],
    backend: str,
    name: str,
    local_model_dir: str,
    model_store: str,
    run_id: str,
    deployment_mode: str,
    service_account: str,
    gpus: int,
    image: str,
    namespace: str,
    endpoint: Output[Artifact],
):
    """Runs `deploy`."""
    from container_component_src.main import run_subcommand

    run_subcommand(
        "deploy",
        "--model",
        model.path,
        "--summary",
        summary.path,
        "--out",
        endpoint.path,
        "--backend",
        backend,
        "--name",
        name,
        "--local-model-dir",
        local_model_dir,
        "--model-store",
        model_store,
        "--artifact-uri",
        model.uri,
        "--run-id",
        run_id,
        "--deployment-mode",
        deployment_mode,
        "--service-account",
        service_account,
        "--gpus",
        str(gpus),
        "--image",
        image,
        "--namespace",
        namespace,
    )
