"""The Kubernetes API client: in-cluster credentials inside a pod, the kubeconfig elsewhere."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from container_component_src.errors import OptionError


def kube_api_client() -> Any:
    """A `kubernetes.client.ApiClient` for the current context (TLS verified as configured).

    Raises:
        ValueError: Neither in-cluster credentials nor a kubeconfig are found.
    """
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            # $KUBECONFIG read now: the client reads it once, at import.
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
        except (config.ConfigException, OSError) as exc:
            raise OptionError(f"no Kubernetes credentials (in-cluster or kubeconfig): {exc}") from None
    return client.ApiClient()


def current_namespace(default: str = "default") -> str:
    """The namespace of this pod's service account, else `default`."""
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as handle:
            return handle.read().strip() or default
    except OSError:
        return default


S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
T = TypeVar("T")


def s3_env(secret_name: str, endpoint: str = "") -> list[Any]:
    """Object-storage environment of a pod (typed `V1EnvVar`s): the endpoint as a value, the keys
    as references to the secret, never as values."""
    from kubernetes.client import V1EnvVar, V1EnvVarSource, V1SecretKeySelector

    env = [V1EnvVar(name="AWS_ENDPOINT_URL", value=endpoint)] if endpoint else []
    if secret_name:
        env += [
            V1EnvVar(name=key, value_from=V1EnvVarSource(secret_key_ref=V1SecretKeySelector(name=secret_name, key=key)))
            for key in S3_SECRET_KEYS
        ]
    return env


def wait_for(
    check: Callable[[], T | None],
    what: str,
    timeout_s: float,
    poll_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `check` every `poll_s` seconds until it returns a result (it raises when the resource
    failed); `timeout_s` counts from the first call.

    Raises:
        TimeoutError: No result within `timeout_s`; the message names `what`.
    """
    deadline = clock() + timeout_s
    while True:
        result = check()
        if result is not None:
            return result
        if clock() > deadline:
            raise TimeoutError(f"{what} did not finish within {timeout_s:.0f} s")
        sleep(poll_s)
