"""A network of its own per pod, as a cluster's CNI and kube-proxy give one.

Each pod gets a network namespace with one interface on a bridge of this emulated cluster and an
address of its own, its own loopback and its own ports (two pods both listen on 8080), its pod name
as hostname, and an /etc/hosts that resolves the cluster's Services as cluster DNS would
(`name`, `name.namespace`, `name.namespace.svc`, `name.namespace.svc.cluster.local`). A Service
has a cluster IP of its own (an address of this machine on the bridge) where a proxy forwards each
port to the targetPort of a *ready* pod that its selector picks (kube-proxy's old userspace mode);
with no ready pod a connection is refused. A headless Service (clusterIP None) resolves to its pods'
addresses. This machine (the launcher's node) reaches pods and Services through the bridge.

So a server bound to 127.0.0.1, or to a port other than the one its Service targets, is not
reached, as on a cluster. Needs root and `ip` (`network_available`); without them the emulator
falls back to one shared loopback.
"""

from __future__ import annotations

import fcntl
import functools
import ipaddress
import itertools
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

Backend = tuple[str, int]
ENDPOINT_POLL_S = 0.2  # how often a Service's proxy looks at its ready endpoints


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@functools.cache
def network_available() -> bool:
    """Whether this machine lets the emulator make network namespaces and a bridge."""
    if shutil.which("ip") is None or shutil.which("nsenter") is None or os.geteuid() != 0:
        return False
    name = f"kfeprobe{os.getpid() % 10**6}"
    try:
        _ip("netns", "add", name)
        _ip("netns", "del", name)
        return True
    except (subprocess.SubprocessError, OSError):
        return False


@dataclass
class PodAddress:
    """A pod's place on the network: its namespace's name, address and /etc/hosts file."""

    netns: str
    ip: str
    hosts: Path


@dataclass
class _Service:
    name: str
    namespace: str
    ip: str  # "None" for a headless Service
    proxies: list[ServiceProxy] = field(default_factory=list)
    headless_ips: Callable[[], list[str]] = list


class ServiceProxy:
    """Forward connections to `(ip, port)` to one of `backends()` (round robin). It listens only
    while there is a backend: with none, a connection is refused, as kube-proxy rejects it."""

    def __init__(self, ip: str, port: int, backends: Callable[[], list[Backend]]) -> None:
        self.address, self.backends, self._turn = (ip, port), backends, itertools.count()
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        listener: socket.socket | None = None
        while not self.closed.is_set():
            if listener is None and self.backends():
                listener = socket.create_server(self.address)
                listener.settimeout(ENDPOINT_POLL_S)
            elif listener is not None and not self.backends():
                listener.close()
                listener = None
            if listener is None:
                time.sleep(ENDPOINT_POLL_S)
                continue
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._forward, args=(client,), daemon=True).start()
        if listener is not None:
            listener.close()

    def _forward(self, client: socket.socket) -> None:
        backends = self.backends()
        try:
            if not backends:
                raise ConnectionRefusedError("no ready endpoint")
            upstream = socket.create_connection(backends[next(self._turn) % len(backends)], timeout=5)
        except OSError:
            # No endpoint, or it does not listen there: the client's connection is reset.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            client.close()
            return
        upstream.settimeout(None)
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
        _pump(client, upstream)

    def close(self) -> None:
        """Stop listening (before this returns: the address may be reused at once)."""
        self.closed.set()
        self.thread.join()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy `source` to `sink` until end of stream, then half-close `sink` as TCP would."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        for sock in (source, sink):
            sock.close()


