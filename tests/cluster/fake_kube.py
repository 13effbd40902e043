"""A small fake of the Kubernetes API for custom objects, served over HTTP on loopback.

The real `kubernetes` client talks to it, so requests, paths and (de)serialisation are exercised
as on a cluster. Each GET of an object returns the next status of a scripted sequence.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.http_fake import serve_fake

_PODS = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods(/(?P<pod>[^/?]+)/log)?")
_PATH = re.compile(
    r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)(/(?P<name>[^/?]+))?"
)


class FakeKube:
    """Stored objects, the scripted statuses, and every request received."""

    def __init__(self, statuses: list[dict[str, Any]], logs: list[str] | None = None) -> None:
        self.statuses = statuses
        self.logs = logs or [""]
        self.log_reads = 0
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.gets = 0

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        self.requests.append((method, path, body))
        pods = _PODS.match(path)
        if pods and method == "GET":
            if pods["pod"]:
                text = self.logs[min(self.log_reads, len(self.logs) - 1)]
                self.log_reads += 1
                return 200, text
            job = re.search(r"job-name%3D([^%,&]+)", path)
            items = [{"metadata": {"name": f"{job[1]}-master-0"}}] if job and self.objects else []
            return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
        match = _PATH.match(path)
        if not match:
            return 404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404}
        key = (match["ns"], match["plural"], match["name"] or (body or {}).get("metadata", {}).get("name", ""))
        if method == "POST":
            if key in self.objects:
                return 409, {"kind": "Status", "status": "Failure", "reason": "AlreadyExists", "code": 409}
            self.objects[key] = body
            return 201, body
        if key not in self.objects:
            return 404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404}
        if method == "GET":
            status = self.statuses[min(self.gets, len(self.statuses) - 1)]
            self.gets += 1
            return 200, {**self.objects[key], "status": status}
        if method == "PATCH":
            self.objects[key] = {**self.objects[key], **body}
            return 200, self.objects[key]
        if method == "DELETE":
            del self.objects[key]
            return 200, {"kind": "Status", "status": "Success", "code": 200}
        return 405, {"kind": "Status", "status": "Failure", "code": 405}


def serve(fake: FakeKube) -> Any:
    """Serve `fake` on a free loopback port (a context manager yielding its URL)."""

    def handle(method: str, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], Any]:
        code, payload = fake.handle(method, path, json.loads(body) if body else None)
        return code, {}, payload

    return serve_fake(handle)


def api_client(url: str) -> Any:
    """A real kubernetes ApiClient pointed at the fake."""
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = url
    return client.ApiClient(configuration)


def write_kubeconfig(path: Any, url: str, namespace: str = "team", ca: Any = None, token: str = "not-a-secret") -> None:
    """A kubeconfig whose current context is the fake (JSON is valid YAML); with `ca`, the CA
    file that the server's certificate is verified against."""
    cluster = {"server": url, **({"certificate-authority": str(ca)} if ca else {})}
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "fake",
                "clusters": [{"name": "fake", "cluster": cluster}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u", "namespace": namespace}}],
                "users": [{"name": "u", "user": {"token": token}}],
            }
        )
    )
