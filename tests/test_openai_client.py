"""The OpenAI-compatible client against a local fake server: requests, retries, faults, limits, key handling."""

from __future__ import annotations

import logging
import socket
import time

import pytest
from openai_fake import FakeOpenAIServer, RecordedRequest, Reply

from valueharm.errors import ValueharmError
from valueharm.openai_client import Call, EndpointConfig, OpenAIClient, parse_reply

KEY = "sk-test-secret-0123456789"


@pytest.fixture
def server():
    with FakeOpenAIServer() as fake:
        yield fake


def make_config(server: FakeOpenAIServer, **overrides) -> EndpointConfig:
    settings = {
        "api_key_env": None,
        "timeout_s": 2.0,
        "max_attempts": 3,
        "backoff_s": 0.005,
        "max_backoff_s": 0.02,
        **overrides,
    }
    return EndpointConfig(server.url, "fake-model", **settings)


def run_all(config: EndpointConfig, calls: list[Call]) -> dict:
    with OpenAIClient(config) as client:
        results = list(client.run(calls))
    assert sorted(r.tag for r in results) == sorted(c.tag for c in calls)  # every call ends exactly once
    return {r.tag: r for r in results}


def test_chat_call_sends_an_openai_request_with_the_key(server, monkeypatch):
    monkeypatch.setenv("VH_TEST_KEY", KEY)
    server.api_key = KEY
    call = Call("a", prompt="Hi", temperature=0.1, top_p=0.75, max_tokens=64, stop=("\n",), seed=7)
    result = run_all(make_config(server, api_key_env="VH_TEST_KEY"), [call])["a"]
    assert (result.text, result.error, result.attempts) == ("echo: Hi", None, 1)
    [request] = server.posts
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.json == {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0.1,
        "top_p": 0.75,
        "max_tokens": 64,
        "seed": 7,
        "stop": ["\n"],
    }


def test_completions_api_sends_the_raw_prompt_and_no_key_when_none_is_configured(server):
    calls = [Call(0, prompt="QUESTION: x\nANSWER:", model="fake-model"), Call(1, prompt="y")]
    results = run_all(make_config(server, api="completions"), calls)
    assert results[0].text == "echo: QUESTION: x\nANSWER:"
    assert {r.path for r in server.posts} == {"/v1/completions"}
    assert all("authorization" not in r.headers for r in server.posts)
    assert {r.json["prompt"] for r in server.posts} == {"QUESTION: x\nANSWER:", "y"}
    assert all(set(r.json) == {"model", "prompt"} for r in server.posts)  # unset sampling fields are not sent


def test_chat_messages_are_sent_as_given(server):
    messages = ({"role": "system", "content": "Rate it."}, {"role": "user", "content": "text"})
    assert run_all(make_config(server), [Call("m", messages=messages)])["m"].text == "echo: text"
    assert server.posts[0].json["messages"] == list(messages)


def test_at_most_four_stop_strings_reach_the_server(server):
    run_all(make_config(server), [Call(0, prompt="p", stop=("a", "b", "c", "d", "e"))])
    assert server.posts[0].json["stop"] == ["a", "b", "c", "d"]


FAULTS = {
    "429": Reply.rate_limited(retry_after=0),
    "429 no Retry-After": Reply.rate_limited(retry_after=None),
    "500": Reply.server_error(500),
    "503": Reply.server_error(503),
    "408": Reply.error(408, "request timeout"),
    "hang": Reply.hang(3.0),
    "malformed JSON": Reply.malformed(),
    "no choices": Reply.no_choices(),
    "connection closed": Reply.dropped(),
}


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
def test_each_fault_recovers_on_retry(server, fault):
    server.script(fault, fault)
    result = run_all(make_config(server, timeout_s=0.3), [Call("x", prompt="p")])["x"]
    assert (result.text, result.error, result.attempts) == ("echo: p", None, 3)
    assert len(server.posts) == 3


