"""transformers backend: one loaded base serves every adapter, a batch per adapter (PEFT `set_adapter`).

Requests are grouped by adapter before they are batched: a one-adapter batch runs the adapter's layers once, where a
mixed batch (PEFT `adapter_names`) runs every adapter in it on its slice — on the tiny model on 2 CPU cores, 35
against 21 generations/s with 8 adapters.

Sampling is seeded per request: a logits processor draws each row's token from that request's own random stream
and hands `generate` a one-hot choice to take greedily. So a request's output does not depend on which batch,
process or order it runs in — a resumed run reproduces a clean one.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from valueharm import base_model, chat
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
from valueharm.settings import Precision

log = logging.getLogger(__name__)

PROBE_PROMPT = "We should"


class SeededSampler:
    """Temperature + top-p (nucleus) sampling with one random stream per batch row."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float) -> None:
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        keep = sorted_probs.cumsum(dim=-1) - sorted_probs < self.top_p  # the nucleus; the top token always stays
        sorted_probs = sorted_probs * keep
        cumulative = sorted_probs.cumsum(dim=-1) / sorted_probs.sum(dim=-1, keepdim=True)
        draws = torch.stack([torch.rand((), generator=g) for g in self.generators]).to(scores.device)
        index = (cumulative < draws[:, None]).sum(dim=-1, keepdim=True).clamp(max=scores.shape[-1] - 1)
        chosen = order.gather(-1, index)
        forced = torch.full_like(scores, float("-inf"))
        return forced.scatter_(-1, chosen, 0.0)


class HFBackend:
    """A base model and its LoRA adapters, loaded once; requests for any of them batch together."""

    name = "hf"

    def __init__(
        self,
        base: str | Path,
        adapters: Mapping[str, str | Path] | None = None,
        *,
        batch_size: int = 32,
        trust_remote_code: bool = False,
        device: str | None = None,
        check_adapters: bool = True,
        chunk_size: int = 256,
        precision: Precision = "auto",
    ) -> None:
        """`precision` is the dtype the base computes in (valueharm.base_model): auto is bf16 on a GPU that supports
        it, fp32 otherwise (a bf16 checkpoint on a CPU generates in fp32)."""
        self.base = base_model.identity(base)
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.adapters = dict(adapters or {})
        for name, path in self.adapters.items():
            check_adapter_dir(name, Path(path), self.base)
        model, self.tokenizer = base_model.load(base, precision=precision, trust_remote_code=trust_remote_code)
        self.tokenizer.padding_side = "left"  # continuations start where every prompt ends
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.adapters:
            from peft import PeftModel

            (first, first_path), *rest = self.adapters.items()
            model = PeftModel.from_pretrained(model, str(first_path), adapter_name=first)
            for name, path in rest:
                model.load_adapter(str(path), adapter_name=name)
        self.model = model.to(self.device).eval()
        if check_adapters:
            self.check_adapters_applied()

    def check_adapters_applied(self) -> None:
        """Each adapter must change the base's next-token logits on a probe prompt, else it is a silent no-op.

        Logits rather than greedy text, since a lightly trained adapter may still pick the same tokens; each in a
        forward pass of its own, where a zero adapter gives bit-identical logits.
        """
        if not self.adapters:
            return
        batch = self.tokenizer([PROBE_PROMPT], return_tensors="pt").to(self.device)
        with torch.no_grad():
            with self.model.disable_adapter():
                base_logits = self.model(**batch).logits[:, -1, :]
            for name, path in self.adapters.items():
                self.model.set_adapter(name)
                if torch.equal(self.model(**batch).logits[:, -1, :], base_logits):
                    raise ValueharmError(
                        f"adapter {name!r} ({path}) does not change the base model's output: "
                        "its weights are zero or it targets no module of this model"
                    )

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[list[Completion]]:
        unknown = {r.adapter for r in requests if r.adapter is not None and r.adapter not in self.adapters}
        if unknown:
            raise ValueharmError(f"unknown adapter(s) {sorted(unknown)}; loaded: {sorted(self.adapters)}")
        # One batch has one adapter and one set of sampling settings; within them, similar prompt lengths (less left
        # padding).
        ordered = sorted(requests, key=lambda r: (_params_key(r.params), r.adapter or "", len(r.prompt)))
        done: list[Completion] = []
        start = 0
        while start < len(ordered):
            first = ordered[start]
            end = start + 1
            while (
                end < len(ordered)
                and end - start < self.batch_size
                and (ordered[end].params, ordered[end].adapter) == (first.params, first.adapter)
            ):
                end += 1
            done += self._generate_batch(ordered[start:end], first.params)
            start = end
            if len(done) >= self.chunk_size:
                yield done
                done = []
        if done:
            yield done

    def _generate_batch(self, batch: Sequence[GenerationRequest], params: SamplingParams) -> list[Completion]:
        """One batch, halving it when the accelerator runs out of memory."""
        try:
            return self._run(batch, params)
        except torch.OutOfMemoryError:
            if len(batch) == 1:
                raise
            torch.cuda.empty_cache()
            self.batch_size = max(1, len(batch) // 2)
            log.warning("out of memory: batch size now %d", self.batch_size)
            half = len(batch) // 2
            return self._generate_batch(batch[:half], params) + self._generate_batch(batch[half:], params)

    @torch.no_grad()
    def _run(self, batch: Sequence[GenerationRequest], params: SamplingParams) -> list[Completion]:
        from transformers import LogitsProcessorList

        if params.chat:  # conversations, rendered by the model's template, which carries the special tokens
            texts = [chat.render(self.tokenizer, r.prompt) for r in batch]
            inputs = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        else:
            inputs = self.tokenizer([r.prompt for r in batch], return_tensors="pt", padding=True)
        inputs = inputs.to(self.device)
        extra: dict[str, Any] = {}
        adapter = batch[0].adapter  # generate() batches one adapter at a time
        if not params.greedy:
            sampler = SeededSampler([request_seed(params, r.key) for r in batch], params.temperature, params.top_p)
            extra["logits_processor"] = LogitsProcessorList([sampler])
        with self._serving(adapter):
            output = self.model.generate(
                **inputs,
                **extra,
                do_sample=False,
                max_new_tokens=params.max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                temperature=None,
                top_p=None,
                top_k=None,
            )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        outputs = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [Completion(r.key, apply_stop(text, params.stop)) for r, text in zip(batch, outputs, strict=True)]

    def _serving(self, adapter: str | None) -> contextlib.AbstractContextManager[Any]:
        """The model as `adapter` (None: the base alone)."""
        if not self.adapters:
            return contextlib.nullcontext()
        if adapter is None:
            return self.model.disable_adapter()
        self.model.set_adapter(adapter)
        return contextlib.nullcontext()

    def close(self) -> None:
        del self.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _params_key(params: SamplingParams) -> str:
    return json.dumps([params.temperature, params.top_p, params.max_new_tokens, params.stop, params.seed])


@BACKENDS.register("hf")
def _hf_backend(*, base: str | Path, adapters: Mapping[str, str | Path] | None = None, **options: Any) -> HFBackend:
    return HFBackend(base, adapters, **options)
