import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from container_component_src.evaluation.follow import IqrFollow, MedianFollow, SpreadFollow
from container_component_src.serving import inference
from container_component_src.serving.inference import (
    RequestError,
    ServingConfig,
    records_to_matrix,
    scaled_rows_to_matrix,
    scaled_tensor_to_matrix,
    tensors_to_matrix,
    v2_request,
)
from container_component_src.storage import InputError

CHANNELS = ["a", "b", "c"]


def test_records_are_ordered_by_channel() -> None:
    values = records_to_matrix([{"c": 3, "a": 1.0, "b": 2.5}, {"b": 0, "c": 0, "a": -1}], CHANNELS, 10)
    assert values.tolist() == [[1.0, 2.5, 3.0], [-1.0, 0.0, 0.0]] and values.dtype == np.float64


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        ([], "holds no rows"),
        ([{"a": 1, "b": 2, "c": 3}] * 11, "holds 11 rows; the limit is 10"),
        ({"a": 1}, "must be a list"),
        ([[1, 2, 3]], "instance 0 is not an object"),
        ([{"a": 1, "b": 2, "c": 3, "d": 4}], "instance 0: unknown channel.s. d"),
        ([{"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 2}], "instance 1: lacks c"),
        ([{"a": 1, "b": "x", "c": 3}], 'instance 0, channel b: "x" is not a number'),
        ([{"a": 1, "b": None, "c": 3}], "channel b: null is not a number"),
        ([{"a": 1, "b": [1, 2], "c": 3}], r"channel b: \[1, 2\] is not a number"),
        ([{"a": 1, "b": 2, "c": float("nan")}], "channel c: NaN or infinite"),
        ([{"a": True, "b": False, "c": True}], "channel a: true is a boolean, not a number"),
    ],
)
def test_bad_records_are_named(instances: object, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        records_to_matrix(instances, CHANNELS, 10)


def test_tensors_are_ordered_by_channel() -> None:
    tensors = {"b": np.array([2.0, 5.0]), "a": np.array([[1.0], [4.0]]), "c": np.array([3.0, 6.0], dtype=np.float32)}
    assert tensors_to_matrix(tensors, CHANNELS, 10).tolist() == [[1, 2, 3], [4, 5, 6]]


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"a": np.ones(2), "b": np.ones(2)}, "missing input.s. c"),
        ({"a": np.ones(2), "b": np.ones(2), "c": np.ones(2), "z": np.ones(2)}, "unknown input.s. z"),
        ({"a": np.ones((2, 2)), "b": np.ones(2), "c": np.ones(2)}, r"input a has shape \[2, 2\]"),
        ({"a": np.ones(2), "b": np.ones(3), "c": np.ones(2)}, "different lengths"),
        ({"a": np.ones(0), "b": np.ones(0), "c": np.ones(0)}, "no rows"),
        ({"a": np.ones(2), "b": np.array([1.0, np.inf]), "c": np.ones(2)}, "input b, row 1: NaN or infinite"),
    ],
)
def test_bad_tensors_are_named(tensors: dict, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        tensors_to_matrix(tensors, CHANNELS, 10)


def test_scaled_inputs_are_checked() -> None:
    assert scaled_rows_to_matrix([[1, 2, 3]], 3, 10).dtype == np.float64
    with pytest.raises(RequestError, match=r"shape \[1, 2\]; expected \[rows, 3\]"):
        scaled_rows_to_matrix([[1, 2]], 3, 10)
    with pytest.raises(RequestError, match="equal length"):
        scaled_rows_to_matrix([[1, 2, 3], [1]], 3, 10)
    with pytest.raises(RequestError, match=r"expected \[rows, 3\]"):
        scaled_tensor_to_matrix(np.ones((2, 4)), 3, 10)
    with pytest.raises(RequestError, match="NaN or infinite"):
        scaled_tensor_to_matrix(np.array([[1.0, np.nan, 0.0]]), 3, 10)
    # A NaN in one [rows, channels] tensor names that tensor, the row and the channel.
    rows = np.ones((3, 3))
    rows[2, 1] = np.nan
    with pytest.raises(RequestError, match=r"^input rows, row 2, channel b: NaN or infinite$"):
        tensors_to_matrix({"rows": rows}, ["a", "b", "c"], 10)


def test_serving_config_comes_from_the_published_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="serving.json does not exist"):
        ServingConfig.read(str(tmp_path))
    (tmp_path / "serving.json").write_text(json.dumps({"threshold": 2.5, "fc1": 0.8}))
    assert ServingConfig.read(str(tmp_path)) == ServingConfig(2.5, 0.8), "published before promises were recorded"
    promise = {"promised_false_alarm_rate": 0.01, "false_alarm_rate": 0.03, "promise_tolerance": 2.0}
    (tmp_path / "serving.json").write_text(json.dumps({"threshold": 2.5, "fc1": 0.8} | promise))
    assert ServingConfig.read(str(tmp_path)) == ServingConfig(2.5, 0.8, 0.01, 0.03, 2.0)
    # Published before the spread rule: the median rule, unnamed.
    (tmp_path / "serving.json").write_text(json.dumps({"threshold": 2.5, "follow": {"level": 1.0, "spread": 0.5}}))
    assert ServingConfig.read(str(tmp_path)).follow == MedianFollow(level=1.0, spread=0.5)
    spread = {"rule": "spread", "level": 1.0, "unit": 0.25}
    (tmp_path / "serving.json").write_text(json.dumps({"threshold": 2.5, "follow": spread}))
    assert ServingConfig.read(str(tmp_path)).follow == SpreadFollow(level=1.0, unit=0.25)
    (tmp_path / "serving.json").write_text(json.dumps({"threshold": 2.5, "follow": spread | {"rule": "iqr"}}))
    assert ServingConfig.read(str(tmp_path)).follow == IqrFollow(level=1.0, unit=0.25)
    for content, problem in (
        ({"threshold": 2.5, "follow": {"level": 1.0, "spread": 0}}, 'follow is {"level": 1.0, "spread": 0}, not a'),
        ({"threshold": 2.5, "follow": "median"}, """follow is "median", not a rule ('median', 'spread', 'iqr')"""),
        ({"threshold": 2.5, "follow": spread | {"rule": "mean"}}, '"rule": "mean"'),
        ({"threshold": 2.5, "follow": spread | {"rule": ["spread"]}}, "not a rule"),
        ({"threshold": 2.5, "follow": spread | {"unit": True}}, "not a level and a unit > 0"),
        ({"fc1": 0.8}, "has no threshold"),
        ({"threshold": "2.5"}, 'threshold is "2.5", not a number'),
        ({"threshold": 2.5, "promised_false_alarm_rate": 1.5}, "promised_false_alarm_rate is 1.5, not a number in"),
        ({"threshold": 2.5, "promise_tolerance": -1}, "promise_tolerance is -1, not a number in [0.0, inf]"),
    ):
        (tmp_path / "serving.json").write_text(json.dumps(content))
        with pytest.raises(InputError, match=re.escape(problem)):
            ServingConfig.read(str(tmp_path))


