"""The Kubernetes API client: in-cluster credentials inside a pod, the kubeconfig elsewhere."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from container_component_src.errors import OptionError


def kube_api_client() -> Any:
    """A `kubernetes.client.ApiClient` for the current context (TLS verified as configured).

    Raises:
        ValueError: Neither in-cluster credentials nor a kubeconfig are found.
    """
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            # $KUBECONFIG read now: the client reads it once, at import.
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
        except (config.ConfigException, OSError) as exc:
            raise OptionError(f"no Kubernetes credentials (in-cluster or kubeconfig): {exc}") from None
    return client.ApiClient()


def current_namespace(default: str = "default") -> str:
    """The namespace of this pod's service account, else `default`."""
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as handle:
            return handle.read().strip() or default
    except OSError:
        return default


def forbidden_message(exc: BaseException) -> str | None:
    """The one line to print for the API server's refusal of a request (RBAC), else None."""
    if type(exc).__name__ != "ApiException" or getattr(exc, "status", None) != 403:
        return None
    try:
        message = json.loads(exc.body)["message"]
    except (TypeError, ValueError, KeyError):
        message = str(getattr(exc, "reason", "Forbidden"))
    return f"Kubernetes refused: {message}; grant the task's service account the Role in pipeline/rbac.yaml"


S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
T = TypeVar("T")


def s3_env(secret_name: str, endpoint: str = "") -> list[Any]:
    """Object-storage environment of a pod (typed `V1EnvVar`s): the endpoint as a value, the keys
    as references to the secret, never as values."""
    from kubernetes.client import V1EnvVar, V1EnvVarSource, V1SecretKeySelector

    env = [V1EnvVar(name="AWS_ENDPOINT_URL", value=endpoint)] if endpoint else []
    if secret_name:
        env += [
            V1EnvVar(name=key, value_from=V1EnvVarSource(secret_key_ref=V1SecretKeySelector(name=secret_name, key=key)))
            for key in S3_SECRET_KEYS
        ]
    return env


def wait_for(
    check: Callable[[], T | None],
    what: str,
    timeout_s: float,
    poll_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `check` every `poll_s` seconds until it returns a result (it raises when the resource
    failed); `timeout_s` counts from the first call.

    Raises:
        TimeoutError: No result within `timeout_s`; the message names `what`.
    """
    deadline = clock() + timeout_s
    while True:
        result = check()
        if result is not None:
            return result
        if clock() > deadline:
            raise TimeoutError(f"{what} did not finish within {timeout_s:.0f} s")
        sleep(poll_s)


@dataclass(frozen=True)
class Placement:
    """Where the pods the project creates may run: the `[kubernetes]` settings, applied to every
    pod the operators start (Katib trials, PyTorchJob replicas, KServe predictor and transformer,
    Dask scheduler and workers), not only to the pipeline's own task pods.

    Attributes:
        image_pull_secret: Secret for pulling the image from a private registry (empty: none).
        node_selector: Labels every pod's node must have.
        gpu_node_selector: Labels a GPU pod's node must have in addition.
        tolerations: Tolerations of every pod (Kubernetes' keys: key, operator, value, effect).
        gpu_resource: The extended resource name of a GPU (e.g. nvidia.com/gpu).
    """

    image_pull_secret: str = ""
    node_selector: dict[str, str] = field(default_factory=dict)
    gpu_node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, str], ...] = ()
    gpu_resource: str = "nvidia.com/gpu"

    @classmethod
    def from_settings(cls, kubernetes: Any) -> Placement:
        """From the `[kubernetes]` section of the settings."""
        return cls(
            image_pull_secret=kubernetes.image_pull_secret,
            node_selector=dict(kubernetes.node_selector),
            gpu_node_selector=dict(kubernetes.gpu_node_selector),
            tolerations=tuple(kubernetes.tolerations),
            gpu_resource=kubernetes.gpu_resource,
        )

    def resources(self, cpu: str, memory: str, gpus: int = 0) -> Any:
        """Requests = limits of one container (typed `V1ResourceRequirements`)."""
        from kubernetes.client import V1ResourceRequirements

        amounts = {"cpu": cpu, "memory": memory}
        if gpus:
            amounts[self.gpu_resource] = str(gpus)
        return V1ResourceRequirements(requests=amounts, limits=amounts)

    def apply(self, pod_spec: Any, gpus: int = 0) -> Any:
        """Set pull secret, node selector and tolerations on a typed `V1PodSpec`; return it."""
        from kubernetes.client import V1LocalObjectReference, V1Toleration

        if self.image_pull_secret:
            pod_spec.image_pull_secrets = [V1LocalObjectReference(name=self.image_pull_secret)]
        selector = {**self.node_selector, **(self.gpu_node_selector if gpus else {})}
        if selector:
            pod_spec.node_selector = selector
        if self.tolerations:
            pod_spec.tolerations = [V1Toleration(**t) for t in self.tolerations]
        return pod_spec


POD_NAME_ENV = "HOSTNAME"  # a pod's hostname is its name (KFP's task pods keep it so)
POD_NAMESPACE_ENV = "POD_NAMESPACE"  # where the downward API puts it; else the service account's


def owner_reference(api_client: Any, namespace: str) -> Any:
    """An ownerReference to the pod this runs in, so that Kubernetes' garbage collector deletes
    what the task created in `namespace` when the task's pod goes (killed, evicted, run deleted).
    None outside a pod, or when `namespace` is not the pod's (owners cannot cross namespaces).
    Cleanup in `finally` still runs first on any orderly exit."""
    from kubernetes.client import CoreV1Api, V1OwnerReference
    from kubernetes.client.exceptions import ApiException

    name = os.environ.get(POD_NAME_ENV, "")
    pod_namespace = os.environ.get(POD_NAMESPACE_ENV) or current_namespace()
    if not name or "KUBERNETES_SERVICE_HOST" not in os.environ or pod_namespace != namespace:
        return None
    try:
        pod = CoreV1Api(api_client).read_namespaced_pod(name, namespace)
    except ApiException:
        return None
    return V1OwnerReference(api_version="v1", kind="Pod", name=name, uid=pod.metadata.uid, block_owner_deletion=False)


@contextlib.contextmanager
def cleanup_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM (a stopped run, a pod deadline, eviction) into SystemExit, so that `finally`
    blocks delete what the task created before the process ends."""

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave the handling to it
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
