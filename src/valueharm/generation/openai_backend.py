"""The `openai` backend: generation through any OpenAI-compatible server (vLLM, OpenAI, Ollama, llama.cpp).

vLLM's OpenAI server serves each LoRA adapter under a model name (`--lora-modules vim/Pow=/path/to/adapter`), so
one server holds a base and all its adapters and a request picks one by naming it. Stop strings are also cut here
with `apply_stop`, so stop rules are identical to every other backend's whatever the server does with them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from valueharm import chat
from valueharm.errors import ValueharmError
from valueharm.generation.base import BACKENDS, Completion, GenerationRequest, apply_stop, request_seed
from valueharm.openai_client import Call, EndpointConfig, OpenAIClient

SEED_MASK = (1 << 31) - 1  # some servers (llama.cpp) keep a 32-bit seed; 31 bits fit everywhere


class OpenAIBackend:
    """Sends each request as one call: on the chat API a raw prompt is one user message and a chat prompt its
    conversation; on completions a raw prompt goes as it is (a chat prompt needs the chat API)."""

    name = "openai"

    def __init__(
        self,
        config: EndpointConfig,
        adapter_models: Mapping[str, str] | None = None,
        *,
        chunk_size: int = 16,
        check: bool = True,
    ) -> None:
        """`adapter_models` maps a request's adapter name to the model name the server serves it under.

        With `check`, a missing API key, an unreachable server or a model it does not serve is an error here,
        before any request.
        """
        if chunk_size < 1:
            raise ValueharmError("openai backend: chunk_size must be at least 1")
        self.config = config
        self.adapter_models = dict(adapter_models or {})
        self.chunk_size = chunk_size
        self.client = OpenAIClient(config)
        if check:
            try:
                self.client.check([config.model, *self.adapter_models.values()])
            except BaseException:
                self.client.close()
                raise

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[list[Completion]]:
        """Completions in chunks of `chunk_size` as calls finish; a call that fails for good is a Completion with
        its error, never an exception."""
        unknown = {r.adapter for r in requests if r.adapter is not None and r.adapter not in self.adapter_models}
        if unknown:
            raise ValueharmError(
                f"openai backend: unknown adapter(s) {sorted(unknown)}; served: {sorted(self.adapter_models)}"
            )
        calls = [self._call(index, request) for index, request in enumerate(requests)]
        chunk: list[Completion] = []
        for result in self.client.run(calls):
            request = requests[result.tag]
            if result.text is not None:
                chunk.append(Completion(request.key, apply_stop(result.text, request.params.stop)))
            else:
                chunk.append(Completion(request.key, error=result.error))
            if len(chunk) >= self.chunk_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _call(self, index: int, request: GenerationRequest) -> Call:
        """SamplingParams one-to-one; the seed is the request's own, so repeated samples of one prompt differ."""
        params = request.params
        conversation = chat.decode(request.prompt) if params.chat else None  # the server applies its template
        return Call(
            tag=index,
            prompt=None if conversation else request.prompt,
            messages=conversation,
            model=self.config.model if request.adapter is None else self.adapter_models[request.adapter],
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            stop=params.stop,
            seed=request_seed(params, request.key) & SEED_MASK,
        )

    def close(self) -> None:
        self.client.close()


@BACKENDS.register("openai")
def openai_backend(
    *,
    base: str | Path,
    base_url: str,
    adapters: Mapping[str, Any] | None = None,
    adapter_models: Mapping[str, str] | None = None,
    model: str | None = None,
    api: Literal["chat", "completions"] = "chat",
    api_key_env: str | None = "OPENAI_API_KEY",
    max_concurrency: int = 8,
    timeout_s: float = 60.0,
    max_attempts: int = 5,
    backoff_s: float = 1.0,
    max_backoff_s: float = 30.0,
    chunk_size: int = 16,
    check: bool = True,
) -> OpenAIBackend:
    """The `openai` backend from keyword arguments (an experiment's `backend` options).

    base: the base model; the server's name for it unless `model` is given.
    base_url: the API root, e.g. http://localhost:8000/v1.
    adapters: the run's adapters, name → path as for the other backends; only the names are used: the server must
        serve each adapter under its own name (vLLM: `--lora-modules NAME=PATH`) unless `adapter_models` says
        otherwise.
    adapter_models: adapter name → served model name, where it differs from the adapter's name.
    model: the served name of the base model, when it is not `base`.
    api: "chat" (prompt sent as one user message; the server applies the chat template) or "completions" (the
        prompt is the exact model input: use it for base models).
    api_key_env, max_concurrency, timeout_s, max_attempts, backoff_s, max_backoff_s: see EndpointConfig.
    chunk_size: completions per yielded chunk (what the caller stores at a time).
    check: probe the server (key, reachability, served models) before any request.
    """
    config = EndpointConfig(
        base_url=base_url,
        model=model or str(base),
        api=api,
        api_key_env=api_key_env,
        max_concurrency=max_concurrency,
        timeout_s=timeout_s,
        max_attempts=max_attempts,
        backoff_s=backoff_s,
        max_backoff_s=max_backoff_s,
    )
    served = {name: name for name in adapters or {}} | dict(adapter_models or {})
    return OpenAIBackend(config, served, chunk_size=chunk_size, check=check)