PERSISTENT = {
    "429": (Reply.rate_limited(retry_after=0), "HTTP 429: "),
    "500": (Reply.server_error(500), "HTTP 500: "),
    "hang": (Reply.hang(3.0), "timeout: no answer within 0.3s"),
    "malformed JSON": (Reply.malformed(), "malformed body: "),
    "no choices": (Reply.no_choices(), "malformed body: no 'choices'"),
    "connection closed": (Reply.dropped(), "connection error: "),
}


@pytest.mark.parametrize(("fault", "reason"), PERSISTENT.values(), ids=PERSISTENT.keys())
def test_a_persistent_fault_ends_as_an_error_with_its_reason(server, fault, reason):
    server.responder = lambda request: fault
    result = run_all(make_config(server, timeout_s=0.3), [Call("x", prompt="p")])["x"]
    assert result.text is None
    assert result.error.startswith(reason)
    assert result.error.endswith("(after 3 attempts)")
    assert result.attempts == 3
    assert len(server.posts) == 3


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_other_client_errors_are_not_retried(server, status):
    server.responder = lambda request: Reply.error(status, "Invalid 'max_tokens': must be positive")
    result = run_all(make_config(server), [Call("x", prompt="p")])["x"]
    assert (
        result.error == f"HTTP {status}: " + Reply.error(status, "Invalid 'max_tokens': must be positive").body.decode()
    )
    assert result.attempts == 1
    assert len(server.posts) == 1


def test_an_unknown_model_is_a_404_with_the_servers_reason(server):
    result = run_all(make_config(server), [Call("x", prompt="p", model="nope")])["x"]
    assert result.error.startswith("HTTP 404: ") and "The model `nope` does not exist." in result.error


def test_retry_after_is_honoured(server):
    server.script(Reply.rate_limited(retry_after=0.3))
    started = time.monotonic()
    result = run_all(make_config(server, backoff_s=0.001, max_backoff_s=5.0), [Call("x", prompt="p")])["x"]
    assert result.text == "echo: p"
    assert time.monotonic() - started >= 0.28


def test_retry_after_is_capped(server):
    server.script(Reply.rate_limited(retry_after=3600))
    started = time.monotonic()
    assert run_all(make_config(server, max_backoff_s=0.05), [Call("x", prompt="p")])["x"].text == "echo: p"
    assert time.monotonic() - started < 2


def test_concurrency_is_bounded_and_results_come_as_they_finish(server):
    def slow_first(request: RecordedRequest) -> Reply:
        return Reply(text=request.prompt, delay_s=0.4 if request.prompt == "0" else 0.03)

    server.responder = slow_first
    calls = [Call(i, prompt=str(i)) for i in range(24)]
    with OpenAIClient(make_config(server, max_concurrency=3)) as client:
        order = [result.tag for result in client.run(calls)]
    assert sorted(order) == list(range(24))
    assert order[0] != 0  # the slow first call did not hold back the others
    assert 2 <= server.max_in_flight <= 3


def test_closing_the_iterator_early_stops_the_work(server):
    server.responder = lambda request: Reply(text="ok", delay_s=0.05)
    with OpenAIClient(make_config(server, max_concurrency=2)) as client:
        results = client.run([Call(i, prompt=str(i)) for i in range(50)])
        first = [next(results), next(results)]
        results.close()
    assert all(r.text == "ok" for r in first)
    assert len(server.posts) <= 6


def test_missing_key_is_a_clear_error_before_any_request(server, monkeypatch):
    monkeypatch.delenv("VH_MISSING_KEY", raising=False)
    client = OpenAIClient(make_config(server, api_key_env="VH_MISSING_KEY"))
    with pytest.raises(ValueharmError, match="environment variable VH_MISSING_KEY is not set"):
        client.check()
    with pytest.raises(ValueharmError, match="VH_MISSING_KEY"):
        list(client.run([Call(0, prompt="p")]))
    client.close()
    assert server.requests == []


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_endpoint_is_a_clear_error():
    url = f"http://127.0.0.1:{closed_port()}/v1"
    with (
        OpenAIClient(EndpointConfig(url, "m", api_key_env=None)) as client,
        pytest.raises(ValueharmError, match=f"cannot reach {url}"),
    ):
        client.check()


