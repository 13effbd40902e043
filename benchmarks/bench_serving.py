"""Serving: the real KServe model server on loopback under concurrent clients, against calling the
TorchScript model directly in this process (the floor a server cannot beat)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import best_of

NAME = "eclss-bench"


def publish_untrained_model(folder: Path, n_channels: int, window: int = 1) -> tuple[str, list[str]]:
    """A model of the production shape (serving cost does not depend on training): the point
    model, or the windowed one for a window above 1."""
    import torch

    from container_component_src.model.io import write_model_artifact
    from container_component_src.model.vae import build_vae
    from container_component_src.serving.deploy import publish_model

    torch.manual_seed(0)
    channels = [f"channel_{i:02d}" for i in range(n_channels)]
    scaler = {"kind": "standard", "channels": channels, "center": [0.0] * n_channels, "scale": [1.0] * n_channels}
    vae = build_vae("point" if window == 1 else "window", n_channels, [64, 32], 4, window)
    folder = folder / f"window-{window}"
    write_model_artifact(str(folder / "model"), vae, scaler, {}, {})
    summary = {
        "deploy": {
            "threshold": 50.0,
            "fc1": 0.0,
            "evaluated_threshold": 50.0,
            "smoothing_window": 1,
            "val_quantile": 0.99,
        }
    }
    publish_model(str(folder / "model"), summary, str(folder / "published"))
    return str(folder / "published"), channels


def bodies(channels: list[str], rows: int, rng: np.random.Generator) -> dict[str, dict[str, Any]]:
    from container_component_src.serving.inference import v1_request, v2_request

    values = rng.normal(size=(rows, len(channels))).round(4)
    return {
        "v1": v1_request([dict(zip(channels, row.tolist(), strict=True)) for row in values]),
        "v2": v2_request({c: values[:, i].tolist() for i, c in enumerate(channels)}),
    }


async def load(url: str, body: dict[str, Any], concurrency: int, seconds: float) -> tuple[list[float], int]:
    """`concurrency` clients sending `body` back to back for `seconds`; latencies and failures.

    The body is encoded once: the load generator should not spend the shared CPUs on JSON.
    """
    import httpx
    import orjson

    content, headers = orjson.dumps(body), {"content-type": "application/json"}

    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal failures
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                try:
                    response = await client.post(url, content=content, headers=headers)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - start) if ok else None
                failures += not ok

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, failures


def direct_seconds(published: str, rows: int, rng: np.random.Generator) -> float:
    """Median time of scoring `rows` rows in this process: scale, TorchScript, threshold."""
    from container_component_src.serving.inference import AnomalyScorer

    scorer = AnomalyScorer.load(published)
    values = rng.normal(size=(rows, len(scorer.channels)))
    times = [best_of(1, lambda: scorer.score(scorer.scale(values)))[0] for _ in range(200)]
    return float(np.median(times))


def run(
    n_channels: int = 16,
    batch_sizes: tuple[int, ...] = (1, 1000),
    concurrencies: tuple[int, ...] = (1, 8),
    seconds: float = 5.0,
) -> list[dict[str, Any]]:
    from container_component_src.serving.deploy import free_port, wait_for_server

    rng = np.random.default_rng(0)
    rows_out = []
    with tempfile.TemporaryDirectory() as folder:
        published, channels = publish_untrained_model(Path(folder), n_channels)
        port, grpc_port, log = free_port(), free_port(), Path(folder) / "server.log"
        command = [sys.executable, "-m", "container_component_src.main", "serve", "--model-dir", published]
        command += ["--name", NAME, "--http-port", str(port), "--grpc-port", str(grpc_port)]
        with open(log, "w") as handle:
            server = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for_server(base, NAME, server, 180, log)
            for batch in batch_sizes:
                direct = direct_seconds(published, batch, rng)
                for protocol, body in bodies(channels, batch, rng).items():
                    path = f"/v1/models/{NAME}:predict" if protocol == "v1" else f"/v2/models/{NAME}/infer"
                    for concurrency in concurrencies:
                        latencies, failures = asyncio.run(load(base + path, body, concurrency, seconds))
                        case = f"{protocol.upper()}, {batch:,} row(s), {concurrency} client(s)"
                        row = latency_row(case, latencies, failures, batch, seconds, direct, f"{batch:,} row(s)")
                        if (protocol, batch, concurrency) == ("v2", 1, 1):
                            met = row["p50_ms"] < 10 and not failures
                            row |= {"target": "1-row V2 p50 < 10 ms, 0 failed", "met": met}
                        rows_out.append(row)
            rows_out.append(grpc_row(f"127.0.0.1:{grpc_port}", channels, seconds, direct_seconds(published, 1, rng)))
            rows_out.append(pair_against_combined(published, channels, base, Path(folder), seconds, rng))
        finally:
            server.terminate()
            server.wait(timeout=30)
        rows_out.append(windowed_row(Path(folder), n_channels, seconds, rng))
    return rows_out


def grpc_row(target: str, channels: list[str], seconds: float, direct: float) -> dict[str, Any]:
    """One client of 1-row V2 inferences over gRPC (one [1, channels] tensor), one at a time."""
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as services

    tensor = pb.ModelInferRequest.InferInputTensor(name="rows", datatype="FP32", shape=[1, len(channels)])
    tensor.contents.fp32_contents.extend([0.0] * len(channels))
    request = pb.ModelInferRequest(model_name=NAME, inputs=[tensor])
    latencies = []
    with grpc.insecure_channel(target) as channel:
        infer = services.GRPCInferenceServiceStub(channel).ModelInfer
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            start = time.perf_counter()
            infer(request, timeout=30)
            latencies.append(time.perf_counter() - start)
    return latency_row("gRPC (V2), 1 row(s), 1 client(s)", latencies, 0, 1, seconds, direct, "1 row(s)")


def windowed_row(folder: Path, n_channels: int, seconds: float, rng: np.random.Generator, window: int = 16) -> dict:
    """One client of V2 requests that score one row with the windowed model (the row and the
    `window - 1` before it), against the same call in this process."""
    from container_component_src.serving.deploy import free_port, wait_for_server

    published, channels = publish_untrained_model(folder, n_channels, window)
    port, log = free_port(), folder / "window-server.log"
    command = [sys.executable, "-m", "container_component_src.main", "serve", "--model-dir", published]
    with open(log, "w") as handle:
        server = subprocess.Popen(
            [*command, "--name", NAME, "--http-port", str(port), "--grpc-port", "0"],
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_server(f"http://127.0.0.1:{port}", NAME, server, 180, log)
        direct = direct_seconds(published, window, rng)
        url = f"http://127.0.0.1:{port}/v2/models/{NAME}/infer"
        latencies, failures = asyncio.run(load(url, bodies(channels, window, rng)["v2"], 1, seconds))
    finally:
        server.terminate()
        server.wait(timeout=30)
    case = f"V2, 1 row scored by the windowed model ({window} rows sent), 1 client"
    row = latency_row(case, latencies, failures, 1, seconds, direct, "window")
    return row | {"target": "p50 < 10 ms, 0 failed", "met": row["p50_ms"] < 10 and not failures}


def latency_row(
    case: str, latencies: list[float], failures: int, rows: int, seconds: float, direct: float, unit: str
) -> dict[str, Any]:
    """A result row: latency percentiles, scored rows a second, and the server against the direct call."""
    p50, p99 = np.percentile(latencies, [50, 99]) if latencies else (float("nan"),) * 2
    return {
        "benchmark": "serving",
        "case": case,
        "seconds": round(float(p50), 5),
        "p50_ms": round(float(p50) * 1e3, 2),
        "p99_ms": round(float(p99) * 1e3, 2),
        "requests": len(latencies),
        "failed": failures,
        "rows_per_s": round(len(latencies) * rows / seconds),
        "baseline": f"TorchScript in process, {direct * 1e3:.3f} ms per {unit}",
        "ratio": round(float(p50) / direct, 1),
        "ratio_meaning": "server p50 / direct call",
    }


def pair_against_combined(
    published: str, channels: list[str], combined: str, folder: Path, seconds: float, rng: np.random.Generator
) -> dict[str, Any]:
    """1-row V2 requests from 8 clients: the transformer + predictor pair against the combined
    server, measured in turns in this run (the split costs one more hop)."""
    from container_component_src.serving.deploy import free_port, wait_for_server

    ports = {"predictor": free_port(), "transformer": free_port()}
    base = [sys.executable, "-m", "container_component_src.main", "serve", "--model-dir", published, "--name", NAME]
    base += ["--grpc-port", "0"]
    commands = {
        "predictor": [*base, "--role", "predictor", "--http-port", str(ports["predictor"])],
        "transformer": [
            *base, "--role", "transformer", "--http-port", str(ports["transformer"]),
            "--predictor-host", f"127.0.0.1:{ports['predictor']}",
        ],
    }  # fmt: skip
    processes = {}
    try:
        for role, command in commands.items():
            with open(folder / f"{role}.log", "w") as handle:
                processes[role] = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
            wait_for_server(f"http://127.0.0.1:{ports[role]}", NAME, processes[role], 180, folder / f"{role}.log")
        body = bodies(channels, 1, rng)["v2"]
        path = f"/v2/models/{NAME}/infer"
        pair, alone = [], []
        # Interleaved, half the time each twice: a shared VM's slower minute falls on both.
        for _ in range(2):
            pair += asyncio.run(load(f"http://127.0.0.1:{ports['transformer']}{path}", body, 8, seconds / 2))[0]
            alone += asyncio.run(load(combined + path, body, 8, seconds / 2))[0]
    finally:
        for process in processes.values():
            process.terminate()
            process.wait(timeout=30)
    ratio = len(pair) / max(len(alone), 1)
    return {
        "benchmark": "serving",
        "case": "V2, 1 row, 8 clients: transformer + predictor",
        "seconds": round(float(np.percentile(pair, 50)), 5) if pair else None,
        "p50_ms": round(float(np.percentile(pair, 50)) * 1e3, 2) if pair else None,
        "requests": len(pair),
        "rows_per_s": round(len(pair) / seconds),
        "baseline": f"the combined server, {len(alone) / seconds:.0f} req/s",
        "ratio": round(ratio, 2),
        "ratio_meaning": "pair throughput / combined throughput",
        "target": "within 2x of the combined server (ratio >= 0.5)",
        "met": ratio >= 0.5,
    }
