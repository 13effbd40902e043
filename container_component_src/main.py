"""The multi-command entry point of the pipeline image: one subcommand per pipeline step.

Option defaults come from config.toml (and its ECLSS_* environment overrides); every KFP
component runs exactly one of these subcommands.
"""

from __future__ import annotations

import contextlib
import errno
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from container_component_src.choices import (
    Accelerator,
    Aggregation,
    CompileMode,
    DaskCluster,
    DeploymentMode,
    LrScaling,
    ModelKind,
    Precision,
    Protocol,
    ScalerKind,
    ServeRole,
    ServingBackend,
    ThresholdFollow,
    ThresholdMethod,
    TrainBackend,
    TuneAlgorithm,
    TuneBackend,
)
from container_component_src.cli_help import finite_float, tidy_options, widen_help
from container_component_src.cluster.kube import Placement
from container_component_src.config import ConfigError, Settings, load_settings, settings_from_json

app = typer.Typer(
    help="ECLSS telemetry anomaly detection: the steps of the Kubeflow pipeline.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

Columns = "Columns"
Cluster = "Dask cluster"
Hyper = "Hyperparameters"
Katib = "Katib (--backend katib)"
Job = "PyTorchJob (--backend pytorchjob)"
Run = "Training run"


def cli_defaults(settings: Settings) -> dict[str, dict[str, Any]]:
    """Option defaults per subcommand, taken from the settings."""
    from container_component_src.cli_args import weight_pairs

    c, g, p, s = settings.columns, settings.generator, settings.preprocessing, settings.split
    # The Dask backend of preprocess and of the table steps that run a task per part.
    dask = {
        "cluster": p.cluster,
        "n_workers": p.n_workers,
        "worker_cpu": p.worker_cpu,
        "worker_memory": p.worker_memory,
        "profile_workers": p.profile_workers,
        "worker_image": settings.platform.image,
        "namespace": settings.platform.namespace,
        "s3_secret_name": settings.platform.s3_secret_name,
    }
    return {
        "generate-data": {
            "archives": settings.data.archives_url,
            "reports": settings.data.reports_url,
            "ground_truth": settings.data.url("ground_truth.parquet"),
            "years": g.years,
            "days_per_year": g.days_per_year,
            "sampling_period_s": g.sampling_period_s,
            "n_channels": g.n_channels,
            "seed": g.seed,
            "timestamp_column": c.timestamp,
        },
        "list-archives": {"archives": settings.data.archives_url},
        "import-telemetry": {
            "archives": settings.data.archives_url,
            "reports": settings.data.reports_url,
            "archive_timestamp_column": c.timestamp,
        },
        "split-archive": {
            "timestamp_column": c.timestamp,
            "partition_period": settings.split_archives.partition_period,
        },
        "preprocess": {
            "timestamp_column": c.timestamp,
            "resample_period": p.resample_period,
            "aggregation": p.aggregation,
            "max_gap_periods": p.max_gap_periods,
            "max_missing_share": p.max_missing_share,
            "sample_frac": p.sample_frac,
            **dask,
        },
        "parse-reports": {
            "reports": settings.data.reports_url,
            "id_column": c.report_id,
            "start_column": c.report_start,
            "end_column": c.report_end,
        },
        "label-series": {"label_column": c.label, **dask},
        "split-dataset": {
            "test_window_hours": s.test_window_hours,
            "val_share": s.val_share,
            "block_hours": s.block_hours,
            "test_periods": s.test_periods,
            "seed": s.seed,
            "label_column": c.label,
            **dask,
        },
        "fit-scaler": {
            "kind": settings.scaling.kind,
            "reference_rows": settings.scaling.reference_rows,
            "label_column": c.label,
        },
        "apply-scaler": dask,
        "train": {
            **_training_defaults(settings),
            "min_steps": settings.training.min_steps,
            "mode_weight": settings.training.mode_weight,
            "drift_weight": settings.training.drift_weight,
            "named_weights": weight_pairs(settings.training.named_weights),
            "backend": settings.training.backend,
            "replicas": settings.training.replicas,
            "replica_memory": settings.training.replica_memory,
            "timeout_s": settings.training.timeout_s,
            "poll_s": settings.training.poll_s,
            "image": settings.platform.image,
            "namespace": settings.platform.namespace,
            "s3_secret_name": settings.platform.s3_secret_name,
        },
        "tune": {
            **{k: v for k, v in _training_defaults(settings).items() if k != "max_epochs"},
            "mode_weight": settings.training.mode_weight,
            "drift_weight": settings.training.drift_weight,
            "named_weights": weight_pairs(settings.training.named_weights),
            "algorithm": settings.tuning.algorithm,
            "max_trials": settings.tuning.max_trials,
            "max_failed_trials": settings.tuning.max_failed_trials,
            "epochs_per_trial": settings.tuning.epochs_per_trial,
            "min_steps_per_trial": settings.tuning.min_steps_per_trial,
            "search_space": settings.tuning.search_space,
            "backend": settings.tuning.backend,
            "parallel_trials": settings.tuning.parallel_trials,
            "trial_memory": settings.tuning.trial_memory,
            "timeout_s": settings.tuning.timeout_s,
            "poll_s": settings.tuning.poll_s,
            "image": settings.platform.image,
            "namespace": settings.platform.namespace,
            "s3_secret_name": settings.platform.s3_secret_name,
        },
        "evaluate": {
            "smoothing_window": settings.evaluation.smoothing_window,
            "threshold_method": settings.evaluation.threshold_method,
            "val_quantile": settings.evaluation.val_quantile,
            "pot_risk": settings.evaluation.pot_risk,
            "pot_level": settings.evaluation.pot_level,
            "n_thresholds": settings.evaluation.n_thresholds,
            "low_quantile": settings.evaluation.low_quantile,
            "high_quantile": settings.evaluation.high_quantile,
            "worst_events": settings.evaluation.worst_events,
            "label_column": c.label,
            "dataset": settings.data.dataset,
            "deploy_threshold": settings.evaluation.deploy_threshold,
            "promise_tolerance": settings.evaluation.promise_tolerance,
            "threshold_follow": settings.evaluation.threshold_follow,
            "follow_window": settings.evaluation.follow_window,
        },
        "serve": {
            "name": settings.serving.name,
            "http_port": settings.serving.http_port,
            "grpc_port": settings.serving.grpc_port,
            "max_batch_rows": settings.serving.max_batch_rows,
            "max_request_bytes": settings.serving.max_request_bytes,
            "request_timeout_s": settings.serving.request_timeout_s,
            "max_concurrent_requests": settings.serving.max_concurrent_requests,
            "model_control": settings.serving.model_control,
        },
        "deploy": {
            "backend": settings.serving.backend,
            "name": settings.serving.name,
            "http_port": settings.serving.http_port,
            "grpc_port": settings.serving.grpc_port,
            "max_batch_rows": settings.serving.max_batch_rows,
            "local_model_dir": settings.data.local_folder(settings.serving.local_model_dir),
            "model_store": settings.serving.model_store,
            "deployment_mode": settings.serving.deployment_mode,
            "service_account": settings.serving.service_account,
            "gpus": settings.serving.gpus,
            "cpu": settings.serving.cpu,
            "memory": settings.serving.memory,
            "timeout_s": settings.serving.timeout_s,
            "poll_s": settings.serving.poll_s,
            "image": settings.platform.image,
            "namespace": settings.platform.namespace,
        },
    }


def _training_defaults(settings: Settings) -> dict[str, Any]:
    """Hyperparameters and run options shared by `train` and `tune`."""
    shared = (
        "max_epochs",
        "patience",
        "accelerator",
        "devices",
        "num_nodes",
        "seed",
        "deterministic",
        "precision",
        "compile",
        "learning_rate",
        "batch_size",
        "beta",
        "hidden_size",
        "latent_dim",
        "mse_weight",
        "n_hidden_layers",
        "model",
        "window",
        "lr_scaling",
    )
    return {name: getattr(settings.training, name) for name in shared}


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(help="Config file (default: $ECLSS_CONFIG, ./config.toml, the project's).", dir_okay=False),
    ] = None,
    settings_json: Annotated[
        str | None,
        typer.Option(
            "--settings",
            help="Settings as JSON (what a compiled pipeline passes its tasks); replaces the config file.",
        ),
    ] = None,
) -> None:
    """Steps of the ECLSS anomaly-detection pipeline; defaults come from config.toml (or, in a
    pipeline run, from the settings the pipeline was compiled with)."""
    with _clear_errors():
        settings = settings_from_json(settings_json) if settings_json is not None else load_settings(config)
    ctx.obj = settings
    ctx.default_map = cli_defaults(settings)
    for name, command in getattr(ctx.command, "commands", {}).items():
        tidy_options(command, ctx.default_map.get(name, {}))


