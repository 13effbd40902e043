"""Training on the cluster: a PyTorchJob (Training Operator, kubeflow.org/v1) whose master and
workers run the `train` subcommand of this image. Lightning reads the rank and world size the
operator sets (MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK); rank 0 writes the model to object
storage, from where the launching task copies it into its own output."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from container_component_src.cli_args import MODULE_COMMAND, to_argv
from container_component_src.cluster.kube import Placement, cleanup_on_sigterm, owner_reference, s3_env, wait_for
from container_component_src.errors import OptionError
from container_component_src.resources import MEMORY_SETTING_ENV, check_step_fits

MEMORY_SETTING = "[training] replica_memory"

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "pytorchjobs"
CONTAINER = "pytorch"  # the container name the Training Operator expects


@dataclass(frozen=True)
class PyTorchJobOptions:
    """Shape and limits of the job.

    Attributes:
        image: The project image every replica runs.
        namespace: Namespace of the job.
        replicas: Replicas in all: one master plus replicas - 1 workers.
        gpus_per_replica: GPUs of each replica (0: CPU training).
        cpu: CPU request and limit per replica.
        memory: Memory request and limit per replica.
        shm_size: Size of the memory-backed /dev/shm (data loader workers, NCCL).
        timeout_s: Fail the job (and the task) after this long.
        poll_s: Seconds between status checks.
        s3_secret_name: Secret whose AWS_* keys the replicas get as environment.
        s3_endpoint: AWS_ENDPOINT_URL of the replicas (MinIO).
        placement: Pull secret, node selectors, tolerations and GPU resource name of the replicas.
    """

    image: str
    namespace: str
    replicas: int = 2
    gpus_per_replica: int = 0
    cpu: str = "4"
    memory: str = "8Gi"
    shm_size: str = "2Gi"
    timeout_s: int = 7200
    poll_s: float = 15.0
    s3_secret_name: str = ""
    s3_endpoint: str = ""
    placement: Placement = field(default_factory=Placement)


def job_name(prefix: str = "eclss-train") -> str:
    """A job name that two runs never share."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def build_pytorchjob(name: str, command: list[str], options: PyTorchJobOptions) -> Any:
    """The PyTorchJob (typed SDK model) running `command` on every replica."""
    from kubeflow.training.models import (
        KubeflowOrgV1PyTorchJob,
        KubeflowOrgV1PyTorchJobSpec,
        KubeflowOrgV1ReplicaSpec,
        KubeflowOrgV1RunPolicy,
    )
    from kubernetes.client import (
        V1Container,
        V1EmptyDirVolumeSource,
        V1EnvVar,
        V1ObjectMeta,
        V1PodSpec,
        V1PodTemplateSpec,
        V1Volume,
        V1VolumeMount,
    )

    if options.replicas < 1:
        raise OptionError(f"--replicas must be >= 1, got {options.replicas}")
    if options.gpus_per_replica not in (0, 1):
        # The operator's WORLD_SIZE counts replicas: one training process (and GPU) per replica.
        raise OptionError(f"--devices: one GPU per replica, got {options.gpus_per_replica}; add --replicas for more")
    # The replica's memory check names the setting that sizes it (see `resources.check_fits`).
    env = [
        *s3_env(options.s3_secret_name, options.s3_endpoint),
        V1EnvVar(name=MEMORY_SETTING_ENV, value=MEMORY_SETTING),
    ]
    gpus = options.gpus_per_replica
    template = V1PodTemplateSpec(
        metadata=V1ObjectMeta(annotations={"sidecar.istio.io/inject": "false"}),
        spec=options.placement.apply(
            V1PodSpec(
                containers=[
                    V1Container(
                        name=CONTAINER,
                        image=options.image,
                        command=command,
                        env=env,
                        resources=options.placement.resources(options.cpu, options.memory, gpus),
                        volume_mounts=[V1VolumeMount(name="dshm", mount_path="/dev/shm")],
                    )
                ],
                volumes=[
                    V1Volume(
                        name="dshm", empty_dir=V1EmptyDirVolumeSource(medium="Memory", size_limit=options.shm_size)
                    )
                ],
            ),
            gpus,
        ),
    )
    replica_specs = {"Master": KubeflowOrgV1ReplicaSpec(replicas=1, restart_policy="Never", template=template)}
    if options.replicas > 1:
        replica_specs["Worker"] = KubeflowOrgV1ReplicaSpec(
            replicas=options.replicas - 1, restart_policy="Never", template=template
        )
    return KubeflowOrgV1PyTorchJob(
        api_version=f"{GROUP}/{VERSION}",
        kind="PyTorchJob",
        metadata=V1ObjectMeta(name=name, namespace=options.namespace),
        spec=KubeflowOrgV1PyTorchJobSpec(
            pytorch_replica_specs=replica_specs,
            run_policy=KubeflowOrgV1RunPolicy(
                active_deadline_seconds=options.timeout_s, backoff_limit=0, clean_pod_policy="None"
            ),
        ),
    )


