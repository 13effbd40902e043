"""Reaching Kubeflow Pipelines from outside the cluster (`--remote`): a session cookie from Dex.

Kubeflow puts Dex behind oauth2-proxy (1.8 and later) or oidc-authservice (before): an
unauthenticated request is redirected to Dex's login page. Logging in with a static password (or
any Dex password connector) and following the redirects back sets the session cookie
(`oauth2_proxy_kubeflow` or `authservice_session`) that the Pipelines API accepts. A cookie taken
from a browser session can be given instead (`KFP_SESSION_COOKIE`).

Settings come from the environment (or `.env`), never from code or config.toml:
KFP_ENDPOINT, KFP_USERNAME, KFP_PASSWORD, KFP_NAMESPACE, KFP_SESSION_COOKIE, KFP_DEX_AUTH_TYPE,
KFP_SKIP_TLS_VERIFY (TLS is verified unless this is "true").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class AuthError(RuntimeError):
    """Logging in failed; the message says which step and what to check (never the password)."""


@dataclass(frozen=True)
class RemoteSettings:
    """Where the Kubeflow endpoint is and how to log in to it.

    Attributes:
        endpoint: Kubeflow's address, e.g. https://kubeflow.example.org or http://localhost:8080
            for a port-forwarded istio-ingressgateway.
        namespace: The profile namespace runs go to.
        username: Dex user (static password or another password connector).
        password: Its password.
        session_cookie: A session cookie ("name=value") to use instead of logging in.
        dex_auth_type: Dex connector: "local" (static passwords) or e.g. "ldap".
        verify_tls: Verify the endpoint's certificate.
    """

    endpoint: str
    namespace: str
    username: str = ""
    password: str = field(default="", repr=False)
    session_cookie: str = field(default="", repr=False)
    dex_auth_type: str = "local"
    verify_tls: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> RemoteSettings:
        """Read the KFP_* variables.

        Raises:
            ValueError: A required variable is missing.
        """
        missing = [name for name in ("KFP_ENDPOINT", "KFP_NAMESPACE") if not environ.get(name)]
        if not environ.get("KFP_SESSION_COOKIE"):
            missing += [name for name in ("KFP_USERNAME", "KFP_PASSWORD") if not environ.get(name)]
        if missing:
            raise ValueError(f"--remote needs {', '.join(missing)} in the environment or .env")
        return cls(
            endpoint=environ["KFP_ENDPOINT"].rstrip("/"),
            namespace=environ["KFP_NAMESPACE"],
            username=environ.get("KFP_USERNAME", ""),
            password=environ.get("KFP_PASSWORD", ""),
            session_cookie=environ.get("KFP_SESSION_COOKIE", ""),
            dex_auth_type=environ.get("KFP_DEX_AUTH_TYPE", "local"),
            verify_tls=environ.get("KFP_SKIP_TLS_VERIFY", "").lower() != "true",
        )


def dex_session_cookies(settings: RemoteSettings, timeout_s: float = 30.0) -> dict[str, str]:
    """Log in through Dex and return the session cookies; empty when the endpoint needs no login.

    Raises:
        AuthError: The endpoint is unreachable, Dex refuses the credentials, or no cookie is set.
    """
    import httpx

    with httpx.Client(follow_redirects=True, verify=settings.verify_tls, timeout=timeout_s) as client:
        try:
            response = client.get(settings.endpoint)
        except httpx.HTTPError as exc:
            raise AuthError(f"cannot reach {settings.endpoint}: {exc}") from None
        if response.status_code != 200:
            raise AuthError(f"{settings.endpoint} answered {response.status_code}")
        if not response.history:
            return {}  # Not redirected to a login: the endpoint is not protected.
        url = response.url
        if url.path.endswith("/auth"):  # Dex's connector choice: pick one.
            url = url.copy_with(path=f"{url.path}/{settings.dex_auth_type}")
        if not re.search(r"/auth/[^/]+/login$", url.path):
            url = client.get(url).url
        response = client.post(url, data={"login": settings.username, "password": settings.password})
        if not response.history:
            raise AuthError(
                f"Dex did not accept the login of {settings.username!r}: check KFP_USERNAME and KFP_PASSWORD"
            )
        if response.url.path.endswith("/approval"):
            response = client.post(response.url, data={"approval": "approve"})
        cookies = {cookie.name: cookie.value for cookie in client.cookies.jar}
    if not cookies:
        raise AuthError(f"logging in to {settings.endpoint} set no session cookie")
    return cookies


def session_cookie_header(settings: RemoteSettings) -> str:
    """The Cookie header for the Pipelines API: the given cookie, or one from a Dex login."""
    if settings.session_cookie:
        return settings.session_cookie
    return "; ".join(f"{name}={value}" for name, value in dex_session_cookies(settings).items())


def remote_client(settings: RemoteSettings) -> Any:
    """A `kfp.Client` for the endpoint's Pipelines API, authenticated by the session cookie."""
    import kfp

    return kfp.Client(
        host=f"{settings.endpoint}/pipeline",
        cookies=session_cookie_header(settings),
        namespace=settings.namespace,
        verify_ssl=settings.verify_tls,
    )
