"""A small client for OpenAI-compatible endpoints (OpenAI, and vLLM, Ollama or llama.cpp servers).

The `openai` generation backend and the LLM judge both use it. Every call ends with a text or an error reason —
never an exception for one call's failure and never an endless retry (the published judge retried forever and
averaged API errors as −1). The API key is read from the environment when it is needed and handed down as a local
value, so it is never stored on an object, logged, or put in an error, a result or a repr.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Literal

import httpx

from valueharm.errors import ValueharmError

log = logging.getLogger(__name__)

RETRIED_4XX = frozenset({408, 409, 429})  # request timeout, conflict, rate limit; every 5xx is retried too
MAX_SERVER_STOPS = 4  # OpenAI rejects more; the caller's apply_stop enforces the whole list afterwards
SNIPPET_CHARS = 200
PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class EndpointConfig:
    """Where and how to call an OpenAI-compatible endpoint."""

    base_url: str = field(metadata={"help": "API root including the version, e.g. http://localhost:8000/v1."})
    model: str = field(metadata={"help": "Model name sent with every call unless a call names its own."})
    api: Literal["chat", "completions"] = field(
        default="chat",
        metadata={"help": "chat: POST /chat/completions with messages; completions: POST /completions, raw prompt."},
    )
    api_key_env: str | None = field(
        default="OPENAI_API_KEY",
        metadata={
            "help": "NAME of the environment variable holding the API key (read at call time, never stored); "
            "None for servers without keys, then no Authorization header is sent."
        },
    )
    max_concurrency: int = field(default=8, metadata={"help": "Most requests in flight at once."})
    timeout_s: float = field(default=60.0, metadata={"help": "Seconds to wait for a connection or for the reply."})
    max_attempts: int = field(default=5, metadata={"help": "Attempts per call, the first included; then it fails."})
    backoff_s: float = field(default=1.0, metadata={"help": "First retry delay; doubles each retry, with jitter."})
    max_backoff_s: float = field(
        default=30.0, metadata={"help": "Cap on any retry delay, a server's Retry-After header included."}
    )

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueharmError(f"endpoint base_url must start with http:// or https://, got {self.base_url!r}")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        if self.api not in ("chat", "completions"):
            raise ValueharmError(f"endpoint api must be 'chat' or 'completions', got {self.api!r}")
        if self.max_concurrency < 1 or self.max_attempts < 1:
            raise ValueharmError("endpoint max_concurrency and max_attempts must be at least 1")
        if self.timeout_s <= 0 or self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueharmError("endpoint timeout_s must be positive and backoff_s, max_backoff_s not negative")


@dataclass(frozen=True)
class Call:
    """One request: a `prompt` (sent as one user message on the chat API) or chat `messages`.

    `tag` is opaque to the client; results carry it back so the caller can match them. Sampling fields left None
    are not sent, so the server's defaults apply.
    """

    tag: Any
    prompt: str | None = None
    messages: tuple[Mapping[str, str], ...] | None = None
    model: str | None = None  # overrides EndpointConfig.model, e.g. a LoRA adapter served under its own name
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError(f"call {self.tag!r} needs exactly one of prompt and messages")
        object.__setattr__(self, "stop", tuple(self.stop))
        if self.messages is not None:
            object.__setattr__(self, "messages", tuple(self.messages))


@dataclass(frozen=True)
class CallResult:
    """How one call ended: `text` on success, else `error`, a reason such as "HTTP 429: … (after 5 attempts)"."""

    tag: Any
    text: str | None
    error: str | None
    attempts: int

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class _Outcome:
    """One attempt: a text, or a reason and whether another attempt may help."""

    text: str | None = None
    reason: str = ""
    retriable: bool = False
    retry_after_s: float | None = None


class OpenAIClient:
    """Concurrent calls to one endpoint with bounded retries; thread-safe, reusable across `run`s."""

    def __init__(self, config: EndpointConfig) -> None:
        self.config = config
        limits = httpx.Limits(max_connections=config.max_concurrency, max_keepalive_connections=config.max_concurrency)
        self._http = httpx.Client(timeout=httpx.Timeout(config.timeout_s), limits=limits)

    def __enter__(self) -> OpenAIClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def check(self, models: Sequence[str] | None = None) -> None:
        """Fail before any work: a missing key, an unreachable endpoint, a rejected key, or a model not served.

        Probes GET {base_url}/models once. A server without that route (404) or another error status counts as
        reachable; the model check runs only when the server lists its models. `models` defaults to the
        configured model; the generation backend adds the names its adapters are served under.
        """
        key = self._api_key()
        url = f"{self.config.base_url}/models"
        try:
            response = self._http.get(url, headers=_auth(key), timeout=min(self.config.timeout_s, PROBE_TIMEOUT_S))
        except httpx.HTTPError as exc:
            raise ValueharmError(f"cannot reach {self.config.base_url}: {_redact(_describe(exc), key)}") from None
        if response.status_code in (401, 403):
            source = f"${self.config.api_key_env}" if key else "no key (api_key_env is unset)"
            raise ValueharmError(
                f"{self.config.base_url} refused the API key from {source} (HTTP {response.status_code})"
            )
        served = _model_ids(response) if response.status_code == 200 else None
        if served is None:
            return
        missing = [name for name in (models or [self.config.model]) if not _is_served(name, served)]
        if missing:
            shown = ", ".join(sorted(served)[:20]) + (", …" if len(served) > 20 else "")
            raise ValueharmError(
                f"{self.config.base_url} does not serve model(s) {', '.join(missing)}; it serves: {shown}"
            )

    def run(self, calls: Sequence[Call]) -> Iterator[CallResult]:
        """Results as calls finish, at most `max_concurrency` in flight; one result per call, whatever happens.

        Invalid calls and a missing key raise ValueharmError before any request. Closing the iterator early
        cancels the calls not yet started and stops retries of those in flight.
        """
        key = self._api_key()
        prepared = [(call, *self._request(call)) for call in calls]
        stopping = threading.Event()
        queue = iter(prepared)
        workers = max(1, min(self.config.max_concurrency, len(prepared)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openai-client") as pool:
            pending: set[Future[CallResult]] = {
                pool.submit(self._call, *item, key, stopping) for item in islice(queue, workers)
            }
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        item = next(queue, None)
                        if item is not None:  # refill before yielding, so the endpoint stays busy meanwhile
                            pending.add(pool.submit(self._call, *item, key, stopping))
                        yield future.result()
            finally:
                stopping.set()
                for future in pending:
                    future.cancel()

    def _api_key(self) -> str | None:
        name = self.config.api_key_env
        if name is None:
            return None
        key = os.environ.get(name, "").strip()
        if not key:
            raise ValueharmError(
                f"environment variable {name} is not set; it must hold the API key for {self.config.base_url} "
                "(for a server without keys set api_key_env to null)"
            )
        return key

    def _request(self, call: Call) -> tuple[str, dict[str, Any]]:
        """The URL and JSON body of a call."""
        payload: dict[str, Any] = {"model": call.model or self.config.model}
        if self.config.api == "chat":
            messages = call.messages or ({"role": "user", "content": call.prompt},)
            payload["messages"] = [dict(message) for message in messages]
            url = f"{self.config.base_url}/chat/completions"
        else:
            if call.prompt is None:
                raise ValueharmError(f"call {call.tag!r}: the completions API takes a prompt, not chat messages")
            payload["prompt"] = call.prompt
            url = f"{self.config.base_url}/completions"
        sampling = {"temperature": call.temperature, "top_p": call.top_p, "max_tokens": call.max_tokens}
        payload |= {name: value for name, value in sampling.items() if value is not None}
        if call.seed is not None:
            payload["seed"] = call.seed
        if call.stop:
            payload["stop"] = list(call.stop[:MAX_SERVER_STOPS])
        return url, payload

    def _call(
        self, call: Call, url: str, payload: dict[str, Any], key: str | None, stopping: threading.Event
    ) -> CallResult:
        attempt = 0
        reason = "not started"
        while attempt < self.config.max_attempts and not stopping.is_set():
            attempt += 1
            outcome = self._attempt(url, payload, key)
            if outcome.text is not None:
                return CallResult(call.tag, outcome.text, None, attempt)
            reason = _redact(outcome.reason, key)
            if not outcome.retriable:
                return CallResult(call.tag, None, reason, attempt)
            if attempt < self.config.max_attempts:
                delay = self._delay(attempt, outcome.retry_after_s)
                log.debug("call %r attempt %d: %s; retrying in %.2fs", call.tag, attempt, reason, delay)
                stopping.wait(delay)
        ended = f"after {attempt} attempt{'s' if attempt != 1 else ''}"
        if attempt < self.config.max_attempts:
            ended += ", cancelled"
        return CallResult(call.tag, None, f"{reason} ({ended})", attempt)

    def _attempt(self, url: str, payload: dict[str, Any], key: str | None) -> _Outcome:
        try:
            response = self._http.post(url, json=payload, headers=_auth(key))
        except httpx.TimeoutException:
            return _Outcome(reason=f"timeout: no answer within {self.config.timeout_s:g}s", retriable=True)
        except httpx.HTTPError as exc:
            return _Outcome(reason=f"connection error: {_describe(exc)}", retriable=True)
        status = response.status_code
        if status != 200:
            retriable = status in RETRIED_4XX or status >= 500
            retry_after = _retry_after_s(response.headers.get("retry-after"))
            return _Outcome(
                reason=f"HTTP {status}: {_snippet(response.text)}", retriable=retriable, retry_after_s=retry_after
            )
        try:
            return _Outcome(text=parse_reply(response.json(), self.config.api))
        except ValueError as exc:  # also json.JSONDecodeError and UnicodeDecodeError
            return _Outcome(reason=f"malformed body: {exc}", retriable=True)

    def _delay(self, attempt: int, retry_after_s: float | None) -> float:
        """Exponential backoff with jitter (so parallel callers spread out); a Retry-After is honoured, capped."""
        backoff = self.config.backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.0)
        return min(self.config.max_backoff_s, max(backoff, retry_after_s or 0.0))


def parse_reply(body: Any, api: Literal["chat", "completions"]) -> str:
    """The text of the first choice; ValueError names what is missing.

    A chat message whose content is null (OpenAI sends that with a refusal or only tool calls) yields its refusal
    or "" — an empty answer that the degenerate-answer metrics count, not a failure to retry.
    """
    if not isinstance(body, dict):
        raise ValueError(f"expected a JSON object, got {type(body).__name__}")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        detail = f" (error: {_snippet(str(body['error']))})" if "error" in body else ""
        raise ValueError(f"no 'choices'{detail}")
    choice = choices[0]
    if api == "completions":
        text = choice.get("text")
        if not isinstance(text, str):
            raise ValueError("choice has no 'text'")
        return text
    message = choice.get("message")
    if not isinstance(message, dict) or "content" not in message:
        raise ValueError("choice has no 'message' with 'content'")
    content = message["content"]
    if content is None:
        return message.get("refusal") or ""
    if not isinstance(content, str):
        raise ValueError(f"message content is a {type(content).__name__}, not a string")
    return content


def _auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _redact(text: str, key: str | None) -> str:
    """A server may echo the key in an error body; it must not reach a stored error."""
    return text.replace(key, "***") if key else text


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SNIPPET_CHARS else flat[:SNIPPET_CHARS] + "…"


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _retry_after_s(value: str | None) -> float | None:
    """Retry-After in seconds: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _model_ids(response: httpx.Response) -> set[str] | None:
    """The ids of an OpenAI model list, or None when the body is not one."""
    try:
        ids = {item["id"] for item in response.json()["data"] if isinstance(item["id"], str)}
        return ids or None
    except (ValueError, AttributeError, TypeError, KeyError):
        return None


def _is_served(name: str, served: set[str]) -> bool:
    """Ollama serves "llama3" as "llama3:latest" but answers to both."""
    return name in served or f"{name}:latest" in served
