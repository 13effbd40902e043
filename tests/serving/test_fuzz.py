"""Property-based fuzzing of the three server roles (bounded): whatever the body and headers, never
a 5xx, the server stays ready, and valid requests still answer 200."""

from __future__ import annotations

import json
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
                "shape": st.lists(st.one_of(st.integers(-3, 4), st.text(max_size=2)), max_size=3),
                "datatype": st.sampled_from(["FP32", "FP64", "INT64", "BYTES", "BOOL", "nope"]),
                "data": values,
            }
        )
        return "v2", {"inputs": draw(st.lists(tensor, max_size=len(channels) + 1))}
    return draw(st.sampled_from(["v1", "v2"])), draw(values)


headers = st.fixed_dictionaries(
    {"content-type": st.sampled_from(["application/json", "application/octet-stream", "text/plain"])},
    optional={
        "Inference-Header-Content-Length": st.one_of(
            st.text(alphabet="0123456789abcdef.-+e", max_size=4), st.integers(-5, 10**6).map(str)
        )
    },
)


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


def test_after_the_fuzzing_every_role_is_ready_and_serves(servers: dict[str, str], rows: Any) -> None:  # noqa: F811
    for role in ("combined", "transformer"):
        assert httpx.get(f"{servers[role]}/v2/health/ready").status_code == 200
        assert httpx.post(f"{servers[role]}/v1/models/{NAME}:predict", json=_v1(rows.head(2))).status_code == 200
        assert httpx.post(f"{servers[role]}/v2/models/{NAME}/infer", json=_v2(rows.head(2))).status_code == 200
