"""The emulated Kubernetes API: objects in memory, served over HTTP on loopback to the real
`kubernetes` client, with controllers that act on them and the garbage collector's
ownerReference cascade."""

from __future__ import annotations

import base64
import itertools
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.http_fake import serve_fake

Key = tuple[str, str, str]  # plural, namespace, name
Hook = Callable[[dict[str, Any]], None]


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


class ApiServer:
    """Objects by (plural, namespace, name); create and delete hooks per plural; cascade deletion."""

    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.lock = threading.RLock()
        self.on_create: dict[str, list[Hook]] = {}
        self.on_delete: dict[str, list[Hook]] = {}
        self.validators: dict[str, list[Hook]] = {}
        self.requests: list[tuple[str, str]] = []
        self._generation = itertools.count(1)

    # --- the store ---------------------------------------------------------------------------
    def put(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create an object (as the API server does: uid, generation, resourceVersion) and run
        the create hooks.

        Raises:
            KeyError: One of that name exists.
            ValueError: A validator (an admission webhook) refuses it.
        """
        meta = obj.setdefault("metadata", {})
        key = (plural, meta.get("namespace", "default"), meta["name"])
        for validate in self.validators.get(plural, []):
            validate(obj)
        with self.lock:
            if key in self.objects:
                raise KeyError(key)
            meta.setdefault("namespace", key[1])
            meta["uid"] = str(uuid.uuid4())
            meta["generation"] = 1
            meta["resourceVersion"] = str(next(self._generation))
            self.objects[key] = obj
        for hook in self.on_create.get(plural, []):
            hook(obj)
        return obj

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            return self.objects.get((plural, namespace, name))

    def list(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [o for (p, ns, _), o in self.objects.items() if p == plural and namespace in (None, ns)]

    def set_status(self, plural: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        with self.lock:
            obj = self.objects.get((plural, namespace, name))
            if obj is not None:
                obj["status"] = status

    def delete(self, plural: str, namespace: str, name: str) -> bool:
        """Delete an object, run its delete hooks, and cascade to the objects it owns."""
        with self.lock:
            obj = self.objects.pop((plural, namespace, name), None)
        if obj is None:
            return False
        for hook in self.on_delete.get(plural, []):
            hook(obj)
        uid = obj["metadata"]["uid"]
        with self.lock:
            owned = [
                key
                for key, other in self.objects.items()
                if any(ref.get("uid") == uid for ref in other["metadata"].get("ownerReferences", []))
            ]
        for key in owned:
            self.delete(*key)
        return True

    def secrets(self, namespace: str) -> dict[str, dict[str, str]]:
        """Secret data by name, decoded."""
        found = {}
        for secret in self.list("secrets", namespace):
            data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
            found[secret["metadata"]["name"]] = {**data, **(secret.get("stringData") or {})}
        return found

    # --- HTTP --------------------------------------------------------------------------------
    def handle(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], Any]:
        url = urlsplit(path)
        parts = url.path.strip("/").split("/")
        self.requests.append((method, url.path))
        if parts[:2] == ["api", "v1"] and len(parts) >= 4 and parts[2] == "namespaces":
            namespace, rest = parts[3], parts[4:]
        elif parts[0] == "apis" and len(parts) >= 6 and parts[3] == "namespaces":
            namespace, rest = parts[4], parts[5:]
        else:
            return 404, {}, _status(404, "NotFound", f"no route {method} {url.path}")
        plural, name = rest[0], (rest[1] if len(rest) > 1 else None)
        if len(rest) == 3 and rest[2] == "log" and method == "GET":
            return self._log(namespace, name, parse_qs(url.query).get("container", [""])[0])
        payload = json.loads(body) if body else None
        if method == "POST" and name is None:
            try:
                payload.setdefault("metadata", {})["namespace"] = namespace
                return 201, {}, _public(self.put(plural, payload))
            except KeyError:
                return 409, {}, _status(409, "AlreadyExists", f"{plural} {payload['metadata']['name']} exists")
            except ValueError as exc:
                return 400, {}, _status(400, "BadRequest", f"admission webhook denied the request: {exc}")
        if method == "GET" and name is None:
            selector = parse_qs(url.query).get("labelSelector", [""])[0]
            items = [o for o in self.list(plural, namespace) if _matches(o, selector)]
            return 200, {}, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": _public(items)}
        obj = self.get(plural, namespace, name)
        if obj is None:
            return 404, {}, _status(404, "NotFound", f"{plural} {namespace}/{name} not found")
        if method == "GET":
            return 200, {}, _public(obj)
        if method == "DELETE":
            self.delete(plural, namespace, name)
            return 200, {}, {"kind": "Status", "status": "Success"}
        if method in ("PATCH", "PUT"):
            try:  # the admission webhooks see the object as it would be after the change
                for validate in self.validators.get(plural, []):
                    validate({**obj, "spec": payload.get("spec", obj.get("spec"))})
            except ValueError as exc:
                return 400, {}, _status(400, "BadRequest", f"admission webhook denied the request: {exc}")
            with self.lock:
                obj["spec"] = payload.get("spec", obj.get("spec"))
                obj["metadata"]["generation"] += 1
            for hook in self.on_create.get(plural, []):  # a changed spec is reconciled anew
                hook(obj)
            return 200, {}, _public(obj)
        return 405, {}, _status(405, "MethodNotAllowed", method)

    def _log(self, namespace: str, name: str, container: str) -> tuple[int, dict[str, str], Any]:
        """A pod's log; as the kubelet answers, a container the pod does not have is a 400."""
        pod = self.get("pods", namespace, name)
        if pod is None:
            return 404, {}, _status(404, "NotFound", f"pod {name} not found")
        names = [c.get("name") for c in pod.get("spec", {}).get("containers") or []]
        if container and container not in names:
            message = f"container {container} is not valid for pod {name}"
            return 400, {}, _status(400, "BadRequest", message)
        reader = pod.get("_log")
        return 200, {}, reader() if reader else ""


def _matches(obj: dict[str, Any], selector: str) -> bool:
    labels = obj["metadata"].get("labels") or {}
    pairs = [item.split("=", 1) for item in selector.split(",") if item]
    return all(labels.get(k) == v for k, v in pairs)


@contextmanager
def serving(server: ApiServer) -> Iterator[str]:
    """Serve the API on loopback; yield its URL. Private fields (`_log`) never leave."""

    def handle(method: str, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], Any]:
        code, extra, payload = server.handle(method, path, headers, body)
        return code, extra, _public(payload)

    with serve_fake(handle) as url:
        yield url


def _public(payload: Any) -> Any:
    if isinstance(payload, dict):
        return {k: _public(v) for k, v in payload.items() if not k.startswith("_")}
    if isinstance(payload, list):
        return [_public(v) for v in payload]
    return payload
