"""The server's own Prometheus metrics beside KServe's latency histograms on /metrics (the gRPC
service counts its answers in `server.py`), and its HTTP middleware: those counts, and the one
request check KServe's schema cannot make."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import Counter, Gauge

from container_component_src.evaluation.decision import keeps_promise, watch_block_rows

logger = logging.getLogger(__name__)

REQUESTS = Counter("eclss_requests", "HTTP requests answered, by status code", ["status"])
GRPC_REQUESTS = Counter("eclss_grpc_requests", "gRPC calls answered, by status code", ["code"])
ROWS_SCORED = Counter("eclss_rows_scored", "Rows scored by the model")
ROWS_FLAGGED = Counter("eclss_rows_flagged", "Rows flagged as anomalous")
PROMISED_RATE = Gauge(
    "eclss_promised_false_alarm_rate", "Share of normal rows the served threshold promises to flag (evaluation)"
)
BLOCK_FLAGGED_SHARE = Gauge(
    "eclss_block_flagged_share", "Share of the rows flagged in this server's latest complete watch block"
)


@dataclass
class PromiseWatch:
    """A label-free check of the served threshold's promise, as rows are scored: the share of
    rows it flags, block by block, against the share of normal rows it promised to flag.

    An operator has no labels, and a threshold fitted on validation rows unlike the rows that come
    later flags many times what it promised (the evaluation measures it on the test; this watches
    it on the rows served). A share above `tolerance` times the promise is an anomaly under way or
    normal operation the threshold was not fitted on: logged once as it starts and once as it ends.
    The state is this process's (each replica watches the rows it scores, and a restart begins a
    new block); the fleet's share is `eclss_rows_flagged_total` over `eclss_rows_scored_total`.

    Attributes:
        promised: The share of normal rows the threshold promises to flag.
        tolerance: How many times the promise a block may flag (0: not judged, the gauges only).
        observed: The share of the test's normal rows it flagged in evaluation, for the log.
    """

    promised: float
    tolerance: float
    observed: float | None = None
    rows: int = 0
    flagged: int = 0
    broken: bool = False

    def __post_init__(self) -> None:
        PROMISED_RATE.set(self.promised)
        if (
            self.tolerance > 0
            and self.observed is not None
            and not keeps_promise(self.observed, self.promised, self.tolerance)
        ):
            logger.warning(
                "the served threshold flagged %.2f%% of the test's normal rows in evaluation, %.0fx the %.2f%% it "
                "promises: expect more false alarms than promised (the evaluation report says which channels)",
                100 * self.observed,
                self.observed / self.promised,
                100 * self.promised,
            )

    @property
    def block_rows(self) -> int:
        """Rows in a block (at least: a request is never split; see `decision.watch_block_rows`)."""
        return watch_block_rows(self.promised)

    def saw(self, rows: int, flagged: int) -> None:
        """Count a request's scored and flagged rows; judge the block when it is complete."""
        self.rows += rows
        self.flagged += flagged
        if self.rows < self.block_rows:
            return
        share = self.flagged / self.rows
        BLOCK_FLAGGED_SHARE.set(share)
        broken = self.tolerance > 0 and not keeps_promise(share, self.promised, self.tolerance)
        if broken and not self.broken:
            logger.warning(
                "flagged %.2f%% of the last %s rows scored, %.0fx the %.2f%% of normal rows its threshold promises: "
                "an anomaly under way, or normal operation unlike the rows the threshold was fitted on (retrain on "
                "recent data if it lasts)",
                100 * share,
                f"{self.rows:,}",
                share / self.promised,
                100 * self.promised,
            )
        elif self.broken and not broken:
            logger.info(
                "flagged %.2f%% of the last %s rows scored: within the promise again", 100 * share, f"{self.rows:,}"
            )
        self.broken, self.rows, self.flagged = broken, 0, 0


@functools.cache
def count_by(counter: Counter, value: str) -> Any:
    """The child of a one-label counter for `value`, looked up once: prometheus_client's `labels`
    locks and builds its key on every call, 2 % of a transformer's time per one-row request."""
    return counter.labels(value)


Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# KServe's request schema turns a shape of ["1"], [true] or [1.0] into [1] before any model sees it.
_TEXT_IN_SHAPE = re.compile(rb'"shape"\s*:\s*\[[^\]]*(?:"|true|false|null|[.eE])')
# ... and a datatype of "fp32" into FP32: the protocol spells datatypes in capitals.
_DATATYPE = re.compile(rb'"datatype"\s*:\s*"([^"]*)"')


class Readiness:
    """Whether the server last answered a readiness probe ready: one log line when that changes,
    not one per probe (Kubernetes asks every few seconds, a load balancer several times a second)."""

    def __init__(self) -> None:
        self.ready: bool | None = None

    def saw(self, status: int) -> None:
        ready = status == 200
        if ready != self.ready:
            if ready:
                logger.info("ready")
            elif self.ready is not None or status >= 500:
                logger.warning(
                    "not ready (HTTP %s): a transformer's predictor does not answer, or the model is not loaded", status
                )
            self.ready = ready


