"""The `vllm` backend (GPU): one vLLM engine per base model serves all its LoRA adapters in mixed batches.

The published code reloaded the inference engine for every (profile, benchmark); here the engine loads once and
each request names its adapter. Seeds are per request (`request_seed`), so an output does not depend on the batch
it ran in. vLLM is optional (`pip install 'valueharm[vllm]'`, GPU only) and imported only when a backend is built;
everything between requests and the engine call is a pure function of plain data, tested without vLLM.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from valueharm import chat
from valueharm.errors import ValueharmError
from valueharm.generation.base import (
    BACKENDS,
    Completion,
    GenerationRequest,
    apply_stop,
    check_adapter_dir,
    request_seed,
)
from valueharm.records import SamplingParams

log = logging.getLogger(__name__)

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM accepts for max_lora_rank


@dataclass(frozen=True)
class LoraSpec:
    """One adapter as vLLM needs it: `LoRARequest(lora_name=name, lora_int_id=int_id, lora_path=path)`."""

    name: str
    int_id: int  # vLLM caches adapters by this id: unique per adapter and > 0
    path: str
    rank: int


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise ValueharmError("the vllm backend needs vLLM: pip install 'valueharm[vllm]' (GPU only)") from None
    return vllm


def adapter_rank(name: str, path: Path) -> int:
    """The largest LoRA rank in a PEFT adapter (its `r`, or a larger one in `rank_pattern`)."""
    config_path = path / "adapter_config.json"
    if not config_path.is_file():
        raise ValueharmError(f"adapter {name!r}: no adapter_config.json in {path}")
    config = json.loads(config_path.read_text())
    ranks = [config.get("r") or 0, *(config.get("rank_pattern") or {}).values()]
    return max(int(rank) for rank in ranks)


def lora_specs(adapters: Mapping[str, str | Path]) -> dict[str, LoraSpec]:
    """Ids 1..n in name order: the same ids for the same adapters, in whatever order a config lists them."""
    specs = {}
    for int_id, name in enumerate(sorted(adapters), start=1):
        path = Path(adapters[name]).expanduser().resolve()
        specs[name] = LoraSpec(name, int_id, str(path), adapter_rank(name, path))
    return specs


def max_lora_rank(ranks: Iterable[int]) -> int:
    """The smallest max_lora_rank vLLM accepts that holds every adapter (vLLM allows only a few values)."""
    needed = max(ranks, default=1)
    for allowed in VLLM_LORA_RANKS:
        if allowed >= needed:
            return allowed
    raise ValueharmError(f"LoRA rank {needed} is above vLLM's largest max_lora_rank, {VLLM_LORA_RANKS[-1]}")


def engine_kwargs(
    base: str,
    specs: Mapping[str, LoraSpec],
    *,
    max_loras: int = 8,
    trust_remote_code: bool = False,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Arguments of `vllm.LLM`: LoRA slots only when there are adapters (each slot costs GPU memory)."""
    kwargs: dict[str, Any] = {"model": base, "trust_remote_code": trust_remote_code}
    if specs:
        kwargs |= {
            "enable_lora": True,
            "max_loras": max(1, min(max_loras, len(specs))),
            "max_lora_rank": max_lora_rank(spec.rank for spec in specs.values()),
        }
    return kwargs | dict(options or {})


def sampling_kwargs(params: SamplingParams, key: str) -> dict[str, Any]:
    """Arguments of `vllm.SamplingParams`, one-to-one with ours, seeded per request."""
    return {
        "n": 1,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_new_tokens,
        "stop": list(params.stop),
        "seed": request_seed(params, key),
    }


def lora_requests(specs: Mapping[str, LoraSpec], lora_cls: Any) -> dict[str, Any]:
    """One LoRARequest per adapter, built once and reused by every call."""
    return {
        name: lora_cls(lora_name=spec.name, lora_int_id=spec.int_id, lora_path=spec.path)
        for name, spec in specs.items()
    }


def plan_chunks(
    requests: Sequence[GenerationRequest], adapters: Iterable[str], chunk_size: int
) -> list[list[GenerationRequest]]:
    """Requests grouped by adapter, then cut into chunks: one engine call per chunk, touching few adapters.

    An unknown adapter is an error before any generation.
    """
    known = set(adapters)
    unknown = {r.adapter for r in requests if r.adapter is not None and r.adapter not in known}
    if unknown:
        raise ValueharmError(f"vllm backend: unknown adapter(s) {sorted(unknown)}; loaded: {sorted(known)}")
    ordered = sorted(requests, key=lambda r: (r.adapter is not None, r.adapter or ""))  # stable; base first
    return [ordered[start : start + chunk_size] for start in range(0, len(ordered), chunk_size)]


