"""The Dask cluster of the preprocessing step: a LocalCluster, or a DaskCluster in Kubernetes
(dask-kubernetes operator)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from container_component_src.choices import DaskCluster
from container_component_src.cluster.kube import s3_env
from container_component_src.errors import OptionError


@dataclass(frozen=True)
class ClusterOptions:
    """Where Dask runs.

    Attributes:
        cluster: "local" (threads in this process) or "kubernetes" (dask-kubernetes operator).
        n_workers: Worker count (local: worker threads).
        worker_cpu: CPU request and limit of each Kubernetes worker.
        worker_memory: Memory request and limit of each Kubernetes worker.
        image: Image of the Kubernetes scheduler and workers (the project image).
        namespace: Kubernetes namespace; the current one when empty.
        s3_secret_name: Kubernetes secret whose AWS_* keys the workers get as environment.
        s3_endpoint: AWS_ENDPOINT_URL given to the workers (MinIO), when set.
        profile_workers: Run Dask's statistical profiler in the workers (for the dashboard). It samples
            every thread's stack every 10 ms while holding the GIL, which cost a third of the
            preprocessing throughput on 2 cores, so it is off unless asked for.
    """

    cluster: DaskCluster = DaskCluster.local
    n_workers: int = 2
    worker_cpu: str = "1"
    worker_memory: str = "4Gi"
    image: str = ""
    namespace: str = ""
    s3_secret_name: str = ""
    s3_endpoint: str = ""
    profile_workers: bool = False


PROFILE_ENV = "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED"


def worker_env(options: ClusterOptions) -> list[dict[str, Any]]:
    """Environment of Kubernetes workers: S3 credentials by secret reference, never by value."""
    from kubernetes.client import ApiClient, V1EnvVar

    env = [
        V1EnvVar(name=PROFILE_ENV, value=str(options.profile_workers)),
        *s3_env(options.s3_secret_name, options.s3_endpoint),
    ]
    return ApiClient().sanitize_for_serialization(env)


def build_cluster_spec(options: ClusterOptions, name: str) -> dict[str, Any]:
    """Return the DaskCluster custom resource for `options`, named `name`."""
    from dask_kubernetes.operator import make_cluster_spec

    if not options.image:
        raise OptionError("--worker-image is required for a Kubernetes Dask cluster")
    resources = {
        "requests": {"cpu": options.worker_cpu, "memory": options.worker_memory},
        "limits": {"cpu": options.worker_cpu, "memory": options.worker_memory},
    }
    return make_cluster_spec(
        name=name,
        image=options.image,
        n_workers=options.n_workers,
        resources=resources,
        env=worker_env(options),
    )


def unique_cluster_name(prefix: str = "preprocess") -> str:
    """A DaskCluster name that two concurrent runs never share."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@contextlib.contextmanager
def dask_client(options: ClusterOptions) -> Iterator[Any]:
    """Start the cluster, yield a connected `distributed.Client`, and always shut both down."""
    import dask
    from distributed import Client, LocalCluster

    if options.n_workers < 1:
        raise OptionError(f"--n-workers must be >= 1, got {options.n_workers}")
    if options.cluster == DaskCluster.local:
        # One in-process worker with a thread per requested worker: the heavy work (Parquet
        # decoding, numpy reductions) releases the GIL, and no data is copied between processes.
        with dask.config.set({"distributed.worker.profile.enabled": options.profile_workers}):
            cluster = LocalCluster(
                processes=False, n_workers=1, threads_per_worker=options.n_workers, dashboard_address=":0"
            )
    elif options.cluster == DaskCluster.kubernetes:
        from dask_kubernetes.operator import KubeCluster

        spec = build_cluster_spec(options, unique_cluster_name())
        cluster = KubeCluster(
            custom_cluster_spec=spec,
            namespace=options.namespace or None,
            shutdown_on_close=True,
        )
    else:
        raise OptionError(f"--cluster must be one of {', '.join(DaskCluster)}, got {options.cluster!r}")
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()
