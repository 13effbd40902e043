"""Tuning on the cluster: a Katib Experiment whose trials run the `train` subcommand of this image.

The search space is the one local tuning uses (`model.tune.parse_search_space`); trials print
`val_nll=...` lines that Katib's StdOut metrics collector reads.

That collector's pod webhook rewrites the trial container to `sh -c "<command and args joined by
spaces> 1>/var/log/katib/metrics.log 2>&1 && ..."`, unless the command already is `sh -c <line>`,
whose line it keeps (katib `pkg/webhook/v1beta1/pod`, `wrapWorkerContainer`). A plain argv would
lose its quoting there (the settings JSON falls apart), so a trial's command is `sh -c` of one
line quoted for the shell, with Kubernetes' `$` escaped (the kubelet expands `$(VAR)` and `$$`
in it before the shell reads it).
"""

from __future__ import annotations

import math
import re
import shlex
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from container_component_src.cli_args import MODULE_COMMAND, to_argv
from container_component_src.cluster.kube import Placement, cleanup_on_sigterm, owner_reference, s3_env, wait_for
from container_component_src.errors import OptionError
from container_component_src.model.train import OBJECTIVE, ModelParams
from container_component_src.model.tune import Parameter, grid_values
from container_component_src.resources import MEMORY_SETTING_ENV, check_step_fits

GROUP, VERSION, PLURAL = "kubeflow.org", "v1beta1", "experiments"
MEMORY_SETTING = "[tuning] trial_memory"
TRIAL_CONTAINER = "training"
# What Katib replaces with a trial's value in the template's text.
TRIAL_PARAMETER = re.compile(r"\$\{trialParameters\.[A-Za-z0-9_.-]+\}")
# Characters a categorical value must not hold: it is pasted into the template's JSON text (" and
# \), inside single quotes of the trial's shell line (') and before the kubelet's expansion ($).
UNSAFE_VALUE = set("'\"\\$")


@dataclass(frozen=True)
class KatibOptions:
    """Where and how the trials run.

    Attributes:
        image: The project image the trials run.
        namespace: Namespace of the Experiment.
        parallel_trials: Trials running at once.
        timeout_s: Give up (and fail the task) after this long.
        poll_s: Seconds between status checks.
        keep: Keep the Experiment after it ends (it is deleted by default).
        s3_secret_name: Secret whose AWS_* keys the trials get as environment.
        s3_endpoint: AWS_ENDPOINT_URL of the trials (MinIO).
        cpu: CPU request and limit per trial.
        memory: Memory request and limit per trial.
        gpus: GPUs per trial.
        placement: Pull secret, node selectors, tolerations and GPU resource name of the trial pods.
    """

    image: str
    namespace: str
    parallel_trials: int = 2
    timeout_s: int = 3600
    poll_s: float = 15.0
    keep: bool = False
    s3_secret_name: str = ""
    s3_endpoint: str = ""
    cpu: str = "2"
    memory: str = "4Gi"
    gpus: int = 0
    placement: Placement = field(default_factory=Placement)


