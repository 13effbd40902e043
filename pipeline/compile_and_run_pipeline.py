"""Compile the ECLSS pipeline and run it: in the cluster, from a laptop, or locally.

python pipeline/compile_and_run_pipeline.py                 # inside a Kubeflow notebook
python pipeline/compile_and_run_pipeline.py --remote        # from a laptop, through Dex (.env)
python pipeline/compile_and_run_pipeline.py --local         # here, through kfp.local
python pipeline/compile_and_run_pipeline.py --compile-only pipeline.yaml
(`python -m pipeline.compile_and_run_pipeline ...` works the same.)
"""

import contextlib
import dataclasses
import enum
import inspect
import json
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

from container_component_src.choices import choice
from container_component_src.config import ConfigError, Settings, load_settings
from pipeline.pipeline_definition import CHOICES

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
        if key in CHOICES:
            params[key] = str(choice(CHOICES[key], raw, f"--param {key}"))
        _check_value(key, params[key])
    return params


def _check_value(key: str, value: Any) -> None:
    """Refuse at submission what the task would refuse minutes later: a NaN or infinite number,
    a period that is not a time span, test periods that are not ISO start/end pairs.

    Raises:
        ValueError: Names the parameter.
    """
    import math

    from container_component_src.data.spans import parse_span
    from container_component_src.data.split import SplitOptions

    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"--param {key}: {value!r} is not a finite number")
    if key.endswith("_period"):
        parse_span(value, f"--param {key}")
    if key == "test_periods":
        SplitOptions(test_periods=value).periods()


def local_data_params(settings: Settings) -> dict[str, Any]:
    """Absolute archive and report locations, so every local task sees the same files."""
    from container_component_src import storage

    def absolute(url: str) -> str:
        return str(Path(url).resolve()) if storage.is_local(url) else url

    return {"archives": absolute(settings.data.archives_url), "reports": absolute(settings.data.reports_url)}


def ensure_local_data(settings: Settings) -> None:
    """Generate the default data set when the configured archive folder holds no archive.

    Generation is atomic (archives, reports and ground truth appear together), so an interrupted
    first run leaves nothing that a later run would mistake for a data set.
    """
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


RUN_RECORD = "run.json"


@dataclasses.dataclass(frozen=True)
class LocalRun:
    """A finished local run: its folder, the path of each pipeline output, the tasks as they ran."""

    folder: Path
    outputs: dict[str, str]
    tasks: list[Any]


def check_inputs(archives: str, reports: str) -> None:
    """Fail before the DAG starts when the run's archives or reports are not there.

    Raises:
        ValueError: Names the parameter and the location.
    """
    from container_component_src import storage

    if not storage.exists(archives):
        raise ValueError(f"archives={archives}: no such folder")
    if not storage.list_files(archives, ".parquet"):
        raise ValueError(f"archives={archives}: the folder holds no archive (*.parquet)")
    if not storage.exists(reports):
        raise ValueError(f"reports={reports}: no such file (the anomaly reports of the archives)")


def run_local(settings: Settings, params: dict[str, Any], caching: bool, verbose: bool = False) -> LocalRun:
    """Run the pipeline through kfp.local in subprocesses of this interpreter.

    Each task's output goes to `<run>/logs/<task>.log`; the console shows one line per task
    (`verbose`: everything).

    Returns:
        The run: its folder, the path of each pipeline output, and the tasks as they ran.
    """
    from kfp import local

    from pipeline.local_progress import LocalRunConsole, quiet_kfp_local
    from pipeline.pipeline_definition import build_pipeline

    # The tasks run this environment's copy of the image's package, which is the point here.
    warnings.filterwarnings(
        "ignore", message="You may be attemping to run a task that uses custom", category=RuntimeWarning
    )
    arguments = {**local_data_params(settings), **params}
    check_inputs(arguments["archives"], arguments["reports"])
    pipeline_root = Path(settings.data.local_pipeline_root).resolve()
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(pipeline_root),
        enable_caching=caching,
        cache_root=str(pipeline_root / ".cache"),
    )
    console = LocalRunConsole(pipeline_root, verbose=verbose)
    start = time.perf_counter()
    with quiet_kfp_local(console):
        run = build_pipeline(settings, for_kubernetes=False)(**arguments)
    outputs = {name: artifact.path for name, artifact in run.outputs.items()}
    run_dir = Path(next(iter(outputs.values()))).parent.parent
    record = {
        "arguments": arguments,
        "outputs": outputs,
        "seconds": round(time.perf_counter() - start, 1),
        "tasks": [{"name": t.name, "seconds": round(t.seconds, 1), "figure": t.figure} for t in console.tasks],
    }
    # Written last: a run folder without it is an interrupted or failed run.
    from container_component_src import storage

    storage.write_json(record, str(run_dir / RUN_RECORD))
    return LocalRun(run_dir, outputs, console.tasks)


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


