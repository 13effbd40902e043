"""The emulated Kubeflow as one object: API server, pods, the four operators' controllers."""

from __future__ import annotations

import base64
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.cluster.fake_kube import write_kubeconfig
from tests.emulator.apiserver import ApiServer, serving
from tests.emulator.controllers import (
    LOOPBACK,
    DaskClusterController,
    KatibController,
    KServeController,
    Pods,
    PyTorchJobController,
    free_port,
)
from tests.emulator.network import ClusterNetwork, network_available
from tests.emulator.pods import pods_are_isolated
from tests.emulator.schema import admit, schemas
from tests.emulator.tls import server_context

NAMESPACE = "team"
RBAC = Path(__file__).resolve().parents[2] / "pipeline" / "rbac.yaml"  # what the README has users apply
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

    def add_object_storage(self, endpoint: str, secret: str, keys: dict[str, str], service_account: str) -> str:
        """Object storage on this machine (`endpoint`, on loopback) as Kubeflow's MinIO Service
        `minio-service.kubeflow:9000`, its keys in `secret` annotated for KServe's storage
        initializer and listed by `service_account`, as the README's cluster set-up has it.
        Returns the endpoint both pods and the launcher reach (the Service's cluster IP;
        `endpoint` itself where pods share this machine's loopback)."""
        url = urlsplit(endpoint)
        meta = {"name": "minio-service", "namespace": "kubeflow"}
        service = {"metadata": meta, "spec": {"ports": [{"port": 9000}]}, "_target": (url.hostname, url.port)}
        self.server.put("services", service)
        in_cluster = "minio-service.kubeflow:9000" if self.pods.network else url.netloc
        annotations = {"serving.kserve.io/s3-endpoint": in_cluster, "serving.kserve.io/s3-usehttps": "0"}
        self.add_secret(secret, keys, annotations)
        self.add_service_account(service_account, [secret])
        return endpoint if self.pods.network is None else f"http://{service['spec']['clusterIP']}:9000"

    def apply(self, manifest: Path, namespace: str = NAMESPACE) -> None:
        """`sed 's/<namespace>/NS/' manifest | kubectl apply -n NS -f -`, as the README says."""
        import yaml

        for document in yaml.safe_load_all(manifest.read_text().replace("<namespace>", namespace)):
            document.setdefault("metadata", {}).setdefault("namespace", namespace)
            self.server.put(document["kind"].lower() + "s", document)

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
    """Start the emulated cluster; stop every process it started on exit.

    Its API server prunes and validates custom resources against the operators' released CRDs
    (`schema.py`), speaks HTTPS, authenticates bearer tokens and applies RBAC: the kubeconfig it
    writes is `default-editor`'s (the service account of Kubeflow's pipeline pods), which may do
    only what the Roles applied (`Emulator.apply`) grant it. Pods get a network of their own where
    this machine allows it (see `network.py`), and their service account's token, the CA and
    namespace at Kubernetes' path. `images`: what the registry holds (a pod of any other image
    fails to pull; None: any image pulls).
    """
    server = ApiServer()
    (folder / "pods").mkdir(parents=True, exist_ok=True)
    network = ClusterNetwork(folder / "pods") if pods_are_isolated() and network_available() else None
    pods = Pods(server, folder / "pods", network)
    pods.images = images
    KatibController(server, pods)
    PyTorchJobController(server, pods)
    DaskClusterController(server, pods)
    kserve = KServeController(server, pods)
    for plural in schemas():  # the CRD's schema before the operators' validating webhooks
        server.validators.setdefault(plural, []).insert(0, functools.partial(admit, plural))
    port = free_port()
    api = {"metadata": {"name": "kubernetes", "namespace": "default"}, "spec": {"ports": [{"port": 443}]}}
    server.put("services", {**api, "_target": (LOOPBACK, port)})
    cluster_ip = server.get("services", "default", "kubernetes")["spec"]["clusterIP"]
    names = ["kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"]
    tls, ca = server_context(folder, sorted({LOOPBACK, cluster_ip}), names)
    pods.api = (cluster_ip, 443 if network else port, ca)
    server.rbac = True
    try:
        with serving(server, tls, port) as url:
            token = server.token_for(NAMESPACE, "default-editor")
            write_kubeconfig(folder / "kubeconfig", url, NAMESPACE, ca=ca, token=token)
            yield Emulator(server, pods, url, folder / "kubeconfig")
    finally:
        pods.stop_all()
        kserve.cleanup()
        if network is not None:
            network.close()
