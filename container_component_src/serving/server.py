"""Starting the KServe model server in one of three roles, with its configuration made explicit."""

from __future__ import annotations

import logging
import socket
import struct
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from container_component_src.errors import OptionError

logger = logging.getLogger(__name__)
ROLES = ("combined", "predictor", "transformer")
# The Open Inference Protocol's model control over gRPC.
CONTROL_METHODS = frozenset({"RepositoryModelLoad", "RepositoryModelUnload"})
PROTOCOLS = ("v1", "v2")


@dataclass(frozen=True)
class ServeOptions:
    """How to serve a published model.

    Attributes:
        role: "combined" (one process checks, scales and scores), "predictor" (scores scaled
            rows) or "transformer" (checks and scales, then calls the predictor).
        name: Model name in the URL paths (/v1/models/<name>:predict, /v2/models/<name>/infer).
        http_port: Port to listen on.
        predictor_host: host:port of the predictor (transformer role only).
        predictor_protocol: "v1" or "v2": the protocol the transformer speaks to its predictor (rows
            and health checks; the client may use either).
        threshold: Anomaly flag threshold; None reads it from the folder's serving.json.
        max_batch_rows: Largest request accepted (larger ones get HTTP 400).
        host: Address to listen on: loopback by default, since the server has no authentication;
            KServe's containers pass 0.0.0.0.
        access_log: Log every request (at INFO); off by default.
        grpc_port: Port of the Open Inference Protocol's gRPC service (V2: inference, health,
            metadata), on the same host; 0 serves REST only.
        max_request_bytes: Largest request body; 0: derived from `max_batch_rows` (see
            `request_limit`). Larger ones get 413 (REST) or RESOURCE_EXHAUSTED (gRPC).
        request_timeout_s: Seconds a client may take to send a request's headers (then the
            connection closes) and each part of its body (then 408).
        max_concurrent_requests: Requests served at once; more get 503.
        model_control: Allow the V2 repository's load and unload (REST and gRPC).
    """

    role: str = "combined"
    name: str = "eclss-anomaly"
    http_port: int = 8080
    predictor_host: str = ""
    predictor_protocol: str = "v1"
    threshold: float | None = None
    max_batch_rows: int = 100_000
    host: str = "127.0.0.1"
    access_log: bool = False
    grpc_port: int = 8081
    max_request_bytes: int = 0
    request_timeout_s: float = 30.0
    max_concurrent_requests: int = 64
    model_control: bool = False

    def request_limit(self, n_channels: int) -> int:
        """The largest request body in bytes: as set, or room for `max_batch_rows` rows of every
        channel in JSON (32 bytes a value: a float64's 17 digits, exponent, sign, separators; the
        V2 binary form takes 8) and 1 MiB of names and framing."""
        return self.max_request_bytes or self.max_batch_rows * n_channels * 32 + 2**20

    def validate(self) -> None:
        if self.role not in ROLES:
            raise OptionError(f"--role must be one of {', '.join(ROLES)}, got {self.role!r}")
        if self.predictor_protocol not in PROTOCOLS:
            raise OptionError(f"--predictor-protocol must be v1 or v2, got {self.predictor_protocol!r}")
        if self.role == "transformer" and not self.predictor_host:
            raise OptionError("--predictor-host is required for the transformer role")
        if self.max_batch_rows < 1:
            raise OptionError(f"--max-batch-rows must be at least 1, got {self.max_batch_rows}")
        if self.max_request_bytes < 0:
            raise OptionError(
                f"--max-request-bytes must be 0 (from --max-batch-rows) or more, got {self.max_request_bytes}"
            )
        if not 0 < self.request_timeout_s <= 3600:
            raise OptionError(f"--request-timeout-s must be in (0, 3600], got {self.request_timeout_s}")
        if self.max_concurrent_requests < 1:
            raise OptionError(f"--max-concurrent-requests must be at least 1, got {self.max_concurrent_requests}")
        if not 0 <= self.grpc_port <= 65535 or self.grpc_port == self.http_port:
            raise OptionError(
                f"--grpc-port must be 0 (off) or a port other than --http-port ({self.http_port}), got {self.grpc_port}"
            )