# errno values of a path the user chose that cannot be used as asked.
USER_PATH_ERRORS = {
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.EISDIR,
    errno.ENOTDIR,
    errno.ENOSPC,
    errno.EBUSY,
    errno.EEXIST,
}


@contextlib.contextmanager
def _clear_errors() -> Iterator[None]:
    """Turn the project's own errors (a bad input file, option or setting) and Kubernetes' refusals
    (RBAC) into one line on stderr and exit code 1; any other exception is a fault and keeps its
    traceback."""
    from container_component_src.errors import OptionError
    from container_component_src.storage import InputError

    try:
        yield
    except (InputError, ConfigError, OptionError) as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    except OSError as exc:
        # A path the user gave that this process may not use: a read-only or full folder, a
        # folder where a file goes. Anything else from the system is a fault, with its traceback.
        if exc.errno not in USER_PATH_ERRORS or not exc.filename:
            raise
        typer.echo(f"Error: {exc.filename}: {exc.strerror}", err=True)
        raise typer.Exit(code=1) from None
    except Exception as exc:
        from container_component_src.cluster.kube import forbidden_message

        if (message := forbidden_message(exc)) is None:
            raise
        typer.echo(f"Error: {message}", err=True)
        raise typer.Exit(code=1) from None


def _report(result: Any) -> None:
    typer.echo(json.dumps(result, indent=2, default=str))


@app.command()
def generate_data(
    archives: Annotated[str, typer.Option(help="Folder (or s3:// URL) for the yearly archive parquet files.")],
    reports: Annotated[str, typer.Option(help="Anomaly reports file to write (.xlsx or .csv).")],
    ground_truth: Annotated[str, typer.Option(help="Parquet file for the exact injected anomaly intervals.")],
    years: Annotated[list[int], typer.Option("--years", help="Year of an archive; repeat for several.")],
    days_per_year: Annotated[int, typer.Option(help="Days of telemetry per year, from 1 January.")],
    sampling_period_s: Annotated[float, typer.Option(parser=finite_float, help="Nominal sampling period in seconds.")],
    n_channels: Annotated[int, typer.Option(help="Number of float channels.")],
    seed: Annotated[int, typer.Option(help="Random seed.")],
    timestamp_column: Annotated[str, typer.Option(help="Name of the timestamp column.", rich_help_panel=Columns)],
    anomalies_per_day: Annotated[
        float, typer.Option(parser=finite_float, help="Mean injected anomalies per day.")
    ] = 0.5,
) -> None:
    """Generate ECLSS-like telemetry archives, anomaly reports and their ground truth."""
    from container_component_src.data.generate import GeneratorOptions, run_generate_data

    with _clear_errors():
        options = GeneratorOptions(
            years=tuple(years),
            days_per_year=days_per_year,
            sampling_period_s=sampling_period_s,
            n_channels=n_channels,
            seed=seed,
            anomalies_per_day=anomalies_per_day,
        )
        _report(run_generate_data(archives, reports, ground_truth, options, timestamp_column))


