"""`valueharm doctor --gpu`: the first thing to run on a GPU machine, before renting hours for a study.

It checks, each step reported as ok / failed / skipped with a reason:
1. CUDA is there (device, memory, torch's CUDA build) and vLLM imports (its version);
2. a small model loads in the hf backend and, given CUDA, in the vllm backend — by default the tiny test model,
   built here in a minute, so no hub access is needed; `model=` takes any base name (valueharm.base_model);
3. two LoRA adapters (random, seeded, saved like trained ones) each change the base's greedy output and differ
   from each other, in each backend;
4. a batch mixing the base and both adapters gives the same greedy outputs as one batch per adapter;
5. generation throughput (new tokens per second) of each backend on a fixed batch.
Without CUDA the GPU steps are skipped, saying so, and the hf backend is checked on the CPU.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from valueharm.errors import ValueharmError
from valueharm.generation.base import Backend, GenerationRequest
from valueharm.records import SamplingParams

Status = Literal["ok", "failed", "skipped"]
ADAPTERS = ("doctor-a", "doctor-b")
PROMPTS = (
    "The weather today is",
    "My favourite thing about the city is",
    "QUESTION: What should I cook for dinner? ANSWER:",
    "Once upon a time, a small dog",
    "The most important value in my life is",
    "Here is how to plant a tree:",
    "Yesterday the committee decided",
    "In the morning she always",
)
GREEDY = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=24)
THROUGHPUT = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=64)
THROUGHPUT_REQUESTS = 128


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    seconds: float = 0.0


@dataclass
class DoctorReport:
    checks: list[Check] = field(default_factory=list)
    tokens_per_second: dict[str, float] = field(default_factory=dict)  # backend → new tokens per second

    @property
    def failed(self) -> bool:
        return any(check.status == "failed" for check in self.checks)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _Steps:
    """Runs named steps, recording each outcome; a failed step's reason is kept, and later steps go on."""

    def __init__(self, report: DoctorReport, echo: Callable[[Check], None]) -> None:
        self.report, self.echo = report, echo

    def add(self, name: str, status: Status, detail: str, seconds: float = 0.0) -> None:
        check = Check(name, status, detail, round(seconds, 2))
        self.report.checks.append(check)
        self.echo(check)

    @contextmanager
    def step(self, name: str) -> Iterator[list[str]]:
        """The body appends its detail line; an exception fails the step with its first line."""
        start, detail = time.perf_counter(), []
        try:
            yield detail
        except Exception as err:  # a doctor reports every failure and carries on
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            self.add(name, "failed", reason, time.perf_counter() - start)
        else:
            self.add(name, "ok", "; ".join(detail), time.perf_counter() - start)

    def passed(self) -> bool:
        """Whether the latest step passed."""
        return self.report.checks[-1].status == "ok"


def run_doctor(
    *, gpu: bool, work_dir: Path, data_dir: Path, model: str | None = None, echo: Callable[[Check], None] = print
) -> DoctorReport:
    """Every check in order; what cannot run here is skipped with the reason."""
    report = DoctorReport()
    steps = _Steps(report, echo)
    cuda = cuda_description() if gpu else None
    if not gpu:
        steps.add("gpu", "skipped", "not asked for (--gpu)")
    elif cuda is not None:
        steps.add("cuda", "ok", cuda)
    else:
        steps.add("cuda", "skipped", "no CUDA device: the vllm checks are skipped, the hf ones run on the CPU")
    vllm_ready = False
    if cuda is not None:
        with steps.step("vllm import") as detail:
            from valueharm.generation.vllm_backend import import_vllm

            detail.append(f"vllm {import_vllm().__version__}")
            vllm_ready = True
    with steps.step("model") as detail:
        from transformers import AutoTokenizer

        base = _base(model, data_dir)
        tokenizer = AutoTokenizer.from_pretrained(base)
        detail.append(base)
    if not steps.passed():
        return report
    with steps.step("adapters") as detail:
        adapters = make_adapters(base, work_dir / "adapters")
        detail.append(f"{len(adapters)} random LoRA adapters (r 8 on q_proj, v_proj), seeded")
    if not steps.passed():
        return report
    backends: list[tuple[str, Callable[[], Backend]]] = [("hf", lambda: _open("hf", base, adapters))]
    if gpu and cuda is None:
        steps.add("vllm", "skipped", "no CUDA device")
    elif gpu and not vllm_ready:
        steps.add("vllm", "skipped", "vllm does not import (see above)")
    elif gpu:
        backends.append(("vllm", lambda: _open("vllm", base, adapters)))
    for name, opener in backends:
        _check_backend(steps, name, opener, tokenizer)
    return report


