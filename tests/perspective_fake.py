"""A fake Perspective API (Comment Analyzer) on 127.0.0.1 for tests: scripted faults, a key check, a request log.

    with FakePerspectiveServer(api_key="k") as server:
        server.script(Reply.rate_limited(retry_after=0.1), Reply.server_error())  # the next two requests fail
        scorer = PerspectiveScorer(base_url=server.url, qps=1000)

Each POST to /v1alpha1/comments:analyze is answered by the next scripted reply if any, else by the responder (a
function of the recorded request returning a `Reply`, or just the score for every requested attribute). Bodies
are shaped like Google's: `attributeScores.<ATTR>.summaryScore.value`, and errors as
{"error": {"code", "message", "status", "details"}}. The key is accepted from `?key=` or the x-goog-api-key header,
as the real API does: a missing key gets 403, a wrong one 400 API_KEY_INVALID.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fake_server import NO_ANSWER, FakeServer, Handler

TOXIC_WORDS = ("idiot", "stupid", "hate you")


@dataclass(frozen=True)
class Reply:
    """What the server answers to one request; `body` None means scores from the responder."""

    status: int = 200
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def error(
        cls, status: int, message: str, state: str, details: list[dict] | None = None, headers: dict | None = None
    ) -> Reply:
        body = {"error": {"code": status, "message": message, "status": state, "details": details or []}}
        return cls(status, body, headers or {})

    @classmethod
    def rate_limited(cls, retry_after: float | None = 0) -> Reply:
        message = "Quota exceeded for quota metric 'Analysis requests' and limit 'Analysis requests per minute'"
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        return cls.error(429, message, "RESOURCE_EXHAUSTED", headers=headers)

    @classmethod
    def server_error(cls, status: int = 500) -> Reply:
        return cls.error(status, "Internal error encountered.", "INTERNAL" if status == 500 else "UNAVAILABLE")

    @classmethod
    def language_not_supported(cls, language: str = "ja-Latn", attribute: str = "TOXICITY") -> Reply:
        detail = {
            "@type": "type.googleapis.com/google.commentanalyzer.v1alpha1.Error",
            "errorType": "LANGUAGE_NOT_SUPPORTED_BY_ATTRIBUTE",
            "languageNotSupportedByAttributeError": {"detectedLanguages": [language], "attribute": attribute},
        }
        message = f"Attribute {attribute} does not support request languages: {language}"
        return cls.error(400, message, "INVALID_ARGUMENT", [detail])

    @classmethod
    def key_invalid(cls) -> Reply:
        detail = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                  "domain": "googleapis.com", "metadata": {"service": "commentanalyzer.googleapis.com"}}  # fmt: skip
        return cls.error(400, "API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT", [detail])


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # without the query
    query: dict[str, list[str]]
    headers: dict[str, str]  # keys lower-cased
    json: Any  # the parsed body, None when it was not JSON
    time: float  # time.monotonic() on arrival

    @property
    def text(self) -> str | None:
        try:
            return self.json["comment"]["text"]
        except (TypeError, KeyError):
            return None


Responder = Callable[[RecordedRequest], "Reply | float"]


def keyword_toxicity(request: RecordedRequest) -> float:
    """0.92 for a text with an insult in it, else 0.03."""
    return 0.92 if any(word in (request.text or "").lower() for word in TOXIC_WORDS) else 0.03


def scores_body(request: RecordedRequest, value: float) -> dict[str, Any]:
    """Google's reply: one summary and one span score per requested attribute."""
    text = request.text or ""
    score = {"value": value, "type": "PROBABILITY"}
    attribute = {"spanScores": [{"begin": 0, "end": len(text), "score": score}], "summaryScore": score}
    languages = request.json.get("languages") or ["en"]
    return {
        "attributeScores": {name: attribute for name in request.json["requestedAttributes"]},
        "languages": languages,
        "detectedLanguages": languages,
    }


class FakePerspectiveServer(FakeServer):
    """The Comment Analyzer route on a FakeServer; `url` is its API root (…/v1alpha1)."""

    name = "fake-perspective"

    def __init__(self, responder: Responder = keyword_toxicity, *, api_key: str = "test-key", max_requests: int = 500):
        super().__init__(responder, root="/v1alpha1", max_requests=max_requests)  # beyond the budget: 418
        self.api_key = api_key

    def serve(self, handler: Handler, method: str, raw: bytes) -> None:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        url = urlsplit(handler.path)
        request = RecordedRequest(method, url.path, parse_qs(url.query), handler.header_map(), body, time.monotonic())
        reply = self._reply_to(request, within_budget=self.record(request))
        payload = json.dumps(reply.body if reply.body is not None else {}).encode()
        handler.send(reply.status, payload, reply.headers, content_type="application/json; charset=UTF-8")

    def _reply_to(self, request: RecordedRequest, *, within_budget: bool) -> Reply:
        if not within_budget:
            return Reply.error(418, f"fake server: more than {self.max_requests} requests", "ABORTED")
        key = request.headers.get("x-goog-api-key") or (request.query.get("key") or [None])[0]
        if key is None:
            return Reply.error(403, "The request is missing a valid API key.", "PERMISSION_DENIED")
        if key != self.api_key:
            return Reply.key_invalid()
        if request.method != "POST" or request.path != "/v1alpha1/comments:analyze":
            return Reply.error(404, f"no route {request.path}", "NOT_FOUND")
        if not request.text:
            empty = [{"errorType": "COMMENT_EMPTY"}]
            return Reply.error(400, "Comment must be non-empty.", "INVALID_ARGUMENT", empty)
        reply = self.answer(request)
        if reply is NO_ANSWER:
            return Reply.server_error()
        return Reply(body=scores_body(request, reply)) if isinstance(reply, int | float) else reply