def experiment_name(prefix: str = "eclss-tune") -> str:
    """An Experiment name that two runs never share."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def trial_command(
    data: dict[str, str],
    parameters: list[Parameter],
    base: ModelParams,
    run: dict[str, Any],
    settings: str | None = None,
) -> list[str]:
    """The `train` command of a trial: searched values come from Katib's trial parameters.

    Args:
        data: `train`'s data options (train, val, scaler: object-storage URLs).
        parameters: The searched parameters.
        base: Values of the parameters that are not searched.
        run: Further `train` options (max_epochs, accelerator, seed...).
        settings: The settings JSON the trials use (the launching task's).
    """
    searched = {p.name for p in parameters}
    hyper = {
        field.name: f"${{trialParameters.{field.name}}}" if field.name in searched else getattr(base, field.name)
        for field in fields(ModelParams)
    }
    return shell_command([*MODULE_COMMAND, *to_argv("train", {**data, "out": "/tmp/model", **hyper, **run}, settings)])


def shell_command(argv: list[str]) -> list[str]:
    """`["sh", "-c", line]` that runs `argv` as it is, also after Katib's StdOut rewrite.

    Each word is quoted for the shell and its `$` doubled for the kubelet; a trial-parameter
    placeholder is single-quoted as it is, for Katib to put the value inside the quotes.
    """
    words = [f"'{word}'" if TRIAL_PARAMETER.fullmatch(word) else shlex.quote(word).replace("$", "$$") for word in argv]
    return ["sh", "-c", " ".join(words)]


def _feasible_space(parameter: Parameter) -> Any:
    from kubeflow_katib_api.models import V1beta1FeasibleSpace

    if parameter.values:
        for value in map(str, parameter.values):
            if UNSAFE_VALUE & set(value) or not value:
                raise OptionError(
                    f"--search-space {parameter.name}: value {value!r} cannot reach a Katib trial intact "
                    "(empty, or holds a quote, backslash or $)"
                )
        return V1beta1FeasibleSpace(list=[str(v) for v in parameter.values])
    return V1beta1FeasibleSpace(
        min=str(parameter.min),
        max=str(parameter.max),
        step=None if parameter.step is None else str(parameter.step),
        distribution="logUniform" if parameter.log else None,
    )


def trial_job(command: list[str], options: KatibOptions) -> dict[str, Any]:
    """The trial template: a batch Job (typed Kubernetes models) running `command` once.

    Katib's template is unstructured, so the typed Job is serialised to the dict it holds.
    """
    from kubernetes.client import (
        ApiClient,
        V1Container,
        V1EnvVar,
        V1Job,
        V1JobSpec,
        V1ObjectMeta,
        V1PodSpec,
        V1PodTemplateSpec,
    )

    job = V1Job(
        api_version="batch/v1",
        kind="Job",
        spec=V1JobSpec(
            backoff_limit=0,
            template=V1PodTemplateSpec(
                metadata=V1ObjectMeta(annotations={"sidecar.istio.io/inject": "false"}),
                spec=options.placement.apply(
                    V1PodSpec(
                        restart_policy="Never",
                        containers=[
                            V1Container(
                                name=TRIAL_CONTAINER,
                                image=options.image,
                                command=command,
                                env=[
                                    *s3_env(options.s3_secret_name, options.s3_endpoint),
                                    # The trial's memory check names the setting that sizes it.
                                    V1EnvVar(name=MEMORY_SETTING_ENV, value=MEMORY_SETTING),
                                ],
                                resources=options.placement.resources(options.cpu, options.memory, options.gpus),
                            )
                        ],
                    ),
                    options.gpus,
                ),
            ),
        ),
    )
    return ApiClient().sanitize_for_serialization(job)


def build_experiment(
    name: str,
    parameters: list[Parameter],
    command: list[str],
    options: KatibOptions,
    algorithm: str = "tpe",
    max_trials: int = 8,
    max_failed_trials: int = 3,
) -> Any:
    """The Katib Experiment (the Kubeflow SDK's typed Katib API model) that searches `parameters`
    by running `command`.

    Counts Katib's webhook refuses, and a grid over a range without a step (Katib's grid suggestion
    refuses it), are refused here. Parallel or failed-trial counts above the trial count (refused
    by Katib too; local tuning does not care) are lowered to `max_trials`, with a note.
    """
    # The rules of Katib's admission webhook and grid suggestion, refused here with the option named.
    if max_trials < 1:
        raise OptionError(f"--max-trials must be >= 1, got {max_trials}")
    if options.parallel_trials < 1:
        raise OptionError(f"--parallel-trials must be >= 1 (Katib's parallelTrialCount), got {options.parallel_trials}")
    if max_failed_trials < 0:
        raise OptionError(f"--max-failed-trials must be >= 0 (Katib's maxFailedTrialCount), got {max_failed_trials}")
    if algorithm == "grid":
        for parameter in parameters:
            grid_values(parameter)
    parallel = min(options.parallel_trials, max_trials)
    max_failed_trials = min(max_failed_trials, max_trials)
    if parallel < options.parallel_trials:
        print(f"Katib: --parallel-trials {options.parallel_trials} lowered to --max-trials {max_trials}", flush=True)
    from kubeflow_katib_api.models import (
        IoK8sApimachineryPkgApisMetaV1ObjectMeta,
        V1beta1AlgorithmSpec,
        V1beta1CollectorSpec,
        V1beta1Experiment,
        V1beta1ExperimentSpec,
        V1beta1MetricsCollectorSpec,
        V1beta1ObjectiveSpec,
        V1beta1ParameterSpec,
        V1beta1TrialParameterSpec,
        V1beta1TrialTemplate,
    )

    return V1beta1Experiment(
        api_version=f"{GROUP}/{VERSION}",
        kind="Experiment",
        metadata=IoK8sApimachineryPkgApisMetaV1ObjectMeta(name=name, namespace=options.namespace),
        spec=V1beta1ExperimentSpec(
            objective=V1beta1ObjectiveSpec(
                type="minimize", objective_metric_name=OBJECTIVE, additional_metric_names=["val_loss"]
            ),
            algorithm=V1beta1AlgorithmSpec(algorithm_name=algorithm),
            parameters=[
                V1beta1ParameterSpec(name=p.name, parameter_type=p.type, feasible_space=_feasible_space(p))
                for p in parameters
            ],
            max_trial_count=max_trials,
            parallel_trial_count=parallel,
            max_failed_trial_count=max_failed_trials,
            metrics_collector_spec=V1beta1MetricsCollectorSpec(collector=V1beta1CollectorSpec(kind="StdOut")),
            trial_template=V1beta1TrialTemplate(
                primary_container_name=TRIAL_CONTAINER,
                trial_parameters=[V1beta1TrialParameterSpec(name=p.name, reference=p.name) for p in parameters],
                trial_spec=trial_job(command, options),
            ),
        ),
    )


def experiment_body(experiment: Any) -> dict[str, Any]:
    """The Experiment as the JSON body the API server takes (camelCase, unset fields left out)."""
    return experiment.to_dict()


def run_experiment(
    api_client: Any,
    experiment: Any,
    options: KatibOptions,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Create the Experiment, wait for it, return its best trial; delete it unless `options.keep`.

    Raises:
        RuntimeError: The Experiment failed, or its best objective is not finite.
        TimeoutError: It did not finish within `options.timeout_s`.
    """
    from kubernetes.client import CustomObjectsApi

    api = CustomObjectsApi(api_client)
    name, namespace = experiment.metadata.name, experiment.metadata.namespace
    body = experiment_body(experiment)
    owner = owner_reference(api_client, namespace)
    if owner is not None:
        body["metadata"]["ownerReferences"] = [api_client.sanitize_for_serialization(owner)]
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    print(f"Created Katib Experiment {namespace}/{name}", flush=True)

    def finished() -> dict[str, Any] | None:
        status = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name).get("status", {})
        conditions = {c["type"]: c for c in status.get("conditions", []) if c.get("status") == "True"}
        print(
            f"Experiment {name}: {status.get('trialsSucceeded', 0)} trials succeeded, "
            f"{status.get('trialsRunning', 0)} running, {status.get('trialsFailed', 0)} failed",
            flush=True,
        )
        if "Failed" in conditions:
            failed = conditions["Failed"]
            raise RuntimeError(f"Katib Experiment {name} failed: {failed.get('reason')}: {failed.get('message')}")
        return status if "Succeeded" in conditions else None

    with cleanup_on_sigterm():
        try:
            status = wait_for(finished, f"Katib Experiment {name}", options.timeout_s, options.poll_s, clock, sleep)
            return _best_trial(name, status)
        finally:
            if not options.keep:
                api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
                print(f"Deleted Katib Experiment {namespace}/{name}", flush=True)