def import_kserve() -> ModuleType:
    """Import kserve with an empty command line: its model_server module parses sys.argv on import."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        import kserve
        import kserve.model_server
    finally:
        sys.argv = saved
    return kserve


async def _bad_request(_: Any, exc: Any) -> Any:
    """A request body that does not fit the protocol's schema: HTTP 400 naming the field."""
    from fastapi.responses import JSONResponse

    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": str(exc)}
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    return JSONResponse(
        status_code=400, content={"error": f"invalid request body at {where or 'top level'}: {first['msg']}"}
    )


def build_model(model_dir: str, options: ServeOptions) -> Any:
    """The loaded KServe model for the role."""
    import_kserve()
    from container_component_src.serving.kserve_models import AnomalyPredictor, TelemetryTransformer

    if options.role == "transformer":
        model = TelemetryTransformer(options.name, model_dir, options.max_batch_rows)
    else:
        model = AnomalyPredictor(
            options.name, model_dir, options.threshold, options.role == "predictor", options.max_batch_rows
        )
    model.load()
    return model


def _rest_server_class(kserve: ModuleType, options: ServeOptions, request_limit: int) -> type:
    """KServe's REST server, adapted: it listens on `options.host` (KServe binds 0.0.0.0 and takes
    no host), serves at most `max_concurrent_requests` at once, enforces the request limits and
    model control (`metrics.CheckAndCount`), counts responses by status for /metrics, and answers
    a client's mistake (400, 404) or an unreachable predictor (503) without logging a traceback at
    error level."""
    import httpx
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady

    from container_component_src.serving.metrics import CheckAndCount

    async def client_error(_: Any, exc: Exception) -> Any:
        logger.debug("400: %s", exc)
        return JSONResponse(status_code=400, content={"error": str(exc)})

    async def not_found(_: Any, exc: Exception) -> Any:
        logger.debug("404: %s", exc)
        return JSONResponse(status_code=404, content={"error": str(exc)})

    async def not_ready(_: Any, exc: Exception) -> Any:
        # Probes ask several times a second: the middleware logs when readiness changes, not here.
        logger.debug("503: %s", exc)
        return JSONResponse(status_code=503, content={"error": str(exc)})

    async def predictor_down(_: Any, exc: Exception) -> Any:
        logger.debug("503: predictor unreachable: %s", exc)
        return JSONResponse(status_code=503, content={"error": f"the predictor does not answer: {exc}"})

    class ServerForRole(kserve.model_server.RESTServer):  # type: ignore[misc, name-defined]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.config.host = options.host
            self.config.limit_concurrency = options.max_concurrent_requests
            self.config.http = _guarded_protocol(options.request_timeout_s)

        def _add_middlewares(self, app: Any) -> None:
            # KServe's own middleware logs every request's timing (and measures the process's CPU
            # time twice a request, a system call that grows with the threads torch starts):
            # only when the access log is asked for.
            if options.access_log:
                super()._add_middlewares(app)
            app.add_middleware(
                CheckAndCount,
                max_request_bytes=request_limit,
                request_timeout_s=options.request_timeout_s,
                model_control=options.model_control,
            )

        def _add_exception_handlers(self, app: Any) -> None:
            super()._add_exception_handlers(app)
            app.add_exception_handler(InvalidInput, client_error)
            app.add_exception_handler(RequestValidationError, _bad_request)
            app.add_exception_handler(ModelNotReady, not_ready)
            app.add_exception_handler(ModelNotFound, not_found)
            # A transformer's health check of its predictor (KServe's readiness) that cannot connect.
            app.add_exception_handler(httpx.TransportError, predictor_down)

    return ServerForRole


