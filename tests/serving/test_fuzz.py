"""Property-based fuzzing of the three server roles (bounded): whatever the body and headers, never
a 5xx, the server stays ready, and valid requests still answer 200."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serving.test_server import NAME, _v1, _v2, published, rows, servers  # noqa: F401 (fixtures)

numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([10**400, -(10**400), 3e38, 1e308]),
)
scalars = st.one_of(numbers, st.booleans(), st.none(), st.text(max_size=5))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4), max_leaves=12)


def _names(channels: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from([*channels, "scaled", "rows", "input__0"]), st.text(max_size=6))


@st.composite
def bodies(draw: Any, channels: list[str]) -> Any:
    kind = draw(st.sampled_from(["v1", "v2", "junk"]))
    if kind == "v1":
        instances = st.lists(
            st.one_of(
                st.dictionaries(_names(channels), values, max_size=len(channels) + 1),
                st.lists(numbers, max_size=len(channels) + 1),
                values,
            ),
            max_size=3,
        )
        return "v1", {"instances": draw(st.one_of(instances, values))}
    if kind == "v2":
        tensor = st.fixed_dictionaries(
            {
                "name": _names(channels),
                "shape": st.lists(
                    st.one_of(st.integers(-3, 4), st.text(max_size=2), st.booleans(), st.floats()), max_size=3
                ),
                "datatype": st.sampled_from(["FP32", "FP64", "fp32", "INT64", "BYTES", "BOOL", "nope"]),
                "data": values,
            }
        )
        request = {"inputs": draw(st.lists(tensor, max_size=len(channels) + 1))}
        extras = st.fixed_dictionaries(
            {},
            optional={
                "outputs": st.lists(
                    st.fixed_dictionaries({"name": st.sampled_from(["score", "anomaly", "x"])}), max_size=3
                ),
                "parameters": st.fixed_dictionaries({"binary_data_output": st.one_of(st.booleans(), values)}),
            },
        )
        return "v2", request | draw(extras)
    return draw(st.sampled_from(["v1", "v2"])), draw(values)


headers = st.fixed_dictionaries(
    {"content-type": st.sampled_from(["application/json", "application/octet-stream", "text/plain"])},
    optional={
        "Inference-Header-Content-Length": st.one_of(
            st.text(alphabet="0123456789abcdef.-+e", max_size=4), st.integers(-5, 10**6).map(str)
        ),
        "Content-Encoding": st.sampled_from(["gzip", "identity", "br", ""]),
    },
)


@st.composite
def binary_bodies(draw: Any, channels: list[str]) -> tuple[bytes, dict[str, str]]:
    """A V2 request in the binary form: a JSON part announcing binary tensors, then random bytes."""
    tensors = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "name": _names(channels),
                    "shape": st.lists(st.integers(0, 20), min_size=1, max_size=2),
                    "datatype": st.sampled_from(["FP32", "FP64", "BYTES", "BOOL", "INT8", "FP16"]),
                    "parameters": st.fixed_dictionaries({"binary_data_size": st.integers(-2, 200)}),
                }
            ),
            min_size=1,
            max_size=3,
        )
    )
    head = json.dumps({"inputs": tensors}).encode()
    binary = draw(st.binary(max_size=300))
    return head + binary, {
        "Inference-Header-Content-Length": str(len(head)),
        "content-type": "application/octet-stream",
    }


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_5xx_for_any_request(servers: dict[str, str], rows: Any, data: st.DataObject) -> None:  # noqa: F811
    channels = [c for c in rows.columns if c != "expected"]
    protocol, body = data.draw(bodies(channels))
    sent_headers = data.draw(headers)
    path = f"/v1/models/{NAME}:predict" if protocol == "v1" else f"/v2/models/{NAME}/infer"
    for role in ("combined", "transformer", "predictor"):
        response = httpx.post(
            f"{servers[role]}{path}", content=json.dumps(body).encode(), headers=sent_headers, timeout=30
        )
        assert response.status_code < 500, (role, body, sent_headers, response.status_code, response.text)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_5xx_for_any_binary_request(servers: dict[str, str], rows: Any, data: st.DataObject) -> None:  # noqa: F811
    channels = [c for c in rows.columns if c != "expected"]
    body, sent_headers = data.draw(binary_bodies(channels))
    for role in ("combined", "transformer", "predictor"):
        with httpx.Client() as client:
            response = client.post(f"{servers[role]}/v2/models/{NAME}/infer", content=body, headers=sent_headers)
            assert response.status_code < 500, (role, body[:300], response.status_code, response.text)
            assert client.get(f"{servers[role]}/v2/health/live").status_code == 200, "the connection serves on"


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_server_fault_for_any_grpc_request(servers: dict[str, str], rows: Any, data: st.DataObject) -> None:  # noqa: F811
    """Over gRPC a client's mistake is INVALID_ARGUMENT, NOT_FOUND or the like, never INTERNAL or
    UNKNOWN (the 5xx of gRPC)."""
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    from tests.serving.test_server import _grpc_stub

    channels = [c for c in rows.columns if c != "expected"]
    tensors = [
        pb.ModelInferRequest.InferInputTensor(
            name=data.draw(_names(channels)),
            datatype=data.draw(st.sampled_from(["FP32", "FP64", "BYTES", "BOOL", "fp32", "INT64", ""])),
            shape=data.draw(st.lists(st.integers(-2, 20), max_size=3)),
        )
        for _ in range(data.draw(st.integers(0, 3)))
    ]
    raw = data.draw(st.lists(st.binary(max_size=200), max_size=3))
    name = data.draw(st.sampled_from([NAME, "nope", ""]))
    request = pb.ModelInferRequest(model_name=name, inputs=tensors, raw_input_contents=raw)
    for role in ("combined", "transformer"):
        try:
            _grpc_stub(servers[f"grpc_{role}"]).ModelInfer(request, timeout=30)
        except grpc.RpcError as error:
            assert error.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (role, request, error)


def test_after_the_fuzzing_every_role_is_ready_and_serves(servers: dict[str, str], rows: Any) -> None:  # noqa: F811
    for role in ("combined", "transformer"):
        assert httpx.get(f"{servers[role]}/v2/health/ready").status_code == 200
        assert httpx.post(f"{servers[role]}/v1/models/{NAME}:predict", json=_v1(rows.head(2))).status_code == 200
        assert httpx.post(f"{servers[role]}/v2/models/{NAME}/infer", json=_v2(rows.head(2))).status_code == 200
    for role in ("combined", "transformer", "predictor"):
        log = (Path(servers["logs"]) / role).read_text()
        assert "Traceback" not in log, (role, log[-3000:])
