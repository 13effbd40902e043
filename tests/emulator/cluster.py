"""The emulated Kubeflow as one object: API server, pods, the four operators' controllers."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.cluster.fake_kube import write_kubeconfig
from tests.emulator.apiserver import ApiServer, serving
from tests.emulator.controllers import (
    DaskClusterController,
    KatibController,
    KServeController,
    Pods,
    PyTorchJobController,
)

NAMESPACE = "team"
LAUNCHER = "launcher-pod"  # the pipeline task's own pod: what the task's objects are owned by


@dataclass
class Emulator:
    server: ApiServer
    pods: Pods
    url: str
    kubeconfig: Path

    def add_secret(self, name: str, data: dict[str, str]) -> None:
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        self.server.put("secrets", {"metadata": {"name": name, "namespace": NAMESPACE}, "data": encoded})

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
def emulated_kubeflow(folder: Path, download: Any = None) -> Iterator[Emulator]:
    """Start the emulated cluster; stop every process it started on exit."""
    server = ApiServer()
    (folder / "pods").mkdir(parents=True, exist_ok=True)
    pods = Pods(server, folder / "pods")
    KatibController(server, pods)
    PyTorchJobController(server, pods)
    DaskClusterController(server, pods)
    kserve = KServeController(server, pods, download or _copy_from_storage)
    try:
        with serving(server) as url:
            write_kubeconfig(folder / "kubeconfig", url, NAMESPACE)
            yield Emulator(server, pods, url, folder / "kubeconfig")
    finally:
        pods.stop_all()
        kserve.cleanup()


def _copy_from_storage(uri: str, folder: str) -> None:
    """The storage initializer: copy the model folder from object storage into the mount."""
    from container_component_src import storage

    storage.copy_directory(uri, folder)