def _best_trial(name: str, status: dict[str, Any]) -> dict[str, Any]:
    optimal = status.get("currentOptimalTrial") or {}
    metrics = {m["name"]: m for m in (optimal.get("observation") or {}).get("metrics", [])}
    try:
        value = float(metrics[OBJECTIVE].get("min", metrics[OBJECTIVE].get("latest")))
    except (KeyError, TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise RuntimeError(f"Katib Experiment {name} has no trial with a finite {OBJECTIVE}")
    return {
        "assignments": {a["name"]: a["value"] for a in optimal.get("parameterAssignments", [])},
        "objective": value,
        "trials": int(status.get("trialsSucceeded", 0)) + int(status.get("trialsFailed", 0)),
        "failed_trials": int(status.get("trialsFailed", 0)),
    }


def best_params(base: ModelParams, assignments: dict[str, str]) -> ModelParams:
    """Katib's string assignments, typed as ModelParams fields."""
    kinds = {f.name: type(getattr(base, f.name)) for f in fields(ModelParams)}
    return replace(base, **{k: kinds[k](float(v)) if kinds[k] is int else kinds[k](v) for k, v in assignments.items()})


def tune_result(base: ModelParams, best: dict[str, Any], algorithm: str) -> dict[str, Any]:
    """The best-parameters document, in the format local tuning writes."""
    return {
        "parameters": asdict(best_params(base, best["assignments"])),
        "objective": {"name": OBJECTIVE, "value": best["objective"]},
        "algorithm": algorithm,
        "trials": best["trials"],
        "failed_trials": best["failed_trials"],
    }


def run_katib_tune(
    data: dict[str, str],
    best_url: str,
    search_space: str | dict[str, Any],
    base: ModelParams,
    run: dict[str, Any],
    options: KatibOptions,
    algorithm: str = "tpe",
    max_trials: int = 8,
    max_failed_trials: int = 3,
    settings: str | None = None,
    api_client: Any = None,
) -> dict[str, Any]:
    """Tune with Katib and write the best parameters in the format local tuning writes.

    Args:
        data: `train`'s data options for the trials (object-storage URLs).
        best_url: JSON output.
        search_space: The search space (see `model.tune.parse_search_space`).
        base: Values of the parameters that are not searched.
        run: Further `train` options of each trial (max_epochs, accelerator, seed...).
        options: Where and how the trials run.
        algorithm: Katib algorithm name.
        max_trials: Trials to run.
        max_failed_trials: Failed trials before Katib fails the Experiment.
        settings: The settings JSON the trials use.
        api_client: Kubernetes API client; the current context's when omitted.
    """
    from container_component_src import storage
    from container_component_src.choices import TuneAlgorithm, choice
    from container_component_src.cluster.kube import kube_api_client
    from container_component_src.model.tune import parse_search_space

    choice(TuneAlgorithm, algorithm, "--algorithm")
    if not options.image:
        raise OptionError("--image is required to tune with Katib")
    parameters = parse_search_space(search_space)
    # Each trial (one process) holds the sets: refuse before starting trials that would be OOM-killed.
    check_step_fits("tune", [data["train"], data["val"]], pod_memory=options.memory, setting=MEMORY_SETTING)
    command = trial_command(data, parameters, base, run, settings)
    experiment = build_experiment(
        experiment_name(), parameters, command, options, algorithm, max_trials, max_failed_trials
    )
    best = run_experiment(api_client or kube_api_client(), experiment, options)
    result = tune_result(base, best, algorithm)
    storage.write_json(result, best_url)
    return result