class ClusterNetwork:
    """A bridge with a /24 for pods and one for Service IPs; pods and Services come and go."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.tag = folder, f"{os.getpid()}n{next(_instances)}"
        self.bridge = f"kfe{self.tag}"  # at most 15 characters: a pid has at most 7 digits
        # One machine-wide lock while a subnet is chosen and taken: test runs side by side get
        # subnets of their own.
        with open("/run/kfe-network.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _remove_stale()
            octet = _free_octet()
            self.pod_net = ipaddress.ip_network(f"10.244.{octet}.0/24")
            self.gateway = str(self.pod_net[1])
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        self.service_net = ipaddress.ip_network(f"10.245.{octet}.0/24")
        self._pod_ips = (str(ip) for ip in itertools.islice(self.pod_net.hosts(), 1, None))
        self._service_ips = (str(ip) for ip in itertools.islice(self.service_net.hosts(), 0, None))
        self.pods: dict[str, PodAddress] = {}
        self._index = itertools.count()
        self.services: dict[tuple[str, str], _Service] = {}
        self.lock = threading.Lock()

    def add_pod(self, name: str, namespace: str) -> PodAddress:
        """A network namespace wired to the bridge, and the pod's /etc/hosts as DNS answers now."""
        with self.lock:
            index, ip = next(self._index), next(self._pod_ips)
        netns, veth = f"kfe{self.tag}-{index}", f"kv{uuid.uuid4().hex[:12]}"
        _ip("netns", "add", netns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("link", "set", veth, "master", self.bridge, "up")
        _ip("-n", netns, "addr", "add", f"{ip}/24", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("-n", netns, "route", "add", "default", "via", self.gateway)
        hosts = self.folder / f"{name}.hosts"
        address = PodAddress(netns, ip, hosts)
        with self.lock:
            self.pods[name] = address
        hosts.write_text(self._hosts(name, namespace, ip))
        return address

    def remove_pod(self, name: str) -> None:
        with self.lock:
            address = self.pods.pop(name, None)
        if address is not None:
            subprocess.run(["ip", "netns", "del", address.netns], capture_output=True, timeout=30)

    def add_service(
        self,
        name: str,
        namespace: str,
        ports: list[tuple[int, Callable[[], list[Backend]]]],
        headless_ips: Callable[[], list[str]] | None = None,
    ) -> str:
        """A Service's cluster IP with a proxy per port (or, headless, its pods' addresses by
        name); returns its cluster IP ("None" when headless)."""
        if headless_ips is not None:
            service = _Service(name, namespace, "None", headless_ips=headless_ips)
        else:
            with self.lock:
                ip = next(self._service_ips)
            _ip("addr", "add", f"{ip}/32", "dev", self.bridge)
            service = _Service(name, namespace, ip)
            service.proxies = [ServiceProxy(ip, port, backends) for port, backends in ports]
        with self.lock:
            self.services[(namespace, name)] = service
        return service.ip

    def remove_service(self, name: str, namespace: str) -> None:
        with self.lock:
            service = self.services.pop((namespace, name), None)
        if service is None:
            return
        for proxy in service.proxies:
            proxy.close()
        if service.ip != "None":
            subprocess.run(["ip", "addr", "del", f"{service.ip}/32", "dev", self.bridge], capture_output=True)

    def _hosts(self, pod: str, namespace: str, ip: str) -> str:
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", f"{ip}\t{pod}"]
        with self.lock:
            services = list(self.services.values())
        for service in services:
            names = [f"{service.name}.{service.namespace}", f"{service.name}.{service.namespace}.svc"]
            names.append(f"{service.name}.{service.namespace}.svc.cluster.local")
            if service.namespace == namespace:  # the pod's DNS search path
                names.insert(0, service.name)
            addresses = [service.ip] if service.ip != "None" else service.headless_ips()
            lines += [f"{address}\t{' '.join(names)}" for address in addresses]
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        for name in list(self.services):
            self.remove_service(name[1], name[0])
        for pod in list(self.pods):
            self.remove_pod(pod)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=30)


_instances = itertools.count()
_OWNER = re.compile(r"kfe(\d+)n\d+")


def _remove_stale() -> None:
    """Remove the namespaces and bridges that emulators of processes that died (killed) left."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    links = subprocess.run(["ip", "-o", "link", "show", "type", "bridge"], capture_output=True, text=True).stdout
    bridges = [line.split(":")[1].strip() for line in links.splitlines()]
    for name in [*netns, *bridges]:
        if (match := _OWNER.match(name)) is not None and not Path(f"/proc/{match.group(1)}").exists():
            kind = ["netns", "del"] if name in netns else ["link", "del"]
            subprocess.run(["ip", *kind, name], capture_output=True)


def _free_octet() -> int:
    """A third octet whose 10.244.x.0/24 no interface of this machine uses (another emulator's)."""
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    for octet in range(1, 255):
        if f"10.244.{octet}." not in used:
            return octet
    raise RuntimeError("no free 10.244.x.0/24 for an emulated cluster network")
