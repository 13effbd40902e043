"""A windowed model that takes its stream's reference (`reference_rows`) behind the real KServe
server: requests carry the rows before the ones they want scored and the stream's reference, in
both protocols and both raw layouts, through the combined server and the transformer + predictor
pair; the deploy smoke test passes on it."""

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from container_component_src.serving.deploy import DeployOptions, free_port, publish_model, serve_locally_once
from container_component_src.serving.inference import REFERENCE, AnomalyScorer, v1_request, v2_request
from tests.serving.test_server import _start, wait_for_server

NAME = "eclss-window"
WINDOW = 6
REFERENCE_ROWS = 30


@pytest.fixture(scope="module")
def published(scaled_sets: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    from container_component_src.model.train import ModelParams, TrainOptions, run_train

    folder = tmp_path_factory.mktemp("window")
    # The scaler as fit-scaler writes it with reference_rows: serving reads only the setting.
    scaler = json.loads(Path(scaled_sets["scaler"]).read_text()) | {"reference_rows": REFERENCE_ROWS}
    (folder / "scaler.json").write_text(json.dumps(scaler))
    out = str(folder / "model")
    params = ModelParams(batch_size=256, hidden_size=16, latent_dim=3, model="window", window=WINDOW)
    options = TrainOptions(max_epochs=2, min_steps=300, patience=2, accelerator="cpu", progress=False)
    run_train(scaled_sets["train"], scaled_sets["val"], str(folder / "scaler.json"), out, params, options)
    decision = {"threshold": 8.0, "fc1": 0.9, "evaluated_threshold": 8.0, "smoothing_window": 1, "val_quantile": 0.99}
    target = str(tmp_path_factory.mktemp("published") / "model")
    publish_model(out, {"deploy": decision}, target)
    return target


@pytest.fixture(scope="module")
def servers(published: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    logs = tmp_path_factory.mktemp("logs")
    ports = {role: free_port() for role in ("combined", "predictor", "transformer")}
    grpc_ports = {role: free_port() for role in ("combined", "transformer")}
    common = ["--model-dir", published, "--name", NAME]

    def port(role: str) -> list[str]:
        grpc = ["--grpc-port", str(grpc_ports[role])] if role in grpc_ports else []
        return ["--http-port", str(ports[role]), *grpc]

    processes = {
        "combined": _start([*common, *port("combined")], logs / "combined"),
        "predictor": _start([*common, "--role", "predictor", *port("predictor")], logs / "p"),
        "transformer": _start(
            [
                *common,
                "--role",
                "transformer",
                "--predictor-host",
                f"127.0.0.1:{ports['predictor']}",
                # V2 to the predictor here (test_server.py's transformer speaks V1 to it), in the
                # spelling of a KServe transformer's args.
                "--predictor_protocol",
                "v2",
                *port("transformer"),
            ],
            logs / "t",
        ),
    }
    urls = {role: f"http://127.0.0.1:{port}" for role, port in ports.items()}
    try:
        for role, process in processes.items():
            wait_for_server(urls[role], NAME, process, 180, logs / role)
        yield urls | {f"grpc_{role}": f"127.0.0.1:{port}" for role, port in grpc_ports.items()}
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def stream(scaled_sets: dict[str, str], published: str) -> tuple[pd.DataFrame, dict[str, float], np.ndarray]:
    """Twelve consecutive raw test rows of a stream whose reference is half a scale off the
    training center, the reference, and the scores of the last 12 - (WINDOW - 1) in this process."""
    scorer = AnomalyScorer.load(published)
    scaled = pd.read_parquet(scaled_sets["test"])[scorer.channels].head(12)
    scale = np.asarray(scorer.scaler["scale"])
    reference = np.asarray(scorer.scaler["center"]) + 0.5 * scale
    rows = pd.DataFrame(scaled.to_numpy(np.float64) * scale + reference, columns=scorer.channels)
    by_channel = dict(zip(scorer.channels, reference.tolist(), strict=True))
    scores = scorer.score(scorer.scale(rows.to_numpy(), by_channel))[0]
    np.testing.assert_allclose(scores, scorer.score(scaled.to_numpy(np.float64))[0], rtol=1e-5)
    return rows, by_channel, scores


@pytest.mark.parametrize("role", ["combined", "transformer"])
def test_a_request_gets_scores_for_the_rows_after_the_window_s_context(
    servers: dict[str, str], stream: tuple[pd.DataFrame, dict[str, float], np.ndarray], role: str
) -> None:
    rows, reference, expected = stream
    assert len(expected) == len(rows) - (WINDOW - 1)
    v1_body = v1_request(rows.to_dict("records"), reference)
    v1 = httpx.post(f"{servers[role]}/v1/models/{NAME}:predict", json=v1_body, timeout=30)
    assert v1.status_code == 200, v1.text
    np.testing.assert_allclose([p["score"] for p in v1.json()["predictions"]], expected, rtol=1e-4)
    # The reference in the model's channel order, here as [1, channels] beside the [rows, channels] layout.
    per_channel = v2_request({c: rows[c].tolist() for c in reversed(rows.columns)}, list(reference.values()))
    matrix = {
        "inputs": [
            {"name": "rows", "shape": list(rows.shape), "datatype": "FP64", "data": rows.to_numpy().ravel().tolist()},
            {"name": REFERENCE, "shape": [1, len(reference)], "datatype": "FP32", "data": list(reference.values())},
        ]
    }
    for body in (per_channel, matrix):
        v2 = httpx.post(f"{servers[role]}/v2/models/{NAME}/infer", json=body, timeout=30)
        assert v2.status_code == 200, v2.text
        outputs = {o["name"]: o for o in v2.json()["outputs"]}
        assert outputs["score"]["shape"] == [len(expected)]
        np.testing.assert_allclose(outputs["score"]["data"], expected, rtol=1e-4)


@pytest.mark.parametrize("role", ["combined", "transformer"])
def test_grpc_scores_the_rows_after_the_window_s_context_with_the_reference(
    servers: dict[str, str], stream: tuple[pd.DataFrame, dict[str, float], np.ndarray], role: str
) -> None:
    # The transformer here speaks V2 to its predictor: its gRPC answer is built from V2 outputs.
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as services

    rows, reference, expected = stream
    tensor = pb.ModelInferRequest.InferInputTensor
    inputs = [
        tensor(name="rows", datatype="FP64", shape=list(rows.shape)),
        tensor(name=REFERENCE, datatype="FP32", shape=[len(reference)]),
    ]
    inputs[0].contents.fp64_contents.extend(rows.to_numpy().ravel().tolist())
    inputs[1].contents.fp32_contents.extend(reference.values())
    with grpc.insecure_channel(servers[f"grpc_{role}"]) as channel:
        stub = services.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(pb.ModelInferRequest(model_name=NAME, inputs=inputs), timeout=30)
        outputs = {o.name: o for o in response.outputs}
        np.testing.assert_allclose(outputs["score"].contents.fp64_contents, expected, rtol=1e-4)
        with pytest.raises(grpc.RpcError) as caught:  # the same rows without the stream's reference
            stub.ModelInfer(pb.ModelInferRequest(model_name=NAME, inputs=inputs[:1]), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and REFERENCE in caught.value.details()


@pytest.mark.parametrize("role", ["combined", "transformer"])
def test_too_few_rows_for_one_window_is_a_400_naming_the_window(
    servers: dict[str, str], stream: tuple[pd.DataFrame, dict[str, float], np.ndarray], role: str
) -> None:
    rows, reference, _ = stream
    short = v1_request(rows.head(WINDOW - 1).to_dict("records"), reference)
    response = httpx.post(f"{servers[role]}/v1/models/{NAME}:predict", json=short, timeout=30)
    assert response.status_code == 400
    assert f"send at least {WINDOW} consecutive rows" in response.text
    assert httpx.get(f"{servers[role]}/v2/models/{NAME}/ready", timeout=10).status_code == 200


@pytest.mark.parametrize("role", ["combined", "transformer"])
def test_a_request_without_its_stream_s_reference_is_a_400_naming_it(
    servers: dict[str, str], stream: tuple[pd.DataFrame, dict[str, float], np.ndarray], role: str
) -> None:
    rows, reference, _ = stream
    bodies = {
        "v1": v1_request(rows.to_dict("records")),
        "v2": v2_request({c: rows[c].tolist() for c in rows.columns}),
        "v1 short": v1_request(rows.to_dict("records"), dict(list(reference.items())[1:])),
        "v2 wrong shape": v2_request({c: rows[c].tolist() for c in rows.columns}, list(reference.values())),
    }
    bodies["v2 wrong shape"]["inputs"][-1] |= {"shape": [len(reference) + 1], "data": [*reference.values(), 1.0]}
    expected = {
        "v1": 'send "reference"',
        "v2": 'send "reference"',
        "v1 short": f"reference: lacks {rows.columns[0]}",
        "v2 wrong shape": f"input reference has shape \\[{len(reference) + 1}\\]",
    }
    for case, body in bodies.items():
        path = f"v2/models/{NAME}/infer" if case.startswith("v2") else f"v1/models/{NAME}:predict"
        response = httpx.post(f"{servers[role]}/{path}", json=body, timeout=30)
        assert response.status_code == 400, (case, response.text)
        assert re.search(expected[case], response.json()["error"]), (case, response.text)
    metadata = httpx.get(f"{servers[role]}/v2/models/{NAME}", timeout=10).json()
    assert {"name": REFERENCE, "datatype": "FP32", "shape": [len(reference)]} in metadata["inputs"]


def test_the_deploy_smoke_test_passes_on_a_windowed_model(published: str) -> None:
    smoke = serve_locally_once(published, DeployOptions(name=NAME))
    assert smoke["anomaly"] == [False, True], "the typical window's newest row passes, the outlier after it does not"


def test_train_saved_a_whole_typical_window(published: str) -> None:
    typical = json.loads((Path(published) / "typical_rows.json").read_text())
    assert len(typical) == WINDOW and set(typical[0]) == set(
        json.loads((Path(published) / "channels.json").read_text())
    )


extreme = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from([3e38, -3e38, 1e300, 1e20, 10**400]),
    st.booleans(),
    st.text(max_size=2),
)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_windowed_requests_fuzzed_agree_across_roles_and_never_5xx(
    servers: dict[str, str], stream: tuple[pd.DataFrame, dict[str, float], np.ndarray], data: st.DataObject
) -> None:
    channels, reference = list(stream[0].columns), stream[1]
    n_rows = data.draw(st.integers(0, WINDOW + 3))
    rows = [{c: data.draw(extreme) for c in channels} for _ in range(n_rows)]
    answers = {}
    for role in ("combined", "transformer"):
        body = v1_request(rows, reference)
        response = httpx.post(f"{servers[role]}/v1/models/{NAME}:predict", json=body, timeout=30)
        assert response.status_code < 500, (role, rows, response.text)
        answers[role] = (response.status_code, response.json())
    numeric = all(type(v) in (int, float) and abs(v) < 1e309 for row in rows for v in row.values())
    if numeric and n_rows >= WINDOW:
        for status, body in answers.values():
            assert status == 200 and len(body["predictions"]) == n_rows - (WINDOW - 1)
            assert all(np.isfinite(p["score"]) for p in body["predictions"])
        assert answers["combined"][1] == answers["transformer"][1], "both roles answer alike"
    else:
        assert all(status == 400 for status, _ in answers.values())
