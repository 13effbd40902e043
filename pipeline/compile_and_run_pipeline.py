"""Compile the ECLSS pipeline and run it: in the cluster, from a laptop, or locally.

python -m pipeline.compile_and_run_pipeline                 # inside a Kubeflow notebook
python -m pipeline.compile_and_run_pipeline --remote        # from a laptop, through Dex (.env)
python -m pipeline.compile_and_run_pipeline --local         # here, through kfp.local
python -m pipeline.compile_and_run_pipeline --compile-only pipeline.yaml
"""

import inspect
import shutil
import time
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

from container_component_src.config import ConfigError, Settings, load_settings

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def parse_params(pipeline_func: Any, pairs: list[str]) -> dict[str, Any]:
    """Turn `key=value` strings into typed pipeline arguments.

    Raises:
        ValueError: A pair has no '=', names no pipeline parameter, or has the wrong type.
    """
    signature = inspect.signature(pipeline_func.pipeline_func)
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise ValueError(f"--param {pair!r}: expected key=value")
        if key not in signature.parameters:
            raise ValueError(f"--param {key}: no such pipeline parameter (have: {', '.join(signature.parameters)})")
        kind = signature.parameters[key].annotation
        try:
            params[key] = {"true": True, "false": False}[raw.lower()] if kind is bool else kind(raw)
        except (KeyError, ValueError):
            raise ValueError(f"--param {key}: {raw!r} is not a {kind.__name__}") from None
    return params


def local_data_params(settings: Settings) -> dict[str, Any]:
    """Absolute archive and report locations, so every local task sees the same files."""
    from container_component_src import storage

    def absolute(url: str) -> str:
        return str(Path(url).resolve()) if storage.is_local(url) else url

    return {"archives": absolute(settings.data.archives_url), "reports": absolute(settings.data.reports_url)}


def ensure_local_data(settings: Settings) -> None:
    """Generate the default data set when the configured archive folder holds no archive."""
    from container_component_src import storage
    from container_component_src.data.generate import GeneratorOptions, run_generate_data

    archives = settings.data.archives_url
    if storage.exists(archives) and storage.list_files(archives, ".parquet"):
        return
    g = settings.generator
    typer.echo(f"No archive in {archives}: generating the default ECLSS data set there.")
    options = GeneratorOptions(
        years=tuple(g.years),
        days_per_year=g.days_per_year,
        sampling_period_s=g.sampling_period_s,
        n_channels=g.n_channels,
        seed=g.seed,
    )
    counts = run_generate_data(
        archives,
        settings.data.reports_url,
        settings.data.url("ground_truth.parquet"),
        options,
        settings.columns.timestamp,
    )
    typer.echo(f"Generated {counts['rows']:,} rows x {counts['channels']} channels, {counts['anomalies']} anomalies.")


def run_local(settings: Settings, params: dict[str, Any], caching: bool) -> dict[str, str]:
    """Run the pipeline through kfp.local in subprocesses of this interpreter.

    Returns:
        Path of each pipeline output.
    """
    from kfp import local

    from pipeline.pipeline_definition import build_pipeline

    # The tasks run this environment's copy of the image's package, which is the point here.
    warnings.filterwarnings(
        "ignore", message="You may be attemping to run a task that uses custom", category=RuntimeWarning
    )

    pipeline_root = Path(settings.data.local_pipeline_root).resolve()
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(pipeline_root),
        enable_caching=caching,
        cache_root=str(pipeline_root / ".cache"),
    )
    run = build_pipeline(settings, for_kubernetes=False)(**{**local_data_params(settings), **params})
    return {name: artifact.path for name, artifact in run.outputs.items()}


SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def in_cluster_client() -> tuple[Any, str]:
    """A `kfp.Client` authenticated by this pod's service-account token, and the pod's namespace.

    Raises:
        ValueError: Not running in a pod (use --remote or --local).
    """
    import kfp

    if not SERVICE_ACCOUNT_NAMESPACE.is_file():
        raise ValueError("not running inside the cluster: use --remote (from a laptop) or --local")
    namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    return kfp.Client(namespace=namespace), namespace


def cron_expression(schedule: str) -> str:
    """KFP's cron has a seconds field: a five-field expression runs at second 0.

    Raises:
        ValueError: Not five or six fields.
    """
    fields = schedule.split()
    if len(fields) == 5:
        return f"0 {schedule.strip()}"
    if len(fields) == 6:
        return " ".join(fields)
    raise ValueError(f"--schedule {schedule!r}: expected a cron expression of 5 (or 6, with seconds) fields")


