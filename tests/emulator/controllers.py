"""What the operators and the kubelet do, for real, on this machine: each controller starts the
containers of the pods its operator would create, as local processes (see `pods.py`), adds the
environment, arguments and Services the operator adds, and writes a status derived from what the
processes did; `Pods` is the kubelet (images, service-account volumes, readiness probes) and,
with `network.py`, kube-proxy and cluster DNS.

Mimicked: Katib 0.19 (the StdOut metrics collector with its pod webhook's `sh -c` rewrite of the
trial container, trial template substitution, the validating webhook's rules), Training Operator
1.9 (its webhook, headless replica Services, master/worker env), KServe 0.20 (its webhook, a
storage initializer per pod with the service account's S3 secret, Services, transformer
arguments, readiness), the dask-kubernetes operator 2026.3 (the scheduler's Service, scheduler and
worker env), and the garbage collector (ownerReferences). Not mimicked: scheduling, resources,
network policies. Where this machine cannot give pods networks of their own, they share its
loopback and the ports a spec names are remapped where two processes would collide (noted where
it happens)"""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.emulator.apiserver import ApiServer
from tests.emulator.network import ClusterNetwork
from tests.emulator.pods import ContainerProcess, PodConfigError, pods_are_isolated, start_container

# Katib's default StdOut metrics format (its `DefaultFilter`): name=value anywhere in a line.
KATIB_METRIC = re.compile(r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)")
LOOPBACK = "127.0.0.1"  # every pod's address where pods share this machine's network
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
PROBE_PERIOD_S = 0.3  # the kubelet's probe period, shortened for tests
KATIB_ALGORITHMS = {"random", "tpe", "grid", "bayesianoptimization", "hyperband", "cmaes", "sobol", "multivariate-tpe"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _owner(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "apiVersion": obj.get("apiVersion", "v1"),
        "kind": obj.get("kind", ""),
        "name": meta["name"],
        "uid": meta["uid"],
    }


class Pods:
    """Pods as API objects whose single container runs as a local process; deleting the pod (or
    its owner, through the garbage collector) stops the process."""

    def __init__(self, server: ApiServer, log_dir: Path, network: ClusterNetwork | None = None) -> None:
        self.server, self.log_dir, self.network = server, log_dir, network
        self.running: dict[str, ContainerProcess] = {}
        self.history: list[ContainerProcess] = []  # every container started, for the tests to read
        self.pull_secret = ""  # when set, a pod without this image pull secret cannot pull the image
        # The images the registry holds (None: any). Operators' own images are always there.
        self.images: set[str] | None = None
        # The API server as pods reach it (the `kubernetes` Service's address and port) and its CA.
        self.api: tuple[str, int, Path] | None = None
        # Folders of this machine that every pod mounts at the same path (a ReadWriteMany volume):
        # what a rehearsal through kfp.local, whose artifacts are local paths, declares.
        self.shared: list[str] = []
        server.on_delete.setdefault("pods", []).append(self._deleted)
        server.on_create.setdefault("services", []).append(self._service_created)
        server.on_delete.setdefault("services", []).append(self._service_deleted)

    def run(
        self,
        owner: dict[str, Any],
        name: str,
        container: dict[str, Any],
        labels: dict[str, str] | None = None,
        extra_env: dict[str, str] | None = None,
        args_override: list[str] | None = None,
        volumes: dict[str, str] | None = None,
    ) -> ContainerProcess | None:
        """Create the pod and start its container (with `volumes`: folders here by their path in
        the pod); None (and a Failed pod) when it cannot start."""
        namespace = owner["metadata"]["namespace"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": labels or {},
                "ownerReferences": [_owner(owner)],
            },
            "spec": {"containers": [container]},
            "status": {"phase": "Pending"},
        }
        self.server.put("pods", pod)
        pulls = [s.get("name") for s in owner_pod_spec(owner, container).get("imagePullSecrets") or []]
        pull_error = _pull_error(container.get("image", ""), self.images)
        if self.pull_secret and self.pull_secret not in pulls:
            pull_error = ("ImagePullBackOff", "pull access denied: the image is in a private registry")
        if pull_error is not None:
            pod["status"] = _waiting(*pull_error)
            pod["_log"] = lambda: f'container "{container.get("name")}" is waiting to start: {pull_error[1]}'
            return None
        address = self.network.add_pod(name, namespace) if self.network is not None else None
        pod["status"]["podIP"] = address.ip if address is not None else LOOPBACK
        volumes = {**{folder: folder for folder in self.shared}, **(volumes or {})}
        account = owner_pod_spec(owner, container).get("serviceAccountName") or "default"
        env = {"HOSTNAME": name, **self._service_account(name, namespace, account, volumes), **(extra_env or {})}
        try:
            process = start_container(
                name, container, self.server.secrets(namespace), self.log_dir, env, args_override, volumes, address
            )
        except (PodConfigError, FileNotFoundError, PermissionError) as exc:
            message = f"{type(exc).__name__}: {exc}"
            reason = "CreateContainerConfigError" if isinstance(exc, PodConfigError) else "RunContainerError"
            pod["status"] = {
                **_waiting(reason, message),
                "phase": "Failed" if reason == "RunContainerError" else "Pending",
            }
            pod["_log"] = lambda: message
            return None
        self.running[pod["metadata"]["uid"]] = process
        self.history.append(process)
        pod["_log"] = process.text
        pod["status"] = {"phase": "Running", "podIP": pod["status"]["podIP"], "conditions": _ready(False)}
        threading.Thread(target=self._watch, args=(pod, process), daemon=True).start()
        threading.Thread(target=self._probe, args=(pod, container, process), daemon=True).start()
        return process

    def _service_account(self, pod: str, namespace: str, account: str, volumes: dict[str, str]) -> dict[str, str]:
        """Mount the service account's token, the CA and the namespace at Kubernetes' path (added
        to `volumes`) where pods have filesystems of their own; the API's env for in-cluster
        clients."""
        if self.api is None or not pods_are_isolated():
            return {}
        folder = self.log_dir / f"{pod}-serviceaccount"
        folder.mkdir(exist_ok=True)
        (folder / "token").write_text(self.server.token_for(namespace, account))
        (folder / "namespace").write_text(namespace)
        shutil.copy(self.api[2], folder / "ca.crt")
        volumes[SERVICE_ACCOUNT_DIR] = str(folder)
        return {"KUBERNETES_SERVICE_HOST": self.api[0], "KUBERNETES_SERVICE_PORT": str(self.api[1])}

    def _watch(self, pod: dict[str, Any], process: ContainerProcess) -> None:
        code = process.process.wait()
        pod["status"] = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "podIP": pod["status"]["podIP"],
            "conditions": _ready(False),
            "exitCode": code,
        }

    def _probe(self, pod: dict[str, Any], container: dict[str, Any], process: ContainerProcess) -> None:
        """The kubelet's readiness probe (httpGet or tcpSocket) against the pod's address and the
        port its container declares, until the container exits; Ready when it has none."""
        probe = container.get("readinessProbe")
        failures, ready = 0, False
        while process.poll() is None:
            if probe is None or _probe_once(probe, pod["status"]["podIP"], container):
                failures, ready = 0, True
            else:  # unready after failureThreshold failures in a row (Kubernetes' default: 3)
                failures += 1
                ready = ready and failures < (probe.get("failureThreshold") or 3)
            if pod["status"].get("phase") == "Running":
                pod["status"]["conditions"] = _ready(ready)
            time.sleep(PROBE_PERIOD_S)

    def _deleted(self, pod: dict[str, Any]) -> None:
        process = self.running.pop(pod["metadata"]["uid"], None)
        if process is not None:
            process.stop()
        if self.network is not None:
            self.network.remove_pod(pod["metadata"]["name"])

    # --- Services: kube-proxy and cluster DNS (see network.py) -----------------------------------
    def _service_created(self, service: dict[str, Any]) -> None:
        spec, meta = service["spec"], service["metadata"]
        if self.network is None:
            spec.setdefault("clusterIP", LOOPBACK)
            return
        namespace, selector = meta["namespace"], spec.get("selector") or {}
        if spec.get("clusterIP") == "None":
            headless = lambda: [p["status"]["podIP"] for p in self._selected(namespace, selector)]  # noqa: E731
            self.network.add_service(meta["name"], namespace, [], headless)
            return
        fixed = service.get("_target")  # a Service for something outside the cluster's pods

        def backends(port: dict[str, Any]) -> Callable[[], list[tuple[str, int]]]:
            if fixed is not None:
                return lambda: [fixed]
            target = port.get("targetPort", port["port"])
            return lambda: [
                (pod["status"]["podIP"], _container_port(pod["spec"]["containers"][0], target))
                for pod in self._selected(namespace, selector)
                if _is_ready(pod)
            ]

        ports = [(int(port["port"]), backends(port)) for port in spec.get("ports") or []]
        spec["clusterIP"] = self.network.add_service(meta["name"], namespace, ports)

    def _service_deleted(self, service: dict[str, Any]) -> None:
        if self.network is not None:
            self.network.remove_service(service["metadata"]["name"], service["metadata"]["namespace"])

    def _selected(self, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        return [
            pod
            for pod in self.server.list("pods", namespace)
            if "podIP" in (pod.get("status") or {})
            and all((pod["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
        ]

    def stop_all(self) -> None:
        for process in list(self.running.values()):
            process.stop()
        self.running.clear()

    def alive(self) -> list[ContainerProcess]:
        return [p for p in self.running.values() if p.poll() is None]


# A reference as the container runtime parses it: [registry[:port]/]path[:tag][@digest], lower case.
_COMPONENT = r"[a-z0-9]+([._-]+[a-z0-9]+)*"
IMAGE_REFERENCE = re.compile(rf"{_COMPONENT}(:[0-9]+)?(/{_COMPONENT})*(:[\w][\w.-]{{0,127}})?(@sha256:[0-9a-f]{{64}})?")
OPERATOR_IMAGES = {"kserve/storage-initializer:v0.20.0"}


def _pull_error(image: str, images: set[str] | None) -> tuple[str, str] | None:
    """Why the kubelet cannot pull `image` (a reason and message), or None. A reference without a
    tag means `:latest`, which the registry must hold like any other tag."""
    if not image or not IMAGE_REFERENCE.fullmatch(image):
        return "InvalidImageName", f'Failed to apply default image tag "{image}": invalid reference format'
    last = image.rsplit("/", 1)[-1]
    reference = image if ":" in last or "@" in last else f"{image}:latest"
    if images is not None and reference not in images | OPERATOR_IMAGES:
        return "ImagePullBackOff", f'Back-off pulling image "{reference}": manifest unknown'
    return None


def _ready(ready: bool) -> list[dict[str, str]]:
    return [{"type": "Ready", "status": "True" if ready else "False"}]


def _is_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


def _container_port(container: dict[str, Any], port: int | str) -> int:
    """A port by number, or by the name the container gives one of its ports.

    Raises:
        ValueError: No port of the container has that name.
    """
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise ValueError(f"container {container.get('name')} has no port named {port!r}")


def _probe_once(probe: dict[str, Any], ip: str, container: dict[str, Any]) -> bool:
    """One readiness check as the kubelet makes it: an HTTP status 200-399, or a TCP connect,
    within the probe's timeoutSeconds (Kubernetes' default: 1)."""
    import httpx

    timeout = probe.get("timeoutSeconds") or 1
    try:
        if "httpGet" in probe:
            get = probe["httpGet"]
            url = f"http://{ip}:{_container_port(container, get['port'])}{get.get('path', '/')}"
            return 200 <= httpx.get(url, timeout=timeout).status_code < 400
        if "tcpSocket" in probe:
            port = _container_port(container, probe["tcpSocket"]["port"])
            socket.create_connection((ip, port), timeout=timeout).close()
            return True
    except (httpx.HTTPError, OSError, ValueError):
        return False
    raise ValueError(f"readinessProbe {sorted(probe)}: only httpGet and tcpSocket are emulated")


def _accepts(address: str) -> bool:
    """Whether `host` or `host:port` (port 80 without one) takes a TCP connection."""
    host, _, port = address.partition(":")
    try:
        socket.create_connection((host, int(port or 80)), timeout=1).close()
        return True
    except OSError:
        return False


def _waiting(reason: str, message: str) -> dict[str, Any]:
    """A pod status whose container waits (cannot start), as the kubelet reports it."""
    state = {"waiting": {"reason": reason, "message": message}}
    return {
        "phase": "Pending",
        "message": message,
        "containerStatuses": [
            {"name": "main", "ready": False, "restartCount": 0, "image": "", "imageID": "", "state": state}
        ],
    }


def owner_pod_spec(owner: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
    """The pod spec in `owner` that holds `container` (its pull secrets, selectors, tolerations)."""

    def specs(node: Any) -> Any:
        if isinstance(node, dict):
            if isinstance(node.get("containers"), list):
                yield node
            for value in node.values():
                yield from specs(value)
        elif isinstance(node, list):
            for value in node:
                yield from specs(value)

    for spec in specs(owner.get("spec")):
        if any(
            c.get("name") == container.get("name") and c.get("image") == container.get("image")
            for c in spec["containers"]
        ):
            return spec
    return {}


class Controller:
    """Reconciles objects of one plural in a thread per object."""

    plural = ""

    def __init__(self, server: ApiServer, pods: Pods) -> None:
        self.server, self.pods = server, pods
        server.on_create.setdefault(self.plural, []).append(self._created)

    def _created(self, obj: dict[str, Any]) -> None:
        threading.Thread(target=self._reconcile_safely, args=(obj,), daemon=True).start()

    def _reconcile_safely(self, obj: dict[str, Any]) -> None:
        try:
            self.reconcile(obj)
        except Exception as exc:  # a controller bug must show in the status, not vanish in a thread
            obj["status"] = {**(obj.get("status") or {}), "controllerError": repr(exc)}
            raise

    def deleted(self, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        current = self.server.get(self.plural, meta["namespace"], meta["name"])
        return current is None or current["metadata"]["uid"] != meta["uid"]

    def reconcile(self, obj: dict[str, Any]) -> None:
        raise NotImplementedError


def _wait(process: ContainerProcess | None, stop: Callable[[], bool]) -> int | None:
    """The process's exit code, or None when it could not start or `stop` says the owner went."""
    if process is None:
        return None
    while process.poll() is None:
        if stop():
            process.stop()
            return None
        time.sleep(0.2)
    return process.poll()


# --- Katib ---------------------------------------------------------------------------------------
KATIB_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
KATIB_PARAMETER_TYPES = {"int", "double", "categorical", "discrete"}
KATIB_DISTRIBUTIONS = {"", "uniform", "logUniform", "normal", "logNormal"}
KATIB_PLACEHOLDER = re.compile(r"\$\{trialParameters\.[^}]+\}")
KATIB_METRICS_DIR = "/var/log/katib"  # the StdOut collector's metrics.log is in this emptyDir


def validate_experiment(exp: dict[str, Any]) -> None:
    """Katib's admission checks of an Experiment (its validating webhook's rules for what our
    bodies set).

    Raises:
        ValueError: The webhook's refusal.
    """
    name, spec = exp["metadata"]["name"], exp["spec"]
    if not KATIB_NAME.fullmatch(name) or len(name) > 40:
        raise ValueError(f"metadata.name {name!r}: lower case alphanumerics or '-', at most 40 characters")
    max_trials = spec.get("maxTrialCount")
    parallel, max_failed = spec.get("parallelTrialCount"), spec.get("maxFailedTrialCount")
    if max_failed is not None and max_failed < 0:
        raise ValueError("spec.maxFailedTrialCount: should not be less than 0")
    if max_trials is not None and max_trials <= 0:
        raise ValueError("spec.maxTrialCount: must be greater than 0")
    if parallel is not None and parallel <= 0:
        raise ValueError("spec.parallelTrialCount: must be greater than 0")
    if max_trials is not None:
        if (parallel or 0) > max_trials:
            raise ValueError("parallelTrialCount must be less than or equal to maxTrialCount")
        if (max_failed or 0) > max_trials:
            raise ValueError("maxFailedTrialCount should be less than or equal to maxTrialCount")
    if spec["algorithm"]["algorithmName"] not in KATIB_ALGORITHMS:
        raise ValueError(f"unknown algorithm {spec['algorithm']['algorithmName']}")
    for parameter in spec["parameters"]:
        _validate_parameter(parameter, spec["algorithm"]["algorithmName"])
    template = spec["trialTemplate"]
    names = {p["name"] for p in spec["parameters"]}
    text = json.dumps(template["trialSpec"])
    seen: set[str] = set()
    for trial_parameter in template["trialParameters"]:
        if trial_parameter["reference"] not in names:
            raise ValueError(f"trialParameter {trial_parameter['name']} references no parameter")
        if trial_parameter["name"] in seen:
            raise ValueError(f"trialParameter {trial_parameter['name']} is duplicated")
        seen.add(trial_parameter["name"])
        placeholder = f"${{trialParameters.{trial_parameter['name']}}}"
        if placeholder not in text:
            raise ValueError(f"trialParameter {trial_parameter['name']} is not found in spec.trialTemplate")
        text = text.replace(placeholder, "test-value")
    if KATIB_PLACEHOLDER.search(text):
        raise ValueError(f"parameters {KATIB_PLACEHOLDER.findall(text)} in spec.trialTemplate not in trialParameters")
    containers = template["trialSpec"]["spec"]["template"]["spec"]["containers"]
    primary = [c for c in containers if c["name"] == template["primaryContainerName"]]
    if not primary:
        raise ValueError(f"no container named {template['primaryContainerName']} in the trial template")
    if spec["metricsCollectorSpec"]["collector"]["kind"] == "StdOut" and not primary[0].get("command"):
        raise ValueError("the StdOut metrics collector needs the primary container's command")


def _validate_parameter(parameter: dict[str, Any], algorithm: str) -> None:
    """Katib's rules for one parameter, and its grid suggestion's (a double range needs a step)."""
    kind, space = parameter["parameterType"], parameter.get("feasibleSpace") or {}
    where = f"spec.parameters {parameter['name']}"
    if kind not in KATIB_PARAMETER_TYPES:
        raise ValueError(f"{where}: parameterType {kind} is not supported")
    if space.get("distribution", "") not in KATIB_DISTRIBUTIONS:
        raise ValueError(f"{where}: distribution {space['distribution']} is not supported")
    if not space:
        raise ValueError(f"{where}: feasibleSpace must be specified")
    if kind in ("int", "double"):
        if space.get("list"):
            raise ValueError(f"{where}: feasibleSpace.list is not supported for parameterType {kind}")
        if not space.get("min") or not space.get("max"):
            raise ValueError(f"{where}: feasibleSpace.max or feasibleSpace.min must be specified")
        if algorithm == "grid" and kind == "double" and not space.get("step"):
            raise ValueError(f"{where}: the grid algorithm needs a step (Param: {parameter['name']} step is nil)")
    elif space.get("min") or space.get("max") or space.get("step"):
        raise ValueError(f"{where}: feasibleSpace .max, .min and .step is not supported for parameterType {kind}")


def wrap_worker_container(container: dict[str, Any], metrics_dir: str) -> dict[str, Any]:
    """The trial container as Katib's pod webhook leaves it with the StdOut collector
    (`wrapWorkerContainer`): `sh -c` of the command and args joined by spaces, output to the
    metrics file; a command that already is `sh -c` (or `bash -c`) keeps its shell."""
    words = [*(container.get("command") or []), *(container.get("args") or [])]
    command = ["sh", "-c"]
    if len(words) > 1 and words[0] in ("sh", "bash") and words[1] == "-c":
        command, words = words[:2], words[2:]
    words += [f"1>{metrics_dir}/metrics.log 2>&1", "&&", f"echo completed > {metrics_dir}/$$$$.pid"]
    return {**container, "command": command, "args": [" ".join(words)]}


def sample(parameter: dict[str, Any], rng: random.Random) -> str:
    """One value of a parameter, as Katib passes it (a string)."""
    space, kind = parameter["feasibleSpace"], parameter["parameterType"]
    if kind in ("discrete", "categorical"):
        return rng.choice(space["list"])
    low, high = float(space["min"]), float(space["max"])
    if kind == "int":
        step = int(space.get("step") or 1)
        return str(rng.randrange(int(low), int(high) + 1, step))
    if space.get("distribution") == "logUniform":
        return repr(math.exp(rng.uniform(math.log(low), math.log(high))))
    return repr(rng.uniform(low, high))


class KatibController(Controller):
    plural = "experiments"

    def __init__(self, server: ApiServer, pods: Pods) -> None:
        super().__init__(server, pods)
        server.validators.setdefault(self.plural, []).append(validate_experiment)

    def reconcile(self, exp: dict[str, Any]) -> None:
        spec, name = exp["spec"], exp["metadata"]["name"]
        template = spec["trialTemplate"]
        objective = spec["objective"]
        metric_names = [objective["objectiveMetricName"], *objective.get("additionalMetricNames", [])]
        minimize = objective["type"] == "minimize"
        rng = random.Random(name)
        status: dict[str, Any] = {"trialsSucceeded": 0, "trialsFailed": 0, "trialsRunning": 0, "conditions": []}
        exp["status"] = status
        best: dict[str, Any] | None = None
        for number in range(spec["maxTrialCount"]):
            if self.deleted(exp):
                return
            assignments = {p["name"]: sample(p, rng) for p in spec["parameters"]}
            text = json.dumps(template["trialSpec"])
            for trial_parameter in template["trialParameters"]:
                text = text.replace(
                    f"${{trialParameters.{trial_parameter['name']}}}", assignments[trial_parameter["reference"]]
                )
            job = json.loads(text)
            (container,) = [
                c
                for c in job["spec"]["template"]["spec"]["containers"]
                if c["name"] == template["primaryContainerName"]
            ]
            trial = f"{name}-trial-{number}"
            # The metrics folder: an emptyDir the trial shares with the collector's sidecar.
            metrics_dir = self.pods.log_dir / f"{trial}-katib"
            metrics_dir.mkdir()
            volumes = {KATIB_METRICS_DIR: str(metrics_dir)} if pods_are_isolated() else None
            if spec["metricsCollectorSpec"]["collector"]["kind"] == "StdOut":
                container = wrap_worker_container(container, KATIB_METRICS_DIR if volumes else str(metrics_dir))
            status["trialsRunning"] = 1
            process = self.pods.run(exp, trial, container, {"katib.kubeflow.org/experiment": name}, volumes=volumes)
            code = _wait(process, lambda: self.deleted(exp))
            status["trialsRunning"] = 0
            metrics = metrics_dir / "metrics.log"
            observed = self._collect(metrics.read_text(errors="replace") if metrics.exists() else "", metric_names)
            if code == 0 and objective["objectiveMetricName"] in observed:
                status["trialsSucceeded"] += 1
                # Katib's default metric strategy: the objective's min (minimize) or max.
                value = observed[objective["objectiveMetricName"]]["min" if minimize else "max"]
                better = best is None or (value < best["value"] if minimize else value > best["value"])
                if better:
                    best = {"value": value, "assignments": assignments, "metrics": observed}
                    status["currentOptimalTrial"] = {
                        "bestTrialName": f"{name}-trial-{number}",
                        "parameterAssignments": [{"name": k, "value": v} for k, v in assignments.items()],
                        "observation": {
                            "metrics": [{"name": k, **{s: str(x) for s, x in v.items()}} for k, v in observed.items()]
                        },
                    }
            else:
                status["trialsFailed"] += 1
                if status["trialsFailed"] > spec.get("maxFailedTrialCount", 0):
                    message = f"Experiment has reached the maximum number of {status['trialsFailed']} failed trials."
                    reason = "ExperimentMaxFailedTrialsReached"
                    status["conditions"] = [{"type": "Failed", "status": "True", "reason": reason, "message": message}]
                    return
        status["conditions"] = [{"type": "Succeeded", "status": "True", "reason": "ExperimentMaxTrialsReached"}]

    @staticmethod
    def _collect(text: str, names: list[str]) -> dict[str, dict[str, float]]:
        """Katib's StdOut collector: every `name=value` of a wanted metric, as min, max and latest."""
        values: dict[str, list[float]] = {}
        for line in text.splitlines():
            for match in KATIB_METRIC.finditer(line):
                if match.group(1) in names:
                    try:
                        values.setdefault(match.group(1), []).append(float(match.group(2)))
                    except ValueError:
                        continue
        return {k: {"min": min(v), "max": max(v), "latest": v[-1]} for k, v in values.items()}


# --- Training Operator ---------------------------------------------------------------------------
DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def validate_pytorchjob(job: dict[str, Any]) -> None:
    """The Training Operator's validating webhook for a v1 PyTorchJob.

    Raises:
        ValueError: Its refusal.
    """
    name = job["metadata"]["name"]
    if not DNS_1035.fullmatch(name) or len(name) > 63:
        raise ValueError(f"metadata.name {name!r}: should match a DNS-1035 label")
    specs = (job.get("spec") or {}).get("pytorchReplicaSpecs")
    if not specs:
        raise ValueError("spec.pytorchReplicaSpecs: must be required")
    for replica_type, spec in specs.items():
        where = f"spec.pytorchReplicaSpecs[{replica_type}]"
        if replica_type not in ("Master", "Worker"):
            raise ValueError(f"{where}: supported values: Master, Worker")
        containers = ((spec or {}).get("template") or {}).get("spec", {}).get("containers") or []
        if not containers:
            raise ValueError(f"{where}.template.spec.containers: must be specified")
        for index, container in enumerate(containers):
            if not container.get("image"):
                raise ValueError(f"{where}.template.spec.containers[{index}].image: must be required")
        if not any(c.get("name") == PyTorchJobController.container for c in containers):
            raise ValueError(f"{where}.template.spec.containers: must have at least one container with name pytorch")
        if replica_type == "Master" and spec.get("replicas") != 1:
            raise ValueError(f"{where}.replicas: must be 1")


class PyTorchJobController(Controller):
    """The Training Operator: a headless Service per replica (so `<job>-master-0` resolves to the
    master pod), then the replicas with the env it sets; the master port is the container's port
    named `pytorchjob-port`, else 23456, as the operator's default."""

    plural = "pytorchjobs"
    container = "pytorch"
    default_port = 23456

    def __init__(self, server: ApiServer, pods: Pods) -> None:
        super().__init__(server, pods)
        server.validators.setdefault(self.plural, []).append(validate_pytorchjob)

    def reconcile(self, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        replicas = job["spec"]["pytorchReplicaSpecs"]
        total = sum(spec.get("replicas", 1) for spec in replicas.values())
        pods: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        for replica_type in ("Master", "Worker"):
            spec = replicas.get(replica_type)
            for index in range(spec.get("replicas", 1) if spec else 0):
                containers = [c for c in spec["template"]["spec"]["containers"] if c["name"] == self.container]
                pod = f"{name}-{replica_type.lower()}-{index}"
                if not containers:
                    self._fail(job, f"replica {pod} has no container named {self.container!r}")
                    return
                labels = {
                    "training.kubeflow.org/job-name": name,
                    "training.kubeflow.org/replica-type": replica_type.lower(),
                    "training.kubeflow.org/replica-index": str(index),
                }
                pods.append((pod, containers[0], labels))
        declared = [p for p in pods[0][1].get("ports") or [] if p.get("name") == "pytorchjob-port"]
        port = int(declared[0]["containerPort"]) if declared else self.default_port
        if self.pods.network is None:  # one shared loopback: the master's address is this machine's
            master, port = LOOPBACK, free_port()
        else:
            master = f"{name}-master-0"
            for pod, _, labels in pods:
                self.server.put("services", _service(job, pod, labels, [{"port": port}], headless=True))
        started: list[tuple[str, ContainerProcess | None]] = []
        for rank, (pod, container, labels) in enumerate(pods):
            env = {
                "PYTHONUNBUFFERED": "0",  # the operator's value (any non-empty one unbuffers)
                "MASTER_ADDR": master,
                "MASTER_PORT": str(port),
                "PET_MASTER_ADDR": master,
                "PET_MASTER_PORT": str(port),
                "WORLD_SIZE": str(total),
                "RANK": str(rank),
            }
            started.append((pod, self.pods.run(job, pod, container, labels, env)))
        job["status"] = {"conditions": [{"type": "Running", "status": "True"}]}
        codes = {pod: _wait(process, lambda: self.deleted(job)) for pod, process in started}
        if self.deleted(job):
            return
        failed = [pod for pod, code in codes.items() if code != 0]
        if failed:
            self._fail(job, f"replica(s) {', '.join(failed)} failed (exit {[codes[p] for p in failed]})")
        else:
            job["status"] = {"conditions": [{"type": "Succeeded", "status": "True", "reason": "PyTorchJobSucceeded"}]}

    @staticmethod
    def _fail(job: dict[str, Any], message: str) -> None:
        job["status"] = {
            "conditions": [{"type": "Failed", "status": "True", "reason": "PyTorchJobFailed", "message": message}]
        }


def _service(
    owner: dict[str, Any], name: str, selector: dict[str, str], ports: list[dict[str, Any]], headless: bool = False
) -> dict[str, Any]:
    """A Service an operator creates (owned by its resource)."""
    spec: dict[str, Any] = {"selector": selector, "ports": ports}
    if headless:
        spec["clusterIP"] = "None"
    meta = {"name": name, "namespace": owner["metadata"]["namespace"], "ownerReferences": [_owner(owner)]}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


# --- dask-kubernetes operator --------------------------------------------------------------------
class DaskClusterController(Controller):
    """The operator: the scheduler's Service (from the spec), the scheduler and the workers, with
    the scheduler's address as the Service's DNS name; Running once the Service exists."""

    plural = "daskclusters"
    scheduler_port = 8786

    def reconcile(self, cluster: dict[str, Any]) -> None:
        name, namespace = cluster["metadata"]["name"], cluster["metadata"]["namespace"]
        spec = cluster["spec"]
        cluster["status"] = {"phase": "Created"}
        service = spec["scheduler"]["service"]
        self.server.put("services", _service(cluster, f"{name}-scheduler", service["selector"], service["ports"]))
        if self.pods.network is None:  # one shared loopback: the scheduler keeps its default port
            address = f"tcp://{LOOPBACK}:{self.scheduler_port}"
        else:
            address = f"tcp://{name}-scheduler.{namespace}.svc.cluster.local:{self.scheduler_port}"
        scheduler = spec["scheduler"]["spec"]["containers"][0]
        process = self.pods.run(
            cluster,
            f"{name}-scheduler",
            scheduler,
            {"dask.org/cluster-name": name, "dask.org/component": "scheduler"},
            {"DASK_SCHEDULER_ADDRESS": address},
        )
        if process is None:
            cluster["status"] = {"phase": "Error", "message": "the scheduler pod did not start"}
            return
        # The operator creates the workers at once, and calls the cluster Running once the
        # scheduler's Service exists, not once the scheduler listens.
        worker = spec["worker"]["spec"]["containers"][0]
        for index in range(spec["worker"]["replicas"]):
            worker_name = f"{name}-default-worker-{index}"
            env = {"DASK_WORKER_NAME": worker_name, "DASK_SCHEDULER_ADDRESS": address}
            labels = {"dask.org/cluster-name": name, "dask.org/component": "worker"}
            self.pods.run(cluster, worker_name, worker, labels, env)
        cluster["status"] = {"phase": "Running"}


# --- KServe --------------------------------------------------------------------------------------
# The storage initializer: KServe's image, emulated by a script of the emulator in this image.
STORAGE_INITIALIZER = ["python", str(Path(__file__).with_name("storage_initializer.py"))]
# The annotations by which KServe's credential builder reads an S3 secret of the service account.
S3_ANNOTATIONS = {
    "serving.kserve.io/s3-endpoint": "S3_ENDPOINT",
    "serving.kserve.io/s3-usehttps": "S3_USE_HTTPS",
    "serving.kserve.io/s3-verifyssl": "S3_VERIFY_SSL",
    "serving.kserve.io/s3-region": "AWS_REGION",
}


KSERVE_MODES = {"Serverless", "RawDeployment", "ModelMesh", "Standard", "Knative"}
KSERVE_STORAGE = ("s3://", "gs://", "pvc://", "hdfs://", "webhdfs://", "http://", "https://", "hf://", "oci://", "/")


def validate_inference_service(isvc: dict[str, Any]) -> None:
    """KServe's validating webhook for what our InferenceServices set: a DNS-1035 name, a known
    deployment mode, one implementation per component (custom containers: one each here), and a
    STORAGE_URI of a supported kind.

    Raises:
        ValueError: Its refusal.
    """
    name, annotations = isvc["metadata"]["name"], isvc["metadata"].get("annotations") or {}
    if not DNS_1035.fullmatch(name) or len(name) > 63:
        raise ValueError(
            f'The InferenceService "{name}" is invalid: a DNS-1035 name must consist of lower case alphanumeric '
            "characters or '-', start with an alphabetic character, and end with an alphanumeric character"
        )
    mode = annotations.get("serving.kserve.io/deploymentMode")
    if mode is not None and mode not in KSERVE_MODES:
        raise ValueError(f"the deploymentMode annotation {mode!r} is not one of {sorted(KSERVE_MODES)}")
    spec = isvc.get("spec") or {}
    if "predictor" not in spec:
        raise ValueError("spec.predictor: Required value")
    for role in ("predictor", "transformer"):
        if role not in spec:
            continue
        containers = spec[role].get("containers") or []
        frameworks = [k for k, v in spec[role].items() if isinstance(v, dict) and ("storageUri" in v or k == "model")]
        if len(containers) + len(frameworks) != 1:
            raise ValueError(f"exactly one {role} implementation must be specified: containers or one framework")
        for env in containers[0].get("env") or [] if containers else []:
            if env.get("name") == "STORAGE_URI" and not str(env.get("value", "")).startswith(KSERVE_STORAGE):
                raise ValueError(f"STORAGE_URI {env.get('value')!r}: storage type must be one of {KSERVE_STORAGE}")


def storage_initializer_env(server: ApiServer, namespace: str, account: str) -> list[dict[str, Any]]:
    """The storage initializer's env as KServe's credential builder makes it: from each secret the
    service account lists, its S3 keys (as references) and its annotations' endpoint settings."""
    env: list[dict[str, Any]] = []
    service_account = server.get("serviceaccounts", namespace, account) or {}
    for ref in service_account.get("secrets") or []:
        secret = server.get("secrets", namespace, ref["name"])
        annotations = ((secret or {}).get("metadata") or {}).get("annotations") or {}
        if secret is None or "serving.kserve.io/s3-endpoint" not in annotations:
            continue
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": ref["name"], "key": key}}})
        for annotation, name in S3_ANNOTATIONS.items():
            if annotation in annotations:
                env.append({"name": name, "value": annotations[annotation]})
        scheme = "http" if annotations.get("serving.kserve.io/s3-usehttps") == "0" else "https"
        env.append({"name": "AWS_ENDPOINT_URL", "value": f"{scheme}://{annotations['serving.kserve.io/s3-endpoint']}"})
    return env


class KServeController(Controller):
    """Predictor and transformer of an InferenceService with custom containers (KServe 0.20): a
    storage initializer per pod whose container names a STORAGE_URI, with the credentials of the
    component's service account (`default` when none is named); a Service per component (port 80
    to the container's port) and the arguments KServe appends to a transformer; Ready once the
    kubelet finds both pods ready (their readinessProbe, else a TCP probe of the container's port,
    as Knative's queue-proxy makes) and the route answers (Knative probes its ingress first)."""

    plural = "inferenceservices"
    mount = "/mnt/models"
    port = 8080  # KServe's default container port

    def __init__(self, server: ApiServer, pods: Pods) -> None:
        super().__init__(server, pods)
        server.validators.setdefault(self.plural, []).append(validate_inference_service)
        self.model_dirs: list[str] = []

    def reconcile(self, isvc: dict[str, Any]) -> None:
        name, meta = isvc["metadata"]["name"], isvc["metadata"]
        generation, namespace = meta["generation"], meta["namespace"]
        for pod in self.server.list("pods", namespace):  # a new spec replaces the old pods
            if any(ref.get("uid") == meta["uid"] for ref in pod["metadata"].get("ownerReferences", [])):
                self.server.delete("pods", namespace, pod["metadata"]["name"])
        for service in self.server.list("services", namespace):
            if any(ref.get("uid") == meta["uid"] for ref in service["metadata"].get("ownerReferences", [])):
                self.server.delete("services", namespace, service["metadata"]["name"])
        isvc["status"] = {
            "observedGeneration": generation,
            "conditions": [{"type": "Ready", "status": "False", "reason": "Starting"}],
        }
        started = []
        for role in [r for r in ("predictor", "transformer") if r in isvc["spec"]]:
            component = isvc["spec"][role]
            container = self._container(component["containers"][0])
            args = list(container.get("args") or [])
            if role == "transformer":  # what KServe appends to a transformer's args
                predictor_host = f"{name}-predictor.{namespace}" if self.pods.network else started[0][2]
                args += ["--model_name", name, "--predictor_host", predictor_host, "--http_port", str(self.port)]
            folder, failure = self._initialize_storage(isvc, role, component, container)
            if failure:
                isvc["status"] = _isvc_failed(generation, "ModelLoadFailed", failure)
                return
            port, container = self._localized(container, args, folder)
            labels = {"serving.kserve.io/inferenceservice": name, "component": role}
            service = f"{name}-{role}"
            self.server.put("services", _service(isvc, service, labels, [{"port": 80, "targetPort": port}]))
            volumes = {self.mount: folder} if folder and pods_are_isolated() else None
            process = self.pods.run(isvc, service, container, labels, args_override=container["args"], volumes=volumes)
            address = self.server.get("services", namespace, service)["spec"]["clusterIP"]
            started.append((service, process, address if self.pods.network else f"{LOOPBACK}:{port}"))
        self._wait_ready(isvc, generation, started)

    def _container(self, container: dict[str, Any]) -> dict[str, Any]:
        """The container with the probe it gets: its own readinessProbe, else TCP on its port."""
        declared = [p["containerPort"] for p in container.get("ports") or []]
        probe = container.get("readinessProbe") or {"tcpSocket": {"port": declared[0] if declared else self.port}}
        return {**container, "readinessProbe": probe}

    def _initialize_storage(
        self, isvc: dict[str, Any], role: str, component: dict[str, Any], container: dict[str, Any]
    ) -> tuple[str | None, str]:
        """Run the pod's storage initializer (an init container; a pod of its own here) into a
        fresh folder for its /mnt/models; that folder (None without a STORAGE_URI), or the failure."""
        uri = next((e["value"] for e in container.get("env") or [] if e["name"] == "STORAGE_URI"), None)
        if uri is None:
            return None, ""
        name, namespace = isvc["metadata"]["name"], isvc["metadata"]["namespace"]
        folder = tempfile.mkdtemp(prefix=f"{name}-{role}-models-")
        self.model_dirs.append(folder)
        account = component.get("serviceAccountName") or "default"
        isolated = pods_are_isolated()
        initializer = {
            "name": "storage-initializer",
            "image": "kserve/storage-initializer:v0.20.0",
            "command": [*STORAGE_INITIALIZER, uri, self.mount if isolated else folder],
            "env": storage_initializer_env(self.server, namespace, account),
        }
        volumes = {self.mount: folder} if isolated else None
        process = self.pods.run(isvc, f"{name}-{role}-storage-initializer", initializer, volumes=volumes)
        if _wait(process, lambda: self.deleted(isvc)) != 0:
            log = process.text()[-1500:] if process is not None else "it did not start"
            return None, f"storage initializer of the {role} (service account {account}): {log}"
        return folder, ""

    def _localized(self, container: dict[str, Any], args: list[str], folder: str | None) -> tuple[int, dict[str, Any]]:
        """The container's port and the container to run. Where pods share this machine's loopback
        and disk, its port (and probe) move to a free one and /mnt/models to the folder."""
        declared = [p["containerPort"] for p in container.get("ports") or []]
        port = declared[0] if declared else self.port
        if self.pods.network is not None:
            return port, {**container, "args": args}
        moved, new = [a.replace(self.mount, folder) if folder else a for a in args], free_port()
        for flag in ("--http-port", "--http_port"):
            if flag in moved:
                moved[moved.index(flag) + 1] = str(new)
        probe = json.loads(json.dumps(container["readinessProbe"]).replace(f": {port}", f": {new}"))
        return new, {**container, "args": moved, "ports": [{"containerPort": new}], "readinessProbe": probe}

    def _wait_ready(self, isvc: dict[str, Any], generation: int, started: list[tuple[str, Any, str]]) -> None:
        deadline = time.monotonic() + 120
        namespace = isvc["metadata"]["namespace"]
        while time.monotonic() < deadline and not self.deleted(isvc):
            pods = [self.server.get("pods", namespace, name) for name, _, _ in started]
            if any(process is None or process.poll() is not None for _, process, _ in started):
                text = "\n".join(p.text()[-1500:] for _, p, _ in started if p is not None)
                isvc["status"] = _isvc_failed(generation, "ModelLoadFailed", text)
                return
            # Ready once the route answers, as Knative probes its ingress before it says so: a
            # pod's readiness reaches the Service's proxy a poll later.
            if all(pod is not None and _is_ready(pod) for pod in pods) and _accepts(started[-1][2]):
                url = started[-1][2]
                isvc["status"] = {
                    "observedGeneration": generation,
                    "url": f"http://{url}",
                    "conditions": [{"type": "Ready", "status": "True"}],
                }
                return
            time.sleep(PROBE_PERIOD_S)

    def cleanup(self) -> None:
        for folder in self.model_dirs:
            shutil.rmtree(folder, ignore_errors=True)


def _isvc_failed(generation: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "observedGeneration": generation,
        "conditions": [{"type": "Ready", "status": "False", "reason": reason}],
        "modelStatus": {
            "transitionStatus": "BlockedByFailedLoad",
            "lastFailureInfo": {"reason": reason, "message": message},
        },
    }