@app.command()
def import_telemetry(
    source: Annotated[list[str], typer.Option("--source", help="CSV or parquet telemetry file; repeat for several.")],
    archives: Annotated[str, typer.Option(help="Folder (or s3:// URL) for the yearly archive parquet files.")],
    reports: Annotated[str, typer.Option(help="Anomaly reports file to write (.xlsx or .csv).")],
    archive_timestamp_column: Annotated[str, typer.Option(help="Timestamp column of the written archives.")],
    timestamp_column: Annotated[str, typer.Option(help="Timestamp column of the sources.")] = "timestamp",
    label_column: Annotated[str, typer.Option(help="Per-row 0/1 anomaly column of the sources.")] = "",
    intervals: Annotated[str, typer.Option(help="CSV or parquet file of labelled intervals (start, end).")] = "",
    interval_start_column: Annotated[str, typer.Option(help="Start column of --intervals.")] = "start",
    interval_end_column: Annotated[str, typer.Option(help="End column of --intervals.")] = "end",
    separator: Annotated[str, typer.Option(help="CSV field separator.")] = ",",
    timezone: Annotated[str, typer.Option(help="Zone of timestamps written without one.")] = "UTC",
    drop_columns: Annotated[
        list[str] | None, typer.Option("--drop-column", help="A source column that is not a channel; repeatable.")
    ] = None,
    stack: Annotated[
        bool, typer.Option(help="The files are separate recordings: lay them end to end in the order given.")
    ] = False,
    stack_gap: Annotated[str, typer.Option(help="Gap between stacked recordings.")] = "1h",
    timestamp_unit: Annotated[
        str, typer.Option(help="Unit of timestamps given as numbers since the epoch: s, ms, us or ns.")
    ] = "",
    timestamp_format: Annotated[
        str,
        typer.Option(help="strptime format of the timestamps, for forms not read by default (e.g. '%m/%d/%Y %H:%M')."),
    ] = "",
    dayfirst: Annotated[bool, typer.Option(help="Dates such as 01/03/2021 are day first (March 1st).")] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace a non-empty archive folder (all of it) and the reports file.")
    ] = False,
    test_source: Annotated[
        list[str] | None,
        typer.Option(
            "--test-source",
            help="Pattern of the --source files that are test recordings; prints their test_periods. Repeatable.",
        ),
    ] = None,
) -> None:
    """Import your own telemetry (CSV or parquet: a timestamp and numeric channels, labels per row or
    as intervals) into the archive and report formats the pipeline reads."""
    from container_component_src.data.import_telemetry import ImportOptions, next_command, run_import_telemetry

    with _clear_errors():
        options = ImportOptions(
            timestamp_column=timestamp_column,
            label_column=label_column,
            intervals=intervals,
            interval_start_column=interval_start_column,
            interval_end_column=interval_end_column,
            separator=separator,
            timezone=timezone,
            drop_columns=tuple(drop_columns or ()),
            stack=stack,
            stack_gap=stack_gap,
            archive_timestamp_column=archive_timestamp_column,
            timestamp_unit=timestamp_unit,
            timestamp_format=timestamp_format,
            dayfirst=dayfirst,
            overwrite=overwrite,
            test_sources=tuple(test_source or ()),
        )
        result = run_import_telemetry(source, archives, reports, options)
        _report(result)
        settings = load_settings()
        command = next_command(
            archives,
            reports,
            archive_timestamp_column,
            settings.data,
            settings.columns.timestamp,
            result.get("test_periods", ""),
        )
        typer.echo(f"Next, run the pipeline on it (it serves its own model from its data root):\n{command}")


@app.command()
def list_archives(
    archives: Annotated[str, typer.Option(help="Folder (or s3:// URL) holding the yearly archives.")],
    out: Annotated[Path | None, typer.Option(help="Write the list as JSON here too.", dir_okay=False)] = None,
) -> None:
    """List the yearly archive parquet files (at run time, for the parallel split)."""
    from container_component_src import storage
    from container_component_src.data.split_archive import list_archives as list_archive_files

    with _clear_errors():
        found = list_archive_files(archives)
        if out is not None:
            storage.write_json(found, str(out))
        _report(found)


@app.command()
def split_archive(
    archive: Annotated[str, typer.Option(help="One yearly archive parquet file (path or s3:// URL).")],
    out: Annotated[str, typer.Option(help="Folder for the partition files.")],
    timestamp_column: Annotated[str, typer.Option(help="Name of the timestamp column.", rich_help_panel=Columns)],
    partition_period: Annotated[str, typer.Option(help="Time span of one partition file, e.g. 1D or 6h.")],
) -> None:
    """Split one yearly archive into time partitions, streaming its row groups."""
    from container_component_src.data.split_archive import run_split_archive

    with _clear_errors():
        _report(run_split_archive(archive, out, timestamp_column, partition_period))


ClusterOption = Annotated[
    DaskCluster,
    typer.Option(help="Where the tasks run: threads of this process, or a Dask cluster.", rich_help_panel=Cluster),
]
WorkersOption = Annotated[
    int, typer.Option(help="Worker threads (local) or Dask workers (kubernetes).", rich_help_panel=Cluster)
]
WorkerCpuOption = Annotated[str, typer.Option(help="CPU per Kubernetes worker.", rich_help_panel=Cluster)]
WorkerMemoryOption = Annotated[str, typer.Option(help="Memory per Kubernetes worker.", rich_help_panel=Cluster)]
WorkerImageOption = Annotated[str, typer.Option(help="Image of Kubernetes workers.", rich_help_panel=Cluster)]
NamespaceOption = Annotated[str, typer.Option(help="Kubernetes namespace (empty: current).", rich_help_panel=Cluster)]
SecretOption = Annotated[str, typer.Option(help="Secret with AWS_* keys for the workers.", rich_help_panel=Cluster)]
ProfileOption = Annotated[
    bool,
    typer.Option(
        help="Run Dask's profiler in Kubernetes workers (slower; for the dashboard).", rich_help_panel=Cluster
    ),
]
EndpointOption = Annotated[
    str, typer.Option(envvar="AWS_ENDPOINT_URL", help="S3 endpoint for the workers.", rich_help_panel=Cluster)
]
ScratchOption = Annotated[
    str,
    typer.Option(
        help="Object-storage folder, unique to the run, where Kubernetes workers write (then copied to the outputs).",
        rich_help_panel=Cluster,
    ),
]


def _cluster_options(ctx: typer.Context, step: str) -> Any:
    """The cluster options a step was given (`ctx.params`)."""
    from container_component_src.cluster.dask import ClusterOptions

    given = ctx.params
    return ClusterOptions(
        cluster=given["cluster"],
        n_workers=given["n_workers"],
        worker_cpu=given["worker_cpu"],
        worker_memory=given["worker_memory"],
        image=given["worker_image"],
        namespace=given["namespace"],
        s3_secret_name=given["s3_secret_name"],
        s3_endpoint=given["s3_endpoint"],
        profile_workers=given["profile_workers"],
        placement=Placement.from_settings(ctx.obj.kubernetes),
        name_prefix=step,
    )


def _step_tasks(ctx: typer.Context, step: str) -> Any:
    """Where a step's tasks run, from the cluster options it was given: threads here, or a Dask
    cluster on Kubernetes."""
    from container_component_src.cluster.dask import step_tasks

    return step_tasks(_cluster_options(ctx, step))


