"""The server's own Prometheus metrics beside KServe's latency histograms on /metrics (the gRPC
service counts its answers in `server.py`), and its HTTP middleware: those counts, and the one
request check KServe's schema cannot make."""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import Counter

REQUESTS = Counter("eclss_requests", "HTTP requests answered, by status code", ["status"])
GRPC_REQUESTS = Counter("eclss_grpc_requests", "gRPC calls answered, by status code", ["code"])
ROWS_SCORED = Counter("eclss_rows_scored", "Rows scored by the model")
ROWS_FLAGGED = Counter("eclss_rows_flagged", "Rows flagged as anomalous")


@functools.cache
def count_by(counter: Counter, value: str) -> Any:
    """The child of a one-label counter for `value`, looked up once: prometheus_client's `labels`
    locks and builds its key on every call, 2 % of a transformer's time per one-row request."""
    return counter.labels(value)


Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# KServe's request schema turns a shape of ["1"] into [1] before any model sees it.
_TEXT_IN_SHAPE = re.compile(rb'"shape"\s*:\s*\[[^\]]*"')
_SHAPE_ERROR = b'{"error":"a tensor shape must be a list of integers"}'


class CheckAndCount:
    """ASGI middleware: refuse a V2 tensor shape written as strings (400, not a silent
    conversion), and count every response by its status code.

    Plain ASGI rather than Starlette's `BaseHTTPMiddleware`, whose task group and streams per
    request cost a small request a measurable share of its time (twice behind a transformer).
    """

    def __init__(self, app: Callable[[Message, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "POST" and scope["path"].endswith("/infer"):
            body, receive = await _read_body(receive)
            length = _header(scope, b"inference-header-content-length")
            if _TEXT_IN_SHAPE.search(body[: int(length)] if length.isdigit() else body):
                await _respond(send, 400, _SHAPE_ERROR)
                count_by(REQUESTS, "400").inc()
                return
        started = False

        async def counting_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                count_by(REQUESTS, str(message["status"])).inc()
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except Exception:
            if not started:  # the server's error handler answers 500 outside this middleware
                count_by(REQUESTS, "500").inc()
            raise


def _header(scope: Message, name: bytes) -> str:
    return next((value.decode("latin-1") for key, value in scope["headers"] if key.lower() == name), "")


async def _read_body(receive: Receive) -> tuple[bytes, Receive]:
    """The whole request body, and a `receive` that replays its messages to the application
    (a client that went away mid-body is seen there as well)."""
    messages = []
    while not messages or (messages[-1]["type"] == "http.request" and messages[-1].get("more_body", False)):
        messages.append(await receive())
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
    pending = iter(messages)

    async def replay() -> Message:
        return next(pending, None) or await receive()

    return body, replay


async def _respond(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
