"""A fake OpenAI-compatible server on 127.0.0.1 for tests: scripted replies, injected faults, a request log.

    with FakeOpenAIServer(lambda request: f"answer to {request.prompt}") as server:
        server.script(Reply.rate_limited(retry_after=0), Reply.server_error())  # the next two requests fail
        client = OpenAIClient(EndpointConfig(server.url, "fake-model", api_key_env=None))

Each POST to /v1/chat/completions or /v1/completions is answered by the next scripted reply if any, else by the
responder (a function of the recorded request returning a `Reply` or just the text). `RecordedRequest.attempt`
counts identical requests, so a responder can fail a request's first attempts and let its retry succeed however
the calls interleave. GET /v1/models lists `models`; a request for a model not in that list gets vLLM's 404.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    """What the server answers to one request. The constructors below are the faults the client must survive."""

    text: str = "ok"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # raw bytes instead of the OpenAI JSON
    delay_s: float = 0.0  # wait before answering (longer than the client timeout = a hang)
    disconnect: bool = False  # close the connection without answering

    @classmethod
    def rate_limited(cls, retry_after: float | None = 0) -> Reply:
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        return cls.error(429, "Rate limit reached", headers=headers)

    @classmethod
    def server_error(cls, status: int = 500) -> Reply:
        return cls.error(status, "The server had an error while processing your request")

    @classmethod
    def error(cls, status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
        body = {"error": {"message": message, "type": "fake_error", "code": status}}
        return cls(status=status, body=json.dumps(body).encode(), headers=headers or {})

    @classmethod
    def hang(cls, seconds: float = 5.0) -> Reply:
        return cls(delay_s=seconds)

    @classmethod
    def malformed(cls) -> Reply:
        return cls(body=b'{"id": "cmpl-1", "choices": [')

    @classmethod
    def no_choices(cls) -> Reply:
        return cls(body=b'{"id": "cmpl-1", "object": "chat.completion", "usage": {}}')

    @classmethod
    def dropped(cls) -> Reply:
        return cls(disconnect=True)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # keys lower-cased
    json: Any  # the parsed body, None when it was not JSON
    raw: bytes
    attempt: int  # 1 + how many identical requests (path and body) came before this one

    @property
    def prompt(self) -> str | None:
        """The completions prompt, or the content of the last chat message."""
        if not isinstance(self.json, dict):
            return None
        if "prompt" in self.json:
            return self.json["prompt"]
        messages = self.json.get("messages") or [{}]
        return messages[-1].get("content")


Responder = Callable[[RecordedRequest], "Reply | str"]


def echo(request: RecordedRequest) -> str:
    return f"echo: {request.prompt}"


class FakeOpenAIServer:
    """A threaded HTTP server on 127.0.0.1 at a free port; `url` is its API root (…/v1)."""

    def __init__(
        self,
        responder: Responder = echo,
        *,
        models: Sequence[str] | None = ("fake-model",),
        api_key: str | None = None,
        max_requests: int = 2000,
    ) -> None:
        self.responder = responder
        self.api_key = api_key  # when set, a request without "Authorization: Bearer <api_key>" gets 401
        self.models = None if models is None else list(models)  # None: no /models route (404), any model accepted
        self.max_requests = max_requests  # beyond it every request gets 418, so a runaway client stops quickly
        self.requests: list[RecordedRequest] = []
        self.errors: list[str] = []  # responder exceptions, answered with 500
        self.max_in_flight = 0
        self._in_flight = 0
        self._script: deque[Reply | str] = deque()
        self._seen: Counter[tuple[str, bytes]] = Counter()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False  # a hung handler must not block stop()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-openai", daemon=True
        )
        self.url = f"http://127.0.0.1:{self._httpd.server_port}/v1"

    def __enter__(self) -> FakeOpenAIServer:
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

    def script(self, *replies: Reply | str) -> None:
        """Queue replies for the next completion requests, in order, before the responder takes over again."""
        with self._lock:
            self._script.extend(replies)

    @property
    def posts(self) -> list[RecordedRequest]:
        """The completion requests received so far."""
        with self._lock:
            return [request for request in self.requests if request.method == "POST"]

    def _record(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> RecordedRequest:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            self._seen[(path, raw)] += 1
            request = RecordedRequest(method, path, headers, body, raw, self._seen[(path, raw)])
            self.requests.append(request)
        return request

    def _refusal(self, request: RecordedRequest) -> Reply | None:
        """The answer to a request over budget or without the key, None for a request to serve."""
        if len(self.requests) > self.max_requests:
            return Reply.error(418, f"fake server: more than {self.max_requests} requests")
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return Reply.error(401, "Incorrect API key provided")
        return None

    def _reply_to(self, request: RecordedRequest) -> Reply:
        model = request.json.get("model") if isinstance(request.json, dict) else None
        with self._lock:
            if refusal := self._refusal(request):
                return refusal
            if self.models is not None and model not in self.models:
                return Reply.error(404, f"The model `{model}` does not exist.")
            scripted = self._script.popleft() if self._script else None
        try:
            reply = scripted if scripted is not None else self.responder(request)
        except Exception as exc:  # reported to the test through `errors`, answered like a crashing server
            with self._lock:
                self.errors.append(repr(exc))
            return Reply.server_error()
        return Reply(text=reply) if isinstance(reply, str) else reply

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1


def completion_body(path: str, model: str, text: str) -> dict[str, Any]:
    """A realistic OpenAI reply for the chat or the completions route."""
    usage = {"prompt_tokens": 5, "completion_tokens": len(text.split()), "total_tokens": 5 + len(text.split())}
    created = int(time.time())
    if path.endswith("/chat/completions"):
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": usage,
        }
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}
    return {
        "id": "cmpl-fake",
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage,
    }


def _handler_for(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
        timeout = 10  # an idle kept-alive connection frees its thread

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            request = server._record("GET", self.path, self._headers(), b"")
            with server._lock:
                refusal = server._refusal(request)
            if refusal:
                self._send(refusal.status, refusal.body or b"")
                return
            if self.path.rstrip("/") != "/v1/models" or server.models is None:
                self._send(404, json.dumps({"error": {"message": "not found"}}).encode())
                return
            data = [{"id": name, "object": "model", "created": 0, "owned_by": "fake"} for name in server.models]
            self._send(200, json.dumps({"object": "list", "data": data}).encode())

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            request = server._record("POST", self.path, self._headers(), raw)
            if self.path not in ("/v1/chat/completions", "/v1/completions"):
                self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}).encode())
                return
            server._enter()
            try:
                reply = server._reply_to(request)
                if reply.delay_s:
                    server._stopping.wait(reply.delay_s)
                if reply.disconnect:
                    self.close_connection = True
                    return
                body = reply.body
                if body is None:
                    model = request.json.get("model", "") if isinstance(request.json, dict) else ""
                    body = json.dumps(completion_body(self.path, model, reply.text)).encode()
                self._send(reply.status, body, reply.headers)
            except OSError:  # the client gave up (timeout) and closed the connection
                self.close_connection = True
            finally:
                server._leave()

        def _headers(self) -> dict[str, str]:
            return {name.lower(): value for name, value in self.headers.items()}

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler
