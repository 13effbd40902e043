"""The emulated Kubernetes API: objects in memory, served over HTTP on loopback to the real
`kubernetes` client, with controllers that act on them and the garbage collector's
ownerReference cascade."""

from __future__ import annotations

import base64
import itertools
import json
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.emulator.schema import SchemaError
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
        # Bearer tokens by the user they authenticate; with `rbac`, a request needs a rule of a
        # Role bound to that user (or its service account) in the namespace.
        self.tokens: dict[str, str] = {}
        self.rbac = False

    def token_for(self, namespace: str, service_account: str) -> str:
        """The token of a service account (what its pods' token volume holds)."""
        token = f"token-{namespace}-{service_account}-{uuid.uuid4().hex[:8]}"
        self.tokens[token] = f"system:serviceaccount:{namespace}:{service_account}"
        return token

    def forbidden(self, user: str, verb: str, group: str, resource: str, namespace: str) -> str | None:
        """Kubernetes RBAC over the Roles and RoleBindings of `namespace`: None when allowed, else
        the API server's refusal."""
        with self.lock:
            bindings = self.list("rolebindings", namespace)
            roles = {r["metadata"]["name"]: r for r in self.list("roles", namespace)}
        for binding in bindings:
            bound = any(_subject(subject) == user for subject in binding.get("subjects") or [])
            role = roles.get(binding["roleRef"]["name"]) if binding["roleRef"].get("kind") == "Role" else None
            if bound and role is not None and any(_allows(rule, verb, group, resource) for rule in role["rules"]):
                return None
        where = f'in API group "{group}" ' if group else ""
        action = f'User "{user}" cannot {verb} resource "{resource}" {where}in the namespace "{namespace}"'
        return f"{resource} is forbidden: {action}"

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
        scheme, _, token = str(headers.get("Authorization", "")).partition(" ")
        user = self.tokens.get(token) if scheme.lower() == "bearer" else None
        if user is None:
            return 401, {}, _status(401, "Unauthorized", "Unauthorized")
        if self.rbac:
            group = "" if parts[0] == "api" else parts[1]
            resource = f"{plural}/{rest[2]}" if len(rest) == 3 else plural
            verb = _VERBS.get((method, name is None), method.lower())
            if "watch=true" in url.query:
                verb = "watch"
            refusal = self.forbidden(user, verb, group, resource, namespace)
            if refusal is not None:
                return 403, {}, _status(403, "Forbidden", refusal)
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
                return _refusal(exc)
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
            changed = {**obj, "spec": payload.get("spec", obj.get("spec"))}
            try:  # pruning, the schema and the admission webhooks see the object as changed
                for validate in self.validators.get(plural, []):
                    validate(changed)
            except ValueError as exc:
                return _refusal(exc)
            with self.lock:
                obj["spec"] = changed["spec"]
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


def _refusal(exc: ValueError) -> tuple[int, dict[str, str], Any]:
    """A schema violation (422 Invalid) or an admission webhook's denial (400)."""
    if isinstance(exc, SchemaError):
        return 422, {}, _status(422, "Invalid", str(exc))
    return 400, {}, _status(400, "BadRequest", f"admission webhook denied the request: {exc}")


_VERBS = {
    ("GET", True): "list",
    ("GET", False): "get",
    ("POST", True): "create",
    ("PUT", False): "update",
    ("PATCH", False): "patch",
    ("DELETE", False): "delete",
    ("DELETE", True): "deletecollection",
}


def _subject(subject: dict[str, Any]) -> str:
    """The user a RoleBinding's subject names (a ServiceAccount needs its namespace)."""
    if subject.get("kind") == "ServiceAccount":
        return f"system:serviceaccount:{subject.get('namespace')}:{subject.get('name')}"
    return str(subject.get("name")) if subject.get("kind") == "User" else ""


def _allows(rule: dict[str, Any], verb: str, group: str, resource: str) -> bool:
    def has(values: list[str] | None, value: str) -> bool:
        return "*" in (values or []) or value in (values or [])

    return has(rule.get("apiGroups"), group) and has(rule.get("resources"), resource) and has(rule.get("verbs"), verb)


def _matches(obj: dict[str, Any], selector: str) -> bool:
    labels = obj["metadata"].get("labels") or {}
    pairs = [item.split("=", 1) for item in selector.split(",") if item]
    return all(labels.get(k) == v for k, v in pairs)


@contextmanager
def serving(server: ApiServer, tls: ssl.SSLContext, port: int) -> Iterator[str]:
    """Serve the API over HTTPS on loopback `port`; yield its URL. Private fields (`_log`) never
    leave."""

    def handle(method: str, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], Any]:
        code, extra, payload = server.handle(method, path, headers, body)
        return code, extra, _public(payload)

    with serve_fake(handle, tls=tls, port=port) as url:
        yield url


def _public(payload: Any) -> Any:
    if isinstance(payload, dict):
        return {k: _public(v) for k, v in payload.items() if not k.startswith("_")}
    if isinstance(payload, list):
        return [_public(v) for v in payload]
    return payload
