"""KServe `Model` classes: they translate V1/V2 requests to `inference` calls and back.

Imported only by the serve command (kserve is heavy, and parses sys.argv on import; see
`server.import_kserve`).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import math
import uuid
from typing import Any

import aiohttp
import numpy as np
import orjson
from kserve import InferInput, InferOutput, InferRequest, InferResponse, Model
from kserve.errors import InvalidInput, ModelNotReady

from container_component_src.serving import inference
from container_component_src.serving.inference import RequestError
from container_component_src.serving.metrics import ROWS_FLAGGED, ROWS_SCORED, PromiseWatch


def _flat(data: Any) -> list[Any]:
    return [v for item in data for v in _flat(item)] if isinstance(data, list) else [data]


def _check_tensor(tensor: InferInput) -> None:
    """A JSON tensor's shape is non-negative integers and its data numbers (numpy would read
    "1.5" and True as numbers)."""
    shape = tensor.shape
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise RequestError(f"input {tensor.name}: shape {shape!r} must be a list of non-negative integers")
    # Binary data (REST's binary extension, gRPC's raw_input_contents) is checked as it is decoded.
    # KServe keeps it in `_raw_data` and has no public name for it; `data` is then empty.
    if isinstance(tensor.data, list) and getattr(tensor, "_raw_data", None) is None:
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


def _input_types(scaler: dict[str, Any]) -> list[dict[str, Any]]:
    """Both raw layouts: one tensor per channel, or one [rows, channels] tensor (columns in this
    order); and the stream's reference when the model takes one."""
    channels = scaler["channels"]
    per_channel = [{"name": c, "datatype": "FP32", "shape": [-1]} for c in channels]
    types = [*per_channel, {"name": inference.ROWS_TENSOR, "datatype": "FP32", "shape": [-1, len(channels)]}]
    if scaler.get("reference_rows", 0):
        types.append({"name": inference.REFERENCE, "datatype": "FP32", "shape": [len(channels)]})
    return types


def _raw_matrix(
    payload: dict[str, Any] | InferRequest, scaler: dict[str, Any], max_rows: int
) -> tuple[np.ndarray, Any]:
    """Raw rows of a client's request in the scaler's channel order, and its reference (None
    when it carries none)."""
    channels = scaler["channels"]
    if isinstance(payload, InferRequest):
        tensors = _v2_tensors(payload)
        # A channel may itself be called "reference": then it stays a channel.
        reference = None if inference.REFERENCE in channels else tensors.pop(inference.REFERENCE, None)
        return inference.tensors_to_matrix(tensors, channels, max_rows), reference
    if not isinstance(payload, dict) or "instances" not in payload:
        raise RequestError('a V1 request body must be an object with "instances"')
    return inference.records_to_matrix(payload["instances"], channels, max_rows), payload.get(inference.REFERENCE)


_JSON = {"content-type": "application/json"}
# The client's protocol, V2 request id, requested outputs and binary answer, for the transformer's
# answer. Each request runs in a task of its own, so this is per request.
_CLIENT: contextvars.ContextVar[tuple[str, str | None, list[Any] | None, bool]] = contextvars.ContextVar(
    "eclss_client_protocol"
)
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


OUTPUT_NAMES = ("score", "anomaly")


def _requested(request: InferRequest) -> tuple[list[Any] | None, bool]:
    """The outputs a V2 request asks for (None: all) and whether they go back as binary data (the
    REST `binary_data_output` parameter, or raw inputs over gRPC: a client that sends
    `raw_input_contents`, as Triton's does, reads `raw_output_contents`).

    Raises:
        RequestError: A requested output the model does not have.
    """
    requested = list(request.request_outputs or []) or None
    unknown = [o.name for o in requested or [] if o.name not in OUTPUT_NAMES]
    if unknown:
        raise RequestError(f"requested output(s) {', '.join(unknown)} unknown (outputs: {', '.join(OUTPUT_NAMES)})")
    return requested, bool(request.use_binary_outputs)


def _response(
    request_id: str, name: str, scores: Any, flags: Any, requested: list[Any] | None, binary: bool
) -> InferResponse:
    """The V2 answer: the requested outputs, as JSON or binary data as the request asked."""
    outputs = _outputs(np.asarray(scores, dtype=np.float64), np.asarray(flags, dtype=bool))
    if requested:
        names = {o.name for o in requested}
        outputs = [o for o in outputs if o.name in names]
    return InferResponse(
        response_id=request_id,
        model_name=name,
        infer_outputs=outputs,
        use_binary_outputs=binary,
        requested_outputs=requested,
    )