@app.command()
def preprocess(
    ctx: typer.Context,
    partitions: Annotated[
        list[str], typer.Option("--partitions", help="Partition folder or file; repeat for several.")
    ],
    out: Annotated[str, typer.Option(help="Folder for the time-indexed parquet output.")],
    quality_report: Annotated[str, typer.Option(help="JSON file for the data-quality report.")],
    timestamp_column: Annotated[str, typer.Option(help="Name of the timestamp column.", rich_help_panel=Columns)],
    resample_period: Annotated[str, typer.Option(help="Grid period, e.g. 1min; must divide the partitions.")],
    aggregation: Annotated[Aggregation, typer.Option(help="How samples within a period combine.")],
    max_gap_periods: Annotated[int, typer.Option(help="Interpolate gaps up to this many periods; drop longer ones.")],
    max_missing_share: Annotated[
        float, typer.Option(parser=finite_float, help="Drop channels missing on more of the grid than this.")
    ],
    sample_frac: Annotated[float, typer.Option(parser=finite_float, help="Share of output rows to keep (1.0 = all).")],
    cluster: ClusterOption,
    n_workers: WorkersOption,
    worker_cpu: WorkerCpuOption,
    worker_memory: WorkerMemoryOption,
    worker_image: WorkerImageOption,
    namespace: NamespaceOption,
    s3_secret_name: SecretOption,
    profile_workers: ProfileOption,
    s3_endpoint: EndpointOption = "",
    scratch: ScratchOption = "",
    seed: Annotated[int, typer.Option(help="Seed of --sample-frac.")] = 0,
) -> None:
    """Resample the partitions onto a regular grid and report data quality (threads here, or a Dask
    cluster on Kubernetes)."""
    from container_component_src.data.preprocess import PreprocessOptions, run_preprocess

    with _clear_errors():
        options = PreprocessOptions(
            resample_period=resample_period,
            aggregation=aggregation,
            max_gap_periods=max_gap_periods,
            max_missing_share=max_missing_share,
            sample_frac=sample_frac,
            seed=seed,
        )
        options.validate()
        with _step_tasks(ctx, "preprocess") as tasks:
            summary = run_preprocess(partitions, out, quality_report, tasks, options, timestamp_column, scratch)
        _report({k: v for k, v in summary.items() if k != "channels"})


@app.command()
def parse_reports(
    reports: Annotated[str, typer.Option(help="Anomaly reports (.xls, .xlsx or .csv; path or s3:// URL).")],
    out: Annotated[str, typer.Option(help="Parquet file for the intervals.")],
    id_column: Annotated[str, typer.Option(help="Report id column.", rich_help_panel=Columns)],
    start_column: Annotated[str, typer.Option(help="Start column (YYYY/DOY/HH:MM:SS).", rich_help_panel=Columns)],
    end_column: Annotated[str, typer.Option(help="End time or duration column.", rich_help_panel=Columns)],
) -> None:
    """Parse and validate anomaly reports into UTC intervals."""
    from container_component_src.data.labels import run_parse_reports

    with _clear_errors():
        _report({"intervals": run_parse_reports(reports, out, id_column, start_column, end_column)})


@app.command()
def label_series(
    ctx: typer.Context,
    telemetry: Annotated[str, typer.Option(help="Preprocessed telemetry (a dataset: parquet file or folder).")],
    intervals: Annotated[str, typer.Option(help="Intervals parquet from parse-reports.")],
    out: Annotated[str, typer.Option(help="Folder for the labelled telemetry (a dataset).")],
    label_column: Annotated[str, typer.Option(help="Name of the 0/1 label column.", rich_help_panel=Columns)],
    cluster: ClusterOption,
    n_workers: WorkersOption,
    worker_cpu: WorkerCpuOption,
    worker_memory: WorkerMemoryOption,
    worker_image: WorkerImageOption,
    namespace: NamespaceOption,
    s3_secret_name: SecretOption,
    profile_workers: ProfileOption,
    s3_endpoint: EndpointOption = "",
    scratch: ScratchOption = "",
) -> None:
    """Label each telemetry row 1 inside any anomaly interval, else 0 (a Dask task per part)."""
    from container_component_src.data.labels import run_label_series

    with _clear_errors(), _step_tasks(ctx, "label-series") as tasks:
        _report(run_label_series(telemetry, intervals, out, tasks, label_column, scratch_url=scratch))


@app.command()
def split_dataset(
    ctx: typer.Context,
    labelled: Annotated[str, typer.Option(help="Labelled telemetry (a dataset).")],
    intervals: Annotated[str, typer.Option(help="Intervals parquet from parse-reports.")],
    train: Annotated[str, typer.Option(help="Folder for the training set (a dataset).")],
    val: Annotated[str, typer.Option(help="Folder for the validation set (a dataset).")],
    test: Annotated[str, typer.Option(help="Folder for the test set (a dataset).")],
    test_window_hours: Annotated[
        float, typer.Option(parser=finite_float, help="Hours around each anomaly that go to test.")
    ],
    val_share: Annotated[
        float, typer.Option(parser=finite_float, help="Share of the remaining blocks that go to validation.")
    ],
    block_hours: Annotated[
        float, typer.Option(parser=finite_float, help="Length of the train/validation time blocks.")
    ],
    test_periods: Annotated[
        str, typer.Option(help='Test time ranges "start/end,..." (ISO); empty: test around each anomaly.')
    ],
    seed: Annotated[int, typer.Option(help="Seed of the block assignment.")],
    label_column: Annotated[str, typer.Option(help="Name of the 0/1 label column.", rich_help_panel=Columns)],
    cluster: ClusterOption,
    n_workers: WorkersOption,
    worker_cpu: WorkerCpuOption,
    worker_memory: WorkerMemoryOption,
    worker_image: WorkerImageOption,
    namespace: NamespaceOption,
    s3_secret_name: SecretOption,
    profile_workers: ProfileOption,
    s3_endpoint: EndpointOption = "",
    scratch: ScratchOption = "",
) -> None:
    """Split by time: test around anomalies, train and validation in whole blocks (a Dask task per part)."""
    from container_component_src.data.split import SplitOptions, run_split_dataset

    with _clear_errors():
        options = SplitOptions(test_window_hours, val_share, block_hours, seed, test_periods)
        options.validate()
        with _step_tasks(ctx, "split-dataset") as tasks:
            counts = run_split_dataset(
                labelled, intervals, train, val, test, options, tasks, label_column, scratch_url=scratch
            )
        _report(counts)


@app.command()
def fit_scaler(
    train: Annotated[str, typer.Option(help="Training set parquet.")],
    out: Annotated[str, typer.Option(help="JSON file for the fitted scaler.")],
    kind: Annotated[ScalerKind, typer.Option(help="standard (mean/std), robust (median/IQR) or minmax scaling.")],
    reference_rows: Annotated[
        int,
        typer.Option(
            help="0, or N: scale each gapless run relative to the mean of its first N rows (its own operating point)."
        ),
    ],
    label_column: Annotated[str, typer.Option(help="Column left unscaled.", rich_help_panel=Columns)],
) -> None:
    """Fit the scaler on the training set only."""
    from container_component_src.data.scaling import run_fit_scaler
    from container_component_src.resources import check_step_fits

    with _clear_errors():
        check_step_fits("fit-scaler", [train])
        scaler = run_fit_scaler(train, out, kind, label_column, reference_rows)
        from container_component_src.data.scaling import describe_channels

        _report({"kind": scaler["kind"], "channels": len(scaler["channels"]), "of_note": describe_channels(scaler)})