def cuda_description() -> str | None:
    """The first CUDA device in a line, or None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return (f"{props.name}, {props.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} device(s), "
            f"torch {torch.__version__} built for CUDA {torch.version.cuda}")  # fmt: skip


def _base(model: str | None, data_dir: Path) -> str:
    from valueharm import base_model

    return base_model.resolve(model or "tiny:test", data_dir=data_dir, progress=False)


def make_adapters(base: str, root: Path, names: Sequence[str] = ADAPTERS) -> dict[str, Path]:
    """LoRA adapters with random (not zero) weights on the attention projections, saved as training saves them,
    so both backends load them as they would trained ones."""
    import torch
    from peft import LoraConfig, get_peft_model

    from valueharm import base_model

    paths = {}
    model, _ = base_model.load(base)  # once: each adapter is unloaded again, leaving the base as it was
    config = LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    for seed, name in enumerate(names, start=1):
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, config)
        path = root / name
        peft_model.save_pretrained(str(path))
        (path / "meta.json").write_text(json.dumps({"base": base_model.identity(base), "doctor": True}))
        paths[name] = path
        model = peft_model.unload()
    return paths


def _open(name: str, base: str, adapters: dict[str, Path]) -> Backend:
    from valueharm.generation.base import BACKENDS

    options: dict[str, Any] = {"base": base, "adapters": adapters}
    if name == "vllm":  # a quick start and a small share of the GPU: this is a check, not a run
        options["engine_options"] = {"gpu_memory_utilization": 0.3, "max_model_len": 512, "enforce_eager": True}
    return BACKENDS.get(name)(**options)


def _requests(prompts: Sequence[str], adapter: str | None, params: SamplingParams, tag: str) -> list[GenerationRequest]:
    return [GenerationRequest(f"{tag}-{adapter}-{i}", p, params, adapter) for i, p in enumerate(prompts)]


def _texts(backend: Backend, requests: Sequence[GenerationRequest]) -> dict[str, str]:
    texts = {}
    for chunk in backend.generate(requests):
        for completion in chunk:
            if completion.error is not None:
                raise ValueharmError(f"generation failed: {completion.error}")
            texts[completion.key] = completion.text
    return texts


def _check_backend(steps: _Steps, name: str, opener: Callable[[], Backend], tokenizer: Any) -> None:
    """Load, then each check in turn; a failed one stops this backend's later checks (they build on it)."""
    with steps.step(f"{name}: load") as detail:
        backend = opener()
        detail.append("base and both adapters loaded")
    if not steps.passed():
        return
    try:
        singles: dict[str | None, list[str]] = {}
        with steps.step(f"{name}: adapters change the output") as detail:
            for adapter in (None, *ADAPTERS):
                requests = _requests(PROMPTS, adapter, GREEDY, "single")
                texts = _texts(backend, requests)
                singles[adapter] = [texts[r.key] for r in requests]
            differ = {
                "a ≠ base": _differing(singles[ADAPTERS[0]], singles[None]),
                "b ≠ base": _differing(singles[ADAPTERS[1]], singles[None]),
                "a ≠ b": _differing(singles[ADAPTERS[0]], singles[ADAPTERS[1]]),
            }
            if not all(differ.values()):
                same = ", ".join(pair for pair, n in differ.items() if not n)
                raise ValueharmError(f"greedy outputs identical for {same} on all {len(PROMPTS)} prompts")
            detail.append(", ".join(f"{pair} on {n}/{len(PROMPTS)} prompts" for pair, n in differ.items()))
        if not steps.passed():
            return
        with steps.step(f"{name}: mixed batch = single-adapter batches") as detail:
            mixed = [r for adapter in (None, *ADAPTERS) for r in _requests(PROMPTS, adapter, GREEDY, "mixed")]
            mixed.sort(key=lambda r: r.prompt)  # interleave the adapters in one submission
            texts = _texts(backend, mixed)
            wrong = [r for r in mixed if texts[r.key] != singles[r.adapter][int(r.key.rsplit("-", 1)[1])]]
            if wrong:
                raise ValueharmError(
                    f"{len(wrong)} of {len(mixed)} mixed-batch outputs differ from single-adapter ones"
                )
            detail.append(f"all {len(mixed)} outputs equal")
        with steps.step(f"{name}: throughput") as detail:
            steps.report.tokens_per_second[name] = _throughput(backend, tokenizer)
            detail.append(f"{steps.report.tokens_per_second[name]:,.0f} new tokens/s ({THROUGHPUT_REQUESTS} "
                          f"requests × {THROUGHPUT.max_new_tokens} tokens, base and adapters mixed)")  # fmt: skip
    finally:
        backend.close()


def _differing(a: Sequence[str], b: Sequence[str]) -> int:
    return sum(x != y for x, y in zip(a, b, strict=True))


def _throughput(backend: Backend, tokenizer: Any) -> float:
    """New tokens per second on a fixed mixed batch, counted with the model's tokenizer."""
    adapters = (None, *ADAPTERS)
    requests = [
        GenerationRequest(f"speed-{i}", PROMPTS[i % len(PROMPTS)] + f" ({i})", THROUGHPUT, adapters[i % 3])
        for i in range(THROUGHPUT_REQUESTS)
    ]
    start = time.perf_counter()
    texts = _texts(backend, requests)
    seconds = time.perf_counter() - start
    tokens = sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts.values())
    return tokens / seconds
