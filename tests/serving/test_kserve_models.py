"""How the KServe classes read a client's request, without a server."""

from typing import Any

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


def _following_predictor(
    scaled_input: bool, reference_rows: int, follow: Any = None
) -> "kserve_models.AnomalyPredictor":
    """A predictor whose threshold follows each stream's scores (by default, their median), on the
    raw signal of two channels (a model with the serving interface, no training needed)."""
    from container_component_src.evaluation.follow import FollowStreams, MedianFollow
    from container_component_src.model.residual import ResidualDetector
    from container_component_src.serving.inference import AnomalyScorer

    scaler = {"channels": ["a", "b"], "center": [0.0, 0.0], "scale": [1.0, 1.0], "reference_rows": reference_rows}
    predictor = kserve_models.AnomalyPredictor("m", "unused", None, scaled_input, max_batch_rows=1_000)
    follow = follow or MedianFollow(level=1.0, spread=1.0)
    predictor.scorer = AnomalyScorer(
        ResidualDetector.raw_signal(np.ones(2)), scaler, threshold=4.0, streams=FollowStreams(follow, 4.0)
    )
    return predictor


@pytest.mark.parametrize("rule", ["median", "spread", "iqr"])
def test_the_served_threshold_follows_each_stream_as_evaluation_replays_it(rule: str) -> None:
    """Each stream's rows are judged as the rule's `replay` judges a run: a stream is what the
    reference names (a new run, a new reference), across requests and protocols."""
    from container_component_src.evaluation.follow import RULES

    rng = np.random.default_rng(0)
    high = rng.normal(3.0, 0.3, size=(60, 2))  # squares sum ~18: all above 4 while the median is low
    low = rng.normal(0.0, 0.5, size=(60, 2))
    replay = RULES[rule](level=1.0, **{"spread" if rule == "median" else "unit": 1.0})
    predictor = _following_predictor(scaled_input=False, reference_rows=3, follow=replay)
    flags: dict[str, list[bool]] = {"high": [], "low": []}
    for start in range(0, 60, 20):  # the two streams' requests interleaved
        for name, rows, reference in (("high", high, {"a": 0.0, "b": 0.0}), ("low", low, {"a": 9.0, "b": 9.0})):
            shifted = rows[start : start + 20] + reference["a"]
            body = {"instances": [{"a": a, "b": b} for a, b in shifted.tolist()], "reference": reference}
            flags[name] += [p["anomaly"] for p in predictor.predict(body)["predictions"]]
    assert flags["high"] == replay.replay(np.square(high).sum(axis=1), 4.0).tolist()
    assert flags["low"] == replay.replay(np.square(low).sum(axis=1), 4.0).tolist()
    assert flags["high"][0] and sum(flags["high"]) < 10, "followed after its first rows (fixed: all 60)"


def test_the_transformer_names_the_stream_to_its_predictor() -> None:
    from kserve.context import set_predictor_config

    transformer = kserve_models.TelemetryTransformer("m", "unused", max_batch_rows=10)
    transformer.scaler = {"channels": ["a", "b"], "center": [0.0, 0.0], "scale": [1.0, 1.0], "reference_rows": 3}
    body = {"instances": [{"a": 1.0, "b": 2.0}], "reference": {"a": 0.5, "b": 0.25}}
    key = np.array([0.5, 0.25]).tobytes().hex()
    for protocol in ("v1", "v2"):
        set_predictor_config(kserve.PredictorConfig(predictor_host="localhost:1", predictor_protocol=protocol))
        request = transformer.preprocess(body)
        assert (request["stream"] if protocol == "v1" else request["parameters"]["stream"]) == key
    # The predictor behind it follows the stream it is told, V1 or V2.
    predictor = _following_predictor(scaled_input=True, reference_rows=3)
    v1 = predictor.predict({"instances": [[3.0, 3.0]] * 3, "stream": key})["predictions"]
    tensor = kserve.InferInput(name="scaled", shape=[1, 2], datatype="FP64")
    tensor.set_data_from_numpy(np.array([[3.0, 3.0]]))
    v2 = predictor.predict(kserve.InferRequest("m", [tensor], parameters={"stream": key}))
    other = predictor.predict({"instances": [[3.0, 3.0]], "stream": "another"})["predictions"]
    assert [p["anomaly"] for p in v1] == [True, False, False] and v2.outputs[1].data == [False]
    assert other[0]["anomaly"], "another stream starts at the margin itself"
    with pytest.raises(kserve.errors.InvalidInput, match='"stream" must be a string naming the stream, got int'):
        predictor.predict({"instances": [[3.0, 3.0]], "stream": 5})
