"""What the operators do, for real, on this machine: each controller starts the containers of
the pods its operator would create, as local processes (see `pods.py`), adds the environment and
arguments the operator adds, and writes a status derived from what the processes did.

Mimicked: Katib 0.19 (the StdOut metrics collector with its pod webhook's `sh -c` rewrite of the
trial container, trial template substitution, the validating webhook's rules),
Training Operator 1.9 (PyTorchJob master/worker env), KServe 0.20 (storage initializer,
transformer arguments, readiness), the dask-kubernetes operator 2026.3 (scheduler service and
worker env), and the garbage collector (ownerReferences). Not mimicked: scheduling, images,
resources, network policies; every pod shares the loopback interface, so ports named in a spec
are remapped where two processes would collide (noted where it happens).
"""

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
from tests.emulator.pods import ContainerProcess, PodConfigError, pods_are_isolated, start_container

# Katib's default StdOut metrics format (its `DefaultFilter`): name=value anywhere in a line.
KATIB_METRIC = re.compile(r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)")
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

    def __init__(self, server: ApiServer, log_dir: Path) -> None:
        self.server, self.log_dir = server, log_dir
        self.running: dict[str, ContainerProcess] = {}
        self.history: list[ContainerProcess] = []  # every container started, for the tests to read
        self.pull_secret = ""  # when set, a pod without this image pull secret cannot pull the image
        # Folders of this machine that every pod mounts at the same path (a ReadWriteMany volume):
        # what a rehearsal through kfp.local, whose artifacts are local paths, declares.
        self.shared: list[str] = []
        server.on_delete.setdefault("pods", []).append(self._deleted)

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
        if self.pull_secret and self.pull_secret not in pulls:
            pod["status"] = _waiting("ImagePullBackOff", "pull access denied: the image is in a private registry")
            pod["_log"] = lambda: "ImagePullBackOff: the image is in a private registry"
            return None
        try:
            process = start_container(
                name,
                container,
                self.server.secrets(namespace),
                self.log_dir,
                extra_env,
                args_override,
                {**{folder: folder for folder in self.shared}, **(volumes or {})},
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
        pod["status"] = {"phase": "Running"}
        threading.Thread(target=self._watch, args=(pod, process), daemon=True).start()
        return process

    def _watch(self, pod: dict[str, Any], process: ContainerProcess) -> None:
        code = process.process.wait()
        pod["status"] = {"phase": "Succeeded" if code == 0 else "Failed", "exitCode": code}

    def _deleted(self, pod: dict[str, Any]) -> None:
        process = self.running.pop(pod["metadata"]["uid"], None)
        if process is not None:
            process.stop()

    def stop_all(self) -> None:
        for process in list(self.running.values()):
            process.stop()
        self.running.clear()

    def alive(self) -> list[ContainerProcess]:
        return [p for p in self.running.values() if p.poll() is None]


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
class PyTorchJobController(Controller):
    plural = "pytorchjobs"
    container = "pytorch"

    def reconcile(self, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        replicas = job["spec"]["pytorchReplicaSpecs"]
        total = sum(spec.get("replicas", 1) for spec in replicas.values())
        # The operator points MASTER_ADDR at the master's service; here every pod is on loopback.
        master_port = str(free_port())
        started: list[tuple[str, ContainerProcess | None]] = []
        for replica_type in ("Master", "Worker"):
            spec = replicas.get(replica_type)
            for index in range(spec.get("replicas", 1) if spec else 0):
                containers = [c for c in spec["template"]["spec"]["containers"] if c["name"] == self.container]
                pod = f"{name}-{replica_type.lower()}-{index}"
                if not containers:
                    self._fail(job, f"replica {pod} has no container named {self.container!r}")
                    return
                rank = index + (1 if replica_type == "Worker" else 0)
                env = {
                    "PYTHONUNBUFFERED": "0",
                    "MASTER_ADDR": "127.0.0.1",
                    "MASTER_PORT": master_port,
                    "PET_MASTER_ADDR": "127.0.0.1",
                    "PET_MASTER_PORT": master_port,
                    "WORLD_SIZE": str(total),
                    "RANK": str(rank),
                }
                labels = {
                    "training.kubeflow.org/job-name": name,
                    "training.kubeflow.org/replica-type": replica_type.lower(),
                    "training.kubeflow.org/replica-index": str(index),
                }
                started.append((pod, self.pods.run(job, pod, containers[0], labels, env)))
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


# --- dask-kubernetes operator --------------------------------------------------------------------
class DaskClusterController(Controller):
    plural = "daskclusters"
    # Every pod shares loopback: the scheduler keeps its default port, so one cluster at a time.
    scheduler_port = 8786

    def reconcile(self, cluster: dict[str, Any]) -> None:
        name, namespace = cluster["metadata"]["name"], cluster["metadata"]["namespace"]
        address = f"tcp://127.0.0.1:{self.scheduler_port}"  # the operator: the scheduler service's DNS name
        spec = cluster["spec"]
        cluster["status"] = {"phase": "Created"}
        scheduler = spec["scheduler"]["spec"]["containers"][0]
        process = self.pods.run(
            cluster,
            f"{name}-scheduler",
            scheduler,
            {"dask.org/cluster-name": name, "dask.org/component": "scheduler"},
            {"DASK_SCHEDULER_ADDRESS": address},
        )
        self.server.put(
            "services",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"{name}-scheduler", "namespace": namespace, "ownerReferences": [_owner(cluster)]},
                "spec": {"clusterIP": "127.0.0.1", "ports": spec["scheduler"]["service"]["ports"]},
            },
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
class KServeController(Controller):
    """Storage initializer, predictor and transformer of an InferenceService with custom
    containers. `download(storage_uri, folder)` stands in for the storage initializer's copy."""

    plural = "inferenceservices"
    mount = "/mnt/models"

    def __init__(self, server: ApiServer, pods: Pods, download: Callable[[str, str], None]) -> None:
        super().__init__(server, pods)
        self.download = download
        self.model_dirs: list[str] = []

    def reconcile(self, isvc: dict[str, Any]) -> None:
        name, meta = isvc["metadata"]["name"], isvc["metadata"]
        generation = meta["generation"]
        for pod in self.server.list("pods", meta["namespace"]):  # a new spec replaces the old pods
            if any(ref.get("uid") == meta["uid"] for ref in pod["metadata"].get("ownerReferences", [])):
                self.server.delete("pods", meta["namespace"], pod["metadata"]["name"])
        predictor = isvc["spec"]["predictor"]["containers"][0]
        transformer = isvc["spec"]["transformer"]["containers"][0]
        # KServe's webhook gives each pod whose container names a STORAGE_URI its own storage
        # initializer, which copies the model into that pod's emptyDir at /mnt/models.
        folders = {}
        for role, container in (("predictor", predictor), ("transformer", transformer)):
            uri = next((e["value"] for e in container.get("env", []) if e["name"] == "STORAGE_URI"), None)
            if uri is None:
                continue
            folders[role] = tempfile.mkdtemp(prefix=f"{name}-{role}-models-")
            self.model_dirs.append(folders[role])
            try:
                self.download(uri, folders[role])
            except Exception as exc:
                isvc["status"] = _isvc_failed(generation, "ModelLoadFailed", f"storage initializer: {exc}")
                return
        predictor_port, transformer_port = free_port(), free_port()
        # The pods' own ports, remapped to free ones of this machine; the volume mounted at its path
        # where pods have filesystems of their own, else its path remapped to the folder.
        predictor_args = _remap(predictor["args"], self.mount, folders.get("predictor"), "--http-port", predictor_port)
        transformer_args = _remap(
            transformer["args"], self.mount, folders.get("transformer"), "--http-port", transformer_port
        )
        volumes = {role: {self.mount: folder} for role, folder in folders.items()} if pods_are_isolated() else {}
        # What KServe appends to a transformer's args (its predictor host is the predictor's service).
        transformer_args += [
            "--model_name",
            name,
            "--predictor_host",
            f"127.0.0.1:{predictor_port}",
            "--http_port",
            str(transformer_port),
        ]
        pods = [
            self.pods.run(
                isvc, f"{name}-{role}", container, {"component": role}, args_override=args, volumes=volumes.get(role)
            )
            for role, container, args in (
                ("predictor", predictor, predictor_args),
                ("transformer", transformer, transformer_args),
            )
        ]
        isvc["status"] = {
            "observedGeneration": generation,
            "conditions": [{"type": "Ready", "status": "False", "reason": "Starting"}],
        }
        import httpx

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not self.deleted(isvc):
            if any(p is None or p.poll() is not None for p in pods):
                text = "\n".join(p.text()[-1500:] for p in pods if p is not None)
                isvc["status"] = _isvc_failed(generation, "ModelLoadFailed", text)
                return
            try:
                ready = all(
                    httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200
                    for port in (predictor_port, transformer_port)
                )
            except httpx.TransportError:
                ready = False
            if ready:
                isvc["status"] = {
                    "observedGeneration": generation,
                    "url": f"http://127.0.0.1:{transformer_port}",
                    "conditions": [{"type": "Ready", "status": "True"}],
                }
                return
            time.sleep(0.3)

    def cleanup(self) -> None:
        for folder in self.model_dirs:
            shutil.rmtree(folder, ignore_errors=True)


def _remap(args: list[str], mount: str, folder: str | None, port_flag: str, port: int) -> list[str]:
    if folder is not None and not pods_are_isolated():
        args = [a.replace(mount, folder) for a in args]
    if port_flag in args:
        args[args.index(port_flag) + 1] = str(port)
    return args


def _isvc_failed(generation: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "observedGeneration": generation,
        "conditions": [{"type": "Ready", "status": "False", "reason": reason}],
        "modelStatus": {
            "transitionStatus": "BlockedByFailedLoad",
            "lastFailureInfo": {"reason": reason, "message": message},
        },
    }
