"""The deploy stage: publish the model with its serving threshold, then serve it.

Locally: publish to a local folder (the local equivalent of the storage URI), start the KServe
model server on a free port, smoke-test both protocols, stop it, and print the command that
serves it. On the cluster: publish to object storage (`cluster.backends` then creates or patches the
InferenceService).
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from container_component_src import storage
from container_component_src.choices import ServingBackend
from container_component_src.cli_args import MODULE_COMMAND, to_argv
from container_component_src.evaluation.decision import MODEL, DeployDecision
from container_component_src.model.files import SCALER, TORCHSCRIPT, TYPICAL_ROWS, WEIGHTS
from container_component_src.serving.inference import SERVING_FILE, v1_request, v2_request
from container_component_src.storage import InputError


@dataclass(frozen=True)
class DeployOptions:
    """Where and how the model is served.

    Attributes:
        backend: "local" or "kserve".
        name: Model name (and InferenceService name).
        local_model_dir: Folder the local deploy publishes to (the CLI gives it inside the data root).
        model_store: Object-storage folder the cluster deploy publishes under (empty: next to
            the Model artifact).
        http_port: Port in the printed serve command.
        max_batch_rows: Largest request accepted.
        grpc_port: gRPC port in the printed serve command (0: REST only).
        startup_timeout_s: How long the local smoke test waits for the server.
    """

    backend: ServingBackend = ServingBackend.local
    name: str = "eclss-anomaly"
    local_model_dir: str = "served_model"
    model_store: str = ""
    http_port: int = 8080
    max_batch_rows: int = 100_000
    grpc_port: int = 8081
    startup_timeout_s: float = 120.0


def serving_config(summary: dict[str, Any], source: str = "the evaluation summary") -> dict[str, Any]:
    """What the server needs from the evaluation: the flag threshold, how it follows each stream's
    scores (`follow`, None: it does not) and what it promises (the share of normal rows it
    should flag, which the server watches), and for the record its Fc1, the false alarms
    evaluation saw and which detector is served (the model, or a classical detector the gate found
    ahead)."""
    decision = DeployDecision.from_summary(summary, source)
    return {
        "threshold": decision.threshold,
        "fc1": decision.fc1,
        "fc1_name": decision.fc1_name,
        "val_quantile": decision.val_quantile,
        "detector": decision.detector,
        "model_fc1": decision.model_fc1,
        "choice": decision.choice,
        "promised_false_alarm_rate": decision.promised_false_alarm_rate,
        "false_alarm_rate": decision.false_alarm_rate,
        "promise_tolerance": decision.promise_tolerance,
        "follow": decision.follow,
    }


def write_served_detector(summary: dict[str, Any], folder: Path, source: str = "the evaluation summary") -> None:
    """When the gate chose a classical detector, put it in the model's place in a staged model
    folder: its TorchScript (same serving interface, same scaler, so the same protocols and
    threshold rule) instead of the model's, and the model's weights removed.

    Raises:
        InputError: The summary chose a classical detector but does not describe it.
    """
    decision = DeployDecision.from_summary(summary, source)
    if decision.detector == MODEL:
        return
    if "served_detector" not in summary:
        raise InputError(
            f"{source} chose {decision.detector} but has no 'served_detector': was it written by evaluate?"
        )
    import warnings

    import torch

    from container_component_src.model.residual import ResidualDetector

    with warnings.catch_warnings():  # TorchScript is deprecated upstream, and still what serving loads.
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit")
        try:
            detector = ResidualDetector.from_dict(summary["served_detector"])
        except ValueError as exc:
            raise InputError(f"{source}'s served_detector: {exc}") from None
        scripted = torch.jit.script(detector)
    scripted.save(str(folder / TORCHSCRIPT))
    (folder / WEIGHTS).unlink(missing_ok=True)


def publish_target(options: DeployOptions, artifact_uri: str, run_id: str) -> str:
    """Where the model is published: the local folder, or object storage unique to the run."""
    if options.backend == ServingBackend.local:
        return str(Path(options.local_model_dir).resolve())
    if options.model_store:
        return storage.join(options.model_store, options.name, run_id)
    return storage.s3_url(f"{artifact_uri.rstrip('/')}-serving")


EXAMPLE_V1, EXAMPLE_V2 = "example_v1.json", "example_v2.json"


def example_requests(scaler: dict[str, Any], typical_rows: list[dict[str, float]] | None) -> dict[str, Any]:
    """Request bodies a user can send as they are, V1 and V2: the typical rows that `train` saved
    (a row the model does not flag, with the window before it), or the training mean, plus the
    stream's reference (the training center) for a model that takes one."""
    rows = typical_rows or [dict(zip(scaler["channels"], scaler["center"], strict=True))]
    reference = dict(zip(scaler["channels"], scaler["center"], strict=True)) if scaler.get("reference_rows") else None
    columns = {c: [row[c] for row in rows] for c in scaler["channels"]}
    return {
        EXAMPLE_V1: v1_request(rows, reference),
        EXAMPLE_V2: v2_request(columns, None if reference is None else list(reference.values())),
    }