def _error_text(content: bytes) -> str:
    """The reason in a server's error answer: its JSON "error" field, else its text (shortened)."""
    try:
        return str(orjson.loads(content)["error"])[:500]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return content.decode(errors="replace")[:500]


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
        self.watch: PromiseWatch | None = None

    def load(self) -> bool:
        self.scorer = inference.AnomalyScorer.load(self.model_dir, self.threshold)
        config = self.scorer.config
        # A threshold given by hand promises nothing known; an older folder recorded no promise.
        if config is not None and config.promised_false_alarm_rate:
            self.watch = PromiseWatch(
                config.promised_false_alarm_rate, config.promise_tolerance, config.false_alarm_rate
            )
        self.ready = True
        return self.ready

    def _matrix(self, payload: dict[str, Any] | InferRequest) -> tuple[np.ndarray, str | None]:
        """The request's scaled rows, and the stream they come from (`inference.stream_key`: from
        the client's reference, or as the transformer names it)."""
        scorer = self.scorer
        n_channels, limit = len(scorer.channels), self.max_batch_rows
        if not self.scaled_input:
            raw, reference = _raw_matrix(payload, scorer.scaler, limit)
            return scorer.scale(raw, reference), inference.stream_key(reference, scorer.channels)
        if isinstance(payload, InferRequest):
            tensors = _v2_tensors(payload)
            if set(tensors) != {inference.SCALED_TENSOR}:
                raise RequestError(f"expected one input named {inference.SCALED_TENSOR!r}, got {sorted(tensors)}")
            stream = (payload.parameters or {}).get(inference.STREAM)
            matrix = inference.scaled_tensor_to_matrix(tensors[inference.SCALED_TENSOR], n_channels, limit)
        else:
            if not isinstance(payload, dict) or "instances" not in payload:
                raise RequestError('a V1 request body must be an object with "instances"')
            stream = payload.get(inference.STREAM)
            matrix = inference.scaled_rows_to_matrix(payload["instances"], n_channels, limit)
        if stream is not None and not isinstance(stream, str):
            raise RequestError(f'"{inference.STREAM}" must be a string naming the stream, got {type(stream).__name__}')
        return matrix, stream

    def predict(
        self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None
    ) -> dict[str, Any] | InferResponse:
        try:
            requested = _requested(payload) if isinstance(payload, InferRequest) else None
            scores, flags = self.scorer.score(*self._matrix(payload))
        except RequestError as exc:
            raise InvalidInput(str(exc)) from None
        flagged = int(flags.sum())
        ROWS_SCORED.inc(len(scores))
        ROWS_FLAGGED.inc(flagged)
        if self.watch is not None:
            self.watch.saw(len(scores), flagged)
        if isinstance(payload, InferRequest):
            return _response(payload.id or str(uuid.uuid4()), self.name, scores, flags, *requested)
        return {
            "predictions": [{"score": s, "anomaly": f} for s, f in zip(scores.tolist(), flags.tolist(), strict=True)]
        }

    def get_input_types(self) -> list[dict[str, Any]]:
        if self.scaled_input:
            return [{"name": inference.SCALED_TENSOR, "datatype": "FP32", "shape": [-1, len(self.scorer.channels)]}]
        return _input_types(self.scorer.scaler)

    def get_output_types(self) -> list[dict[str, Any]]:
        return OUTPUT_TYPES