class _MasterLog:
    """Prints the master's log as it grows (each poll prints only the new part)."""

    def __init__(self, core: Any, name: str, namespace: str) -> None:
        self.core, self.name, self.namespace, self.printed = core, name, namespace, 0

    def text(self) -> str:
        selector = f"training.kubeflow.org/job-name={self.name},training.kubeflow.org/replica-type=master"
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
        if not pods:
            return ""
        return self.core.read_namespaced_pod_log(pods[0].metadata.name, self.namespace, container=CONTAINER)

    def stream(self) -> str:
        text = self.text()
        if len(text) > self.printed:
            print(text[self.printed :], end="", flush=True)
            self.printed = len(text)
        return text


def run_pytorchjob(
    api_client: Any,
    job: Any,
    options: PyTorchJobOptions,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Create the job, stream its master's log into this log, wait for it; always delete it.

    Raises:
        RuntimeError: The job failed (the message carries the end of the master's log).
        TimeoutError: It did not finish within `options.timeout_s`.
    """
    from kubernetes.client import CoreV1Api, CustomObjectsApi

    api = CustomObjectsApi(api_client)
    name, namespace = job.metadata.name, job.metadata.namespace
    body = api_client.sanitize_for_serialization(job)
    owner = owner_reference(api_client, namespace)
    if owner is not None:
        body["metadata"]["ownerReferences"] = [api_client.sanitize_for_serialization(owner)]
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    print(f"Created PyTorchJob {namespace}/{name}", flush=True)
    log = _MasterLog(CoreV1Api(api_client), name, namespace)

    def finished() -> bool | None:
        status = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name).get("status", {})
        conditions = {c["type"]: c for c in status.get("conditions", []) if c.get("status") == "True"}
        text = log.stream()
        if "Failed" in conditions:
            failed = conditions["Failed"]
            tail = "\n".join(text.strip().splitlines()[-5:])
            raise RuntimeError(
                f"PyTorchJob {name} failed: {failed.get('reason')}: {failed.get('message')}\nmaster log:\n{tail}"
            )
        return True if "Succeeded" in conditions else None

    with cleanup_on_sigterm():
        try:
            wait_for(finished, f"PyTorchJob {name}", options.timeout_s, options.poll_s, clock, sleep)
        finally:
            api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            print(f"Deleted PyTorchJob {namespace}/{name}", flush=True)


def replica_command(
    train_options: dict[str, Any], scratch_url: str, options: PyTorchJobOptions, settings: str | None = None
) -> list[str]:
    """The `train` command of every replica: one process (and at most one GPU) per replica."""
    placement = {
        "out": scratch_url,
        "accelerator": "gpu" if options.gpus_per_replica else "cpu",
        "devices": max(options.gpus_per_replica, 1),
        "num_nodes": options.replicas,
    }
    return [*MODULE_COMMAND, *to_argv("train", {**train_options, **placement}, settings)]


def run_pytorchjob_train(
    train_options: dict[str, Any],
    model_dir: str,
    scratch_url: str,
    options: PyTorchJobOptions,
    settings: str | None = None,
    api_client: Any = None,
) -> None:
    """Train as a PyTorchJob and copy the model its master wrote to `scratch_url` into `model_dir`.

    Args:
        train_options: `train` options of the replicas except out, accelerator, devices and
            num_nodes (data as object-storage URLs).
        model_dir: Where the Model artifact goes (this task's output).
        scratch_url: Object-storage folder, unique to the run, where the master writes the model.
        options: Shape and limits of the job.
        settings: The settings JSON the replicas use (the launching task's).
        api_client: Kubernetes API client; the current context's when omitted.
    """
    from container_component_src import storage
    from container_component_src.cluster.kube import kube_api_client

    if not options.image:
        raise OptionError("--image is required to train with a PyTorchJob")
    # Each replica holds its shard of the sets: refuse before starting replicas that would be OOM-killed.
    data = [train_options["train"], train_options["val"]]
    check_step_fits("train", data, shards=options.replicas, pod_memory=options.memory, setting=MEMORY_SETTING)
    job = build_pytorchjob(job_name(), replica_command(train_options, scratch_url, options, settings), options)
    try:
        run_pytorchjob(api_client or kube_api_client(), job, options)
        storage.copy_directory(scratch_url, model_dir)
    finally:
        storage.remove_directory(scratch_url)
