"""The server's own HTTP middleware: Prometheus metrics beside KServe's latency histograms on
/metrics, and the one request check KServe's schema cannot make."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import Counter

REQUESTS = Counter("eclss_requests", "HTTP requests answered, by status code", ["status"])
ROWS_SCORED = Counter("eclss_rows_scored", "Rows scored by the model")
ROWS_FLAGGED = Counter("eclss_rows_flagged", "Rows flagged as anomalous")


async def check_and_count(request: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
    """HTTP middleware (one, since each costs a share of a small request's time): refuse a V2
    tensor shape written as strings (400, not a silent conversion), and count every response by
    its status code."""
    if request.method == "POST" and request.url.path.endswith("/infer"):
        body = await request.body()
        length = request.headers.get("inference-header-content-length", "")
        if _TEXT_IN_SHAPE.search(body[: int(length)] if length.isdigit() else body):
            from fastapi.responses import JSONResponse

            REQUESTS.labels(status="400").inc()
            return JSONResponse(status_code=400, content={"error": "a tensor shape must be a list of integers"})
    response = await call_next(request)
    REQUESTS.labels(status=str(response.status_code)).inc()
    return response


# KServe's request schema turns a shape of ["1"] into [1] before any model sees it.
_TEXT_IN_SHAPE = re.compile(rb'"shape"\s*:\s*\[[^\]]*"')