def _guarded_protocol(header_timeout_s: float) -> type:
    """uvicorn's HTTP protocol, with what it lacks against slow or half-gone clients:

    - a request whose headers are not complete within `header_timeout_s` closes the connection
      (uvicorn waits for them forever; the body has its own timeout, `metrics.CheckAndCount`);
    - a client that half-closes after its request (`shutdown(SHUT_WR)`, as `curl` and load
      balancers may) still gets the answer: uvicorn lets asyncio close the connection at the
      client's end of stream, so an answer that takes an `await` (a transformer asking its
      predictor) was never sent. The connection stays open for it and closes after.
    """
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class GuardedProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        _header_timer: Any = None

        def data_received(self, data: bytes) -> None:
            cycle = getattr(self, "cycle", None)
            if self._header_timer is None and (cycle is None or cycle.response_complete):
                self._header_timer = self.loop.call_later(header_timeout_s, self._headers_too_slow)
            super().data_received(data)

        def on_headers_complete(self) -> None:
            self._stop_header_timer()
            super().on_headers_complete()

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            logger.debug("request headers not complete within %s s: connection closed", header_timeout_s)
            self.transport.close()

        def _stop_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_header_timer()
            super().connection_lost(exc)

        def eof_received(self) -> bool:
            cycle = getattr(self, "cycle", None)
            if cycle is None or cycle.response_complete:
                return False  # nothing to answer: asyncio closes the connection
            cycle.keep_alive = False  # closed once the answer is sent
            return True

    return GuardedProtocol


def _grpc_server_class(kserve: ModuleType, options: ServeOptions, request_limit: int) -> type:
    """KServe's gRPC server, adapted as the REST one is: it listens on `options.host` (KServe
    binds every address), takes messages up to `request_limit` bytes, refuses model control
    unless allowed (PERMISSION_DENIED), counts answers by status code for /metrics, logs requests
    only with the access log, and answers a client's mistake (INVALID_ARGUMENT, NOT_FOUND) or an
    unreachable predictor (UNAVAILABLE) without an error-level traceback."""
    import httpx
    from grpc import StatusCode, aio
    from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
    from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
    from kserve.protocol.grpc.servicer import InferenceServicer

    from container_component_src.serving.metrics import CONTROL_OFF, GRPC_REQUESTS, count_by

    class StatusAndCount(ExceptionToStatusInterceptor):
        async def intercept(self, method: Any, request: Any, context: Any, method_name: str) -> Any:
            if not options.model_control and method_name.rsplit("/", 1)[-1] in CONTROL_METHODS:
                count_by(GRPC_REQUESTS, "PERMISSION_DENIED").inc()
                await context.abort(StatusCode.PERMISSION_DENIED, CONTROL_OFF)
            response = await super().intercept(method, request, context, method_name)
            count_by(GRPC_REQUESTS, "OK").inc()
            return response

        async def handle_exception(self, ex: Exception, request: Any, context: Any, method_name: str) -> Any:
            try:
                if isinstance(ex, InvalidInput):
                    logger.debug("INVALID_ARGUMENT: %s", ex)
                    await context.abort(StatusCode.INVALID_ARGUMENT, str(ex))
                if isinstance(ex, ModelNotReady | httpx.TransportError):
                    logger.debug("UNAVAILABLE: %s", ex)
                    await context.abort(StatusCode.UNAVAILABLE, str(ex))
                if isinstance(ex, ModelNotFound):
                    logger.debug("NOT_FOUND: %s", ex)
                    await context.abort(StatusCode.NOT_FOUND, str(ex))
                await super().handle_exception(ex, request, context, method_name)
            finally:
                code = context.code()
                count_by(GRPC_REQUESTS, code.name if isinstance(code, StatusCode) else "UNKNOWN").inc()

    class GRPCServerForRole(kserve.model_server.GRPCServer):  # type: ignore[misc, name-defined]
        async def start(self, max_workers: int) -> None:
            interceptors = (LoggingInterceptor(), StatusAndCount()) if options.access_log else (StatusAndCount(),)
            # A request as large as REST takes; an answer of two values a row for as many rows.
            limits = [
                ("grpc.max_receive_message_length", request_limit),
                ("grpc.max_send_message_length", options.max_batch_rows * 32 + 2**20),
            ]
            # gRPC shares a port taken by another process by default (SO_REUSEPORT): requests would
            # be split between two servers. A taken port is an error, as it is for REST.
            self._server = aio.server(interceptors=interceptors, options=[*limits, ("grpc.so_reuseport", 0)])
            servicer = InferenceServicer(self._data_plane, self._model_repository_extension)
            grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
            # IPv6 literals go in brackets in a gRPC address.
            host = f"[{options.host}]" if ":" in options.host else options.host
            self._server.add_insecure_port(f"{host}:{options.grpc_port}")
            await self._server.start()
            await self._server.wait_for_termination()

    return GRPCServerForRole


