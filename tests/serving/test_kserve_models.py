"""How the KServe classes read a client's request, without a server."""

import numpy as np
import pytest

from container_component_src.serving.server import import_kserve

kserve = import_kserve()
from container_component_src.serving import kserve_models  # noqa: E402 (kserve must be imported first)


def _request(tensors: dict[str, list[float]]) -> object:
    inputs = []
    for name, data in tensors.items():
        tensor = kserve.InferInput(name=name, shape=[len(data)], datatype="FP64")
        tensor.set_data_from_numpy(np.asarray(data, dtype=np.float64))
        inputs.append(tensor)
    return kserve.InferRequest(model_name="m", infer_inputs=inputs)


@pytest.mark.parametrize("reference_rows", [0, 3])
def test_a_channel_named_reference_stays_a_channel(reference_rows: int) -> None:
    scaler = {"channels": ["a", "reference"], "reference_rows": reference_rows}
    matrix, reference = kserve_models._raw_matrix(_request({"reference": [2.0], "a": [1.0]}), scaler, 10)
    assert matrix.tolist() == [[1.0, 2.0]] and reference is None


def test_the_reference_tensor_is_taken_apart_from_the_rows() -> None:
    scaler = {"channels": ["a", "b"], "reference_rows": 3}
    request = _request({"b": [2.0], "reference": [5.0, 6.0], "a": [1.0]})
    matrix, reference = kserve_models._raw_matrix(request, scaler, 10)
    assert matrix.tolist() == [[1.0, 2.0]] and reference.tolist() == [5.0, 6.0]
    _, none = kserve_models._raw_matrix({"instances": [{"a": 1.0, "b": 2.0}]}, scaler, 10)
    assert none is None