def print_summary(run: LocalRun, seconds: float) -> None:
    """Print the run's outputs, its evaluation, whether it deployed, and where the logs are."""
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=True)
    console.print(f"Local run finished in {seconds:.0f} s: {run.folder}")
    table = Table()
    table.add_column("output")
    table.add_column("path")
    table.add_column("size", justify="right")
    for name, path in sorted(run.outputs.items(), key=lambda item: item[1]):
        output = Path(path)
        files = [output] if output.is_file() else [f for f in output.rglob("*") if f.is_file()]
        size = sum(f.stat().st_size for f in files)
        table.add_row(name, str(output.relative_to(run.folder)), f"{size / 1e6:.2f} MB")
    console.print(table)
    summary = None
    if "evaluation_summary" in run.outputs:
        summary = json.loads(Path(run.outputs["evaluation_summary"]).read_text())
        label_free, best = summary["label_free"], summary["best_fc1"]
        console.print(
            f"Evaluation: Fc1 {label_free['fc1']:.3f} at the label-free threshold (point F1 {label_free['f1']:.3f}, "
            f"PR-AUC {summary['pr_auc']:.3f}); best Fc1 on the test labels {best['fc1']:.3f}."
        )
        from container_component_src.evaluation.report import drifting_behind, percent

        if drifting_behind(explained := summary.get("false_alarms")):
            console.print(
                f"Channels that drift in training carry {percent(explained['drifting_share'])} of the false alarms' "
                "excess score: see the report's 'Where they come from', drift_weight and named_weights."
            )
    endpoint = run.folder / "deploy" / "endpoint"
    if endpoint.is_file():
        from container_component_src.evaluation.decision import DETECTOR_LABELS, MODEL, DeployDecision

        served = json.loads(endpoint.read_text())
        decision = DeployDecision.from_summary(summary or {}, "the evaluation summary")
        if decision.detector != MODEL or decision.passed_over or decision.follow:
            console.print(f"Served: {decision.choice}.")
        label = DETECTOR_LABELS.get(decision.detector, decision.detector)
        console.print(f"Deployed: {label} is published to {served.get('model_dir')}; serve it with:")
        console.print(f"  {served.get('command')}", soft_wrap=True)
        if served.get("v2_url"):
            example = Path(served["model_dir"]) / "example_v2.json"
            console.print("and send it a row (a typical one, saved by the run):")
            console.print(
                f"  curl -s {served['v2_url']} -H 'Content-Type: application/json' -d @{example}", soft_wrap=True
            )
    else:
        console.print("Not deployed: Fc1 at the label-free threshold is not above deploy_threshold.")
    if "report" in run.outputs:
        # KFP names the artifact file `report`; a browser needs the extension to render it.
        page = run.folder / "evaluation_report.html"
        shutil.copyfile(run.outputs["report"], page)
        console.print(f"Evaluation report (opens offline): file://{page}", soft_wrap=True)
    console.print(f"Every task's full log: {run.folder / 'logs'}", soft_wrap=True)


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
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Local run: stream every task's full output (else it goes to logs/).")
    ] = False,
) -> None:
    """Compile the ECLSS anomaly-detection pipeline and run it: in the cluster (the default, from a
    Kubeflow notebook), from outside it (--remote), or on this machine (--local)."""
    from pipeline.pipeline_definition import build_pipeline, pipeline_name

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
            if "archives" not in params:
                ensure_local_data(settings)
            start = time.perf_counter()
            local_run = run_local(settings, params, caching, verbose)
            print_summary(local_run, time.perf_counter() - start)
            return
        if remote:
            import os

            from pipeline.auth_session import RemoteSettings, remote_client

            remote_settings = RemoteSettings.from_env(os.environ)
            client, namespace = remote_client(remote_settings), remote_settings.namespace
        else:
            client, namespace = in_cluster_client()
        name = run_name or f"{pipeline_name(settings)}-{time.strftime('%Y%m%d-%H%M%S')}"
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


def parameters_help(pipeline_func: Any) -> str:
    """The pipeline parameters as help text: name, default (from config.toml) and meaning."""
    meanings: dict[str, str] = {}
    doc = inspect.getdoc(pipeline_func.pipeline_func) or ""
    name = ""
    for line in doc.partition("Args:")[2].splitlines():
        key, sep, text = line.strip().partition(": ")
        if sep and line.startswith("    ") and not line.startswith("     ") and key.isidentifier():
            name, meanings[key] = key, text
        elif name and line.strip():
            meanings[name] += " " + line.strip()
    lines = ["Pipeline parameters (--param key=value; defaults from config.toml):", ""]
    for key, parameter in inspect.signature(pipeline_func.pipeline_func).parameters.items():
        default = parameter.default
        # An enum's default is shown as what --param takes (`mean`), not its repr.
        shown = repr(default.value) if isinstance(default, enum.Enum) else repr(default)
        lines.append(f"  {key} = {shown}: {meanings.get(key, '')}")
    return "\n\n".join(lines)


def cli() -> None:
    """The script's entry point: `--help` also lists the pipeline parameters."""
    from container_component_src.cli_help import tidy_options, widen_help

    widen_help()
    command = typer.main.get_command(app)
    tidy_options(command, {})
    if "--help" in sys.argv:
        from pipeline.pipeline_definition import build_pipeline

        with contextlib.suppress(ConfigError):
            command.epilog = parameters_help(build_pipeline(load_settings()))
    command(prog_name="compile_and_run_pipeline.py")


if __name__ == "__main__":
    cli()