def publish_model(model_dir: str, summary: dict[str, Any], target: str) -> None:
    """Copy the Model artifact plus serving.json and example requests to `target` (replaced
    atomically where possible)."""
    with tempfile.TemporaryDirectory() as folder:
        staged = Path(folder) / "model"
        storage.copy_directory(model_dir, str(staged))
        write_served_detector(summary, staged)
        storage.write_json(serving_config(summary), str(staged / SERVING_FILE))
        typical = staged / TYPICAL_ROWS
        scaler = storage.read_json(str(staged / SCALER))
        examples = example_requests(scaler, storage.read_json(str(typical)) if typical.exists() else None)
        for name, body in examples.items():
            storage.write_json(body, str(staged / name))
        storage.copy_directory(str(staged), target)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def smoke_rows(scaler: dict[str, Any], typical_rows: list[dict[str, float]] | None = None) -> list[dict[str, float]]:
    """Raw rows whose last two are scored: a typical input (the validation window whose newest
    row has the median score, saved by train; the training mean for models without one), then a
    row 50 scales off the training mean on every channel."""
    center, scale = np.asarray(scaler["center"]), np.asarray(scaler["scale"])
    typical = typical_rows or [dict(zip(scaler["channels"], center.tolist(), strict=True))]
    return [*typical, dict(zip(scaler["channels"], (center + 50 * scale).tolist(), strict=True))]


def wait_for_server(base_url: str, name: str, process: subprocess.Popen, timeout_s: float, log: Path) -> None:
    """Wait until the model reports ready; fail with the server's log if it exits or times out."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the model server exited with {process.returncode}:\n{_tail(log)}")
        try:
            if httpx.get(f"{base_url}/v2/models/{name}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the model server was not ready within {timeout_s:.0f} s:\n{_tail(log)}")


def _tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def smoke_test(
    base_url: str,
    name: str,
    rows: list[dict[str, float]],
    check_typical: bool = True,
    reference: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Send the rows (with the stream's `reference`, for a model that takes one, keyed by channel
    in the model's order) through V1 and V2; check both answer alike, the outlier (last row) is
    flagged and, with `check_typical`, the typical row (the one before) is not.

    Raises:
        RuntimeError: A request fails, the protocols disagree, or the outlier is not flagged.
    """
    import httpx

    v1 = httpx.post(f"{base_url}/v1/models/{name}:predict", json=v1_request(rows, reference), timeout=30)
    columns = {c: [row[c] for row in rows] for c in rows[0]}
    ordered = None if reference is None else list(reference.values())
    v2 = httpx.post(f"{base_url}/v2/models/{name}/infer", json=v2_request(columns, ordered), timeout=30)
    for protocol, response in (("V1", v1), ("V2", v2)):
        if response.status_code != 200:
            raise RuntimeError(f"smoke test: {protocol} request failed with {response.status_code}: {response.text}")
    v1_scores = [p["score"] for p in v1.json()["predictions"]]
    outputs = {o["name"]: o["data"] for o in v2.json()["outputs"]}
    if not np.allclose(v1_scores, outputs["score"], rtol=1e-5):
        raise RuntimeError(f"smoke test: V1 scores {v1_scores} differ from V2 scores {outputs['score']}")
    if not outputs["anomaly"][-1]:
        raise RuntimeError(f"smoke test: a row 50 scales off the training mean was not flagged ({outputs})")
    if check_typical and outputs["anomaly"][-2]:
        raise RuntimeError(f"smoke test: a typical validation row was flagged as an anomaly ({outputs})")
    return {"v1_scores": v1_scores, "v2_scores": outputs["score"], "anomaly": outputs["anomaly"]}