def build_batch(
    chunk: Sequence[GenerationRequest], loras: Mapping[str, Any], sampling_cls: Any, tokenizer: Any = None
) -> tuple[list[Any], list[Any], list[Any]]:
    """The three parallel lists of one `llm.generate` call: prompts, sampling params and LoRA requests. A chat
    request goes as token ids of its conversation rendered by the model's template (so no second BOS is added)."""
    prompts: list[Any] = [
        {"prompt_token_ids": tokenizer(chat.render(tokenizer, r.prompt), add_special_tokens=False)["input_ids"]}
        if r.params.chat
        else r.prompt
        for r in chunk
    ]
    sampling = [sampling_cls(**sampling_kwargs(r.params, r.key)) for r in chunk]
    lora = [None if r.adapter is None else loras[r.adapter] for r in chunk]
    return prompts, sampling, lora


def generate_chunk(
    llm: Any, chunk: Sequence[GenerationRequest], loras: Mapping[str, Any], sampling_cls: Any
) -> list[Completion]:
    """One engine call for the chunk. vLLM rejects a whole call for one bad request (e.g. a prompt longer than
    the model's context), so then each request runs alone and a rejected one becomes a Completion with its error.
    """
    tokenizer = llm.get_tokenizer() if any(r.params.chat for r in chunk) else None
    prompts, sampling, lora = build_batch(chunk, loras, sampling_cls, tokenizer)
    try:
        outputs = llm.generate(prompts, sampling, lora_request=lora, use_tqdm=False)
    except ValueError as exc:
        if len(chunk) == 1:
            return [Completion(chunk[0].key, error=f"vllm rejected the request: {exc}")]
        log.warning("vllm rejected a batch (%s); running its %d requests one by one", exc, len(chunk))
        return [done for request in chunk for done in generate_chunk(llm, [request], loras, sampling_cls)]
    return [
        Completion(request.key, apply_stop(output.outputs[0].text, request.params.stop))
        for request, output in zip(chunk, outputs, strict=True)
    ]


class VLLMBackend:
    """A base model and its LoRA adapters in one vLLM engine; requests for any of them batch together."""

    name = "vllm"

    def __init__(
        self,
        base: str | Path,
        adapters: Mapping[str, str | Path] | None = None,
        *,
        max_loras: int = 8,
        chunk_size: int = 256,
        trust_remote_code: bool = False,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        vllm = import_vllm()
        from vllm.lora.request import LoRARequest

        from valueharm import base_model

        if chunk_size < 1 or max_loras < 1:
            raise ValueharmError("vllm backend: chunk_size and max_loras must be at least 1")
        self.specs = lora_specs(adapters or {})
        for spec in self.specs.values():
            check_adapter_dir(spec.name, Path(spec.path), base_model.identity(base))
        self.chunk_size = chunk_size
        self.sampling_cls = vllm.SamplingParams
        self.loras = lora_requests(self.specs, LoRARequest)
        kwargs = engine_kwargs(
            str(base), self.specs, max_loras=max_loras, trust_remote_code=trust_remote_code, options=engine_options
        )
        self.llm = vllm.LLM(**kwargs)

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[list[Completion]]:
        for chunk in plan_chunks(requests, self.specs, self.chunk_size):
            yield generate_chunk(self.llm, chunk, self.loras, self.sampling_cls)

    def close(self) -> None:
        """Free the engine's GPU memory so another base model can load in the same process."""
        self.llm = None
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


@BACKENDS.register("vllm")
def vllm_backend(
    *,
    base: str | Path,
    adapters: Mapping[str, str | Path] | None = None,
    max_loras: int = 8,
    chunk_size: int = 256,
    trust_remote_code: bool = False,
    engine_options: Mapping[str, Any] | None = None,
) -> VLLMBackend:
    """The `vllm` backend from keyword arguments (an experiment's `backend` options).

    base: local path or hub id of the base model. adapters: name → PEFT adapter directory.
    max_loras: adapters held on the GPU at once (capped at the number of adapters); more means fewer swaps and
        less KV-cache memory. chunk_size: requests per engine call and per yielded chunk.
    trust_remote_code: off unless asked (DESIGN §3). engine_options: further `vllm.LLM` arguments, e.g.
        {"gpu_memory_utilization": 0.85, "max_model_len": 2048, "max_cpu_loras": 160}.
    """
    return VLLMBackend(
        base,
        adapters,
        max_loras=max_loras,
        chunk_size=chunk_size,
        trust_remote_code=trust_remote_code,
        engine_options=engine_options,
    )
