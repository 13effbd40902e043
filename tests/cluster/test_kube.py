"""Placement of the pods the operators start, the owner of what a task creates, and the API's
refusals as the CLI prints them."""

from container_component_src.cluster.dask import ClusterOptions, build_cluster_spec
from container_component_src.cluster.inference_service import InferenceServiceOptions, build_inference_service
from container_component_src.cluster.katib import KatibOptions, build_experiment, experiment_body
from container_component_src.cluster.kube import Placement, forbidden_message
from container_component_src.cluster.pytorchjob import PyTorchJobOptions, build_pytorchjob
from container_component_src.model.tune import parse_search_space

PLACED = Placement(
    image_pull_secret="regcred",
    node_selector={"pool": "ml"},
    gpu_node_selector={"gpu": "h200"},
    tolerations=({"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},),
    gpu_resource="amd.com/gpu",
)
SPACE = parse_search_space({"beta": {"type": "double", "min": 0.1, "max": 1.0}})


def _serialised(obj: object) -> dict:
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(obj)


def _check(pod: dict, gpus: int) -> None:
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["nodeSelector"] == ({"pool": "ml", "gpu": "h200"} if gpus else {"pool": "ml"})
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}]
    limits = pod["containers"][0]["resources"]["limits"]
    assert limits.get("amd.com/gpu") == (str(gpus) if gpus else None) and "nvidia.com/gpu" not in limits


def test_every_pod_the_operators_start_is_placed() -> None:
    katib = KatibOptions(image="i", namespace="n", gpus=1, placement=PLACED)
    trial = experiment_body(build_experiment("e", SPACE, ["python"], katib))["spec"]["trialTemplate"]["trialSpec"]
    _check(trial["spec"]["template"]["spec"], 1)
    job = _serialised(
        build_pytorchjob(
            "j", ["python"], PyTorchJobOptions(image="i", namespace="n", gpus_per_replica=1, placement=PLACED)
        )
    )
    for replica in job["spec"]["pytorchReplicaSpecs"].values():
        _check(replica["template"]["spec"], 1)
    isvc = _serialised(
        build_inference_service(
            InferenceServiceOptions(
                name="m", namespace="n", image="i", storage_uri="s3://b/m", gpus=1, placement=PLACED
            )
        )
    )
    _check(isvc["spec"]["predictor"], 1)
    _check(isvc["spec"]["transformer"], 0)
    dask = build_cluster_spec(ClusterOptions(cluster="kubernetes", image="i", placement=PLACED), "d")
    for pod in (dask["spec"]["scheduler"]["spec"], dask["spec"]["worker"]["spec"]):
        _check(pod, 0)


def test_katib_counts_never_exceed_the_trial_count() -> None:
    spec = experiment_body(
        build_experiment(
            "e",
            SPACE,
            ["python"],
            KatibOptions(image="i", namespace="n", parallel_trials=4),
            max_trials=1,
            max_failed_trials=3,
        )
    )["spec"]
    assert (spec["maxTrialCount"], spec["parallelTrialCount"], spec["maxFailedTrialCount"]) == (1, 1, 1)


def test_the_dask_cluster_runs_the_dask_command_and_times_out_when_idle() -> None:
    spec = build_cluster_spec(ClusterOptions(cluster="kubernetes", image="i", idle_timeout_s=300), "d")
    assert spec["spec"]["scheduler"]["spec"]["containers"][0]["args"][:2] == ["dask", "scheduler"]
    assert spec["spec"]["worker"]["spec"]["containers"][0]["args"][:2] == ["dask", "worker"]
    assert spec["spec"]["idleTimeout"] == 300


def test_a_refusal_of_the_api_server_reads_as_one_line_naming_the_role() -> None:
    from kubernetes.client.exceptions import ApiException

    refusal = ApiException(status=403, reason="Forbidden")
    refusal.body = '{"kind": "Status", "code": 403, "message": "pods is forbidden: User \\"x\\" cannot list"}'
    message = forbidden_message(refusal)
    assert message == (
        'Kubernetes refused: pods is forbidden: User "x" cannot list; '
        "grant the task's service account the Role in pipeline/rbac.yaml"
    )
    assert forbidden_message(ApiException(status=404, reason="Not Found")) is None
    assert forbidden_message(ValueError("403")) is None
    assert forbidden_message(ApiException(status=403, reason="Forbidden")).endswith("pipeline/rbac.yaml")
