"""Run a pod's container as a local process, as the kubelet would run it in the image.

The project's environment stands in for the image: `python` and `dask` resolve to this
interpreter's environment. The container's command and args run exactly as written (with
Kubernetes' `$(VAR)` expansion), with exactly its env: values, and `secretKeyRef`s resolved from
the emulated API's Secrets. A reference to a missing secret or key fails the pod before it starts,
as CreateContainerConfigError does on a cluster.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
# What a container image provides besides the spec's env: a PATH and a HOME. Nothing else of
# the test process leaks in (no AWS keys, no KUBECONFIG).
BASE_ENV = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": tempfile.gettempdir()}


class PodConfigError(RuntimeError):
    """The container cannot start: a secret or key it references does not exist."""


def resolve_env(env: list[dict[str, Any]] | None, secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The container's environment from its spec (later entries win, as in Kubernetes)."""
    resolved: dict[str, str] = {}
    for item in env or []:
        if "value" in item:
            resolved[item["name"]] = _VAR.sub(lambda m: resolved.get(m.group(1), m.group(0)), str(item["value"]))
            continue
        ref = (item.get("valueFrom") or {}).get("secretKeyRef")
        if ref is None:
            raise PodConfigError(f"env {item['name']}: only values and secretKeyRefs are emulated")
        secret = secrets.get(ref["name"])
        if secret is None or ref["key"] not in secret:
            raise PodConfigError(f"env {item['name']}: secret {ref['name']!r} has no key {ref['key']!r}")
        resolved[item["name"]] = secret[ref["key"]]
    return resolved


def expand(words: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' `$(VAR)` expansion of command and args (unknown variables stay as written)."""
    return [_VAR.sub(lambda m: env.get(m.group(1), m.group(0)), word) for word in words]


@dataclass
class ContainerProcess:
    """One running container."""

    name: str
    argv: list[str]
    log: Path
    process: subprocess.Popen = field(repr=False)

    def poll(self) -> int | None:
        return self.process.poll()

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL: what the kubelet does when a pod is deleted."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_container(
    name: str,
    container: dict[str, Any],
    secrets: dict[str, dict[str, str]],
    log_dir: Path,
    extra_env: dict[str, str] | None = None,
    args_override: list[str] | None = None,
) -> ContainerProcess:
    """Start `container` (a serialised V1Container) with the operator's `extra_env` added.

    Raises:
        PodConfigError: Its env references a secret or key that does not exist.
    """
    env = {**BASE_ENV, **resolve_env(container.get("env"), secrets), **(extra_env or {})}
    words = [
        *(container.get("command") or []),
        *(args_override if args_override is not None else container.get("args") or []),
    ]
    argv = expand(words, env)
    if not argv:
        raise PodConfigError(f"container {name} has neither command nor args (the image's entrypoint is not emulated)")
    log = log_dir / f"{name}.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return ContainerProcess(name, argv, log, process)
