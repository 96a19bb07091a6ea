"""The `openai` generation backend against a local fake server, faults injected."""

from __future__ import annotations

import logging
import random

import pytest
from openai_fake import FakeOpenAIServer, RecordedRequest, Reply

from valueharm.errors import ValueharmError
from valueharm.generation.base import BACKENDS, GenerationRequest, apply_stop, request_seed
from valueharm.generation.openai_backend import SEED_MASK, OpenAIBackend, openai_backend
from valueharm.openai_client import EndpointConfig
from valueharm.records import SamplingParams

KEY = "sk-backend-secret-42"
FAST = {"timeout_s": 0.3, "max_attempts": 3, "backoff_s": 0.005, "max_backoff_s": 0.02}
PARAMS = SamplingParams(temperature=0.1, top_p=0.75, max_new_tokens=64, stop=(".", "\n"))


def requests_for(prompts: list[str], params: SamplingParams = PARAMS, adapter: str | None = None):
    return [GenerationRequest(f"key-{i}", prompt, params, adapter) for i, prompt in enumerate(prompts)]


def collect(backend: OpenAIBackend, requests: list[GenerationRequest]):
    chunks = list(backend.generate(requests))
    done = [completion for chunk in chunks for completion in chunk]
    assert sorted(c.key for c in done) == sorted(r.key for r in requests)  # every request exactly once
    return chunks, {c.key: c for c in done}


def test_survives_an_injected_mix_of_faults(monkeypatch, caplog):
    """Every request ends stored (text) or recorded as failed with a reason, whatever the server does."""
    monkeypatch.setenv("VH_BACKEND_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    faults = {
        "HTTP 429": Reply.rate_limited(retry_after=0),
        "HTTP 500": Reply.server_error(500),
        "HTTP 503": Reply.server_error(503),
        "timeout": Reply.hang(3.0),
        "malformed body": Reply.malformed(),
        "malformed body: no 'choices'": Reply.no_choices(),
        "connection error": Reply.dropped(),
    }
    rng = random.Random(1234)
    plans = {}  # prompt → (the faults its attempts meet in order, whether it still succeeds)
    for i in range(40):
        kind = rng.choice([*faults, None, None])
        failures = 0 if kind is None else rng.choice([1, 2, 3])  # 3 = every attempt fails
        plans[f"prompt {i}"] = (kind, failures)

    def responder(request: RecordedRequest) -> Reply | str:
        kind, failures = plans[request.prompt]
        if request.attempt <= failures:
            return faults[kind]
        return f"answer to {request.prompt}. Then more\nlines"

    requests = requests_for(list(plans))
    with FakeOpenAIServer(responder, api_key=KEY) as server:
        backend = openai_backend(
            base="fake-model", base_url=server.url, api_key_env="VH_BACKEND_KEY", chunk_size=8, **FAST
        )
        chunks, done = collect(backend, requests)
        backend.close()
    assert all(len(chunk) <= 8 for chunk in chunks)
    assert len(server.posts) <= 40 * 3
    assert server.errors == []
    failed = 0
    for request in requests:
        kind, failures = plans[request.prompt]
        completion = done[request.key]
        if failures < 3:
            assert (completion.text, completion.error) == (f"answer to {request.prompt}", None)
        else:
            failed += 1
            assert completion.text == ""
            assert completion.error.startswith(kind) and completion.error.endswith("(after 3 attempts)")
    assert 0 < failed < 40
    assert all(KEY not in (c.error or "") for c in done.values()) and KEY not in caplog.text


