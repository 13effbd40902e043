"""The real KServe model server, started as `serve` subprocesses on free ports and queried over HTTP:
one process in the combined role, and a transformer in front of a predictor as KServe runs them."""

import logging
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from container_component_src.serving.deploy import free_port, publish_model, smoke_rows, wait_for_server
from container_component_src.serving.inference import AnomalyScorer, v1_request, v2_request

NAME = "eclss-test"
MAX_ROWS = 50
REQUEST_TIMEOUT_S = 2.0
# The roles that take raw rows from clients.
RAW_ROLES = ("combined", "transformer")


@pytest.fixture(scope="module")
def published(trained_model: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> str:
    summary = {
        "deploy": {
            "threshold": 5.0,
            "fc1": 0.9,
            "evaluated_threshold": 5.0,
            "smoothing_window": 1,
            "val_quantile": 0.99,
            "false_alarm_rate": 0.012,
            "promised_false_alarm_rate": 0.01,
            "promise_tolerance": 2.0,
        }
    }
    target = str(tmp_path_factory.mktemp("published") / "model")
    publish_model(trained_model["model"], summary, target)
    return target


def _start(args: list[str], log: Path) -> subprocess.Popen:
    # REST only unless a test asks for gRPC: the default gRPC port is one fixed port.
    grpc = [] if {"--grpc-port", "--grpc_port"} & set(args) else ["--grpc-port", "0"]
    command = [sys.executable, "-m", "container_component_src.main", "serve", *args, *grpc]
    with open(log, "w") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def servers(published: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    logs = tmp_path_factory.mktemp("logs")
    ports = {role: free_port() for role in ("combined", "predictor", "transformer")}
    grpc_ports = {role: free_port() for role in RAW_ROLES}
    common = [
        "--model-dir",
        published,
        "--max-batch-rows",
        str(MAX_ROWS),
        "--request-timeout-s",
        str(REQUEST_TIMEOUT_S),
    ]
    combined = ["--name", NAME, "--http-port", str(ports["combined"]), "--grpc-port", str(grpc_ports["combined"])]
    processes = {
        "combined": _start(
            [*common, *combined],
            logs / "combined",
        ),
        # The predictor logs every request (--access-log); the others only their own faults.
        "predictor": _start(
            [*common, "--role", "predictor", "--name", NAME, "--http-port", str(ports["predictor"]), "--access-log"],
            logs / "predictor",
        ),
        # The underscore spellings are the ones KServe appends to a transformer's arguments.
        "transformer": _start(
            [
                *common,
                "--role",
                "transformer",
                "--model_name",
                NAME,
                "--predictor_host",
                f"127.0.0.1:{ports['predictor']}",
                "--http_port",
                str(ports["transformer"]),
                "--grpc_port",
                str(grpc_ports["transformer"]),
            ],
            logs / "transformer",
        ),
    }
    urls = {role: f"http://127.0.0.1:{port}" for role, port in ports.items()}
    try:
        for role, process in processes.items():
            wait_for_server(urls[role], NAME, process, 180, logs / role)
        grpc_targets = {f"grpc_{role}": f"127.0.0.1:{port}" for role, port in grpc_ports.items()}
        pids = {f"pid_{role}": str(process.pid) for role, process in processes.items()}
        yield {**urls, **grpc_targets, **pids, "logs": str(logs)}
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def rows(scaled_sets: dict[str, str], published: str) -> pd.DataFrame:
    """Raw (unscaled) test rows, and their expected scores computed in this process."""
    scorer = AnomalyScorer.load(published)
    scaled = pd.read_parquet(scaled_sets["test"])[scorer.channels].head(20)
    center, scale = np.asarray(scorer.scaler["center"]), np.asarray(scorer.scaler["scale"])
    raw = pd.DataFrame(scaled.to_numpy(np.float64) * scale + center, columns=scorer.channels)
    raw["expected"] = scorer.score(scorer.scale(raw[scorer.channels].to_numpy()))[0]
    return raw


def _v1(rows: pd.DataFrame) -> dict[str, Any]:
    return v1_request(rows.drop(columns="expected").to_dict("records"))


def _v2(rows: pd.DataFrame) -> dict[str, Any]:
    return v2_request({c: rows[c].tolist() for c in rows.columns if c != "expected"})


@pytest.mark.parametrize("role", ["combined", "transformer"])
def test_both_protocols_score_like_the_library(servers: dict[str, str], rows: pd.DataFrame, role: str) -> None:
    v1 = httpx.post(f"{servers[role]}/v1/models/{NAME}:predict", json=_v1(rows), timeout=30)
    assert v1.status_code == 200, v1.text
    predictions = v1.json()["predictions"]
    np.testing.assert_allclose([p["score"] for p in predictions], rows["expected"], rtol=1e-4)
    assert [p["anomaly"] for p in predictions] == (rows["expected"] > 5.0).tolist()
    v2 = httpx.post(f"{servers[role]}/v2/models/{NAME}/infer", json=_v2(rows), timeout=30)
    assert v2.status_code == 200, v2.text
    outputs = {o["name"]: o for o in v2.json()["outputs"]}
    assert outputs["score"]["datatype"] == "FP64" and outputs["anomaly"]["datatype"] == "BOOL"
    np.testing.assert_allclose(outputs["score"]["data"], rows["expected"], rtol=1e-4)
    assert outputs["anomaly"]["data"] == (rows["expected"] > 5.0).tolist()


def test_an_outlier_is_flagged(servers: dict[str, str], published: str) -> None:
    scaler = AnomalyScorer.load(published).scaler
    response = httpx.post(f"{servers['combined']}/v1/models/{NAME}:predict", json=v1_request(smoke_rows(scaler)))
    assert response.json()["predictions"][1]["anomaly"] is True


def test_health_readiness_and_metadata(servers: dict[str, str], rows: pd.DataFrame) -> None:
    base = servers["combined"]
    assert httpx.get(f"{base}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{base}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{base}/v1/models/{NAME}").json() == {"name": NAME, "ready": True}
    metadata = httpx.get(f"{base}/v2/models/{NAME}").json()
    channels = [c for c in rows.columns if c != "expected"]
    assert [i["name"] for i in metadata["inputs"]] == [*channels, "rows"]
    assert [o["name"] for o in metadata["outputs"]] == ["score", "anomaly"]
    predictor = httpx.get(f"{servers['predictor']}/v2/models/{NAME}").json()
    assert predictor["inputs"] == [{"name": "scaled", "datatype": "FP32", "shape": [-1, len(channels)]}]


def _v2_with(rows: pd.DataFrame, **changes: Any) -> dict[str, Any]:
    body = _v2(rows)
    first = body["inputs"][0]
    first.update(changes)
    return body


BAD_REQUESTS = [
    ("v1", lambda r: {"instances": []}, "holds no rows"),
    ("v1", lambda r: _v1(pd.concat([r] * 3)), f"the limit is {MAX_ROWS}"),
    ("v1", lambda r: {"instances": [{**_v1(r)["instances"][0], "bogus": 1.0}]}, "unknown channel"),
    ("v1", lambda r: {"instances": [dict(list(_v1(r)["instances"][0].items())[1:])]}, "instance 0: lacks"),
    ("v1", lambda r: {"instances": [{k: "high" for k in _v1(r)["instances"][0]}]}, '"high" is not a number'),
    ("v1", lambda r: {"instances": [{k: None for k in _v1(r)["instances"][0]}]}, "null is not a number"),
    ("v1", lambda r: {"rows": []}, 'with "instances"'),
    ("v2", lambda r: _v2_with(r, shape=[3]), "do not fill shape"),
    ("v2", lambda r: _v2_with(r, data=[None] * len(r)), "null is not a number"),
    ("v2", lambda r: _v2_with(r, datatype="BYTES", data=["x"] * len(r)), "datatype BYTES"),
    ("v2", lambda r: _v2_with(r, name="bogus"), "unknown input"),
    ("v2", lambda r: {"inputs": _v2(r)["inputs"][1:]}, "missing input"),
    ("v2", lambda r: _v2_with(r, shape=[len(r), 2], data=[0.0] * (2 * len(r))), "expected .rows. or .rows, 1."),
    ("v2", lambda r: {"inputs": [{"name": "x", "shape": [1]}]}, "invalid request body at .*datatype"),
    ("v2", lambda r: _v2(pd.concat([r] * 3)), f"the limit is {MAX_ROWS}"),
]


@pytest.mark.parametrize("role", ["combined", "transformer"])
@pytest.mark.parametrize(("protocol", "make", "message"), BAD_REQUESTS)
def test_bad_requests_get_400_naming_the_problem(
    servers: dict[str, str], rows: pd.DataFrame, role: str, protocol: str, make: Any, message: str
) -> None:
    path = f"/v1/models/{NAME}:predict" if protocol == "v1" else f"/v2/models/{NAME}/infer"
    response = httpx.post(f"{servers[role]}{path}", json=make(rows), timeout=30)
    assert response.status_code == 400, response.text
    assert re.search(message, response.json()["error"]), response.json()


def test_invalid_json_is_400(servers: dict[str, str]) -> None:
    response = httpx.post(f"{servers['combined']}/v1/models/{NAME}:predict", content=b"{not json")
    assert response.status_code == 400


def test_the_predictor_takes_scaled_rows_only(servers: dict[str, str], rows: pd.DataFrame) -> None:
    base = servers["predictor"]
    raw = httpx.post(f"{base}/v1/models/{NAME}:predict", json=_v1(rows))
    assert raw.status_code == 400 and "lists of numbers" in raw.json()["error"]
    n = len(rows.columns) - 1
    scaled = {"inputs": [{"name": "scaled", "shape": [2, n], "datatype": "FP32", "data": [0.0] * (2 * n)}]}
    response = httpx.post(f"{base}/v2/models/{NAME}/infer", json=scaled)
    assert response.status_code == 200 and response.json()["outputs"][0]["shape"] == [2]


def _row(rows: pd.DataFrame, channel_value: float | int | None = None) -> dict[str, Any]:
    row = rows.drop(columns="expected").iloc[0].to_dict()
    if channel_value is not None:
        row[next(iter(row))] = channel_value
    return row


@pytest.mark.parametrize("value", [1e20, 1e30, 3e38, 1e300, -1e300])
def test_extreme_readings_are_flagged_with_a_finite_score_in_every_role(
    servers: dict[str, str], rows: pd.DataFrame, value: float
) -> None:
    answers = []
    row = _row(rows, value)
    fp64 = {"inputs": [{"name": c, "shape": [1], "datatype": "FP64", "data": [v]} for c, v in row.items()]}
    for role in RAW_ROLES:
        v1 = httpx.post(f"{servers[role]}/v1/models/{NAME}:predict", json=v1_request([row]), timeout=30)
        v2 = httpx.post(f"{servers[role]}/v2/models/{NAME}/infer", json=fp64, timeout=30)
        assert v1.status_code == 200 and v2.status_code == 200, (role, v1.text, v2.text)
        prediction = v1.json()["predictions"][0]
        outputs = {o["name"]: o["data"][0] for o in v2.json()["outputs"]}
        assert prediction["anomaly"] is True and outputs["anomaly"] is True
        assert isinstance(prediction["score"], float) and np.isfinite(prediction["score"]), prediction
        answers.append((prediction["score"], outputs["score"]))
    assert answers[0] == pytest.approx(answers[1], rel=1e-5), "the combined server and the pair agree"


@pytest.mark.parametrize(
    ("protocol", "body_of"),
    [
        ("v1", lambda row: {"instances": [{**row, next(iter(row)): True}]}),
        ("v1", lambda row: {"instances": [{**row, next(iter(row)): 10**400}]}),
        ("v2", lambda row: {"inputs": [{"name": c, "shape": [1], "datatype": "FP64", "data": ["1.5"]} for c in row]}),
        (
            "v2",
            lambda row: {
                "inputs": [{"name": c, "shape": [-5], "datatype": "FP64", "data": [v]} for c, v in row.items()]
            },
        ),
        ("v2", lambda row: {"inputs": [{"name": c, "shape": [1], "datatype": "FP64", "data": [10**400]} for c in row]}),
        (
            "v2",
            lambda row: {
                "inputs": [{"name": c, "shape": ["1"], "datatype": "FP64", "data": [v]} for c, v in row.items()]
            },
        ),
    ],
    ids=["v1-boolean", "v1-huge-integer", "v2-strings", "v2-negative-shape", "v2-huge-integer", "v2-string-shape"],
)
def test_wrong_values_and_shapes_are_a_400_in_every_role(
    servers: dict[str, str], rows: pd.DataFrame, protocol: str, body_of: Any
) -> None:
    body = body_of(_row(rows))
    path = f"/v1/models/{NAME}:predict" if protocol == "v1" else f"/v2/models/{NAME}/infer"
    for role in RAW_ROLES:
        with httpx.Client() as client:
            response = client.post(
                f"{servers[role]}{path}",
                content=_json_dumps(body),
                headers={"content-type": "application/json"},
                timeout=30,
            )
            assert response.status_code == 400, (role, response.status_code, response.text)
            assert client.get(f"{servers[role]}/v2/health/ready", timeout=10).status_code == 200, "still serving"


def _json_dumps(body: Any) -> bytes:
    import json

    return json.dumps(body).encode()


def test_one_rows_by_channels_tensor_is_scored_like_per_channel_tensors(
    servers: dict[str, str], rows: pd.DataFrame
) -> None:
    channels = [c for c in rows.columns if c != "expected"]
    matrix = rows[channels].to_numpy(np.float64)
    body = {
        "inputs": [
            {"name": "input__0", "shape": list(matrix.shape), "datatype": "FP64", "data": matrix.ravel().tolist()}
        ]
    }
    for role in RAW_ROLES:
        response = httpx.post(f"{servers[role]}/v2/models/{NAME}/infer", json=body, timeout=30)
        assert response.status_code == 200, response.text
        scores = {o["name"]: o["data"] for o in response.json()["outputs"]}["score"]
        np.testing.assert_allclose(scores, rows["expected"], rtol=1e-4)


def test_every_role_describes_its_inputs_and_outputs(servers: dict[str, str], rows: pd.DataFrame) -> None:
    channels = [c for c in rows.columns if c != "expected"]
    for role in RAW_ROLES:
        metadata = httpx.get(f"{servers[role]}/v2/models/{NAME}", timeout=10).json()
        names = [i["name"] for i in metadata["inputs"]]
        assert names == [*channels, "rows"], (role, metadata)
        assert metadata["inputs"][-1]["shape"] == [-1, len(channels)]
        assert [o["name"] for o in metadata["outputs"]] == ["score", "anomaly"]


# 127.0.0.1 as /proc/net/tcp writes it, and as /proc/net/tcp6 writes it mapped into IPv6 (gRPC's
# sockets are IPv6 ones).
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F"}


def _listening(port: int) -> list[str]:
    """The addresses listening on `port`, as /proc/net/tcp and tcp6 write them."""
    lines = [line for name in ("tcp", "tcp6") for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]]
    fields = [line.split() for line in lines]
    return [f[1].split(":")[0] for f in fields if f[3] == "0A" and int(f[1].split(":")[1], 16) == port]


def test_the_server_listens_on_loopback_by_default(servers: dict[str, str]) -> None:
    """No authentication: a hand-started server must not be reachable from the network."""
    for target in (servers["combined"], servers["grpc_combined"]):  # REST and gRPC
        addresses = _listening(int(target.rsplit(":", 1)[1]))
        assert addresses and set(addresses) <= LOOPBACK, (target, addresses)


@pytest.mark.parametrize("length", ["", "abc", "1e3", "-1", "999999", "BINARY"])
def test_a_malformed_binary_header_is_a_400_and_the_connection_stays_usable(
    servers: dict[str, str], rows: pd.DataFrame, length: str
) -> None:
    import json

    request = _v2(rows.head(1))
    if length == "BINARY":  # tensors announced as binary, and no binary part
        for tensor in request["inputs"]:
            tensor["parameters"] = {"binary_data_size": 4}
            del tensor["data"]
    body = json.dumps(request).encode()
    header = str(len(body)) if length == "BINARY" else length
    for role in RAW_ROLES:
        with httpx.Client() as client:
            headers = {"Inference-Header-Content-Length": header, "content-type": "application/octet-stream"}
            response = client.post(
                f"{servers[role]}/v2/models/{NAME}/infer", content=body + b"\x00\x01", headers=headers
            )
            assert response.status_code == 400, (role, header, response.status_code, response.text)
            again = client.post(f"{servers[role]}/v2/models/{NAME}/infer", json=_v2(rows.head(1)))
            assert again.status_code == 200, "the same connection still serves"


def test_metrics_count_requests_rows_and_flags(servers: dict[str, str], rows: pd.DataFrame) -> None:
    httpx.post(f"{servers['combined']}/v1/models/{NAME}:predict", json=_v1(rows.head(3)))
    httpx.post(f"{servers['combined']}/v1/models/{NAME}:predict", json={"instances": []})
    text = httpx.get(f"{servers['combined']}/metrics").text
    counters = dict(re.findall(r'^(eclss_\w+(?:\{status="\d+"\})?) ([0-9.e+]+)$', text, re.MULTILINE))
    assert float(counters['eclss_requests_total{status="200"}']) >= 1
    assert float(counters['eclss_requests_total{status="400"}']) >= 1
    assert float(counters["eclss_rows_scored_total"]) >= 3 and "eclss_rows_flagged_total" in counters
    assert float(counters["eclss_promised_false_alarm_rate"]) == 0.01, "from serving.json, watched"


def test_the_predictor_watches_its_promise(
    trained_model: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Rows flagged far beyond the served threshold's promise are one warning, label-free; a
    threshold given by hand promises nothing known and is not watched."""
    from container_component_src.serving.server import ServeOptions, build_model

    summary = {"deploy": {"threshold": 5.0, "fc1": 0.9, "evaluated_threshold": 5.0, "smoothing_window": 1}}
    summary["deploy"] |= {"val_quantile": 0.75, "promised_false_alarm_rate": 0.25, "promise_tolerance": 2.0}
    publish_model(trained_model["model"], summary, str(tmp_path / "model"))
    predictor = build_model(str(tmp_path / "model"), ServeOptions(name=NAME))
    assert predictor.watch is not None and predictor.watch.block_rows == 400
    scaler = predictor.scorer.scaler
    outliers = [smoke_rows(scaler)[1]] * 400  # far out on every channel: all flagged
    caplog.set_level(logging.INFO, logger="container_component_src.serving.metrics")
    predictions = predictor.predict({"instances": outliers})["predictions"]
    assert all(p["anomaly"] for p in predictions)
    logged = [r.getMessage()[:40] for r in caplog.records if r.name.endswith("serving.metrics")]
    assert logged == ["flagged 100.00% of the last 400 rows sco"]
    assert build_model(str(tmp_path / "model"), ServeOptions(name=NAME, threshold=5.0)).watch is None


def test_a_clients_mistake_logs_no_error(servers: dict[str, str]) -> None:
    httpx.post(f"{servers['combined']}/v1/models/{NAME}:predict", json={"instances": "nope"})
    httpx.post(f"{servers['transformer']}/v1/models/{NAME}:predict", json={"instances": [{"x": 1}]})
    for role in ("combined", "transformer", "predictor"):
        log = (Path(servers["logs"]) / role).read_text()
        assert "Traceback" not in log and " ERROR " not in log and "ERROR:" not in log, log[-2000:]


def test_requests_are_logged_only_with_the_access_log(servers: dict[str, str], rows: pd.DataFrame) -> None:
    for _ in range(3):
        assert httpx.post(f"{servers['transformer']}/v2/models/{NAME}/infer", json=_v2(rows.head(2))).status_code == 200
        assert httpx.post(f"{servers['combined']}/v1/models/{NAME}:predict", json=_v1(rows.head(2))).status_code == 200
    logs = {role: (Path(servers["logs"]) / role).read_text() for role in ("combined", "transformer", "predictor")}
    # The transformer speaks V1 to its predictor (--predictor-protocol's default), whatever the client spoke.
    assert logs["predictor"].count(f"POST /v1/models/{NAME}") >= 3, logs["predictor"][-2000:]
    for role in ("combined", "transformer"):
        assert f"/models/{NAME}" not in logs[role], logs[role][-2000:]


def test_the_transformer_answers_for_its_predictor(published: str, rows: pd.DataFrame) -> None:
    """Each predictor answer maps to the transformer's own: 400 (the client's mistake, the
    predictor's reason quoted), 503 (not ready: Kubernetes stops routing) or a server fault; a 200
    passes the predictor's body through."""
    import asyncio

    from kserve import PredictorConfig
    from kserve.context import set_predictor_config

    from container_component_src.serving.server import ServeOptions, build_model
    from tests.http_fake import serve_fake

    expected = {
        400: ("InvalidInput", "predictor refused the request: bad rows"),
        503: ("ModelNotReady", "its predictor is not ready (bad rows)"),
        500: ("RuntimeError", "predictor answered HTTP 500: bad rows"),
    }
    answer = {"status": 200}

    async def check(transformer: Any) -> None:
        payload = transformer.preprocess(_v1(rows.head(2)))
        for status, (error, message) in expected.items():
            answer["status"] = status
            with pytest.raises(Exception) as raised:
                await transformer.predict(payload)
            assert type(raised.value).__name__ == error and message in str(raised.value), raised.value
        answer["status"] = 200
        assert await transformer.predict(payload) == {"error": "bad rows"}
        await transformer.close()

    with serve_fake(lambda *_: (answer["status"], {}, {"error": "bad rows"})) as url:
        set_predictor_config(PredictorConfig(predictor_host=url.removeprefix("http://"), predictor_protocol="v1"))
        asyncio.run(check(build_model(published, ServeOptions(role="transformer", name=NAME, predictor_host="x"))))


def test_a_transformer_is_not_ready_while_its_predictor_is_down(
    published: str, tmp_path: Path, rows: pd.DataFrame
) -> None:
    predictor_port, transformer_port = free_port(), free_port()
    common = ["--model-dir", published, "--name", NAME, "--max-batch-rows", str(MAX_ROWS)]
    predictor_args = [*common, "--role", "predictor", "--http-port", str(predictor_port)]
    predictor = _start(predictor_args, tmp_path / "p1")
    transformer = _start(
        [
            *common,
            "--role",
            "transformer",
            "--predictor-host",
            f"127.0.0.1:{predictor_port}",
            "--http-port",
            str(transformer_port),
        ],
        tmp_path / "t",
    )
    base = f"http://127.0.0.1:{transformer_port}"
    try:
        wait_for_server(f"http://127.0.0.1:{predictor_port}", NAME, predictor, 180, tmp_path / "p1")
        wait_for_server(base, NAME, transformer, 180, tmp_path / "t")
        predictor.terminate()
        predictor.wait(30)
        # Polled as a load balancer does: 503 on every readiness endpoint, never a 500, and one
        # log line for the change instead of a traceback per probe.
        for _ in range(10):
            for path in ("/v2/health/ready", f"/v2/models/{NAME}/ready", f"/v1/models/{NAME}"):
                assert httpx.get(f"{base}{path}").status_code == 503, path
        response = httpx.post(f"{base}/v2/models/{NAME}/infer", json=_v2(rows.head(1)))
        assert response.status_code == 503, response.text
        log = (tmp_path / "t").read_text()
        assert "Traceback" not in log and log.count("not ready (HTTP 503)") == 1, log[-3000:]
        predictor = _start(predictor_args, tmp_path / "p2")
        wait_for_server(f"http://127.0.0.1:{predictor_port}", NAME, predictor, 180, tmp_path / "p2")
        deadline = time.monotonic() + 30
        while httpx.get(f"{base}/v2/health/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert httpx.post(f"{base}/v2/models/{NAME}/infer", json=_v2(rows.head(1))).status_code == 200
    finally:
        for process in (predictor, transformer):
            process.terminate()
            process.wait(30)


# The Open Inference Protocol over gRPC (`--grpc-port`), as KServe's and Triton's gRPC clients speak it.


def _grpc_stub(target: str) -> Any:
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as services

    return services.GRPCInferenceServiceStub(grpc.insecure_channel(target))


def _grpc_request(rows: pd.DataFrame, binary: bool = False, **changes: Any) -> Any:
    """One FP32 tensor per channel: values in `contents`, or as bytes in `raw_input_contents`
    (what Triton's client sends); `changes` alter the first tensor."""
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    columns = [c for c in rows.columns if c != "expected"]
    tensors = [pb.ModelInferRequest.InferInputTensor(name=c, datatype="FP32", shape=[len(rows)]) for c in columns]
    for name, value in changes.items():
        if name == "shape":
            tensors[0].shape[:] = value
        else:
            setattr(tensors[0], name, value)
    if binary:
        raw = [rows[c].to_numpy(np.float32).tobytes() for c in columns]
        return pb.ModelInferRequest(model_name=NAME, id="grpc-1", inputs=tensors, raw_input_contents=raw)
    for tensor, column in zip(tensors, columns, strict=True):
        tensor.contents.fp32_contents.extend(rows[column].tolist())
    return pb.ModelInferRequest(model_name=NAME, id="grpc-1", inputs=tensors)


def _grpc_outputs(response: Any) -> dict[str, np.ndarray]:
    if response.raw_output_contents:
        dtypes = {"FP64": np.float64, "BOOL": np.bool_}
        pairs = zip(response.outputs, response.raw_output_contents, strict=True)
        return {o.name: np.frombuffer(raw, dtypes[o.datatype]) for o, raw in pairs}
    return {
        o.name: np.asarray(o.contents.fp64_contents if o.datatype == "FP64" else o.contents.bool_contents)
        for o in response.outputs
    }


@pytest.mark.parametrize("binary", [False, True], ids=["contents", "raw_input_contents"])
@pytest.mark.parametrize("role", RAW_ROLES)
def test_grpc_scores_like_rest(servers: dict[str, str], rows: pd.DataFrame, role: str, binary: bool) -> None:
    response = _grpc_stub(servers[f"grpc_{role}"]).ModelInfer(_grpc_request(rows, binary), timeout=30)
    assert (response.model_name, response.id) == (NAME, "grpc-1")
    outputs = _grpc_outputs(response)
    np.testing.assert_allclose(outputs["score"], rows["expected"], rtol=1e-4)
    assert outputs["anomaly"].tolist() == (rows["expected"] > 5.0).tolist()


def test_grpc_health_readiness_and_metadata(servers: dict[str, str], rows: pd.DataFrame) -> None:
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    channels = [c for c in rows.columns if c != "expected"]
    for role in RAW_ROLES:
        stub = _grpc_stub(servers[f"grpc_{role}"])
        assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
        assert stub.ModelReady(pb.ModelReadyRequest(name=NAME), timeout=10).ready
        metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name=NAME), timeout=10)
        assert [i.name for i in metadata.inputs] == [*channels, "rows"], role
        assert [o.name for o in metadata.outputs] == ["score", "anomaly"], role


GRPC_BAD_REQUESTS = [
    ({"name": "bogus"}, "unknown input"),
    ({"datatype": "INT8"}, "datatype INT8"),
    ({"shape": [3]}, "shape"),
]


@pytest.mark.parametrize(("changes", "message"), GRPC_BAD_REQUESTS)
@pytest.mark.parametrize("role", RAW_ROLES)
def test_a_bad_grpc_request_is_invalid_argument_naming_the_problem(
    servers: dict[str, str], rows: pd.DataFrame, role: str, changes: dict[str, Any], message: str
) -> None:
    import grpc

    with pytest.raises(grpc.RpcError) as caught:
        _grpc_stub(servers[f"grpc_{role}"]).ModelInfer(_grpc_request(rows, **changes), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert message in caught.value.details(), caught.value.details()
    log = (Path(servers["logs"]) / role).read_text()
    assert "Traceback" not in log and " ERROR " not in log, log[-2000:]


def test_grpc_answers_are_counted_by_status_code(servers: dict[str, str], rows: pd.DataFrame) -> None:
    import grpc

    stub = _grpc_stub(servers["grpc_combined"])
    stub.ModelInfer(_grpc_request(rows.head(2)), timeout=30)
    with pytest.raises(grpc.RpcError):
        stub.ModelInfer(_grpc_request(rows.head(2), name="bogus"), timeout=30)
    text = httpx.get(f"{servers['combined']}/metrics").text
    counted = dict(re.findall(r'^eclss_grpc_requests_total\{code="(\w+)"\} ([0-9.e+]+)$', text, re.MULTILINE))
    assert float(counted["OK"]) >= 1 and float(counted["INVALID_ARGUMENT"]) >= 1, counted


def test_grpc_without_a_predictor_is_unavailable_and_logs_no_traceback(published: str, tmp_path: Path) -> None:
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    grpc_port, log = free_port(), tmp_path / "transformer"
    args = ["--model-dir", published, "--role", "transformer", "--name", NAME, "--http-port", str(free_port())]
    process = _start([*args, "--predictor-host", f"127.0.0.1:{free_port()}", "--grpc-port", str(grpc_port)], log)
    try:
        stub = _grpc_stub(f"127.0.0.1:{grpc_port}")
        deadline = time.monotonic() + 120
        while True:  # live (the process answers), not ready (its predictor does not)
            try:
                stub.ServerLive(pb.ServerLiveRequest(), timeout=2)
                break
            except grpc.RpcError:
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
                time.sleep(0.5)
        rows = pd.DataFrame({c: [0.0] for c in AnomalyScorer.load(published).channels})
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(_grpc_request(rows), timeout=30)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "Traceback" not in log.read_text(), log.read_text()[-2000:]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"role": "sidecar"}, "--role must be one of"),
        ({"role": "transformer"}, "--predictor-host is required"),
        ({"predictor_protocol": "grpc-v2"}, "--predictor-protocol must be v1 or v2"),
        ({"max_batch_rows": 0}, "--max-batch-rows must be at least 1"),
        ({"grpc_port": 8080}, r"--grpc-port must be 0 \(off\) or a port other than --http-port \(8080\)"),
        ({"grpc_port": 70000}, "--grpc-port must be 0"),
    ],
)
def test_bad_serve_options_are_named(changes: dict[str, Any], message: str) -> None:
    from container_component_src.errors import OptionError
    from container_component_src.serving.server import ServeOptions

    with pytest.raises(OptionError, match=message):
        ServeOptions(**changes).validate()
    ServeOptions(grpc_port=0).validate()  # REST only