def serve_locally_once(model_dir: str, options: DeployOptions) -> dict[str, Any]:
    """Start the server on a free port, smoke-test it, and stop it."""
    port = free_port()
    # REST only: the smoke test speaks REST, and a fixed gRPC port could be taken.
    argv = serve_argv(model_dir, options.name, port, options.max_batch_rows, grpc_port=0)
    command = [sys.executable, *MODULE_COMMAND[1:], *argv]
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "server.log"
        with open(log, "w") as handle:
            process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=os.environ.copy())
        try:
            base_url = f"http://127.0.0.1:{port}"
            wait_for_server(base_url, options.name, process, options.startup_timeout_s, log)
            typical_url = storage.join(model_dir, TYPICAL_ROWS)
            typical = storage.read_json(typical_url) if storage.exists(typical_url) else None
            scaler = storage.read_json(storage.join(model_dir, SCALER))
            # The smoke rows are in raw units about the training center: it is their reference.
            center = dict(zip(scaler["channels"], scaler["center"], strict=True))
            reference = center if scaler.get("reference_rows", 0) else None
            rows = smoke_rows(scaler, typical)
            # The typical rows are typical for the model (train chose them by its scores), so only
            # a served model is held to not flagging them; any detector must flag the outlier.
            served = storage.read_json(storage.join(model_dir, SERVING_FILE)).get("detector", MODEL)
            check_typical = typical is not None and served == MODEL
            return smoke_test(base_url, options.name, rows, check_typical=check_typical, reference=reference)
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def publish(
    model_dir: str, summary_url: str, options: DeployOptions, artifact_uri: str = "", run_id: str = ""
) -> tuple[str, dict[str, Any]]:
    """Publish the model and its serving configuration (see `publish_target`).

    Returns:
        Where the model was published, and its serving configuration (threshold).
    """
    summary = storage.read_json(summary_url)
    target = publish_target(options, artifact_uri or model_dir, run_id or time.strftime("%Y%m%d-%H%M%S"))
    config = serving_config(summary, summary_url)
    publish_model(model_dir, summary, target)
    print(f"Published to {target}: {config['choice']}", flush=True)
    return target, config


def serve_argv(
    model_dir: str, name: str, http_port: int, max_batch_rows: int | None = None, grpc_port: int | None = None
) -> list[str]:
    """The `serve` command line (after `python -m container_component_src.main`); None leaves an
    option at its default from the settings."""
    options = {
        "model_dir": model_dir,
        "name": name,
        "http_port": http_port,
        "grpc_port": grpc_port,
        "max_batch_rows": max_batch_rows,
    }
    return to_argv("serve", options)


def smoke_test_locally(target: str, serving: dict[str, Any], options: DeployOptions) -> dict[str, Any]:
    """Start the server on the published model, smoke-test it, stop it; say how to serve it.

    Returns:
        Where the model is, how to call it, and the smoke-test answers.
    """
    smoke = serve_locally_once(target, options)
    argv = serve_argv(target, options.name, options.http_port, grpc_port=options.grpc_port)
    command = shlex.join(["poetry", "run", *MODULE_COMMAND, *argv])
    example = storage.join(target, EXAMPLE_V2)
    print(
        f"Smoke test passed (V1 and V2). Serve the model with:\n  {command}\nthen send it a row:\n  curl -s "
        f"localhost:{options.http_port}/v2/models/{options.name}/infer -H 'Content-Type: application/json' "
        f"-d @{shlex.quote(example)}",
        flush=True,
    )
    return {
        "backend": "local",
        "model_dir": target,
        "command": command,
        "v1_url": f"http://localhost:{options.http_port}/v1/models/{options.name}:predict",
        "v2_url": f"http://localhost:{options.http_port}/v2/models/{options.name}/infer",
        **({"grpc_target": f"localhost:{options.grpc_port}"} if options.grpc_port else {}),
        "smoke": smoke,
        "threshold": serving["threshold"],
    }
