"""The emulated Kubeflow as one object: API server, pods, the four operators' controllers."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.cluster.fake_kube import write_kubeconfig
from tests.emulator.apiserver import ApiServer, serving
from tests.emulator.controllers import (
    DaskClusterController,
    KatibController,
    KServeController,
    Pods,
    PyTorchJobController,
)
from tests.emulator.network import ClusterNetwork, network_available
from tests.emulator.pods import pods_are_isolated

NAMESPACE = "team"
LAUNCHER = "launcher-pod"  # the pipeline task's own pod: what the task's objects are owned by


@dataclass
class Emulator:
    server: ApiServer
    pods: Pods
    url: str
    kubeconfig: Path

    def add_secret(self, name: str, data: dict[str, str], annotations: dict[str, str] | None = None) -> None:
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        meta = {"name": name, "namespace": NAMESPACE, "annotations": annotations or {}}
        self.server.put("secrets", {"metadata": meta, "data": encoded})

    def add_service_account(self, name: str, secrets: list[str]) -> None:
        meta = {"name": name, "namespace": NAMESPACE}
        self.server.put("serviceaccounts", {"metadata": meta, "secrets": [{"name": s} for s in secrets]})

    def add_object_storage(self, endpoint: str, secret: str, keys: dict[str, str]) -> str:
        """Object storage on this machine (`endpoint`, on loopback) as Kubeflow's MinIO Service
        `minio-service.kubeflow:9000`, its keys in `secret` annotated for KServe's storage
        initializer and listed by the namespace's `default` service account, as the README's
        cluster set-up has it. Returns the endpoint both pods and the launcher reach (the Service's
        cluster IP; `endpoint` itself where pods share this machine's loopback)."""
        url = urlsplit(endpoint)
        meta = {"name": "minio-service", "namespace": "kubeflow"}
        service = {"metadata": meta, "spec": {"ports": [{"port": 9000}]}, "_target": (url.hostname, url.port)}
        self.server.put("services", service)
        in_cluster = "minio-service.kubeflow:9000" if self.pods.network else url.netloc
        annotations = {"serving.kserve.io/s3-endpoint": in_cluster, "serving.kserve.io/s3-usehttps": "0"}
        self.add_secret(secret, keys, annotations)
        self.add_service_account("default", [secret])
        return endpoint if self.pods.network is None else f"http://{service['spec']['clusterIP']}:9000"

    def add_launcher_pod(self, name: str = LAUNCHER) -> dict[str, Any]:
        """The pod a pipeline task runs in, as KFP creates it."""
        return self.server.put(
            "pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE}}
        )

    def launcher_env(self, name: str = LAUNCHER) -> dict[str, str]:
        """What a task's process sees of the cluster: the API (kubeconfig) and its pod's name."""
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "HOSTNAME": name,
            "POD_NAMESPACE": NAMESPACE,
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        }

    def objects(self, plural: str) -> list[dict[str, Any]]:
        return self.server.list(plural, NAMESPACE)


@contextmanager
def emulated_kubeflow(folder: Path, images: set[str] | None = None) -> Iterator[Emulator]:
    """Start the emulated cluster; stop every process it started on exit. Pods get a network of
    their own where this machine allows it (see `network.py`); `images`: what the registry holds
    (a pod of any other image fails to pull; None: any image pulls)."""
    server = ApiServer()
    (folder / "pods").mkdir(parents=True, exist_ok=True)
    network = ClusterNetwork(folder / "pods") if pods_are_isolated() and network_available() else None
    pods = Pods(server, folder / "pods", network)
    pods.images = images
    KatibController(server, pods)
    PyTorchJobController(server, pods)
    DaskClusterController(server, pods)
    kserve = KServeController(server, pods)
    try:
        with serving(server) as url:
            write_kubeconfig(folder / "kubeconfig", url, NAMESPACE)
            yield Emulator(server, pods, url, folder / "kubeconfig")
    finally:
        pods.stop_all()
        kserve.cleanup()
        if network is not None:
            network.close()
