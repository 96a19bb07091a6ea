"""What every fake API server in the tests shares: a threaded HTTP server on 127.0.0.1 at a free port, started and
stopped as a context manager, with a request log, a request budget, scripted replies and a responder.

A fake subclasses `FakeServer` and implements `serve(handler, method, raw)`: it records the request, refuses or
answers it — `answer(request)` gives the next scripted reply, else the responder's — and sends it with
`handler.send(...)`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

NO_ANSWER = object()  # what `answer` returns when the responder raised: the fake replies as a crashing server


class FakeServer:
    """`url` is the API root (http://127.0.0.1:<port><root>); `requests` the log, `errors` responder exceptions."""

    name = "fake-server"

    def __init__(self, responder: Callable[[Any], Any], *, root: str, max_requests: int) -> None:
        self.responder = responder
        self.max_requests = max_requests  # beyond it every request is refused, so a runaway client stops quickly
        self.requests: list[Any] = []
        self.errors: list[str] = []
        self._script: deque[Any] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.fake = self  # type: ignore[attr-defined]
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False  # a hung handler must not block stop()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name=self.name, daemon=True
        )
        self.url = f"http://127.0.0.1:{self._httpd.server_port}{root}"

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()  # releases handlers sleeping in a hang
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def script(self, *replies: Any) -> None:
        """Queue replies for the next requests that get an answer, in order, before the responder takes over."""
        with self._lock:
            self._script.extend(replies)

    def record(self, request: Any) -> bool:
        """Log a request; False when it is over the budget."""
        with self._lock:
            self.requests.append(request)
            return len(self.requests) <= self.max_requests

    def answer(self, request: Any) -> Any:
        """The next scripted reply, else the responder's; NO_ANSWER when the responder raised (kept in `errors`)."""
        with self._lock:
            if self._script:
                return self._script.popleft()
        try:
            return self.responder(request)
        except Exception as exc:
            with self._lock:
                self.errors.append(repr(exc))
            return NO_ANSWER

    def wait(self, seconds: float) -> None:
        """Sleep (a slow or hung server), but wake when the server stops."""
        self._stopping.wait(seconds)

    def serve(self, handler: Handler, method: str, raw: bytes) -> None:
        raise NotImplementedError


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
    timeout = 10  # an idle kept-alive connection frees its thread

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self.server.fake.serve(self, "GET", b"")  # type: ignore[attr-defined]

    def do_HEAD(self) -> None:
        self.server.fake.serve(self, "HEAD", b"")  # type: ignore[attr-defined]

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.fake.serve(self, "POST", raw)  # type: ignore[attr-defined]

    def header_map(self) -> dict[str, str]:
        return {name.lower(): value for name, value in self.headers.items()}

    def send(
        self, status: int, body: bytes, headers: dict[str, str] | None = None, content_type: str = "application/json"
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":  # a HEAD reply has the headers of the GET, without its body
            self.wfile.write(body)