def test_check_passes_on_a_live_server_and_on_one_without_a_models_route():
    with FakeOpenAIServer(models=None) as bare, OpenAIClient(make_config(bare)) as client:
        client.check()
    with FakeOpenAIServer(models=["base", "llama3:latest"]) as fake, OpenAIClient(make_config(fake)) as client:
        client.check(["base", "llama3"])  # Ollama answers to a name without its :latest tag
        with pytest.raises(ValueharmError, match=r"does not serve model\(s\) vim/Pow; it serves: base, llama3"):
            client.check(["base", "vim/Pow"])


def test_check_reports_a_refused_key(monkeypatch):
    monkeypatch.setenv("VH_TEST_KEY", "sk-wrong")
    with FakeOpenAIServer(api_key=KEY) as fake, OpenAIClient(make_config(fake, api_key_env="VH_TEST_KEY")) as client:
        with pytest.raises(ValueharmError, match=r"refused the API key from \$VH_TEST_KEY \(HTTP 401\)") as error:
            client.check()
        assert "sk-wrong" not in str(error.value)


def test_the_key_never_appears_in_errors_results_logs_or_reprs(server, monkeypatch, caplog):
    monkeypatch.setenv("VH_TEST_KEY", KEY)
    caplog.set_level(logging.DEBUG)

    def echo_the_key(request: RecordedRequest) -> Reply:  # a careless server that quotes the header back
        if request.prompt == "bad":
            status = 503 if request.attempt == 1 else 400  # echoed in a retried reason, then in the final one
            return Reply.error(status, f"bad request with {request.headers['authorization']}")
        return Reply.server_error() if request.attempt == 1 else Reply(text="fine")

    server.responder = echo_the_key
    config = make_config(server, api_key_env="VH_TEST_KEY")
    with OpenAIClient(config) as client:
        results = list(client.run([Call("bad", prompt="bad"), Call("good", prompt="good")]))
        shown = [repr(config), repr(client), repr(results), caplog.text]
    assert any("Bearer ***" in (r.error or "") for r in results)
    assert "HTTP 503" in caplog.text and "Bearer ***" in caplog.text  # the retry was logged, without the key
    assert all(KEY not in text for text in shown)


def test_calls_are_validated_before_any_request(server):
    with pytest.raises(ValueError, match="exactly one of prompt and messages"):
        Call(0)
    with OpenAIClient(make_config(server, api="completions")) as client:
        messages = ({"role": "user", "content": "x"},)
        with pytest.raises(ValueharmError, match="completions API takes a prompt"):
            list(client.run([Call(0, prompt="ok"), Call(1, messages=messages)]))
    assert server.requests == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"base_url": "localhost:8000/v1"}, "must start with http"),
        ({"api": "responses"}, "'chat' or 'completions'"),
        ({"max_attempts": 0}, "at least 1"),
        ({"timeout_s": 0}, "timeout_s must be positive"),
    ],
)
def test_endpoint_config_rejects_bad_settings(overrides, message):
    settings = {"base_url": "http://localhost:8000/v1", "model": "m", **overrides}
    with pytest.raises(ValueharmError, match=message):
        EndpointConfig(**settings)


def test_parse_reply():
    def chat(message):
        return {"choices": [{"index": 0, "message": message}]}

    assert parse_reply(chat({"role": "assistant", "content": "hi"}), "chat") == "hi"
    assert (
        parse_reply(chat({"content": None, "refusal": "I can't help with that."}), "chat") == "I can't help with that."
    )
    assert parse_reply(chat({"content": None, "tool_calls": []}), "chat") == ""
    assert parse_reply({"choices": [{"text": " cont"}]}, "completions") == " cont"
    for body, api, message in [
        ([], "chat", "expected a JSON object"),
        ({"choices": []}, "chat", "no 'choices'"),
        ({"error": {"message": "overloaded"}}, "chat", "no 'choices' \\(error: .*overloaded"),
        (chat({"role": "assistant"}), "chat", "no 'message' with 'content'"),
        (chat({"content": ["a"]}), "chat", "content is a list"),
        ({"choices": [{"message": {"content": "x"}}]}, "completions", "no 'text'"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_reply(body, api)
