"""The server's own Prometheus metrics, beside KServe's latency histograms on /metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import Counter

REQUESTS = Counter("eclss_requests", "HTTP requests answered, by status code", ["status"])
ROWS_SCORED = Counter("eclss_rows_scored", "Rows scored by the model")
ROWS_FLAGGED = Counter("eclss_rows_flagged", "Rows flagged as anomalous")


async def count_responses(request: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
    """HTTP middleware: count every response by its status code."""
    response = await call_next(request)
    REQUESTS.labels(status=str(response.status_code)).inc()
    return response