@app.command()
def apply_scaler(
    ctx: typer.Context,
    scaler: Annotated[str, typer.Option(help="Scaler JSON from fit-scaler.")],
    train: Annotated[str, typer.Option(help="Training set (a dataset).")],
    val: Annotated[str, typer.Option(help="Validation set (a dataset).")],
    test: Annotated[str, typer.Option(help="Test set (a dataset).")],
    train_out: Annotated[str, typer.Option(help="Folder for the scaled training set.")],
    val_out: Annotated[str, typer.Option(help="Folder for the scaled validation set.")],
    test_out: Annotated[str, typer.Option(help="Folder for the scaled test set (labels kept).")],
    cluster: ClusterOption,
    n_workers: WorkersOption,
    worker_cpu: WorkerCpuOption,
    worker_memory: WorkerMemoryOption,
    worker_image: WorkerImageOption,
    namespace: NamespaceOption,
    s3_secret_name: SecretOption,
    profile_workers: ProfileOption,
    s3_endpoint: EndpointOption = "",
    scratch: ScratchOption = "",
) -> None:
    """Scale the train, validation and test sets with the fitted scaler (a Dask task per part)."""
    from container_component_src.data.scaling import run_apply_scaler

    with _clear_errors():
        pairs = [(train, train_out), (val, val_out), (test, test_out)]
        with _step_tasks(ctx, "apply-scaler") as tasks:
            counts = run_apply_scaler(scaler, pairs, tasks, scratch_url=scratch)
        _report(counts)


def _model_params(
    learning_rate: float,
    batch_size: int,
    beta: float,
    hidden_size: int,
    latent_dim: int,
    mse_weight: float,
    n_hidden_layers: int,
    model: str,
    window: int,
    lr_scaling: str,
) -> Any:
    from container_component_src.model.train import ModelParams

    params = ModelParams(
        learning_rate, batch_size, beta, hidden_size, latent_dim, mse_weight, n_hidden_layers, model, window, lr_scaling
    )
    params.validate()
    return params


LearningRate = Annotated[float, typer.Option(parser=finite_float, help="Adam learning rate.", rich_help_panel=Hyper)]
BatchSize = Annotated[int, typer.Option(help="Rows per batch.", rich_help_panel=Hyper)]
Beta = Annotated[float, typer.Option(parser=finite_float, help="Weight of the KL term.", rich_help_panel=Hyper)]
HiddenSize = Annotated[int, typer.Option(help="First hidden layer width (each next halves).", rich_help_panel=Hyper)]
LatentDim = Annotated[int, typer.Option(help="Latent size.", rich_help_panel=Hyper)]
MseWeight = Annotated[
    float,
    typer.Option(parser=finite_float, help="Share of squared error in the likelihood term.", rich_help_panel=Hyper),
]
HiddenLayers = Annotated[int, typer.Option(help="Hidden layers of encoder and decoder.", rich_help_panel=Hyper)]
ModelOption = Annotated[
    ModelKind, typer.Option(help="point: one row at a time; window: the last --window rows.", rich_help_panel=Hyper)
]
Window = Annotated[
    int, typer.Option(help="Rows the windowed model sees (the scored row included).", rich_help_panel=Hyper)
]
MaxEpochs = Annotated[
    int, typer.Option(help="Upper bound on epochs (early stopping ends sooner).", rich_help_panel=Run)
]
Patience = Annotated[int, typer.Option(help="Epochs without improvement before stopping.", rich_help_panel=Run)]
AcceleratorOption = Annotated[Accelerator, typer.Option(help="cpu, gpu or auto.", rich_help_panel=Run)]
Devices = Annotated[int, typer.Option(help="Devices per node; more than one trains with DDP.", rich_help_panel=Run)]
Nodes = Annotated[int, typer.Option(help="Nodes (PyTorchJob replicas).", rich_help_panel=Run)]
Seed = Annotated[int, typer.Option(help="Seed of initialisation, sampling and shuffling.", rich_help_panel=Run)]
LrScalingOption = Annotated[
    LrScaling, typer.Option(help="Learning rate vs batch size: none, sqrt or linear (from 512).", rich_help_panel=Hyper)
]
PrecisionOption = Annotated[
    Precision, typer.Option(help="32-true, or mixed bf16-mixed / 16-mixed.", rich_help_panel=Run)
]
CompileOption = Annotated[
    CompileMode,
    typer.Option(
        help="torch.compile the step: none, default, reduce-overhead (CUDA graphs), max-autotune.", rich_help_panel=Run
    ),
]
Deterministic = Annotated[
    bool, typer.Option(help="Deterministic on the GPU too (slower; the CPU always is).", rich_help_panel=Run)
]
ModeWeight = Annotated[
    float, typer.Option(help="Weight in the score of channels constant or of few values in training.")
]
# A weight of 0 leaves a channel out of the score: tuning and training then clamp its inputs alike.
DriftWeight = Annotated[
    float, typer.Option(parser=finite_float, help="Weight in the score of channels drifting in training.")
]
NamedWeights = Annotated[
    list[str] | None,
    typer.Option(
        metavar="<channel=weight>", help="A channel's weight in the score, over the rules above (repeatable)."
    ),
]