def test_sampling_params_map_one_to_one(monkeypatch):
    params = SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=12, stop=("\n",), seed=3)
    requests = [GenerationRequest("k0", "Same prompt", params), GenerationRequest("k1", "Same prompt", params)]
    with FakeOpenAIServer() as server:
        backend = openai_backend(base="fake-model", base_url=server.url, api_key_env=None, **FAST)
        collect(backend, requests)
        backend.close()
    bodies = {r.json["seed"]: r.json for r in server.posts}
    expected_seeds = {request_seed(params, "k0") & SEED_MASK, request_seed(params, "k1") & SEED_MASK}
    assert set(bodies) == expected_seeds and len(expected_seeds) == 2  # repeated samples get their own seeds
    for body in bodies.values():
        assert body["temperature"] == 0.7 and body["top_p"] == 0.9 and body["max_tokens"] == 12
        assert body["stop"] == ["\n"]
        assert body["messages"] == [{"role": "user", "content": "Same prompt"}]


def test_completions_api_sends_the_prompt_as_the_exact_model_input():
    prompt = "QUESTION: How do I bake bread?\nANSWER:"
    with FakeOpenAIServer() as server:
        backend = openai_backend(base="fake-model", base_url=server.url, api="completions", api_key_env=None, **FAST)
        _, done = collect(backend, requests_for([prompt], SamplingParams()))
        backend.close()
    assert server.posts[0].path == "/v1/completions" and server.posts[0].json["prompt"] == prompt
    assert done["key-0"].text == f"echo: {prompt}"


def test_stop_strings_are_applied_to_every_text():
    """The server may ignore stops, or get only four of them; the cut is the same as on every other backend."""
    stops = ("<a>", "<b>", "<c>", "<d>", "\n", ".")
    reply = "First clause, then more\nsecond line. Third."
    params = SamplingParams(stop=stops)
    with FakeOpenAIServer(lambda request: reply) as server:
        backend = openai_backend(base="fake-model", base_url=server.url, api_key_env=None, **FAST)
        _, done = collect(backend, requests_for(["a", "b"], params))
        backend.close()
    assert server.posts[0].json["stop"] == list(stops[:4])
    assert {c.text for c in done.values()} == {apply_stop(reply, stops)} == {"First clause, then more"}


def test_adapter_names_map_to_served_model_names():
    with FakeOpenAIServer(models=["llama-base", "vim-pow", "benign/alpaca"]) as server:
        backend = openai_backend(
            base="llama-base",
            base_url=server.url,
            adapters={"vim/Pow": "/adapters/vim/Pow", "benign/alpaca": "/adapters/benign/alpaca"},
            adapter_models={"vim/Pow": "vim-pow"},
            api_key_env=None,
            **FAST,
        )
        requests = [
            GenerationRequest("base", "p", PARAMS),
            GenerationRequest("pow", "p", PARAMS, "vim/Pow"),
            GenerationRequest("alpaca", "p", PARAMS, "benign/alpaca"),
        ]
        _, done = collect(backend, requests)
        with pytest.raises(ValueharmError, match=r"unknown adapter\(s\) \['vim/Ach'\]; served: "):
            next(backend.generate([*requests, GenerationRequest("ach", "p", PARAMS, "vim/Ach")]))
        backend.close()
    assert all(c.error is None for c in done.values())
    assert sorted(r.json["model"] for r in server.posts) == ["benign/alpaca", "llama-base", "vim-pow"]
    assert len(server.posts) == 3  # nothing was sent for the batch with the unknown adapter


def test_construction_checks_key_server_and_served_models(monkeypatch):
    monkeypatch.delenv("VH_ABSENT_KEY", raising=False)
    with FakeOpenAIServer(models=["llama-base"]) as server:
        with pytest.raises(ValueharmError, match="VH_ABSENT_KEY is not set"):
            openai_backend(base="llama-base", base_url=server.url, api_key_env="VH_ABSENT_KEY")
        with pytest.raises(ValueharmError, match=r"does not serve model\(s\) vim/Pow"):
            openai_backend(base="llama-base", base_url=server.url, adapters={"vim/Pow": "x"}, api_key_env=None)
        config = EndpointConfig(server.url, "llama-base", api_key_env=None)
        OpenAIBackend(config, {"vim/Pow": "not-served"}, check=False).close()  # opt out, e.g. a server without /models
    assert server.posts == []


def test_registered_as_openai():
    assert BACKENDS.get("openai") is openai_backend
