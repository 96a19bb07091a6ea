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
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fake_server import NO_ANSWER, FakeServer, Handler


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


class FakeOpenAIServer(FakeServer):
    """The OpenAI routes on a FakeServer; `url` is its API root (…/v1)."""

    name = "fake-openai"

    def __init__(
        self,
        responder: Responder = echo,
        *,
        models: Sequence[str] | None = ("fake-model",),
        api_key: str | None = None,
        max_requests: int = 2000,
    ) -> None:
        super().__init__(responder, root="/v1", max_requests=max_requests)  # beyond the budget: 418
        self.api_key = api_key  # when set, a request without "Authorization: Bearer <api_key>" gets 401
        self.models = None if models is None else list(models)  # None: no /models route (404), any model accepted
        self.max_in_flight = 0
        self._in_flight = 0
        self._seen: Counter[tuple[str, bytes]] = Counter()

    @property
    def posts(self) -> list[RecordedRequest]:
        """The completion requests received so far."""
        with self._lock:
            return [request for request in self.requests if request.method == "POST"]

    def serve(self, handler: Handler, method: str, raw: bytes) -> None:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            self._seen[(handler.path, raw)] += 1
            request = RecordedRequest(
                method, handler.path, handler.header_map(), body, raw, self._seen[(handler.path, raw)]
            )
        refusal = self._refusal(request, within_budget=self.record(request))
        if method == "GET":
            self._list_models(handler, refusal)
        elif handler.path not in ("/v1/chat/completions", "/v1/completions"):
            handler.send(404, json.dumps({"error": {"message": f"no route {handler.path}"}}).encode())
        else:
            self._complete(handler, request, refusal)

    def _refusal(self, request: RecordedRequest, *, within_budget: bool) -> Reply | None:
        """The answer to a request over budget or without the key, None for a request to serve."""
        if not within_budget:
            return Reply.error(418, f"fake server: more than {self.max_requests} requests")
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return Reply.error(401, "Incorrect API key provided")
        return None

    def _list_models(self, handler: Handler, refusal: Reply | None) -> None:
        if refusal:
            handler.send(refusal.status, refusal.body or b"")
        elif handler.path.rstrip("/") != "/v1/models" or self.models is None:
            handler.send(404, json.dumps({"error": {"message": "not found"}}).encode())
        else:
            data = [{"id": name, "object": "model", "created": 0, "owned_by": "fake"} for name in self.models]
            handler.send(200, json.dumps({"object": "list", "data": data}).encode())

    def _complete(self, handler: Handler, request: RecordedRequest, refusal: Reply | None) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            reply = refusal or self._reply_to(request)
            if reply.delay_s:
                self.wait(reply.delay_s)
            if reply.disconnect:
                handler.close_connection = True
                return
            body = reply.body
            if body is None:
                model = request.json.get("model", "") if isinstance(request.json, dict) else ""
                body = json.dumps(completion_body(handler.path, model, reply.text)).encode()
            handler.send(reply.status, body, reply.headers)
        except OSError:  # the client gave up (timeout) and closed the connection
            handler.close_connection = True
        finally:
            with self._lock:
                self._in_flight -= 1

    def _reply_to(self, request: RecordedRequest) -> Reply:
        model = request.json.get("model") if isinstance(request.json, dict) else None
        if self.models is not None and model not in self.models:
            return Reply.error(404, f"The model `{model}` does not exist.")
        reply = self.answer(request)
        if reply is NO_ANSWER:
            return Reply.server_error()
        return Reply(text=reply) if isinstance(reply, str) else reply


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