@pytest.mark.parametrize("role", RAW_ROLES)
def test_kserves_own_grpc_client_scores_a_rows_tensor(servers: dict[str, str], rows: pd.DataFrame, role: str) -> None:
    """As the README shows it: KServe's client, one [rows, channels] tensor sent as bytes."""
    import asyncio

    from kserve import InferenceGRPCClient, InferInput, InferRequest

    matrix = rows.drop(columns="expected").to_numpy(np.float32)
    tensor = InferInput("rows", list(matrix.shape), "FP32")
    tensor.set_data_from_numpy(matrix)

    async def infer() -> Any:
        client = InferenceGRPCClient(servers[f"grpc_{role}"])
        try:
            return await client.infer(InferRequest(model_name=NAME, infer_inputs=[tensor]))
        finally:
            await client.close()

    outputs = {o.name: o.as_numpy() for o in asyncio.run(infer()).outputs}
    np.testing.assert_allclose(outputs["score"], rows["expected"], rtol=1e-4)
    assert outputs["anomaly"].tolist() == (rows["expected"] > 5.0).tolist()


@pytest.mark.parametrize("taken", ["http_port", "grpc_port"])
def test_a_port_another_process_listens_on_is_a_one_line_error(taken: str) -> None:
    # gRPC would otherwise share the port (SO_REUSEPORT) and split requests between two servers.
    import socket

    from container_component_src.errors import OptionError
    from container_component_src.serving.server import ServeOptions, run_serve

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        ports = {"http_port": free_port(), "grpc_port": free_port(), taken: port}
        flag = "--" + taken.replace("_", "-")
        with pytest.raises(OptionError, match=f"{flag} {port}: cannot listen on 127.0.0.1:{port}"):
            run_serve("no model is loaded before the ports are checked", ServeOptions(**ports))


