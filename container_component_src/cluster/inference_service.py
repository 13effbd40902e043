"""Serving on the cluster: a KServe InferenceService whose predictor and transformer both run the
`serve` subcommand of this image, on the model KServe's storage initializer copies to /mnt/models."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from container_component_src.choices import DeploymentMode, ServeRole
from container_component_src.cli_args import MODULE_COMMAND, to_argv
from container_component_src.cluster.kube import Placement, wait_for
from container_component_src.errors import OptionError

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
MODEL_MOUNT = "/mnt/models"  # where KServe's storage initializer puts STORAGE_URI
CONTAINER = "kserve-container"  # the container name KServe expects
HTTP_PORT = 8080  # KServe's container port, the one its Service targets
# Model states from which KServe does not recover by itself.
STUCK_STATES = ("BlockedByFailedLoad", "InvalidSpec")


@dataclass(frozen=True)
class InferenceServiceOptions:
    """What to deploy and how.

    Attributes:
        name: InferenceService name (and model name in the URL paths).
        namespace: Its namespace.
        image: The project image (predictor and transformer).
        storage_uri: s3:// folder of the published model.
        deployment_mode: "RawDeployment" or "Serverless".
        service_account: Service account whose secret gives the storage initializer MinIO access
            (empty: the namespace default).
        gpus: GPUs of the predictor (0: CPU).
        cpu: CPU request and limit of each container.
        memory: Memory request and limit of each container.
        max_batch_rows: Largest request accepted.
        timeout_s: Fail when it is not ready after this long.
        poll_s: Seconds between status checks.
        settings: The settings JSON the servers use (the launching task's).
        placement: Pull secret, node selectors, tolerations and GPU resource name of both pods.
    """

    name: str
    namespace: str
    image: str
    storage_uri: str
    deployment_mode: DeploymentMode = DeploymentMode.raw
    service_account: str = ""
    gpus: int = 0
    cpu: str = "1"
    memory: str = "2Gi"
    max_batch_rows: int = 100_000
    timeout_s: int = 600
    poll_s: float = 10.0
    settings: str | None = None
    placement: Placement = field(default_factory=Placement)

    def validate(self) -> None:
        if not self.image:
            raise OptionError("--image is required to deploy an InferenceService")
        if not self.storage_uri.startswith("s3://"):
            raise OptionError(
                f"the model must be published to object storage (s3://) for KServe, got {self.storage_uri}"
            )


def _container(role: ServeRole, options: InferenceServiceOptions, gpus: int) -> Any:
    from kubernetes.client import V1Container, V1ContainerPort, V1EnvVar, V1HTTPGetAction, V1Probe

    return V1Container(
        name=CONTAINER,
        image=options.image,
        command=list(MODULE_COMMAND),
        # KServe appends --model_name, --predictor_host and --http_port to a transformer's args.
        args=to_argv(
            "serve",
            {
                "role": role,
                "model_dir": MODEL_MOUNT,
                "name": options.name,
                "http_port": HTTP_PORT,
                "grpc_port": 0,  # KServe routes one port per container: REST
                "max_batch_rows": options.max_batch_rows,
                "host": "0.0.0.0",  # the pod's address: KServe's router and probes reach it there
            },
            options.settings,
        ),
        env=[V1EnvVar(name="STORAGE_URI", value=options.storage_uri)],
        ports=[V1ContainerPort(container_port=HTTP_PORT, protocol="TCP")],
        # Ready when the model is loaded (and, for the transformer, its predictor answers), not
        # when the port opens: traffic and KServe's Ready wait for it.
        readiness_probe=V1Probe(http_get=V1HTTPGetAction(path="/v2/health/ready", port=HTTP_PORT), period_seconds=5),
        resources=options.placement.resources(options.cpu, options.memory, gpus),
    )


def _placed(component: Any, placement: Placement, gpus: int) -> Any:
    """A KServe component spec (its pod's fields) with the placement applied."""
    from kubernetes.client import V1PodSpec

    pod = placement.apply(V1PodSpec(containers=[]), gpus)
    component.image_pull_secrets = pod.image_pull_secrets
    component.node_selector = pod.node_selector
    component.tolerations = pod.tolerations
    return component


def build_inference_service(options: InferenceServiceOptions) -> Any:
    """The InferenceService (typed KServe SDK model): transformer and predictor from the image."""
    from kubernetes.client import V1ObjectMeta

    from container_component_src.serving.server import import_kserve

    kserve = import_kserve()
    options.validate()
    account = options.service_account or None
    return kserve.V1beta1InferenceService(
        api_version=f"{GROUP}/{VERSION}",
        kind="InferenceService",
        metadata=V1ObjectMeta(
            name=options.name,
            namespace=options.namespace,
            annotations={"serving.kserve.io/deploymentMode": options.deployment_mode},
            labels={"app.kubernetes.io/part-of": "eclss-anomaly-pipeline"},
        ),
        spec=kserve.V1beta1InferenceServiceSpec(
            predictor=_placed(
                kserve.V1beta1PredictorSpec(
                    containers=[_container(ServeRole.predictor, options, options.gpus)], service_account_name=account
                ),
                options.placement,
                options.gpus,
            ),
            transformer=_placed(
                kserve.V1beta1TransformerSpec(
                    containers=[_container(ServeRole.transformer, options, 0)], service_account_name=account
                ),
                options.placement,
                0,
            ),
        ),
    )


def apply_inference_service(api_client: Any, isvc: Any) -> str:
    """Create the InferenceService, or patch it when one of that name exists; return which."""
    from kubernetes.client import CustomObjectsApi
    from kubernetes.client.exceptions import ApiException

    api = CustomObjectsApi(api_client)
    name, namespace = isvc.metadata.name, isvc.metadata.namespace
    body = api_client.sanitize_for_serialization(isvc)
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        return "created"
    except ApiException as exc:
        if exc.status != 409:
            raise
    api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, body)
    return "patched"


def _not_ready_reasons(status: dict[str, Any]) -> str:
    conditions = [c for c in status.get("conditions", []) if c.get("status") != "True"]
    parts = [f"{c.get('type')}: {c.get('reason') or ''} {c.get('message') or ''}".strip() for c in conditions]
    return "; ".join(parts) or "no status reported yet"


def wait_until_ready(
    api_client: Any,
    name: str,
    namespace: str,
    timeout_s: float,
    poll_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll until the InferenceService reports Ready; return its status.

    Raises:
        RuntimeError: The model failed to load or the spec is invalid (KServe will not recover).
        TimeoutError: Not ready within `timeout_s`; the message carries the last reasons.
    """
    from kubernetes.client import CustomObjectsApi

    api = CustomObjectsApi(api_client)

    def ready() -> dict[str, Any] | None:
        isvc = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        status = isvc.get("status") or {}
        generation = isvc.get("metadata", {}).get("generation")
        # A status written for an older spec does not tell whether this one is ready.
        current = generation is None or status.get("observedGeneration", generation) == generation
        conditions = status.get("conditions", [])
        if current and any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            return status
        transition = (status.get("modelStatus") or {}).get("transitionStatus")
        if current and transition in STUCK_STATES:
            failure = (status.get("modelStatus") or {}).get("lastFailureInfo") or {}
            raise RuntimeError(
                f"InferenceService {namespace}/{name} is {transition}: {failure.get('reason', '')} "
                f"{failure.get('message', '')} ({_not_ready_reasons(status)})"
            )
        last_reasons[0] = _not_ready_reasons(status)
        print(f"Waiting for InferenceService {namespace}/{name}: {last_reasons[0]}", flush=True)
        return None

    last_reasons = ["no status read"]
    try:
        return wait_for(ready, f"InferenceService {namespace}/{name}", timeout_s, poll_s, clock, sleep)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}: not ready: {last_reasons[0]}") from None


def run_inference_service_deploy(options: InferenceServiceOptions, api_client: Any = None) -> dict[str, Any]:
    """Create or patch the InferenceService and wait until it is ready.

    Returns:
        Name, namespace, whether it was created or patched, and its URL.
    """
    from container_component_src.cluster.kube import kube_api_client

    client = api_client or kube_api_client()
    isvc = build_inference_service(options)
    action = apply_inference_service(client, isvc)
    print(f"InferenceService {options.namespace}/{options.name} {action}", flush=True)
    status = wait_until_ready(client, options.name, options.namespace, options.timeout_s, options.poll_s)
    return {
        "name": options.name,
        "namespace": options.namespace,
        "action": action,
        "url": status.get("url", ""),
        "storage_uri": options.storage_uri,
    }
