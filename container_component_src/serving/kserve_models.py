"""KServe `Model` classes: they translate V1/V2 requests to `inference` calls and back.

Imported only by the serve command (kserve is heavy, and parses sys.argv on import; see
`server.import_kserve`).
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

import httpx
import numpy as np
from kserve import InferInput, InferOutput, InferRequest, InferResponse, Model
from kserve.errors import InvalidInput, ModelNotReady
from kserve.inference_client import InferenceRESTClient, RESTConfig

from container_component_src.serving import inference
from container_component_src.serving.inference import RequestError
from container_component_src.serving.metrics import ROWS_FLAGGED, ROWS_SCORED


def _flat(data: Any) -> list[Any]:
    return [v for item in data for v in _flat(item)] if isinstance(data, list) else [data]


def _check_tensor(tensor: InferInput) -> None:
    """A JSON tensor's shape is non-negative integers and its data numbers (numpy would read
    "1.5" and True as numbers)."""
    shape = tensor.shape
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise RequestError(f"input {tensor.name}: shape {shape!r} must be a list of non-negative integers")
    if isinstance(tensor.data, list):
        values = _flat(tensor.data)
        if any(type(v) not in (int, float) for v in values):
            bad = next(v for v in values if type(v) not in (int, float))
            raise RequestError(f"input {tensor.name}: {json.dumps(bad)[:40]} is not a number")
        if len(values) != math.prod(shape):
            raise RequestError(f"input {tensor.name}: {len(values)} values do not fill shape {shape}")


def _v2_tensors(request: InferRequest) -> dict[str, np.ndarray]:
    tensors = {}
    for tensor in request.inputs:
        if tensor.datatype not in ("FP32", "FP64"):
            raise RequestError(f"input {tensor.name} has datatype {tensor.datatype}; expected FP32 or FP64")
        if tensor.name in tensors:
            raise RequestError(f"input {tensor.name} appears twice")
        _check_tensor(tensor)
        try:
            tensors[tensor.name] = tensor.as_numpy()
        except (ValueError, TypeError, OverflowError) as exc:
            raise RequestError(f"input {tensor.name}: data does not match shape {tensor.shape} ({exc})") from None
    return tensors


def _input_types(channels: list[str]) -> list[dict[str, Any]]:
    """Both raw layouts: one tensor per channel, or one [rows, channels] tensor (columns in this order)."""
    per_channel = [{"name": c, "datatype": "FP32", "shape": [-1]} for c in channels]
    return [*per_channel, {"name": inference.ROWS_TENSOR, "datatype": "FP32", "shape": [-1, len(channels)]}]


OUTPUT_TYPES = [
    {"name": "score", "datatype": "FP64", "shape": [-1]},
    {"name": "anomaly", "datatype": "BOOL", "shape": [-1]},
]


def _outputs(scores: np.ndarray, flags: np.ndarray) -> list[InferOutput]:
    n = len(scores)
    return [
        InferOutput(name="score", shape=[n], datatype="FP64", data=scores.tolist()),
        InferOutput(name="anomaly", shape=[n], datatype="BOOL", data=flags.tolist()),
    ]


class AnomalyPredictor(Model):
    """Scores rows and flags anomalies. With `scaled_input` it is the predictor behind the
    transformer (scaled rows in channel order); without, it is the whole service in one process
    (raw rows named by channel, scaled here).

    Args:
        name: Model name in the URL paths.
        model_dir: Published model folder (Model artifact plus serving.json).
        threshold: Flag threshold; None reads it from serving.json.
        scaled_input: Expect scaled rows (predictor role) instead of raw named channels.
        max_batch_rows: Largest request accepted.
    """

    def __init__(
        self, name: str, model_dir: str, threshold: float | None, scaled_input: bool, max_batch_rows: int
    ) -> None:
        super().__init__(name)
        self.model_dir, self.threshold = model_dir, threshold
        self.scaled_input, self.max_batch_rows = scaled_input, max_batch_rows
        self.scorer: inference.AnomalyScorer | None = None

    def load(self) -> bool:
        self.scorer = inference.AnomalyScorer.load(self.model_dir, self.threshold)
        self.ready = True
        return self.ready

    def _matrix(self, payload: dict[str, Any] | InferRequest) -> np.ndarray:
        scorer = self.scorer
        channels, limit = scorer.channels, self.max_batch_rows
        if isinstance(payload, InferRequest):
            tensors = _v2_tensors(payload)
            if self.scaled_input:
                if set(tensors) != {inference.SCALED_TENSOR}:
                    raise RequestError(f"expected one input named {inference.SCALED_TENSOR!r}, got {sorted(tensors)}")
                return inference.scaled_tensor_to_matrix(tensors[inference.SCALED_TENSOR], len(channels), limit)
            return scorer.scale(inference.tensors_to_matrix(tensors, channels, limit))
        if not isinstance(payload, dict) or "instances" not in payload:
            raise RequestError('a V1 request body must be an object with "instances"')
        if self.scaled_input:
            return inference.scaled_rows_to_matrix(payload["instances"], len(channels), limit)
        return scorer.scale(inference.records_to_matrix(payload["instances"], channels, limit))

    def predict(
        self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None
    ) -> dict[str, Any] | InferResponse:
        try:
            scores, flags = self.scorer.score(self._matrix(payload))
        except RequestError as exc:
            raise InvalidInput(str(exc)) from None
        ROWS_SCORED.inc(len(scores))
        ROWS_FLAGGED.inc(int(flags.sum()))
        if isinstance(payload, InferRequest):
            return InferResponse(
                response_id=payload.id or str(uuid.uuid4()), model_name=self.name, infer_outputs=_outputs(scores, flags)
            )
        return {
            "predictions": [{"score": s, "anomaly": f} for s, f in zip(scores.tolist(), flags.tolist(), strict=True)]
        }

    def get_input_types(self) -> list[dict[str, Any]]:
        if self.scaled_input:
            return [{"name": inference.SCALED_TENSOR, "datatype": "FP32", "shape": [-1, len(self.scorer.channels)]}]
        return _input_types(self.scorer.channels)

    def get_output_types(self) -> list[dict[str, Any]]:
        return OUTPUT_TYPES


class TelemetryTransformer(Model):
    """Checks and orders the channels of raw rows, scales them with the model's scaler, and sends
    them to the predictor in the protocol the client used.

    Args:
        name: Model name (the predictor serves the same name).
        model_dir: Published model folder (only scaler.json is read).
        max_batch_rows: Largest request accepted.
    """

    def __init__(self, name: str, model_dir: str, max_batch_rows: int) -> None:
        super().__init__(name)
        self.model_dir, self.max_batch_rows = model_dir, max_batch_rows
        self.scaler: dict[str, Any] = {}
        self._clients: dict[str, InferenceRESTClient] = {}

    def load(self) -> bool:
        from container_component_src import storage
        from container_component_src.model.io import SCALER

        self.scaler = storage.read_json(storage.join(self.model_dir, SCALER))
        self.ready = True
        return self.ready

    def get_input_types(self) -> list[dict[str, Any]]:
        return _input_types(self.scaler["channels"])

    def get_output_types(self) -> list[dict[str, Any]]:
        return OUTPUT_TYPES

    def preprocess(
        self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None
    ) -> dict[str, Any] | InferRequest:
        from container_component_src.serving.inference import scale_for_serving as scale_values

        channels = self.scaler["channels"]
        try:
            if isinstance(payload, InferRequest):
                raw = inference.tensors_to_matrix(_v2_tensors(payload), channels, self.max_batch_rows)
                scaled = scale_values(raw, self.scaler)
                tensor = InferInput(inference.SCALED_TENSOR, list(scaled.shape), "FP64", scaled.ravel().tolist())
                return InferRequest(model_name=self.name, infer_inputs=[tensor], request_id=payload.id)
            if not isinstance(payload, dict) or "instances" not in payload:
                raise RequestError('a V1 request body must be an object with "instances"')
            raw = inference.records_to_matrix(payload["instances"], channels, self.max_batch_rows)
            return {"instances": scale_values(raw, self.scaler).tolist()}
        except RequestError as exc:
            raise InvalidInput(str(exc)) from None

    async def predict(
        self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None
    ) -> dict[str, Any] | InferResponse:
        protocol = "v2" if isinstance(payload, InferRequest) else "v1"
        config = self.predictor_config
        if protocol not in self._clients:
            self._clients[protocol] = InferenceRESTClient(
                RESTConfig(protocol=protocol, timeout=config.timeout, retries=config.retries)
            )
        try:
            return await self._clients[protocol].infer(config.predictor_base_url, payload, model_name=self.name)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 400:
                raise InvalidInput(f"predictor refused the request: {exc.response.text}") from None
            raise
        except httpx.TransportError as exc:
            raise ModelNotReady(self.name, f"its predictor does not answer ({exc})") from None