def test_v2_request_has_one_fp32_tensor_per_channel() -> None:
    body = v2_request({"a": [1.0, 2.0], "b": [3.0, 4.0]})
    assert body["inputs"][1] == {"name": "b", "shape": [2], "datatype": "FP32", "data": [3.0, 4.0]}


def _window_scorer(window: int = 4) -> inference.AnomalyScorer:
    import torch

    from container_component_src.model.vae import WindowVAE

    torch.manual_seed(0)
    model = torch.jit.script(WindowVAE(2, [8], 2, window=window).eval())
    scaler = {"channels": ["a", "b"], "center": [0.0, 0.0], "scale": [1.0, 1.0]}
    return inference.AnomalyScorer(model=model, scaler=scaler, threshold=50.0)


def test_a_windowed_model_scores_the_rows_after_its_context() -> None:
    scorer = _window_scorer(window=4)
    rows = np.random.default_rng(0).normal(size=(10, 2))
    scores, flags = scorer.score(rows)
    assert scorer.context == 3 and scores.shape == flags.shape == (7,)
    np.testing.assert_allclose(scorer.score(rows[5:9])[0], scores[5:6], rtol=1e-5)
    with pytest.raises(inference.RequestError, match="holds 3 row\\(s\\); .* send at least 4 consecutive rows"):
        scorer.score(rows[:3])


def test_an_overflowing_row_flags_every_window_that_holds_it() -> None:
    scorer = _window_scorer(window=3)
    rows = np.zeros((6, 2))
    rows[2, 1] = 1e300
    scores, flags = scorer.score(rows)
    assert flags[:3].all() and (scores[:3] == inference.MAX_SCORE).all(), "rows 2, 3 and 4 see row 2"
    assert np.isfinite(scores).all() and scores[3] < inference.MAX_SCORE


def test_a_streams_reference_scales_served_rows_as_apply_scaler_scaled_its_run() -> None:
    from container_component_src.data.scaling import apply_scaler, fit_scaler

    times = pd.date_range("2021-01-01", periods=5, freq="1min", tz="UTC")
    run = pd.DataFrame({"a": [5.0, 7.0, 6.0, 9.0, 4.0], "b": [1.0, 1.5, 2.0, 0.0, 3.0], "c": [0.0, 1, 0, 1, 0]}, times)
    scaler = fit_scaler(run, CHANNELS, reference_rows=3)
    reference = run.iloc[:3].mean().to_dict()
    served = inference.scale_for_serving(run.to_numpy(), scaler, reference)
    np.testing.assert_allclose(served, apply_scaler(run, scaler, "f").to_numpy(), rtol=1e-6)
    by_order = inference.scale_for_serving(run.to_numpy(), scaler, np.array([list(reference.values())]))
    np.testing.assert_allclose(by_order, served)
    with pytest.raises(RequestError, match='send "reference", each channel\'s mean over the first 3 rows'):
        inference.scale_for_serving(run.to_numpy(), scaler)
    with pytest.raises(RequestError, match='this model takes no "reference"'):
        inference.scale_for_serving(run.to_numpy(), fit_scaler(run, CHANNELS), reference)


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ({"a": 1.0, "b": 2.0}, "reference: lacks c"),
        ({"a": 1.0, "b": 2.0, "c": 3.0, "z": 0.0}, "reference: unknown channel.s. z"),
        ({"a": 1.0, "b": "2", "c": 3.0}, 'reference, channel b: "2" is not a number'),
        ({"a": 1.0, "b": True, "c": 3.0}, "reference, channel b: true is a boolean"),
        ([1.0, 2.0, 3.0], '"reference" must be an object keyed by channel'),
        (np.ones(2), r"input reference has shape \[2\]; expected \[3\]"),
        (np.array([1.0, np.nan, 3.0]), "input reference, channel b: NaN or infinite"),
    ],
)
def test_bad_references_are_named(reference: object, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        inference.reference_vector(reference, CHANNELS)


def test_v2_request_carries_the_reference_as_one_tensor() -> None:
    body = v2_request({"a": [1.0], "b": [2.0]}, [0.5, 1.5])
    assert body["inputs"][-1] == {"name": "reference", "shape": [2], "datatype": "FP64", "data": [0.5, 1.5]}
    assert inference.v1_request([{"a": 1.0}], {"a": 0.5}) == {"instances": [{"a": 1.0}], "reference": {"a": 0.5}}
