"""What the model server does with a request, without the server: check and order the channels,
scale, score, flag. The KServe classes in `kserve_models.py` only translate protocols to these.

Request layouts (named by channel, so clients never depend on column order):
- V1 raw: {"instances": [{"<channel>": value, ...}, ...]}
- V2 raw: one FP32/FP64 tensor per channel, named after it, shape [rows] or [rows, 1]; or one
  FP32/FP64 tensor of shape [rows, channels] (any name but a channel's), columns in the order
  the model's metadata lists the channels
- scaled (transformer -> predictor): V1 {"instances": [[...], ...]} or one V2 tensor "scaled"
  of shape [rows, channels], in the model's channel order

A model trained with `reference_rows` = N (see `data.scaling`) takes rows relative to their
stream's reference, the mean of each channel over the first N rows of the stream's current run
(after a gap: of the new run), in raw units; every raw request carries it: V1 {"instances": [...],
"reference": {"<channel>": value, ...}}; V2 one more FP32/FP64 tensor "reference" of shape
[channels] or [1, channels], in the order the model's metadata lists the channels. A model
without one refuses a reference (HTTP 400), and one with it refuses a request without.

A windowed model (context c = window - 1 rows) scores each row given the c rows before it: a
request carries consecutive rows in time order, at least c + 1, and gets scores for the last
rows - c of them (the point model has c = 0: a score per row). A request with c rows or fewer
gets HTTP 400 naming c; `hparams.json` of the model folder holds the window.

Scores are finite: a row the model cannot score (a value so far out that its scaled value, or its
score, overflows) gets MAX_SCORE, the largest double, and is always flagged.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np

from container_component_src.evaluation.follow import Follow, FollowStreams, follow_from_dict

SERVING_FILE = "serving.json"
SCALED_TENSOR = "scaled"
REFERENCE = "reference"  # the input (V2) or key (V1) of a stream's reference
STREAM = "stream"  # the transformer's key (V1) or parameter (V2) naming the stream to the predictor
ROWS_TENSOR = "rows"  # the name the metadata gives the [rows, channels] layout (any name is taken)
MAX_SCORE = float(np.finfo(np.float64).max)
# Scaled values beyond this are sent and scored as this: finite in float32 on every wire.
SCALED_LIMIT = float(np.finfo(np.float32).max)


class RequestError(ValueError):
    """A request the server must refuse with HTTP 400; the message names the problem."""


@dataclass(frozen=True)
class ServingConfig:
    """What a served model needs besides its weights: the threshold of its anomaly flag, and
    what that threshold promises (see `metrics.PromiseWatch`).

    Attributes:
        threshold: Rows scoring above it are flagged as anomalous.
        fc1: Fc1 of the model at that threshold on the test set (for the record).
        promised_false_alarm_rate: The share of normal rows the threshold promises to flag.
        false_alarm_rate: The share of the test's normal rows it flagged in evaluation.
        promise_tolerance: How many times its promise the threshold may flag before the
            evaluation, and the server's watch, call the promise broken (0: not judged).
        follow: How the threshold follows each stream's scores (`evaluation.follow`: the median,
            spread or iqr rule); None: it stays as set.
    """

    threshold: float
    fc1: float | None = None
    promised_false_alarm_rate: float | None = None
    false_alarm_rate: float | None = None
    promise_tolerance: float = 0.0
    follow: Follow | None = None

    @classmethod
    def read(cls, model_dir: str) -> ServingConfig:
        """Read `serving.json` of a published model folder.

        Raises:
            FileNotFoundError: The folder was not published by `deploy` (give --threshold).
            InputError: A field is not what `deploy` writes (named, with the file).
        """
        from container_component_src.storage import InputError

        path = Path(model_dir) / SERVING_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: publish the model with deploy, or pass --threshold")
        content = json.loads(path.read_text())
        if "threshold" not in content:
            raise InputError(f"{path} has no threshold: publish the model with deploy, or pass --threshold")

        def number(key: str, low: float = -math.inf, high: float = math.inf, default: Any = None) -> Any:
            value = content.get(key, default)
            if value is None:
                return None
            if _bad_value(value) or not low <= value <= high:
                raise InputError(f"{path}: {key} is {json.dumps(value)[:40]}, not a number in [{low}, {high}]")
            return float(value)

        follow = content.get("follow")
        if follow is not None:
            try:
                follow = follow_from_dict(follow)
            except ValueError as error:
                raise InputError(f"{path}: follow is {json.dumps(follow)[:80]}, {error}") from None
        # Folders published before the promise was recorded have none: nothing to watch.
        return cls(
            threshold=number("threshold"),
            fc1=number("fc1"),
            promised_false_alarm_rate=number("promised_false_alarm_rate", 0.0, 1.0),
            false_alarm_rate=number("false_alarm_rate", 0.0, 1.0),
            promise_tolerance=number("promise_tolerance", 0.0, default=0.0),
            follow=follow,
        )


def _check_rows(count: int, max_rows: int) -> None:
    if count == 0:
        raise RequestError("the request holds no rows")
    if count > max_rows:
        raise RequestError(f"the request holds {count:,} rows; the limit is {max_rows:,} per request")


def _bad_value(value: Any) -> bool:
    return isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value)


def _describe(value: Any) -> str:
    if isinstance(value, float):
        return "NaN or infinite"
    if isinstance(value, bool):
        return f"{json.dumps(value)} is a boolean, not a number"
    return f"{json.dumps(value)[:40]} is not a number"


def _check_finite(values: np.ndarray, what: str) -> np.ndarray:
    if not np.isfinite(values).all():
        row, column = np.argwhere(~np.isfinite(values))[0]
        raise RequestError(f"{what}: row {row}, column {column} is NaN or infinite")
    return values


def _channel_problem(keys: dict[str, Any], channels: list[str]) -> str:
    """What is wrong with an object whose keys should be exactly `channels`."""
    unknown, missing = sorted(set(keys) - set(channels)), [c for c in channels if c not in keys]
    problem = f"unknown channel(s) {', '.join(unknown)}" if unknown else f"lacks {', '.join(missing)}"
    return f"{problem} (expected: {', '.join(channels)})"


def records_to_matrix(instances: Any, channels: list[str], max_rows: int) -> np.ndarray:
    """V1 raw instances (one object per row, keyed by channel) as a float64 matrix in `channels` order.

    Raises:
        RequestError: Not a list of objects, no rows, too many rows, an unknown or missing
            channel, or a value that is not a finite number.
    """
    if not isinstance(instances, list):
        raise RequestError('"instances" must be a list of objects keyed by channel')
    _check_rows(len(instances), max_rows)
    known = set(channels)
    rows = []
    for index, instance in enumerate(instances):
        if not isinstance(instance, dict):
            raise RequestError(f"instance {index} is not an object keyed by channel")
        if len(instance) != len(channels) or not known.issuperset(instance):
            raise RequestError(f"instance {index}: {_channel_problem(instance, channels)}")
        rows.append([instance[c] for c in channels])
    try:
        values = np.array(rows)  # Numbers give an int or float array; a string or null does not.
    except ValueError:  # A value is a list: the rows are ragged.
        values = np.empty(0, dtype=object)
    # numpy reads True as 1.0: a boolean is a client's mistake, not a reading.
    if values.dtype.kind not in "iuf" or not np.isfinite(values).all() or any(type(v) is bool for r in rows for v in r):
        for index, row in enumerate(rows):
            for channel, value in zip(channels, row, strict=True):
                if _bad_value(value):
                    raise RequestError(f"instance {index}, channel {channel}: {_describe(value)}")
    return _as_float64(values, "instances")


def _as_float64(values: np.ndarray, what: str) -> np.ndarray:
    try:
        return values.astype(np.float64)
    except OverflowError:  # an integer too large for any float
        raise RequestError(f"{what}: a value is too large for a number") from None


def scaled_rows_to_matrix(instances: Any, n_channels: int, max_rows: int) -> np.ndarray:
    """V1 scaled instances (lists in the model's channel order) as a float64 matrix.

    Raises:
        RequestError: Not a list of equal-length numeric lists, wrong width, or not finite.
    """
    if not isinstance(instances, list):
        raise RequestError('"instances" must be a list of rows')
    _check_rows(len(instances), max_rows)
    if any(type(v) is bool or isinstance(v, str) for row in instances if isinstance(row, list) for v in row):
        raise RequestError("instances must be lists of numbers (not booleans or strings)")
    try:
        values = np.array(instances, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise RequestError("instances must be lists of numbers of equal length") from None
    if values.ndim != 2 or values.shape[1] != n_channels:
        raise RequestError(f"instances have shape {list(values.shape)}; expected [rows, {n_channels}]")
    return _check_finite(values, "instances")


def tensors_to_matrix(tensors: dict[str, np.ndarray], channels: list[str], max_rows: int) -> np.ndarray:
    """V2 raw tensors (one per channel) as a float64 matrix in `channels` order.

    Raises:
        RequestError: An unknown or missing channel, a shape other than [rows] or [rows, 1],
            tensors of different lengths, no rows, too many rows, or a value that is not finite.
    """
    if len(tensors) == 1 and len(channels) > 1:
        ((name, tensor),) = tensors.items()
        if name not in channels:
            if tensor.ndim != 2 or tensor.shape[1] != len(channels):
                raise RequestError(
                    f"input {name} has shape {list(tensor.shape)}; expected [rows, {len(channels)}] "
                    "(or one tensor per channel, named after it)"
                )
            _check_rows(len(tensor), max_rows)
            return _finite_rows(tensor.astype(np.float64), channels, name)
    unknown = sorted(set(tensors) - set(channels))
    missing = [c for c in channels if c not in tensors]
    if unknown or missing:
        parts = [f"unknown input(s) {', '.join(unknown)}"] if unknown else []
        parts += [f"missing input(s) {', '.join(missing)}"] if missing else []
        raise RequestError(f"{'; '.join(parts)} (expected one tensor per channel: {', '.join(channels)})")
    columns = []
    for channel in channels:
        tensor = tensors[channel]
        if tensor.ndim == 2 and tensor.shape[1] == 1:
            tensor = tensor[:, 0]
        if tensor.ndim != 1:
            raise RequestError(f"input {channel} has shape {list(tensor.shape)}; expected [rows] or [rows, 1]")
        columns.append(tensor)
    lengths = {len(c) for c in columns}
    if len(lengths) > 1:
        raise RequestError(f"inputs have different lengths: {sorted(lengths)}")
    _check_rows(lengths.pop(), max_rows)
    return _finite_rows(np.stack(columns, axis=1).astype(np.float64), channels)


def _finite_rows(values: np.ndarray, channels: list[str], tensor: str | None = None) -> np.ndarray:
    """`values` (rows, channels), refusing NaN and infinity: named by the input that holds the
    value (its one [rows, channels] tensor, or the channel's own tensor), row and channel."""
    if not np.isfinite(values).all():
        row, column = np.argwhere(~np.isfinite(values))[0]
        where = (
            f"input {tensor}, row {row}, channel {channels[column]}"
            if tensor
            else f"input {channels[column]}, row {row}"
        )
        raise RequestError(f"{where}: NaN or infinite")
    return values


def scaled_tensor_to_matrix(tensor: np.ndarray, n_channels: int, max_rows: int) -> np.ndarray:
    """The V2 `scaled` tensor as a float64 matrix.

    Raises:
        RequestError: Wrong shape, no rows, too many rows, or not finite.
    """
    if tensor.ndim != 2 or tensor.shape[1] != n_channels:
        raise RequestError(f"input {SCALED_TENSOR} has shape {list(tensor.shape)}; expected [rows, {n_channels}]")
    _check_rows(len(tensor), max_rows)
    return _check_finite(tensor.astype(np.float64, copy=False), f"input {SCALED_TENSOR}")


@dataclass
class AnomalyScorer:
    """The model, scaler and threshold of a published model folder, ready to score requests
    (`config`: the folder's serving.json, None when the threshold was given instead)."""

    model: Any
    scaler: dict[str, Any]
    threshold: float
    device: str = "cpu"
    config: ServingConfig | None = None
    # Each stream's state, which the threshold follows (None: a fixed threshold).
    streams: FollowStreams | None = None

    @property
    def channels(self) -> list[str]:
        return self.scaler["channels"]

    @classmethod
    def load(cls, model_dir: str, threshold: float | None = None) -> AnomalyScorer:
        """Load a Model artifact folder onto the GPU when there is one; the threshold comes from
        `serving.json` unless given."""
        import torch

        from container_component_src.model.io import load_scripted

        torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model, scaler = load_scripted(model_dir)
        config = ServingConfig.read(model_dir) if threshold is None else None
        # A threshold given by hand stays as given.
        follow = None if config is None else config.follow
        return cls(
            model=model.to(device),
            scaler=scaler,
            threshold=threshold if config is None else config.threshold,
            device=device,
            config=config,
            streams=None if follow is None else FollowStreams(follow, config.threshold),
        )

    def scale(self, values: np.ndarray, reference: Any = None) -> np.ndarray:
        """Raw rows in channel order, scaled as in training (see `scale_for_serving`)."""
        return scale_for_serving(values, self.scaler, reference)

    @property
    def context(self) -> int:
        """Rows a request must carry before the first row it wants scored (0: the point model)."""
        return int(self.model.context)

    def score(self, scaled: np.ndarray, stream: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Scores and anomaly flags of scaled rows in time order: one per row after the first
        `context` (a windowed model scores each row given the rows before it). A row whose window
        holds a value that overflows, or whose score does, scores MAX_SCORE and is flagged. A
        threshold that follows a stream's scores follows those of `stream` (`stream_key`; None:
        the one stream of a model without references).

        Raises:
            RequestError: The request holds no row beyond the model's context.
        """
        import torch

        context = self.context
        if len(scaled) <= context:
            raise RequestError(
                f"the request holds {len(scaled)} row(s); this model scores each row given the {context} before it, "
                f"so send at least {context + 1} consecutive rows (scores come for the last rows - {context})"
            )
        bad_row = ~(np.abs(scaled) < SCALED_LIMIT).all(axis=1)
        # A window is out of range when any of its rows is.
        overflow = np.convolve(bad_row, np.ones(context + 1), mode="valid") > 0
        values = torch.from_numpy(np.where(bad_row[:, None], 0.0, scaled).astype(np.float32))
        with torch.inference_mode():
            scores = self.model.score(values.to(self.device)).double().cpu().numpy()
        scores = np.where(overflow | ~np.isfinite(scores), MAX_SCORE, scores)
        if self.streams is not None:
            return scores, self.streams.judge(scores, stream)
        return scores, scores > self.threshold


def reference_vector(reference: Any, channels: list[str]) -> np.ndarray:
    """A stream's reference as a float64 vector in `channels` order: V1 an object keyed by
    channel, V2 an array of shape [channels] or [1, channels] in that order.

    Raises:
        RequestError: Another shape, an unknown or missing channel, or a value that is not a
            finite number.
    """
    if isinstance(reference, dict):
        if set(reference) != set(channels):
            raise RequestError(f"{REFERENCE}: {_channel_problem(reference, channels)}")
        for channel in channels:
            if _bad_value(reference[channel]):
                raise RequestError(f"{REFERENCE}, channel {channel}: {_describe(reference[channel])}")
        return np.array([reference[c] for c in channels], dtype=np.float64)
    if not isinstance(reference, np.ndarray):
        raise RequestError(f'"{REFERENCE}" must be an object keyed by channel')
    if reference.shape not in ((len(channels),), (1, len(channels))):
        raise RequestError(f"input {REFERENCE} has shape {list(reference.shape)}; expected [{len(channels)}]")
    vector = reference.reshape(-1).astype(np.float64)
    if not np.isfinite(vector).all():
        channel = channels[int(np.argmin(np.isfinite(vector)))]
        raise RequestError(f"input {REFERENCE}, channel {channel}: NaN or infinite")
    return vector


def stream_key(reference: Any, channels: list[str]) -> str | None:
    """The stream a request's rows come from, as the server's following threshold tells streams
    apart: its reference (a new run of a stream has a new one), as the hex of its float64 values;
    None without one."""
    return None if reference is None else reference_vector(reference, channels).tobytes().hex()


def scale_for_serving(values: np.ndarray, scaler: dict[str, Any], reference: Any = None) -> np.ndarray:
    """Raw rows scaled as in training, in float64 and clipped to the float32 range, so that an
    absurd reading stays a finite (and flagged) value on every wire instead of an infinity.

    Args:
        reference: The stream's reference (see `reference_vector`), required by, and only by, a
            model trained with `reference_rows` > 0: it takes the place of the training center.

    Raises:
        RequestError: The reference is missing, not expected, or malformed.
    """
    rows = scaler.get("reference_rows", 0)
    if rows and reference is None:
        raise RequestError(
            f'this model scores rows relative to their stream\'s reference: send "{REFERENCE}", each '
            f"channel's mean over the first {rows} rows of the stream's current run"
        )
    if not rows and reference is not None:
        raise RequestError(f'this model takes no "{REFERENCE}" (it was trained without reference_rows)')
    center = reference_vector(reference, scaler["channels"]) if rows else np.asarray(scaler["center"])
    scaled = (values - center) / np.asarray(scaler["scale"])
    return np.clip(scaled, -SCALED_LIMIT, SCALED_LIMIT)


def v1_request(rows: list[dict[str, float]], reference: dict[str, float] | None = None) -> dict[str, Any]:
    """A V1 request body for raw rows keyed by channel (and the stream's reference, keyed alike)."""
    return {"instances": rows} | ({REFERENCE: reference} if reference is not None else {})


def v2_request(columns: dict[str, list[float]], reference: list[float] | None = None) -> dict[str, Any]:
    """A V2 (Open Inference Protocol) request body with one FP32 tensor per channel (and the
    stream's reference, its values in the model's channel order, as its metadata lists them)."""
    inputs = [
        {"name": name, "shape": [len(values)], "datatype": "FP32", "data": list(values)}
        for name, values in columns.items()
    ]
    if reference is not None:
        inputs.append({"name": REFERENCE, "shape": [len(reference)], "datatype": "FP64", "data": list(reference)})
    return {"inputs": inputs}