READINESS = Readiness()

# Paths of FastAPI's generated docs: off with the docs page (the schema lists every route).
_DOCS_PATHS = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
CONTROL_OFF = "model control (V2 repository load/unload) is off: serve with --model-control to allow it"


class CheckAndCount:
    """ASGI middleware in front of KServe's application: the limits of a request (its body's
    size, read no further than the limit, and the time to send it), model control off unless
    allowed, no generated API docs; a V2 tensor shape written as strings refused (400, not a
    silent conversion); and every response counted by its status code.

    Plain ASGI rather than Starlette's `BaseHTTPMiddleware`, whose task group and streams per
    request cost a small request a measurable share of its time (twice behind a transformer).

    Args:
        app: The application.
        max_request_bytes: Largest body (413 beyond it).
        request_timeout_s: Seconds a client may take between the parts of its body (408 after).
        model_control: Let /v2/repository/... through (403 otherwise).
    """

    def __init__(
        self,
        app: Callable[[Message, Receive, Send], Awaitable[None]],
        max_request_bytes: int = 2**30,
        request_timeout_s: float = 30.0,
        model_control: bool = False,
    ) -> None:
        self.app, self.max_request_bytes, self.request_timeout_s = app, max_request_bytes, request_timeout_s
        self.model_control = model_control

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path in _DOCS_PATHS:
            await _refuse(send, 404, "not found")
            return
        if path.startswith("/v2/repository") and not self.model_control:
            await _refuse(send, 403, CONTROL_OFF)
            return
        if scope["method"] in ("POST", "PUT"):
            encoding = _header(scope, b"content-encoding").strip().lower()
            if encoding not in ("", "identity"):
                await _refuse(send, 415, f"Content-Encoding {encoding} is not accepted: send the body uncompressed")
                return
            declared = _header(scope, b"content-length")
            if declared.isdigit() and int(declared) > self.max_request_bytes:
                await _refuse(send, 413, self._too_large())
                return
            outcome, body, receive = await _read_body(receive, self.max_request_bytes, self.request_timeout_s)
            if outcome == "disconnected":  # nobody is left to answer
                return
            if outcome != "complete":
                status = 413 if outcome == "too large" else 408
                message = (
                    self._too_large() if status == 413 else f"request body not sent within {self.request_timeout_s} s"
                )
                await _refuse(send, status, message)
                return
            if path.endswith("/infer") and (problem := _infer_header_problem(scope, body)):
                await _refuse(send, 400, problem)
                return
        started = False

        async def counting_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                count_by(REQUESTS, str(message["status"])).inc()
                if path.endswith("/ready"):
                    READINESS.saw(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except Exception:
            if not started:  # the server's error handler answers 500 outside this middleware
                count_by(REQUESTS, "500").inc()
            raise

    def _too_large(self) -> str:
        return f"request body over {self.max_request_bytes} bytes (--max-request-bytes): send fewer rows at once"


async def _refuse(send: Send, status: int, error: str) -> None:
    await _respond(send, status, orjson.dumps({"error": error}))
    count_by(REQUESTS, str(status)).inc()


def _infer_header_problem(scope: Message, body: bytes) -> str:
    """What KServe's schema would silently convert in a V2 request's JSON part, or ""."""
    length = _header(scope, b"inference-header-content-length")
    header = body[: int(length)] if length.isdigit() else body
    if _TEXT_IN_SHAPE.search(header):
        return "a tensor shape must be a list of integers"
    for datatype in _DATATYPE.findall(header):
        if datatype != datatype.upper():
            name = datatype.decode(errors="replace")
            return f"datatype {name!r} is not a datatype of the protocol: they are written in capitals ({name.upper()})"
    return ""


def _header(scope: Message, name: bytes) -> str:
    return next((value.decode("latin-1") for key, value in scope["headers"] if key.lower() == name), "")


async def _read_body(receive: Receive, limit: int, timeout_s: float) -> tuple[str, bytes, Receive]:
    """The request body, read no further than `limit` bytes and waiting at most `timeout_s` for
    each part; how it ended ("complete", "too large", "timeout", "disconnected"), and a `receive`
    that replays its messages to the application."""
    messages, size = [], 0
    while not messages or (messages[-1]["type"] == "http.request" and messages[-1].get("more_body", False)):
        try:
            message = await asyncio.wait_for(receive(), timeout_s)
        except TimeoutError:
            return "timeout", b"", receive
        size += len(message.get("body", b""))
        if size > limit:
            return "too large", b"", receive
        messages.append(message)
    if messages[-1]["type"] == "http.disconnect":
        return "disconnected", b"", receive
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
    pending = iter(messages)

    async def replay() -> Message:
        return next(pending, None) or await receive()

    return "complete", body, replay


async def _respond(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