@app.command()
def train(
    ctx: typer.Context,
    train: Annotated[str, typer.Option(help="Scaled training set (parquet).")],
    val: Annotated[str, typer.Option(help="Scaled validation set (parquet).")],
    scaler: Annotated[str, typer.Option(help="Scaler JSON from fit-scaler (gives the channels).")],
    out: Annotated[str, typer.Option(help="Folder for the Model artifact.")],
    learning_rate: LearningRate,
    batch_size: BatchSize,
    beta: Beta,
    hidden_size: HiddenSize,
    latent_dim: LatentDim,
    mse_weight: MseWeight,
    n_hidden_layers: HiddenLayers,
    model: ModelOption,
    window: Window,
    lr_scaling: LrScalingOption,
    max_epochs: MaxEpochs,
    min_steps: Annotated[int, typer.Option(help="Optimizer steps before early stopping may act.", rich_help_panel=Run)],
    patience: Patience,
    accelerator: AcceleratorOption,
    devices: Devices,
    num_nodes: Nodes,
    seed: Seed,
    deterministic: Deterministic,
    precision: PrecisionOption,
    compile: CompileOption,
    mode_weight: ModeWeight,
    drift_weight: DriftWeight,
    backend: Annotated[TrainBackend, typer.Option(help="local: train here; pytorchjob: a PyTorchJob on the cluster.")],
    replicas: Annotated[int, typer.Option(help="PyTorchJob replicas (1 master + workers).", rich_help_panel=Job)],
    replica_memory: Annotated[str, typer.Option(help="Memory request and limit per replica.", rich_help_panel=Job)],
    namespace: Annotated[str, typer.Option(help="Namespace (empty: this pod's).", rich_help_panel=Job)],
    image: Annotated[str, typer.Option(help="Image the replicas run.", rich_help_panel=Job)],
    timeout_s: Annotated[int, typer.Option(help="Fail after this many seconds.", rich_help_panel=Job)],
    poll_s: Annotated[
        float, typer.Option(parser=finite_float, help="Seconds between status checks.", rich_help_panel=Job)
    ],
    s3_secret_name: Annotated[str, typer.Option(help="Secret with AWS_* keys for replicas.", rich_help_panel=Job)],
    params: Annotated[
        str | None, typer.Option(help="Best-parameters JSON from tune; its values replace the options above.")
    ] = None,
    named_weights: NamedWeights = None,
    scratch: Annotated[
        str, typer.Option(help="Object-storage folder, unique to the run, for the master's model.", rich_help_panel=Job)
    ] = "",
    s3_endpoint: Annotated[
        str, typer.Option(envvar="AWS_ENDPOINT_URL", help="S3 endpoint of the replicas.", rich_help_panel=Job)
    ] = "",
) -> None:
    """Train the VAE (Lightning, CPU or GPU, DDP) here or as a PyTorchJob; write the Model artifact."""
    from container_component_src.cli_args import parse_weight_pairs
    from container_component_src.cluster.backends import train_step
    from container_component_src.config import settings_to_json
    from container_component_src.model.train import ModelParams, TrainOptions

    with _clear_errors():
        model_params = _model_params(
            learning_rate,
            batch_size,
            beta,
            hidden_size,
            latent_dim,
            mse_weight,
            n_hidden_layers,
            model,
            window,
            lr_scaling,
        )
        if params:
            from container_component_src import storage

            model_params = ModelParams(**storage.read_json(params)["parameters"])
            model_params.validate()
        options = TrainOptions(
            max_epochs,
            min_steps,
            patience,
            accelerator,
            devices,
            num_nodes,
            seed,
            mode_weight=mode_weight,
            drift_weight=drift_weight,
            named_weights=parse_weight_pairs(named_weights or [], "--named-weights"),
            deterministic=deterministic,
            precision=precision,
            compile=compile,
        )
        job = None
        if backend == TrainBackend.pytorchjob:
            from container_component_src.cluster.kube import current_namespace
            from container_component_src.cluster.pytorchjob import PyTorchJobOptions

            job = PyTorchJobOptions(
                image=image,
                namespace=namespace or current_namespace(),
                replicas=replicas,
                memory=replica_memory,
                gpus_per_replica=devices if accelerator == Accelerator.gpu else 0,
                timeout_s=timeout_s,
                poll_s=poll_s,
                s3_secret_name=s3_secret_name,
                s3_endpoint=s3_endpoint,
                placement=Placement.from_settings(ctx.obj.kubernetes),
            )
        data = {"train": train, "val": val, "scaler": scaler}
        settings_json = settings_to_json(ctx.obj)
        _report(train_step(data, out, model_params, options, backend, job, scratch, settings_json))


@app.command()
def tune(
    ctx: typer.Context,
    train: Annotated[str, typer.Option(help="Scaled training set (parquet).")],
    val: Annotated[str, typer.Option(help="Scaled validation set (parquet).")],
    scaler: Annotated[str, typer.Option(help="Scaler JSON from fit-scaler (gives the channels).")],
    out: Annotated[str, typer.Option(help="JSON file for the best parameters.")],
    search_space: Annotated[str, typer.Option(help="Katib-style search space as JSON (see config.toml).")],
    algorithm: Annotated[TuneAlgorithm, typer.Option(help="The search algorithm (Katib's names).")],
    max_trials: Annotated[int, typer.Option(help="Trials to run.")],
    max_failed_trials: Annotated[int, typer.Option(help="Failed trials tolerated.")],
    epochs_per_trial: Annotated[int, typer.Option(help="Upper bound on each trial's epochs.", rich_help_panel=Run)],
    min_steps_per_trial: Annotated[
        int, typer.Option(help="Optimizer steps each trial takes at least.", rich_help_panel=Run)
    ],
    learning_rate: LearningRate,
    batch_size: BatchSize,
    beta: Beta,
    hidden_size: HiddenSize,
    latent_dim: LatentDim,
    mse_weight: MseWeight,
    n_hidden_layers: HiddenLayers,
    model: ModelOption,
    window: Window,
    lr_scaling: LrScalingOption,
    patience: Patience,
    accelerator: AcceleratorOption,
    devices: Devices,
    num_nodes: Nodes,
    seed: Seed,
    deterministic: Deterministic,
    precision: PrecisionOption,
    compile: CompileOption,
    mode_weight: ModeWeight,
    drift_weight: DriftWeight,
    backend: Annotated[TuneBackend, typer.Option(help="local: optuna here; katib: a Katib Experiment.")],
    namespace: Annotated[str, typer.Option(help="Katib namespace (empty: this pod's).", rich_help_panel=Katib)],
    image: Annotated[str, typer.Option(help="Image the Katib trials run.", rich_help_panel=Katib)],
    parallel_trials: Annotated[
        int, typer.Option(help="Trials at once: worker processes on this device (local) or trial pods (Katib).")
    ],
    trial_memory: Annotated[str, typer.Option(help="Memory request and limit per trial pod.", rich_help_panel=Katib)],
    timeout_s: Annotated[int, typer.Option(help="Fail after this many seconds.", rich_help_panel=Katib)],
    poll_s: Annotated[
        float, typer.Option(parser=finite_float, help="Seconds between status checks.", rich_help_panel=Katib)
    ],
    s3_secret_name: Annotated[str, typer.Option(help="Secret with AWS_* keys for trials.", rich_help_panel=Katib)],
    keep_experiment: Annotated[
        bool, typer.Option(help="Keep the Experiment after it ends.", rich_help_panel=Katib)
    ] = False,
    named_weights: NamedWeights = None,
    s3_endpoint: Annotated[
        str, typer.Option(envvar="AWS_ENDPOINT_URL", help="S3 endpoint of the trials.", rich_help_panel=Katib)
    ] = "",
) -> None:
    """Search hyperparameters: locally with optuna, or as a Katib Experiment; write the best."""
    from container_component_src.cli_args import parse_weight_pairs
    from container_component_src.cluster.backends import tune_step
    from container_component_src.config import settings_to_json
    from container_component_src.model.train import TrainOptions

    with _clear_errors():
        base = _model_params(
            learning_rate,
            batch_size,
            beta,
            hidden_size,
            latent_dim,
            mse_weight,
            n_hidden_layers,
            model,
            window,
            lr_scaling,
        )
        options = TrainOptions(
            epochs_per_trial,
            min_steps_per_trial,
            patience,
            accelerator,
            devices,
            num_nodes,
            seed,
            progress=False,
            deterministic=deterministic,
            precision=precision,
            compile=compile,
            mode_weight=mode_weight,
            drift_weight=drift_weight,
            named_weights=parse_weight_pairs(named_weights or [], "--named-weights"),
        )
        katib = None
        if backend == TuneBackend.katib:
            from container_component_src.cluster.katib import KatibOptions
            from container_component_src.cluster.kube import current_namespace

            katib = KatibOptions(
                image=image,
                namespace=namespace or current_namespace(),
                parallel_trials=parallel_trials,
                memory=trial_memory,
                timeout_s=timeout_s,
                poll_s=poll_s,
                keep=keep_experiment,
                s3_secret_name=s3_secret_name,
                s3_endpoint=s3_endpoint,
                gpus=devices if accelerator == Accelerator.gpu else 0,
                placement=Placement.from_settings(ctx.obj.kubernetes),
            )
        data = {"train": train, "val": val, "scaler": scaler}
        trials = {
            "algorithm": algorithm,
            "max_trials": max_trials,
            "max_failed_trials": max_failed_trials,
            "parallel_trials": parallel_trials,
        }
        settings_json = settings_to_json(ctx.obj)
        _report(
            tune_step(
                data, out, search_space, base, options, **trials, backend=backend, katib=katib, settings=settings_json
            )
        )


