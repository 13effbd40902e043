"""One harness for the HTTP fakes of the tests: serve a handler on a free loopback port.

A fake is a function `(method, path, headers, body) -> (status, headers, payload)`; a payload
that is a str goes out as text (HTML for a page, plain text for a log), anything else as JSON.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Handle = Callable[[str, str, Any, bytes], tuple[int, dict[str, str], Any]]


@contextmanager
def serve_fake(
    handle: Handle, text_type: str = "text/plain", tls: ssl.SSLContext | None = None, port: int = 0
) -> Iterator[str]:
    """Serve `handle` on a loopback port (`port`, else a free one); yield its base URL.
    `text_type` is the Content-Type of str payloads; with `tls`, it serves HTTPS."""

    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            code, headers, payload = handle(self.command, self.path, self.headers, self.rfile.read(length))
            text = isinstance(payload, str)
            data = (payload if text else json.dumps(payload)).encode()
            self.send_response(code)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", text_type if text else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _reply

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
