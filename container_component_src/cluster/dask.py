"""Where preprocess and the table steps (a task per part) run their tasks: `step_tasks` gives
threads of the step's own process when one machine is all there is, or the workers of a
DaskCluster on Kubernetes (dask-kubernetes operator)."""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from typing import Any

from container_component_src.choices import DaskCluster
from container_component_src.cluster.kube import Placement, s3_env
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
        idle_timeout_s: The operator deletes a Kubernetes cluster idle for this long (a safety
            net for a launcher killed before it could delete it).
        startup_timeout_s: How long to wait for the scheduler and workers to run.
        placement: Pull secret, node selectors and tolerations of the scheduler and workers.
        name_prefix: The step the cluster serves, first in its DaskCluster's name.
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
    idle_timeout_s: int = 600
    startup_timeout_s: float = 600.0
    placement: Placement = field(default_factory=Placement)
    name_prefix: str = "preprocess"


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
    """Return the DaskCluster custom resource for `options`, named `name`.

    The scheduler and workers run `dask scheduler` and `dask worker`: distributed 2026.6 removed
    the `dask-scheduler` and `dask-worker` scripts that dask-kubernetes' template still names.
    The operator deletes the cluster after `idle_timeout_s` without work, should its launcher die
    without deleting it.
    """
    from dask_kubernetes.operator import make_cluster_spec
    from kubernetes.client import ApiClient, V1PodSpec

    if not options.image:
        raise OptionError("--worker-image is required for a Kubernetes Dask cluster")
    resources = ApiClient().sanitize_for_serialization(
        options.placement.resources(options.worker_cpu, options.worker_memory)
    )
    spec = make_cluster_spec(
        name=name,
        image=options.image,
        n_workers=options.n_workers,
        resources=resources,
        env=worker_env(options),
        worker_command="dask worker",
        idle_timeout=options.idle_timeout_s,
    )
    scheduler = spec["spec"]["scheduler"]["spec"]
    scheduler["containers"][0]["args"] = ["dask", "scheduler", "--host", "0.0.0.0"]
    placed = ApiClient().sanitize_for_serialization(options.placement.apply(V1PodSpec(containers=[])))
    placed.pop("containers")
    for pod in (scheduler, spec["spec"]["worker"]["spec"]):
        pod.update(placed)
    return spec


