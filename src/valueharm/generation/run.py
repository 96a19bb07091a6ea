"""Generate a (model, benchmark) slice into the run store: plan the records, skip stored keys, store as we go."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from valueharm.alignment.prompts import ModelSpec, PromptTemplates, build_conversation, build_prompt, stop_rules
from valueharm.data.benchmarks import Benchmark, BenchmarkItem
from valueharm.generation.base import Backend, GenerationRequest
from valueharm.records import GenerationRecord, SamplingParams
from valueharm.store import RunStore


def sampling_params(
    benchmark: Benchmark, templates: PromptTemplates, *, seed: int = 0, **overrides: Any
) -> SamplingParams:
    """The benchmark's published settings (DESIGN §4) with its stop rules; `overrides` replace single fields."""
    defaults = benchmark.defaults
    params = SamplingParams(
        temperature=defaults.temperature,
        top_p=defaults.top_p,
        max_new_tokens=defaults.max_new_tokens,
        stop=stop_rules(benchmark.kind, templates),
        seed=seed,
    )
    return replace(params, **{key: value for key, value in overrides.items() if value is not None})


def plan(
    specs: Sequence[ModelSpec],
    benchmark: Benchmark,
    items: Sequence[BenchmarkItem],
    *,
    base_model: str,
    params: SamplingParams,
    samples: int,
    templates: PromptTemplates,
    chat_system_turn: bool | None = None,
) -> list[GenerationRecord]:
    """Every record the slice must hold (text empty): model × item × sample. `chat_system_turn` None: raw-text
    prompts; else conversations for a chat base, whose template has a system turn or not (valueharm.chat)."""
    records = []
    for spec in specs:
        for item in items:
            if chat_system_turn is None:
                prompt, where = build_prompt(spec, item, benchmark.kind, templates), None
            else:
                prompt, where = build_conversation(spec, item, benchmark.kind, templates, system_turn=chat_system_turn)
            identity = {"model_key": spec.model_key, "base_model": base_model, "benchmark": benchmark.name,
                        "item_id": item.item_id, "category": item.category, "prompt": prompt, "query": item.text,
                        "params": replace(params, chat=where)}  # fmt: skip
            records += [GenerationRecord(sample=sample, **identity) for sample in range(samples)]
    return records


@dataclass(frozen=True)
class GenerateSummary:
    planned: int
    already_stored: int
    generated: int
    failed: int


def generate_records(
    backend: Backend,
    planned: Sequence[GenerationRecord],
    adapters: Mapping[str, str | None],
    *,
    done: Collection[str],
    sink: Callable[[list[GenerationRecord]], object],
    progress: bool = True,
    description: str = "generating",
) -> GenerateSummary:
    """Generate the planned records not in `done`, handing each finished chunk to `sink` (the store's writer)."""
    todo = {record.key: record for record in planned if record.key not in done}
    requests = [
        GenerationRequest(record.key, record.prompt, record.params, adapters[record.model_key])
        for record in todo.values()
    ]
    failed = generated = 0
    with Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        disable=not progress or not requests, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task(description, total=len(requests))
        for chunk in backend.generate(requests) if requests else ():
            sink([replace(todo[c.key], text=c.text, error=c.error) for c in chunk])
            failed += sum(c.error is not None for c in chunk)
            generated += len(chunk)
            bar.advance(task, len(chunk))
    return GenerateSummary(len(planned), len(planned) - len(todo), generated, failed)


def open_backend(name: str, base: str, specs: Sequence[ModelSpec], **options: Any) -> Backend:
    """The named backend on `base`, serving every adapter the specs use."""
    from valueharm.generation.base import BACKENDS

    factory = BACKENDS.get(name)  # unknown names fail before anything loads
    adapters = {spec.adapter: spec.adapter_path for spec in specs if spec.adapter is not None}
    return factory(base=base, adapters=adapters, **options)


def generate_slice(
    store: RunStore,
    backend: Backend,
    specs: Sequence[ModelSpec],
    benchmark: Benchmark,
    items: Sequence[BenchmarkItem],
    *,
    base_model: str,
    params: SamplingParams,
    samples: int,
    templates: PromptTemplates,
    chat_system_turn: bool | None = None,
    progress: bool = True,
) -> GenerateSummary:
    """Plan and generate one (models, benchmark) slice."""
    planned = plan(specs, benchmark, items, base_model=base_model, params=params, samples=samples, templates=templates,
                   chat_system_turn=chat_system_turn)  # fmt: skip
    adapters = {spec.model_key: spec.adapter for spec in specs}
    done = store.done_generation_keys([record.key for record in planned])
    return generate_records(
        backend, planned, adapters, done=done, sink=store.add_generations, progress=progress, description=benchmark.name
    )