@app.command()
def evaluate(
    model: Annotated[str, typer.Option(help="Model artifact folder written by train.")],
    val: Annotated[str, typer.Option(help="Scaled validation set (parquet): gives the label-free threshold.")],
    test: Annotated[str, typer.Option(help="Scaled, labelled test set (parquet).")],
    results: Annotated[str, typer.Option(help="Parquet file for the per-row scores and predictions.")],
    summary: Annotated[str, typer.Option(help="JSON file for the metrics and the deploy decision's inputs.")],
    report: Annotated[str, typer.Option(help="HTML file for the interactive report.")],
    smoothing_window: Annotated[int, typer.Option(help="Rows in the trailing median of scores (1: none).")],
    threshold_method: Annotated[
        ThresholdMethod, typer.Option(help="Label-free threshold deployed: quantile, or pot (peaks over threshold).")
    ],
    val_quantile: Annotated[
        float, typer.Option(parser=finite_float, help="Quantile of validation scores of the quantile method.")
    ],
    pot_risk: Annotated[
        float, typer.Option(parser=finite_float, help="Probability a normal score exceeds the pot threshold.")
    ],
    pot_level: Annotated[
        float, typer.Option(parser=finite_float, help="Quantile of validation scores above which pot fits peaks.")
    ],
    n_thresholds: Annotated[int, typer.Option(help="Thresholds in the sweep over test scores.")],
    low_quantile: Annotated[
        float, typer.Option(parser=finite_float, help="Lowest swept threshold, as a quantile of test scores.")
    ],
    high_quantile: Annotated[
        float, typer.Option(parser=finite_float, help="Highest swept threshold, as a quantile of test scores.")
    ],
    worst_events: Annotated[int, typer.Option(help="Highest-scoring events shown per channel in the report.")],
    label_column: Annotated[str, typer.Option(help="Label column of the test set.", rich_help_panel=Columns)],
    dataset: Annotated[str, typer.Option(help="The data set's name, in the report's title.")],
    deploy_threshold: Annotated[
        float, typer.Option(parser=finite_float, help="Deploy gate: Fc1 above this deploys (the report says so).")
    ],
    promise_tolerance: Annotated[
        float,
        typer.Option(
            parser=finite_float,
            help="The gate prefers detectors whose false alarms stay within this many times their promise (0: off).",
        ),
    ],
    threshold_follow: Annotated[
        ThresholdFollow,
        typer.Option(
            help="median: the label-free threshold follows each run's median score (served too); spread: its "
            "median and lower-quartile spread; iqr: its median and interquartile range; none: fixed; auto: the "
            "rule the deploy gate finds best. The report also says what the other rules would have served."
        ),
    ],
    follow_window: Annotated[
        int,
        typer.Option(
            help="Rows of each run a following threshold reads, the newest (0: the whole run); a state that lasts "
            "half of them becomes the run's normal."
        ),
    ],
) -> None:
    """Score validation and test rows, sweep thresholds, write metrics (point F1, Fc1,
    point-adjusted F1, PR-AUC), the results parquet and the HTML report."""
    from container_component_src.evaluation.evaluate import EvaluateOptions, run_evaluate
    from container_component_src.resources import check_step_fits

    with _clear_errors():
        options = EvaluateOptions(
            smoothing_window,
            val_quantile,
            threshold_method,
            pot_risk,
            pot_level,
            n_thresholds,
            low_quantile,
            high_quantile,
            worst_events,
            label_column,
            dataset=dataset,
            deploy_threshold=deploy_threshold,
            promise_tolerance=promise_tolerance,
            threshold_follow=threshold_follow,
            follow_window=follow_window,
        )
        check_step_fits("evaluate", [val, test])
        _report(run_evaluate(model, val, test, results, summary, report, options))


@app.command()
def serve(
    model_dir: Annotated[str, typer.Option(help="Published model folder (written by deploy, or by train).")],
    name: Annotated[str, typer.Option("--name", help="Model name in the URL paths.")],
    http_port: Annotated[int, typer.Option("--http-port", help="Port to listen on.")],
    grpc_port: Annotated[int, typer.Option("--grpc-port", help="Port of the gRPC (V2) service; 0: REST only.")],
    max_batch_rows: Annotated[int, typer.Option(help="Largest request accepted; larger ones get HTTP 400.")],
    max_request_bytes: Annotated[
        int, typer.Option(help="Largest request body (413 before more is read); 0: from --max-batch-rows.")
    ],
    request_timeout_s: Annotated[
        float, typer.Option(parser=finite_float, help="Seconds a client may take to send a body (then 408).")
    ],
    max_concurrent_requests: Annotated[int, typer.Option(help="Requests served at once; more get 503.")],
    model_control: Annotated[
        bool, typer.Option(help="Allow V2 repository load/unload (anyone reaching the port could unload).")
    ],
    role: Annotated[
        ServeRole, typer.Option(help="combined: one process does all; predictor or transformer: KServe's split.")
    ] = ServeRole.combined,
    predictor_host: Annotated[
        str, typer.Option("--predictor-host", help="host:port of the predictor (transformer role).")
    ] = "",
    predictor_protocol: Annotated[
        Protocol,
        typer.Option(
            "--predictor-protocol",
            help="Protocol the transformer speaks to its predictor (clients may use either).",
        ),
    ] = Protocol.v1,
    threshold: Annotated[
        float | None, typer.Option(help="Anomaly flag threshold (default: the folder's serving.json).")
    ] = None,
    host: Annotated[
        str,
        typer.Option(help="Address to listen on. Loopback by default: the server has no authentication."),
    ] = "127.0.0.1",
    access_log: Annotated[bool, typer.Option(help="Log every request (off: only the server's own faults).")] = False,
) -> None:
    """Serve the model with the KServe model server: V1 and V2 (Open Inference Protocol)
    predictions over REST and gRPC, health, readiness and metadata. Runs in the foreground until
    interrupted."""
    from container_component_src.serving.server import ServeOptions, run_serve

    with _clear_errors():
        options = ServeOptions(
            role,
            name,
            http_port,
            predictor_host,
            predictor_protocol,
            threshold,
            max_batch_rows,
            host,
            access_log,
            grpc_port,
            max_request_bytes,
            request_timeout_s,
            max_concurrent_requests,
            model_control,
        )
        options.validate()
        run_serve(model_dir, options)