def _safe_decode(decode: Any) -> Any:
    """KServe's decoding of a binary V2 request, with a malformed `Inference-Header-Content-Length`
    (not a number, beyond the body, no binary part) a 400 instead of a 500."""
    from kserve.errors import InvalidInput

    def decode_inference_request(body: Any, headers: Any, model_name: str) -> Any:
        try:
            _check_binary_sizes(body, headers)
            return decode(body, headers, model_name)
        except InvalidInput:
            raise
        except (ValueError, TypeError, IndexError, KeyError, UnicodeDecodeError, struct.error) as exc:
            raise InvalidInput(f"malformed binary request (Inference-Header-Content-Length and body): {exc}") from None

    return decode_inference_request


def _check_binary_sizes(body: Any, headers: Any) -> None:
    """A binary V2 request's tensors are FP32 or FP64 and fill its body exactly: the
    `binary_data_size` of its inputs add up to the bytes after the JSON part (KServe reads past a
    short part into the next tensor, and ignores bytes left over).

    Raises:
        InvalidInput: Names both sizes.
    """
    import json

    from kserve.errors import InvalidInput

    length = (headers or {}).get("inference-header-content-length") if hasattr(headers, "get") else None
    if length is None or not str(length).isdigit() or not isinstance(body, bytes | bytearray):
        return
    header = json.loads(body[: int(length)])
    inputs = header.get("inputs", []) if isinstance(header, dict) else []
    for tensor in inputs:
        # Before KServe decodes the binary part: a BYTES tensor's length prefixes would be read
        # from whatever bytes were sent (a 500, and the connection reset).
        if isinstance(tensor, dict) and tensor.get("datatype") not in ("FP32", "FP64"):
            raise InvalidInput(
                f"input {tensor.get('name')} has datatype {tensor.get('datatype')}; expected FP32 or FP64"
            )
    sizes = [(i.get("parameters") or {}).get("binary_data_size") for i in inputs if isinstance(i, dict)]
    announced = sum(size for size in sizes if isinstance(size, int))
    sent = len(body) - int(length)
    if announced != sent:
        raise InvalidInput(
            f"the inputs announce {announced} bytes of binary data (binary_data_size); the body has {sent}"
        )


def _check_free(host: str, port: int, option: str) -> None:
    """A one-line error now for a port another process listens on, rather than a traceback from
    the server's event loop once the model is loaded."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise OptionError(
                f"{option} {port}: cannot listen on {host}:{port} ({exc.strerror}); is another server on it?"
            ) from None


def run_serve(model_dir: str, options: ServeOptions) -> None:
    """Load the model and serve it over HTTP until interrupted (SIGINT/SIGTERM)."""
    options.validate()
    _check_free(options.host, options.http_port, "--http-port")
    if options.grpc_port:
        _check_free(options.host, options.grpc_port, "--grpc-port")
    kserve = import_kserve()
    model = build_model(model_dir, options)
    from container_component_src import storage
    from container_component_src.model.files import SCALER

    limit = options.request_limit(len(storage.read_json(storage.join(model_dir, SCALER))["channels"]))
    kserve.model_server.RESTServer = _rest_server_class(kserve, options, limit)
    kserve.model_server.GRPCServer = _grpc_server_class(kserve, options, limit)
    server = kserve.ModelServer(
        http_port=options.http_port,
        grpc_port=options.grpc_port,
        enable_grpc=options.grpc_port > 0,
        workers=1,
        enable_docs_url=False,
        enable_latency_logging=options.access_log,
        predictor_config=kserve.PredictorConfig(
            predictor_host=options.predictor_host,
            predictor_protocol=options.predictor_protocol,
            # A transformer whose predictor does not answer is not ready: Kubernetes stops routing to it.
            predictor_health_check=options.role == "transformer",
        ),
    )
    # Per-request logs only when asked for: at ~1 KB a request they fill a pod's log. Set after
    # ModelServer, whose logging set-up turns uvicorn's access log on.
    logging.getLogger("uvicorn.access").setLevel(logging.INFO if options.access_log else logging.WARNING)
    server.dataplane.decode_inference_request = _safe_decode(server.dataplane.decode_inference_request)
    server.start([model])
