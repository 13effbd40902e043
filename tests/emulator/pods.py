"""Run a pod's container as a local process, as the kubelet would run it in the image.

The project's environment stands in for the image: `python` and `dask` resolve to this
interpreter's environment. The container's command and args run exactly as written (with
Kubernetes' `$(VAR)` expansion), with exactly its env: values, and `secretKeyRef`s resolved from
the emulated API's Secrets. A reference to a missing secret or key fails the pod before it starts,
as CreateContainerConfigError does on a cluster.

Each pod has a filesystem of its own where this machine allows it (a mount namespace: root and
`unshare`): an empty /tmp, which is its HOME and working directory, so it sees neither another
pod's files nor the launcher's, and they do not see its files; its volumes (an emptyDir, the
storage initializer's folder) are mounted at their paths. Object storage is what pods share.
The image's own files (this checkout and its environment) stay visible, as a read of the image.
Given a `PodAddress` (see `network.py`), the pod also runs in its own network namespace, with its
name as hostname and its own /etc/hosts.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.emulator.network import PodAddress

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
            resolved[item["name"]] = expand_word(str(item["value"]), resolved)
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
    """Kubernetes' expansion of command and args (see `expand_word`)."""
    return [expand_word(word, env) for word in words]


def expand_word(word: str, env: dict[str, str]) -> str:
    """Kubernetes' expansion of one word: `$(VAR)` becomes its value (an unknown variable stays as
    written), `$$` becomes `$` (the escape), any other `$` stays."""
    out, i = [], 0
    while i < len(word):
        if word[i] != "$" or i + 1 == len(word):
            out.append(word[i])
            i += 1
        elif word[i + 1] == "$":
            out.append("$")
            i += 2
        elif (match := _VAR.match(word, i)) is not None:
            out.append(env.get(match.group(1), match.group(0)))
            i = match.end()
        else:
            out.append("$")
            i += 1
    return "".join(out)


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
    volumes: dict[str, str] | None = None,
    address: PodAddress | None = None,
) -> ContainerProcess:
    """Start `container` (a serialised V1Container) with the operator's `extra_env` added.

    Args:
        volumes: Folders of this machine mounted in the pod, by their path there.
        address: The pod's network (see `network.py`); None: this machine's.

    Raises:
        PodConfigError: Its env references a secret or key that does not exist, or it mounts a
            volume where this machine cannot give a pod a filesystem of its own.
    """
    env = {**BASE_ENV, **resolve_env(container.get("env"), secrets), **(extra_env or {})}
    words = [
        *(container.get("command") or []),
        *(args_override if args_override is not None else container.get("args") or []),
    ]
    argv = expand(words, env)
    if not argv:
        raise PodConfigError(f"container {name} has neither command nor args (the image's entrypoint is not emulated)")
    volumes = volumes or {}
    moved = [path for path, folder in volumes.items() if path != folder]
    if moved and not pods_are_isolated():
        raise PodConfigError(f"container {name} mounts {', '.join(moved)}: this machine has no mount namespaces")
    log = log_dir / f"{name}.log"
    run = _isolated(argv, volumes, name, address) if pods_are_isolated() else argv
    with open(log, "wb") as handle:
        process = subprocess.Popen(run, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return ContainerProcess(name, argv, log, process)


def _isolated(argv: list[str], volumes: dict[str, str], name: str, address: PodAddress | None) -> list[str]:
    """`argv` in a mount namespace of its own: an empty tmpfs over /tmp (its working directory) and
    each volume bound at its path. Volumes are staged under a tmpfs at /run first, as their folders
    here may lie under the /tmp that the pod's own replaces; a volume outside /tmp gets an empty
    tmpfs over its parent folder to be made in. With an `address`, also in the pod's network
    namespace, with its name as hostname and its /etc/hosts."""
    steps = ["mount -t tmpfs tmpfs /run"]
    for i, folder in enumerate(volumes.values()):
        steps.append(f"mkdir /run/volume-{i} && mount --bind {shlex.quote(folder)} /run/volume-{i}")
    if address is not None:
        steps += [f"mount --bind {shlex.quote(str(address.hosts))} /etc/hosts", f"hostname {shlex.quote(name)}"]
    steps.append("mount -t tmpfs tmpfs /tmp")
    outside = {os.path.dirname(path) for path in volumes if not Path(path).is_relative_to("/tmp")}
    steps += [f"mkdir -p {shlex.quote(p)} && mount -t tmpfs tmpfs {shlex.quote(p)}" for p in sorted(outside)]
    for i, path in enumerate(volumes):
        steps.append(f"mkdir -p {shlex.quote(path)} && mount --bind /run/volume-{i} {shlex.quote(path)}")
    steps += ["cd /tmp", 'exec "$@"']
    shell = ["sh", "-c", " && ".join(steps), "sh", *argv]
    if address is None:
        return ["unshare", "--mount", "--propagation", "private", *shell]
    network = ["nsenter", f"--net=/run/netns/{address.netns}"]
    return [*network, "unshare", "--mount", "--uts", "--propagation", "private", *shell]


@functools.cache
def pods_are_isolated() -> bool:
    """Whether pods get a filesystem of their own here: a mount namespace can be made, and
    neither this checkout nor its interpreter lies under /tmp (which each pod replaces)."""
    root = Path(__file__).resolve().parents[2]
    if any(Path(p).resolve().is_relative_to("/tmp") for p in (root, sys.prefix, sys.base_prefix)):
        return False
    if shutil.which("unshare") is None:
        return False
    probe = ["unshare", "--mount", "--propagation", "private", "sh", "-c", "mount -t tmpfs tmpfs /tmp"]
    return subprocess.run(probe, capture_output=True, timeout=30).returncode == 0
