"""A small fake of a Kubeflow endpoint, served over HTTP on loopback: oauth2-proxy in front, Dex's
static-password login with its redirects and cookie, and the part of the Pipelines API
(v2beta1) that submitting a run uses. The real `httpx` login and the real `kfp.Client` talk to it."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.http_fake import serve_fake

COOKIE = "oauth2_proxy_kubeflow"


class FakeKubeflow:
    """Users, the issued session, and every request received.

    Args:
        users: Dex static passwords (login -> password).
        approval: Show Dex's approval screen after the login.
    """

    def __init__(self, users: dict[str, str], approval: bool = False) -> None:
        self.users, self.approval = users, approval
        self.session = "session-token-7f3a"
        self.requests: list[dict[str, Any]] = []
        self.experiments: list[dict[str, Any]] = []
        self.runs: list[dict[str, Any]] = []
        self.recurring_runs: list[dict[str, Any]] = []

    def authenticated(self, headers: Any) -> bool:
        return f"{COOKIE}={self.session}" in (headers.get("Cookie") or "")

    def handle(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], Any]:
        self.requests.append({"method": method, "path": path, "headers": dict(headers), "body": body.decode()})
        url = urlsplit(path)
        if url.path.startswith("/pipeline/apis/"):
            if not self.authenticated(headers):
                return 302, {"Location": "/oauth2/start"}, ""
            return self.pipelines_api(method, url, json.loads(body) if body else None)
        if url.path == "/":
            if self.authenticated(headers):
                return 200, {}, "<html>Kubeflow Central Dashboard</html>"
            return 302, {"Location": "/oauth2/start?rd=%2F"}, ""
        if url.path == "/oauth2/start":
            return 302, {"Location": "/dex/auth?client_id=kubeflow-oidc-authservice&state=S1"}, ""
        if url.path == "/dex/auth":  # Two connectors: Dex lets the user choose.
            return 200, {}, "<a href='/dex/auth/local'>Email</a><a href='/dex/auth/ldap'>LDAP</a>"
        if url.path == "/dex/auth/local":
            return 302, {"Location": "/dex/auth/local/login?back=&state=R1"}, ""
        if url.path == "/dex/auth/local/login":
            if method == "GET":
                return 200, {}, "<form method='post'>login</form>"
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            if self.users.get(form.get("login", "")) != form.get("password"):
                return 200, {}, "<form method='post'>Invalid Email Address and password</form>"
            return 303, {"Location": "/dex/approval?req=R1" if self.approval else "/oauth2/callback?code=C1"}, ""
        if url.path == "/dex/approval":
            if method == "GET":
                return 200, {}, "<form method='post'>Grant access</form>"
            if parse_qs(body.decode()).get("approval") != ["approve"]:
                return 400, {}, "not approved"
            return 303, {"Location": "/oauth2/callback?code=C1"}, ""
        if url.path == "/oauth2/callback":
            return 302, {"Location": "/", "Set-Cookie": f"{COOKIE}={self.session}; Path=/; HttpOnly"}, ""
        return 404, {}, "not found"

    def pipelines_api(self, method: str, url: Any, body: Any) -> tuple[int, dict[str, str], Any]:
        route = url.path.removeprefix("/pipeline/apis/v2beta1/")
        if route == "healthz":
            return 200, {}, {"multi_user": True}
        if route == "experiments" and method == "GET":
            query = unquote(url.query)
            return 200, {}, {"experiments": [e for e in self.experiments if f'"{e["display_name"]}"' in query]}
        if route == "experiments" and method == "POST":
            experiment = {**body, "experiment_id": f"exp-{len(self.experiments) + 1}"}
            self.experiments.append(experiment)
            return 200, {}, experiment
        if route == "runs" and method == "POST":
            run = {**body, "run_id": f"run-{len(self.runs) + 1}", "state": "PENDING"}
            self.runs.append(run)
            return 200, {}, run
        if route == "recurringruns" and method == "POST":
            job = {**body, "recurring_run_id": f"job-{len(self.recurring_runs) + 1}"}
            self.recurring_runs.append(job)
            return 200, {}, job
        return 404, {}, {"error": f"no route {method} {route}"}


def serve(fake: FakeKubeflow) -> Any:
    """Serve `fake` on a free loopback port (a context manager yielding its URL)."""
    return serve_fake(fake.handle, text_type="text/html")