class TelemetryTransformer(Model):
    """Checks and orders the channels of raw rows, scales them with the model's scaler, and sends
    them to the predictor in the predictor's protocol; answers in the client's.

    Args:
        name: Model name (the predictor serves the same name).
        model_dir: Published model folder (only scaler.json is read).
        max_batch_rows: Largest request accepted.
    """

    def __init__(self, name: str, model_dir: str, max_batch_rows: int) -> None:
        super().__init__(name)
        self.model_dir, self.max_batch_rows = model_dir, max_batch_rows
        self.scaler: dict[str, Any] = {}
        self._session: aiohttp.ClientSession | None = None
        self._closing: asyncio.Task | None = None

    def load(self) -> bool:
        from container_component_src import storage
        from container_component_src.model.io import SCALER

        self.scaler = storage.read_json(storage.join(self.model_dir, SCALER))
        self.ready = True
        return self.ready

    def get_input_types(self) -> list[dict[str, Any]]:
        return _input_types(self.scaler)

    def get_output_types(self) -> list[dict[str, Any]]:
        return OUTPUT_TYPES

    def preprocess(self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None) -> dict:
        """Check, order and scale the client's rows: the predictor's request, in its protocol."""
        try:
            requested = _requested(payload) if isinstance(payload, InferRequest) else (None, False)
            raw, reference = _raw_matrix(payload, self.scaler, self.max_batch_rows)
            scaled = inference.scale_for_serving(raw, self.scaler, reference)
            # The predictor sees scaled rows only: it is told which stream they come from.
            stream = inference.stream_key(reference, self.scaler["channels"])
        except RequestError as exc:
            raise InvalidInput(str(exc)) from None
        if isinstance(payload, InferRequest):
            _CLIENT.set(("grpc" if payload.from_grpc else "v2", payload.id or str(uuid.uuid4()), *requested))
        else:
            _CLIENT.set(("v1", None, None, False))
        if self.predictor_config.protocol == "v1":
            return {"instances": scaled.tolist(), **({inference.STREAM: stream} if stream else {})}
        tensor = {"name": inference.SCALED_TENSOR, "shape": list(scaled.shape), "datatype": "FP64"}
        request = {"id": _CLIENT.get()[1], "inputs": [tensor | {"data": scaled.ravel().tolist()}]}
        return request | ({"parameters": {inference.STREAM: stream}} if stream else {})

    def postprocess(
        self, response: dict[str, Any], headers: dict[str, str] | None = None
    ) -> dict[str, Any] | InferResponse:
        """The predictor's answer (V1 predictions or V2 outputs) in the client's protocol."""
        protocol, request_id, requested, binary = _CLIENT.get()
        if (protocol, "predictions" in response) in (("v1", True), ("v2", False)) and not (requested or binary):
            return response  # already in the client's protocol
        if "predictions" in response:
            scores = [p["score"] for p in response["predictions"]]
            flags = [p["anomaly"] for p in response["predictions"]]
        else:
            outputs = {output["name"]: output["data"] for output in response["outputs"]}
            scores, flags = outputs["score"], outputs["anomaly"]
        if protocol == "grpc" or requested or binary:  # KServe's services turn an InferResponse into theirs
            return _response(request_id, self.name, scores, flags, requested, binary)
        if protocol == "v2":
            outputs = [
                {"name": "score", "shape": [len(scores)], "datatype": "FP64", "data": scores},
                {"name": "anomaly", "shape": [len(flags)], "datatype": "BOOL", "data": flags},
            ]  # as the V2 endpoint validates it: an InferResponse would be built and taken apart again
            return {"model_name": self.name, "id": request_id, "outputs": outputs}
        return {"predictions": [{"score": score, "anomaly": flag} for score, flag in zip(scores, flags, strict=True)]}

    async def predict(self, payload: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
        """Send the scaled rows to the predictor and return its answer.

        Raises:
            InvalidInput: The predictor refused the rows (400).
            ModelNotReady: The predictor does not answer, or is not ready (503 here).
        """
        path = f"v1/models/{self.name}:predict" if "instances" in payload else f"v2/models/{self.name}/infer"
        url = f"{self.predictor_config.predictor_base_url}/{path}"
        try:
            async with self._predictor_session().post(url, data=orjson.dumps(payload), headers=_JSON) as response:
                content = await response.read()
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise ModelNotReady(self.name, f"its predictor does not answer ({exc or type(exc).__name__})") from None
        if response.status == 200:
            return orjson.loads(content)
        message = _error_text(content)
        if response.status == 400:
            raise InvalidInput(f"predictor refused the request: {message}")
        if response.status == 503:
            raise ModelNotReady(self.name, f"its predictor is not ready ({message})")
        raise RuntimeError(f"predictor answered HTTP {response.status}: {message}")

    async def close(self) -> None:
        """Close the session to the predictor."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def stop(self) -> None:
        """KServe unloads the model on SIGTERM, in the running event loop: close the session too."""
        super().stop()
        self._closing = asyncio.get_running_loop().create_task(self.close())

    def _predictor_session(self) -> aiohttp.ClientSession:
        """One keep-alive session to the predictor, opened in the server's event loop.

        aiohttp rather than KServe's httpx client: on the transformer's one core, httpx's pool
        (a readability check of every pooled socket per request) took about a third of the time
        of a 1-row request.
        """
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=self.predictor_config.predictor_request_timeout_seconds),
            )
        return self._session