ROLES = ("combined", "predictor", "transformer")


def test_no_model_control_and_no_generated_docs_by_default(servers: dict[str, str], rows: pd.DataFrame) -> None:
    """Anyone who reaches the port could unload the model; the docs' schema lists every route."""
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    for role in ROLES:
        for action in ("unload", "load"):
            response = httpx.post(f"{servers[role]}/v2/repository/models/{NAME}/{action}")
            assert response.status_code == 403 and "--model-control" in response.json()["error"], (role, response.text)
        for path in ("/openapi.json", "/docs", "/redoc"):
            assert httpx.get(f"{servers[role]}{path}").status_code == 404, (role, path)
        assert httpx.get(f"{servers[role]}/v2/models/{NAME}/ready").status_code == 200
    assert httpx.post(f"{servers['combined']}/v2/models/{NAME}/infer", json=_v2(rows.head(1))).status_code == 200
    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(servers["grpc_combined"]))
    with pytest.raises(grpc.RpcError) as refused:
        stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name=NAME))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert stub.ModelReady(pb.ModelReadyRequest(name=NAME)).ready


def test_an_unknown_model_is_not_found_without_a_traceback(servers: dict[str, str]) -> None:
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    for role in ROLES:
        assert httpx.post(f"{servers[role]}/v2/models/nope/infer", json={"inputs": []}).status_code == 404
    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(servers["grpc_combined"]))
    with pytest.raises(grpc.RpcError) as missing:
        stub.ModelInfer(pb.ModelInferRequest(model_name="nope"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    for role in ROLES:
        assert "Traceback" not in (Path(servers["logs"]) / role).read_text(), role


def test_a_body_over_the_limit_is_refused_before_it_is_read(servers: dict[str, str], rows: pd.DataFrame) -> None:
    """413 at once for a declared length, and as soon as a streamed body passes the limit (50 rows
    of 16 channels: ~1 MiB); the server's memory does not hold what it refused."""
    import socket

    import psutil

    server = psutil.Process(int(servers["pid_combined"]))
    before = server.memory_info().rss
    port = int(servers["combined"].rsplit(":", 1)[1])
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as client:
        head = f"POST /v1/models/{NAME}:predict HTTP/1.1\r\nHost: x\r\nContent-Length: {256 * 2**20}\r\n\r\n"
        client.sendall(head.encode())
        assert client.recv(100).startswith(b"HTTP/1.1 413"), "refused before any byte of the body"
    assert time.monotonic() - started < 1.0

    def chunks() -> Iterator[bytes]:
        for _ in range(256):
            yield b" " * 2**20

    for role in ("combined", "transformer"):
        refused = httpx.post(f"{servers[role]}/v1/models/{NAME}:predict", content=chunks(), timeout=60)
        assert refused.status_code == 413 and "--max-request-bytes" in refused.json()["error"], refused.text
    assert server.memory_info().rss - before < 50 * 2**20
    assert httpx.post(f"{servers['combined']}/v1/models/{NAME}:predict", json=_v1(rows.head(2))).status_code == 200


def test_a_body_that_does_not_arrive_is_a_408(servers: dict[str, str]) -> None:
    import socket

    port = int(servers["combined"].rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=3 * REQUEST_TIMEOUT_S) as client:
        client.sendall(f"POST /v1/models/{NAME}:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{".encode())
        assert client.recv(100).startswith(b"HTTP/1.1 408")


def _binary_v2(rows: pd.DataFrame, extra: bytes = b"", announce: int = 0) -> tuple[bytes, dict[str, str]]:
    """One [rows, channels] FP32 tensor in the binary form, with `extra` bytes after it and its
    announced size off by `announce`."""
    import json

    values = rows.drop(columns="expected").to_numpy(np.float32)
    header = {"inputs": [{"name": "rows", "shape": list(values.shape), "datatype": "FP32",
                          "parameters": {"binary_data_size": values.nbytes + announce}}]}  # fmt: skip
    head = json.dumps(header).encode()
    headers = {"Inference-Header-Content-Length": str(len(head)), "content-type": "application/octet-stream"}
    return head + values.tobytes() + extra, headers


@pytest.mark.parametrize("role", RAW_ROLES)
def test_what_the_schema_would_convert_is_refused(servers: dict[str, str], rows: pd.DataFrame, role: str) -> None:
    """KServe's schema reads a shape [true, 16] or [1.0, 16] as [1, 16] and "fp32" as FP32; a
    binary part longer or shorter than announced was read past or ignored; a gzip body was read
    as plain."""
    url = f"{servers[role]}/v2/models/{NAME}/infer"
    body, headers = _binary_v2(rows.head(2))
    assert httpx.post(url, content=body, headers=headers).status_code == 200, "the exact form is served"
    for tweak, message in (
        (lambda r: r["inputs"][0].__setitem__("shape", [True, 16]), "shape must be a list of integers"),
        (lambda r: r["inputs"][0].__setitem__("shape", [1.0, 16]), "shape must be a list of integers"),
        (lambda r: r["inputs"][0].__setitem__("datatype", "fp32"), "written in capitals (FP32)"),
    ):
        request = {"inputs": [{"name": "rows", "shape": [1, 16], "datatype": "FP32", "data": [1.0] * 16}]}
        tweak(request)
        response = httpx.post(url, json=request)
        assert response.status_code == 400 and message in response.json()["error"], response.text
    for extra, announce in ((b"\x00" * 8, 0), (b"", 4)):
        body, headers = _binary_v2(rows.head(2), extra, announce)
        response = httpx.post(url, content=body, headers=headers)
        assert response.status_code == 400 and "binary_data_size" in response.json()["error"], response.text
    gzipped = httpx.post(url, json=_v2(rows.head(1)), headers={"Content-Encoding": "gzip"})
    assert gzipped.status_code == 415


@pytest.mark.parametrize("role", RAW_ROLES)
def test_answers_take_the_form_the_request_asked_for(servers: dict[str, str], rows: pd.DataFrame, role: str) -> None:
    """Only the requested outputs; binary data when asked (`binary_data_output`) over REST; raw
    output contents over gRPC for a client that sent raw inputs (Triton's client reads those)."""
    import json

    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    url, expected = f"{servers[role]}/v2/models/{NAME}/infer", rows["expected"].head(3).to_numpy()
    only_scores = httpx.post(url, json={**_v2(rows.head(3)), "outputs": [{"name": "score"}]}).json()
    assert [o["name"] for o in only_scores["outputs"]] == ["score"]
    np.testing.assert_allclose(only_scores["outputs"][0]["data"], expected, rtol=1e-5)
    unknown = httpx.post(url, json={**_v2(rows.head(1)), "outputs": [{"name": "nope"}]})
    assert unknown.status_code == 400 and "requested output(s) nope unknown" in unknown.json()["error"]
    binary = httpx.post(url, json={**_v2(rows.head(3)), "parameters": {"binary_data_output": True}})
    length = int(binary.headers["inference-header-content-length"])
    header = json.loads(binary.content[:length])
    assert [o["parameters"]["binary_data_size"] for o in header["outputs"]] == [24, 3]
    np.testing.assert_allclose(np.frombuffer(binary.content[length : length + 24], np.float64), expected, rtol=1e-5)
    values = rows.drop(columns="expected").head(3).to_numpy(np.float32)
    tensor = pb.ModelInferRequest.InferInputTensor(name="rows", datatype="FP32", shape=list(values.shape))
    request = pb.ModelInferRequest(model_name=NAME, inputs=[tensor], raw_input_contents=[values.tobytes()])
    answer = _grpc_stub(servers[f"grpc_{role}"]).ModelInfer(request)
    assert len(answer.raw_output_contents) == 2 and not answer.outputs[0].contents.fp64_contents
    np.testing.assert_allclose(np.frombuffer(answer.raw_output_contents[0], np.float64), expected, rtol=1e-5)


@pytest.mark.parametrize("role", ROLES)
def test_a_binary_bytes_tensor_is_a_400_and_the_connection_stays_usable(servers: dict[str, str], role: str) -> None:
    """A BYTES tensor's length prefix read from arbitrary bytes was a 500 and a reset connection."""
    import json
    import struct

    name = "scaled" if role == "predictor" else "rows"
    for binary in (b"abc", struct.pack("<I", 100) + b"abcd"):
        tensor = {"name": name, "shape": [1, 16], "datatype": "BYTES", "parameters": {"binary_data_size": len(binary)}}
        head = json.dumps({"inputs": [tensor]}).encode()
        headers = {"Inference-Header-Content-Length": str(len(head)), "content-type": "application/octet-stream"}
        with httpx.Client() as client:
            response = client.post(f"{servers[role]}/v2/models/{NAME}/infer", content=head + binary, headers=headers)
            assert response.status_code == 400 and "datatype BYTES" in response.json()["error"], response.text
            assert client.get(f"{servers[role]}/v2/health/live").status_code == 200, "the same connection serves on"
    assert "Traceback" not in (Path(servers["logs"]) / role).read_text()


@pytest.mark.parametrize("role", RAW_ROLES)
def test_a_client_that_half_closes_after_its_request_is_answered(
    servers: dict[str, str], rows: pd.DataFrame, role: str
) -> None:
    """`shutdown(SHUT_WR)` after the request: the transformer (its answer awaits the predictor)
    answered none of them; the server answers, then closes the connection."""
    import json
    import socket

    body = json.dumps(_v1(rows.head(2))).encode()
    head = f"POST /v1/models/{NAME}:predict HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    port = int(servers[role].rsplit(":", 1)[1])
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(head + body)
            client.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := client.recv(65536):
                received += chunk
            assert received.startswith(b"HTTP/1.1 200") and b'"predictions"' in received, received[:200]


@pytest.mark.parametrize("role", ROLES)
def test_headers_that_never_end_do_not_hold_a_connection(servers: dict[str, str], role: str) -> None:
    import socket

    port = int(servers[role].rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5 * REQUEST_TIMEOUT_S) as client:
        started = time.monotonic()
        client.sendall(f"POST /v1/models/{NAME}:predict HTTP/1.1\r\nHost: x\r\n".encode())
        assert client.recv(100) == b"", "closed by the server"
        assert time.monotonic() - started < 2 * REQUEST_TIMEOUT_S
    assert httpx.get(f"{servers[role]}/v2/health/live").status_code == 200


def test_a_client_gone_mid_body_is_not_a_500(servers: dict[str, str]) -> None:
    import socket

    def errors() -> float:
        text = httpx.get(f"{servers['combined']}/metrics").text
        found = re.search(r'^eclss_requests_total\{status="500"\} ([0-9.e+]+)$', text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    before = errors()
    port = int(servers["combined"].rsplit(":", 1)[1])
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(
                f"POST /v2/models/{NAME}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{{".encode()
            )
    time.sleep(0.5)
    assert errors() == before
    assert "Traceback" not in (Path(servers["logs"]) / "combined").read_text()


TRITON_CLIENT = """
import json, sys
import numpy as np
import tritonclient.grpc as triton

address, name, channels, matrix = json.loads(sys.stdin.read())
matrix = np.asarray(matrix, np.float32)
client = triton.InferenceServerClient(address)
assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(name)
inputs = {tensor.name for tensor in client.get_model_metadata(name).inputs}
whole = triton.InferInput("rows", list(matrix.shape), "FP32")
whole.set_data_from_numpy(matrix)
per_channel = []
for number, channel in enumerate(channels):
    tensor = triton.InferInput(channel, [len(matrix)], "FP32")
    tensor.set_data_from_numpy(np.ascontiguousarray(matrix[:, number]))
    per_channel.append(tensor)
answers = [client.infer(name, tensors) for tensors in ([whole], per_channel)]
only = client.infer(name, [whole], outputs=[triton.InferRequestedOutput("score")])
client.close()
print(json.dumps({
    "inputs": sorted(inputs),
    "scores": [answer.as_numpy("score").tolist() for answer in answers],
    "anomaly": [answer.as_numpy("anomaly").tolist() for answer in answers],
    "only": [only.as_numpy("anomaly") is None, only.as_numpy("score").tolist()],
}))
"""


@pytest.mark.parametrize("role", RAW_ROLES)
def test_tritons_grpc_client_reads_our_scores(servers: dict[str, str], rows: pd.DataFrame, role: str) -> None:
    """tritonclient.grpc sends raw tensors and reads `as_numpy` from the raw outputs of our answer,
    for a [rows, channels] tensor and for one tensor per channel; its health and metadata calls
    work. (In a process of its own, as a client is: its protos and KServe's share names.)"""
    import json

    channels = [c for c in rows.columns if c != "expected"]
    matrix = rows[channels].to_numpy(np.float32)
    sent = json.dumps([servers[f"grpc_{role}"], NAME, channels, matrix.tolist()])
    done = subprocess.run(
        [sys.executable, "-c", TRITON_CLIENT], input=sent, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout)
    assert {"rows", *channels} <= set(answer["inputs"])
    for scores, flags in zip(answer["scores"], answer["anomaly"], strict=True):
        np.testing.assert_allclose(scores, rows["expected"], rtol=1e-4)
        assert flags == (rows["expected"] > 5.0).tolist()
    assert answer["only"][0] is True, "only the requested output comes back"
    np.testing.assert_allclose(answer["only"][1], rows["expected"], rtol=1e-4)