Kserve = "InferenceService (--backend kserve)"


@app.command()
def deploy(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="Model artifact folder written by train.")],
    summary: Annotated[str, typer.Option(help="Summary JSON written by evaluate (gives the threshold).")],
    out: Annotated[str, typer.Option(help="JSON file for where the model is served and how to call it.")],
    backend: Annotated[
        ServingBackend, typer.Option(help="local: publish and smoke-test here; kserve: an InferenceService.")
    ],
    name: Annotated[str, typer.Option(help="Model name (and InferenceService name).")],
    http_port: Annotated[int, typer.Option(help="Port in the printed serve command (local).")],
    grpc_port: Annotated[int, typer.Option(help="gRPC port in the printed serve command (local; 0: none).")],
    max_batch_rows: Annotated[int, typer.Option(help="Largest request accepted.")],
    local_model_dir: Annotated[str, typer.Option(help="Folder the local deploy publishes to.")],
    model_store: Annotated[
        str,
        typer.Option(help="s3:// folder to publish under (empty: next to the Model artifact).", rich_help_panel=Kserve),
    ],
    deployment_mode: Annotated[DeploymentMode, typer.Option(help="KServe's deployment mode.", rich_help_panel=Kserve)],
    service_account: Annotated[
        str, typer.Option(help="Service account with the MinIO secret (empty: default).", rich_help_panel=Kserve)
    ],
    gpus: Annotated[int, typer.Option(help="GPUs of the predictor.", rich_help_panel=Kserve)],
    cpu: Annotated[str, typer.Option(help="CPU per container.", rich_help_panel=Kserve)],
    memory: Annotated[str, typer.Option(help="Memory per container.", rich_help_panel=Kserve)],
    timeout_s: Annotated[int, typer.Option(help="Fail when not ready after this long.", rich_help_panel=Kserve)],
    poll_s: Annotated[
        float, typer.Option(parser=finite_float, help="Seconds between status checks.", rich_help_panel=Kserve)
    ],
    image: Annotated[str, typer.Option(help="Image of predictor and transformer.", rich_help_panel=Kserve)],
    namespace: Annotated[str, typer.Option(help="Namespace (empty: this pod's).", rich_help_panel=Kserve)],
    artifact_uri: Annotated[str, typer.Option(help="URI of the Model artifact.", rich_help_panel=Kserve)] = "",
    run_id: Annotated[
        str, typer.Option(help="Unique run name (folder under --model-store).", rich_help_panel=Kserve)
    ] = "",
) -> None:
    """Publish the model with its threshold and serve it: locally (start the KServe server, smoke-test
    V1 and V2, stop, print the serve command) or as a KServe InferenceService (create or patch,
    wait until ready)."""
    from container_component_src import storage
    from container_component_src.cluster.backends import deploy_step
    from container_component_src.config import settings_to_json
    from container_component_src.serving.deploy import DeployOptions

    with _clear_errors():
        options = DeployOptions(backend, name, local_model_dir, model_store, http_port, max_batch_rows, grpc_port)
        cluster = None
        if backend == ServingBackend.kserve:
            from container_component_src.cluster.inference_service import InferenceServiceOptions
            from container_component_src.cluster.kube import current_namespace

            cluster = InferenceServiceOptions(
                name=name,
                namespace=namespace or current_namespace(),
                image=image,
                storage_uri="",
                deployment_mode=deployment_mode,
                service_account=service_account,
                gpus=gpus,
                cpu=cpu,
                memory=memory,
                max_batch_rows=max_batch_rows,
                timeout_s=timeout_s,
                poll_s=poll_s,
                settings=settings_to_json(ctx.obj),
                placement=Placement.from_settings(ctx.obj.kubernetes),
            )
        result = deploy_step(model, summary, options, artifact_uri, run_id, cluster)
        storage.write_json(result, out)
        _report(result)


def run_subcommand(*args: str) -> None:
    """Run one subcommand in this process; exit non-zero on failure."""
    code = app(list(args), prog_name="container_component_src.main", standalone_mode=False)
    if isinstance(code, int) and code != 0:
        sys.exit(code)


def run_step(settings: str, subcommand: str, **options: Any) -> None:
    """What every KFP component does: run `subcommand` here with `options` (keyword names are the
    subcommand's parameters) and the settings JSON the pipeline was compiled with."""
    from container_component_src.cli_args import to_argv

    run_subcommand(*to_argv(subcommand, options, settings))


# KServe appends these spellings to a transformer's arguments; --help shows only ours.
KSERVE_SPELLINGS = {
    "--model_name": "--name",
    "--http_port": "--http-port",
    "--grpc_port": "--grpc-port",
    "--predictor_host": "--predictor-host",
    "--predictor_protocol": "--predictor-protocol",
}


def kserve_argv(argv: list[str]) -> list[str]:
    """`argv` with KServe's underscore spellings of our options (`--model_name x`, `--http_port=8080`)
    written as ours."""
    spelled = []
    for word in argv:
        name, equals, value = word.partition("=")
        spelled.append(KSERVE_SPELLINGS.get(name, name) + equals + value if name in KSERVE_SPELLINGS else word)
    return spelled


def cli() -> None:
    """The image's entry point: help at a readable width, KServe's spellings understood."""
    widen_help()
    command = typer.main.get_command(app)
    tidy_options(command, {})
    command(args=kserve_argv(sys.argv[1:]), prog_name="python -m container_component_src.main")


if __name__ == "__main__":
    cli()