def unique_cluster_name(prefix: str = "preprocess") -> str:
    """A DaskCluster name that two concurrent runs never share."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


GROUP, VERSION, PLURAL = "kubernetes.dask.org", "v1", "daskclusters"
SCHEDULER_PORT = 8786
# Seconds between checks of the cluster's pods while connecting and waiting for the workers.
POD_POLL_S = 2.0


@dataclass(frozen=True)
class DaskClusterHandle:
    """A started DaskCluster: its scheduler's address, and a check that raises when its scheduler
    or a worker pod failed or is stuck."""

    address: str
    check_pods: Callable[[], None]


@contextlib.contextmanager
def kubernetes_cluster(options: ClusterOptions, api_client: Any = None) -> Iterator[DaskClusterHandle]:
    """Create a DaskCluster (owned by this pod), wait until its scheduler's Service exists, yield
    its address (and a check of its worker pods); always delete it (SIGTERM included).

    Raises:
        TimeoutError: The scheduler was not running within `options.startup_timeout_s`.
    """
    from kubernetes.client import CoreV1Api, CustomObjectsApi
    from kubernetes.client.exceptions import ApiException

    from container_component_src.cluster.kube import (
        cleanup_on_sigterm,
        current_namespace,
        kube_api_client,
        owner_reference,
        wait_for,
    )

    client = api_client or kube_api_client()
    namespace = options.namespace or current_namespace()
    name = unique_cluster_name(options.name_prefix)
    body = build_cluster_spec(options, name)
    body["metadata"]["namespace"] = namespace
    owner = owner_reference(client, namespace)
    if owner is not None:
        body["metadata"]["ownerReferences"] = [client.sanitize_for_serialization(owner)]
    api, core = CustomObjectsApi(client), CoreV1Api(client)

    def scheduler_address() -> str | None:
        status = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name).get("status") or {}
        if status.get("phase") != "Running":
            _raise_if_scheduler_failed(core, name, namespace)
            return None
        try:
            service = core.read_namespaced_service(f"{name}-scheduler", namespace)
        except ApiException:
            return None
        return f"tcp://{service.spec.cluster_ip}:{SCHEDULER_PORT}"

    with cleanup_on_sigterm():
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        print(f"Created DaskCluster {namespace}/{name}", flush=True)
        try:
            address = wait_for(scheduler_address, f"DaskCluster {name}", options.startup_timeout_s, 2.0)
            yield DaskClusterHandle(address, lambda: _raise_if_pods_failed(core, name, namespace))
        finally:
            api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            print(f"Deleted DaskCluster {namespace}/{name}", flush=True)


# Pod states from which a scheduler does not come up by itself.
STUCK_REASONS = {
    "CrashLoopBackOff",
    "ErrImagePull",
    "ImagePullBackOff",
    "CreateContainerConfigError",
    "InvalidImageName",
}


def _raise_if_pods_failed(core: Any, name: str, namespace: str) -> None:
    """`_raise_if_scheduler_failed` for the scheduler and the workers."""
    for component in ("scheduler", "worker"):
        _raise_if_scheduler_failed(core, name, namespace, component)


def _raise_if_scheduler_failed(core: Any, name: str, namespace: str, component: str = "scheduler") -> None:
    """Fail at once, with the pod's reason and log, when the scheduler (or a worker) cannot start.

    Raises:
        RuntimeError: A pod of `component` failed or is stuck (bad command, image, secret).
    """
    selector = f"dask.org/cluster-name={name},dask.org/component={component}"
    for pod in core.list_namespaced_pod(namespace, label_selector=selector).items:
        waiting = [s.state.waiting.reason for s in pod.status.container_statuses or [] if s.state and s.state.waiting]
        stuck = [r for r in waiting if r in STUCK_REASONS]
        if pod.status.phase == "Failed" or stuck:
            log = core.read_namespaced_pod_log(pod.metadata.name, namespace)[-2000:]
            reason = ", ".join(stuck) or pod.status.message or "Failed"
            raise RuntimeError(f"DaskCluster {name}: {component} pod {pod.metadata.name} {reason}:\n{log}")


@contextlib.contextmanager
def dask_client(options: ClusterOptions, api_client: Any = None) -> Iterator[Any]:
    """Start a DaskCluster on Kubernetes, yield a connected `distributed.Client`, and always shut
    both down."""
    if options.n_workers < 1:
        raise OptionError(f"--n-workers must be >= 1, got {options.n_workers}")
    with kubernetes_cluster(options, api_client) as cluster, _connect(cluster, options) as client:
        _wait_for_workers(client, cluster, options)
        yield client


@contextlib.contextmanager
def _connect(cluster: DaskClusterHandle, options: ClusterOptions) -> Iterator[Any]:
    """A client of the scheduler, which the operator's Service announces before it listens:
    connecting is retried, checking the pods between tries, for `options.startup_timeout_s`.

    Raises:
        RuntimeError: A pod failed, or the scheduler did not answer in time (saying where).
    """
    from distributed import Client

    host, port = cluster.address.removeprefix("tcp://").rsplit(":", 1)
    deadline = time.monotonic() + options.startup_timeout_s
    while True:
        try:
            # A plain probe: a Client's own timeout would also bound its later reconnects.
            socket.create_connection((host.strip("[]"), int(port)), timeout=POD_POLL_S).close()
            break
        except OSError as exc:
            cluster.check_pods()
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the Dask scheduler at {cluster.address} did not answer within "
                    f"{options.startup_timeout_s:.0f} s ({exc}): it must listen on its pod's address and "
                    "the Service's port"
                ) from None
            time.sleep(min(POD_POLL_S, 0.5))
    client = Client(cluster.address)
    with client:
        yield client


def _wait_for_workers(client: Any, cluster: DaskClusterHandle, options: ClusterOptions) -> None:
    """Wait until `options.n_workers` workers joined, failing at once when a pod fails.

    Raises:
        RuntimeError: A scheduler or worker pod failed or is stuck (with its log).
        TimeoutError: Not all workers joined within `options.startup_timeout_s`.
    """
    deadline = time.monotonic() + options.startup_timeout_s
    while True:
        try:
            client.wait_for_workers(options.n_workers, timeout=POD_POLL_S)
            return
        except TimeoutError:
            cluster.check_pods()
            if time.monotonic() > deadline:
                joined = len(client.scheduler_info()["workers"])
                raise TimeoutError(
                    f"{joined} of {options.n_workers} Dask workers joined within {options.startup_timeout_s:.0f} s"
                ) from None


@dataclass(frozen=True)
class Tasks:
    """Where a step's tasks run: any `concurrent.futures.Executor` (its futures work with
    `concurrent.futures.as_completed`), and how many run at once.

    Attributes:
        executor: Takes the tasks.
        threads: Tasks that run at once (what a step sizes its batches by).
        client: The `distributed.Client` behind `executor`, if any: arguments every task shares
            are sent to its workers once (`share`).
    """

    executor: Executor
    threads: int
    client: Any = None

    @classmethod
    def of_client(cls, client: Any) -> Tasks:
        """The tasks of a connected `distributed.Client`: every task is a new one (`pure=False`)."""
        threads = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())
        return cls(client.get_executor(pure=False), threads, client)

    def share(self, args: tuple[Any, ...]) -> list[Any]:
        """Arguments every task gets: sent to each Dask worker once, as they are to threads."""
        if self.client is None or not args:
            return list(args)
        # Unhashed: equal arguments of two calls must not share a key that the first call releases.
        return self.client.scatter(list(args), broadcast=True, hash=False)

    def gather(self, futures: list[Future], description: str, unit: str, sizes: list[int]) -> list[Any]:
        """The tasks' results in submission order (so that merging them is reproducible), with a
        progress bar counting each task's `sizes` as it completes. On the first failure the tasks
        not yet started are cancelled and the running ones awaited: none writes into an output
        that is being removed."""
        from tqdm.auto import tqdm

        position = {future: i for i, future in enumerate(futures)}
        results: list[Any] = [None] * len(futures)
        try:
            with tqdm(total=sum(sizes), desc=description, unit=unit) as bar:
                for future in as_completed(futures):
                    results[position[future]] = future.result()
                    bar.update(sizes[position[future]])
        except BaseException:
            for future in futures:
                future.cancel()
            wait(futures)
            raise
        return results


@contextlib.contextmanager
def step_tasks(options: ClusterOptions, api_client: Any = None) -> Iterator[Tasks]:
    """A step's tasks: on "local", `options.n_workers` threads of this process (the tasks release the
    GIL; a Dask cluster would add its start, its imports and its scheduling to every task, and
    nothing to share); on "kubernetes", the workers of a Dask cluster of their own."""
    if options.n_workers < 1:
        raise OptionError(f"--n-workers must be >= 1, got {options.n_workers}")
    if options.cluster == DaskCluster.local:
        pool = ThreadPoolExecutor(options.n_workers, thread_name_prefix=options.name_prefix)
        try:
            yield Tasks(pool, options.n_workers)
        finally:
            pool.shutdown(cancel_futures=True)
        return
    if options.cluster != DaskCluster.kubernetes:
        raise OptionError(f"--cluster must be one of {', '.join(DaskCluster)}, got {options.cluster!r}")
    with dask_client(options, api_client) as client:
        yield Tasks.of_client(client)