def submit(
    client: Any,
    pipeline_func: Any,
    params: dict[str, Any],
    namespace: str,
    experiment: str,
    run_name: str,
    caching: bool,
    schedule: str | None = None,
) -> dict[str, str]:
    """Start a run (or, with `schedule`, create a recurring run) of the pipeline.

    Returns:
        The run's (or recurring run's) id.
    """
    import tempfile

    from kfp import compiler

    if not schedule:
        result = client.create_run_from_pipeline_func(
            pipeline_func,
            arguments=params,
            run_name=run_name,
            experiment_name=experiment,
            namespace=namespace,
            enable_caching=caching,
        )
        return {"run_id": result.run_id}
    experiment_id = client.create_experiment(experiment, namespace=namespace).experiment_id
    with tempfile.TemporaryDirectory() as folder:
        package = str(Path(folder) / "pipeline.yaml")
        compiler.Compiler().compile(pipeline_func, package)
        job = client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=run_name,
            cron_expression=cron_expression(schedule),
            pipeline_package_path=package,
            params=params,
            enable_caching=caching,
        )
    return {"recurring_run_id": job.recurring_run_id}


def print_outputs(outputs: dict[str, str], seconds: float) -> None:
    """Print every task's output folder of the run, then the pipeline outputs."""
    from rich.console import Console
    from rich.table import Table

    run_dir = Path(next(iter(outputs.values()))).parent.parent
    table = Table(title=f"Local run finished in {seconds:.0f} s: {run_dir}")
    table.add_column("task")
    table.add_column("output")
    table.add_column("size", justify="right")
    for task_dir in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        for output in sorted(p for p in task_dir.iterdir() if p.name != "executor_output.json"):
            files = [output] if output.is_file() else [f for f in output.rglob("*") if f.is_file()]
            size = sum(f.stat().st_size for f in files)
            table.add_row(task_dir.name, str(output.relative_to(run_dir)), f"{size / 1e6:.2f} MB")
    console = Console()
    console.print(table)
    for name, path in outputs.items():
        console.print(f"[bold]{name}[/bold]: {path}")
    if "report" in outputs:
        # KFP names the artifact file `report`; a browser needs the extension to render it.
        page = run_dir / "evaluation_report.html"
        shutil.copyfile(outputs["report"], page)
        console.print(f"Evaluation report (opens offline): [bold]file://{page}[/bold]")


@app.command()
def main(
    local: Annotated[
        bool, typer.Option("--local", help="Run the whole DAG on this machine through kfp.local.")
    ] = False,
    remote: Annotated[
        bool, typer.Option("--remote", help="Submit from outside the cluster, logging in through Dex (KFP_* in .env).")
    ] = False,
    compile_only: Annotated[
        Path | None, typer.Option(help="Only compile the pipeline to this YAML file.", dir_okay=False)
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option(help="Override a pipeline parameter: key=value (repeatable).")
    ] = None,
    caching: Annotated[
        bool, typer.Option(help="Reuse outputs of tasks whose inputs did not change (--no-caching reruns all).")
    ] = False,
    experiment: Annotated[str | None, typer.Option(help="Experiment of the run (default: from config).")] = None,
    run_name: Annotated[str | None, typer.Option(help="Run name (default: pipeline name and time).")] = None,
    schedule: Annotated[
        str | None, typer.Option(help="Create a recurring run on this cron schedule, e.g. '0 3 * * *'.")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="Config file (default: ./config.toml).", dir_okay=False)] = None,
) -> None:
    """Compile the ECLSS anomaly-detection pipeline and run it: in the cluster (the default, from a
    Kubeflow notebook), from outside it (--remote), or on this machine (--local)."""
    from pipeline.pipeline_definition import PIPELINE_NAME, build_pipeline

    try:
        if local + remote + (compile_only is not None) > 1:
            raise ValueError("choose one of --local, --remote and --compile-only")
        if schedule and (local or compile_only):
            raise ValueError("--schedule creates a recurring run in the cluster: use it without --local")
        settings = load_settings(config)
        pipeline_func = build_pipeline(settings)
        params = parse_params(pipeline_func, param or [])
        if compile_only is not None:
            from kfp import compiler

            compile_only.parent.mkdir(parents=True, exist_ok=True)
            compiler.Compiler().compile(pipeline_func, str(compile_only), pipeline_parameters=params or None)
            typer.echo(f"Compiled the pipeline to {compile_only}")
            return
        if local:
            ensure_local_data(settings)
            start = time.perf_counter()
            outputs = run_local(settings, params, caching)
            print_outputs(outputs, time.perf_counter() - start)
            return
        if remote:
            import os

            from pipeline.auth_session import RemoteSettings, remote_client

            remote_settings = RemoteSettings.from_env(os.environ)
            client, namespace = remote_client(remote_settings), remote_settings.namespace
        else:
            client, namespace = in_cluster_client()
        name = run_name or f"{PIPELINE_NAME}-{time.strftime('%Y%m%d-%H%M%S')}"
        submitted = submit(
            client,
            pipeline_func,
            params,
            namespace,
            experiment or settings.platform.experiment,
            name,
            caching,
            schedule,
        )
    except (ConfigError, ValueError, RuntimeError) as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Submitted {name} to namespace {namespace}: {submitted}")


if __name__ == "__main__":
    app()
