"""The Kubernetes API client: in-cluster credentials inside a pod, the kubeconfig elsewhere."""

from __future__ import annotations

import os
from typing import Any


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
            raise ValueError(f"no Kubernetes credentials (in-cluster or kubeconfig): {exc}") from None
    return client.ApiClient()


def current_namespace(default: str = "default") -> str:
    """The namespace of this pod's service account, else `default`."""
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as handle:
            return handle.read().strip() or default
    except OSError:
        return default
