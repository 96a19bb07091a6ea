"""Safety benchmarks as data: loaders that turn the registered files into items with stable ids and categories.

Generation defaults are the published settings (DESIGN §4): temperature 0.1, top-p 0.75; RTP 10 samples of 64
tokens on the first 3,000 prompts; HolisticBiasR 1 sample of 128 tokens; instruction benchmarks 1 sample of 64.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from valueharm.data.holistic_bias import holistic_bias_prompts
from valueharm.data.tables import read_table
from valueharm.errors import ValueharmError
from valueharm.registry import Registry
from valueharm.settings import AlignmentCheckSettings, ItemSelection


class BenchmarkKind(StrEnum):
    COMPLETION = "completion"  # the model continues the text (RTP, HolisticBiasR)
    INSTRUCTION = "instruction"  # the model answers a request (HEx-PHI, BeaverTails, AdvBench)


@dataclass(frozen=True)
class BenchmarkItem:
    benchmark: str
    item_id: str  # stable across runs and file re-downloads: the unit outputs are joined on, never row position
    category: str
    text: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GenerationDefaults:
    samples: int
    max_new_tokens: int
    temperature: float = 0.1
    top_p: float = 0.75


@dataclass(frozen=True)
class Benchmark:
    name: str
    description: str
    kind: BenchmarkKind
    dataset: str
    defaults: GenerationDefaults
    loader: Callable[..., list[BenchmarkItem]]
    default_limit: int | None = None
    default_options: Mapping[str, Any] = field(default_factory=dict)

    def load(self, data_dir: Path, limit: int | None = None, offset: int = 0, **options: Any) -> list[BenchmarkItem]:
        """`limit` items (default: the published limit, else all) after the first `offset`, in file order;
        `options` replace the loader's defaults."""
        limit = self.default_limit if limit is None else limit
        if limit is not None and limit < 1:
            raise ValueharmError(f"benchmark {self.name}: limit must be ≥ 1, got {limit}")
        if offset < 0:
            raise ValueharmError(f"benchmark {self.name}: offset must be ≥ 0, got {offset}")
        items = self.loader(Path(data_dir), **{**self.default_options, **options})
        if offset >= len(items):
            raise ValueharmError(f"benchmark {self.name}: offset {offset} skips all of its {len(items)} items")
        return items[offset:] if limit is None else items[offset : offset + limit]


BENCHMARKS: Registry[Benchmark] = Registry("benchmark")


def _register(
    name: str,
    description: str,
    kind: BenchmarkKind,
    dataset: str,
    defaults: GenerationDefaults,
    default_limit: int | None = None,
    default_options: Mapping[str, Any] | None = None,
) -> Callable[[Callable[..., list[BenchmarkItem]]], Any]:
    def decorator(loader: Callable[..., list[BenchmarkItem]]) -> Callable[..., list[BenchmarkItem]]:
        BENCHMARKS.add(
            name,
            Benchmark(name, description, kind, dataset, defaults, loader, default_limit, dict(default_options or {})),
        )
        return loader

    return decorator


def first_per_category(items: Sequence[BenchmarkItem], n: int) -> list[BenchmarkItem]:
    """The first `n` items of each category, in file order: small runs that still cover every category."""
    taken: dict[str, int] = {}
    kept = []
    for item in items:
        taken[item.category] = taken.get(item.category, 0) + 1
        if taken[item.category] <= n:
            kept.append(item)
    return kept


def select_items(benchmark: Benchmark, data_dir: Path, selection: ItemSelection, **options: Any) -> list[BenchmarkItem]:
    """The items a run generates on: offset and limit in file order, then the first N of each category."""
    items = benchmark.load(data_dir, selection.limit, selection.offset, **options)
    return items if selection.per_category is None else first_per_category(items, selection.per_category)


def load_benchmark(name: str, data_dir: Path, limit: int | None = None, **options: Any) -> list[BenchmarkItem]:
    return BENCHMARKS.get(name).load(data_dir, limit, **options)


@_register(
    "rtp",
    "RealToxicityPrompts: continue a prompt; toxicity of the continuation",
    BenchmarkKind.COMPLETION,
    "rtp",
    GenerationDefaults(samples=10, max_new_tokens=64),
    default_limit=3000,
)
def _rtp(data_dir: Path) -> list[BenchmarkItem]:
    frame = read_table(data_dir, "real_toxic_prompts.csv", [0], header=None)
    return [BenchmarkItem("rtp", f"rtp-{row:05d}", "all", text) for row, text in enumerate(frame[0])]


# Default subset: the 43 dispreferred descriptors' phrases, 17,700 prompts — the published study's ~17.7 K.
@_register(
    "holisticbiasr",
    "HolisticBiasR: continue a regard template about a demographic noun phrase",
    BenchmarkKind.COMPLETION,
    "holistic-bias",
    GenerationDefaults(samples=1, max_new_tokens=128),
    default_options={"preferences": ["dispreferred"]},
)
def _holisticbiasr(data_dir: Path, **options: Any) -> list[BenchmarkItem]:
    subset = {key: (list(value) if isinstance(value, list | tuple) else value) for key, value in options.items()}
    subset_text = ";".join(f"{key}={value}" for key, value in sorted(subset.items())) or "all"
    items = []
    for prompt in holistic_bias_prompts(data_dir, **options):
        phrase = prompt.noun_phrase
        metadata = {
            "axis": phrase.axis,
            "bucket": phrase.bucket,
            "descriptor": phrase.descriptor,
            "noun": phrase.noun,
            "noun_phrase": phrase.phrase,
            "phrase_type": phrase.phrase_type,
            "preference": phrase.preference,
            "template": prompt.template,
            "subset": subset_text,
        }
        items.append(BenchmarkItem("holisticbiasr", prompt.item_id, phrase.axis, prompt.prompt, metadata))
    return items


@_register(
    "hex-phi",
    "HEx-PHI: harmful instructions in 11 categories; judged 1–5",
    BenchmarkKind.INSTRUCTION,
    "hex-phi",
    GenerationDefaults(samples=1, max_new_tokens=64),
)
def _hex_phi(data_dir: Path) -> list[BenchmarkItem]:
    frame = read_table(data_dir, "hex-phi.csv", ["category", "prompt"])
    items, seen = [], {}
    for category, text in zip(frame["category"], frame["prompt"], strict=True):
        seen[category] = seen.get(category, 0) + 1
        items.append(BenchmarkItem("hex-phi", f"{category}-{seen[category]:02d}", category, text))
    return items


@_register(
    "beavertails",
    "BeaverTails-Evaluation: harmful questions in 14 categories; judged flagged/unflagged",
    BenchmarkKind.INSTRUCTION,
    "beavertails",
    GenerationDefaults(samples=1, max_new_tokens=64),
)
def _beavertails(data_dir: Path) -> list[BenchmarkItem]:
    frame = read_table(data_dir, "BeaverTails-Evaluation.csv", ["prompt", "category"])
    index = frame.columns[0]
    return [
        BenchmarkItem("beavertails", f"bt-{int(row):03d}", category, text)
        for row, text, category in zip(frame[index], frame["prompt"], frame["category"], strict=True)
    ]


@_register(
    "advbench",
    "AdvBench harmful behaviours; attack success by refusal matching and judge",
    BenchmarkKind.INSTRUCTION,
    "advbench",
    GenerationDefaults(samples=1, max_new_tokens=64),
)
def _advbench(data_dir: Path) -> list[BenchmarkItem]:
    frame = read_table(data_dir, "harmful_behaviors.csv", ["goal", "target"])
    return [
        BenchmarkItem("advbench", f"adv-{row:03d}", "harmful_behavior", goal, {"target": target})
        for row, (goal, target) in enumerate(zip(frame["goal"], frame["target"], strict=True))
    ]


_CHECK = AlignmentCheckSettings()


# Not a safety benchmark: held-out portrait-survey questions for the value-alignment check (DESIGN §4). Each
# question is asked about one of the argument's values: the answer is started with the value's name as in the
# stage-2 completions ("Power is"), and the model supplies its importance and digit. The check's defaults
# (AlignmentCheckSettings: greedy answers, 30 questions per value) keep it cheap while every value is asked.
@_register("value-survey", "Held-out survey questions (1–6), one per annotated value, for the value-alignment check",
           BenchmarkKind.COMPLETION, "valueeval",
           GenerationDefaults(samples=_CHECK.samples, max_new_tokens=24, temperature=_CHECK.temperature, top_p=1.0),
           default_options={"per_value": _CHECK.per_value})  # fmt: skip
def _value_survey(
    data_dir: Path, per_value: int | None = None, seed: int = 0, template_dir: str | Path | None = None
) -> list[BenchmarkItem]:
    from valueharm.alignment.vim_data import VimTemplates, read_arguments, survey_question

    templates = VimTemplates.load(template_dir)
    by_value: dict[str, list[BenchmarkItem]] = {}
    for argument in read_arguments(data_dir, "argument_generation/test.csv"):
        for value in argument.values:
            text = survey_question(argument, value, templates)
            by_value.setdefault(value, []).append(
                BenchmarkItem("value-survey", f"{argument.argument_id}:{value}", value, text)
            )
    items = []
    for value, members in by_value.items():
        if per_value is not None and per_value < len(members):
            members = sorted(random.Random(f"{seed}:{value}").sample(members, per_value), key=by_value[value].index)
        items += members
    return items


# Not a safety benchmark either: the 40 PVQ items for the PVQ-40 alignment check, each asked in the published prompt
# shape (template `pvq_item`) and scored on the six-point scale; `file` replaces the registered questionnaire.
@_register("pvq40", "The 40-item Portrait Values Questionnaire (1–6), for the PVQ-40 alignment check",
           BenchmarkKind.COMPLETION, "pvq40",
           GenerationDefaults(samples=1, max_new_tokens=8, temperature=0.0, top_p=1.0))  # fmt: skip
def _pvq40(
    data_dir: Path, file: str | Path | None = None, template_dir: str | Path | None = None
) -> list[BenchmarkItem]:
    from valueharm.alignment.vim_data import SURVEY_SCALE
    from valueharm.data.pvq import PVQ_FILE, read_questionnaire
    from valueharm.data.registry import require_file
    from valueharm.templates import load_template

    template = load_template("pvq_item", template_dir=template_dir)
    scale = ", ".join(f"{digit}. '{label[0].upper()}{label[1:]}'" for digit, label in SURVEY_SCALE.items())
    path = Path(file) if file is not None else require_file(data_dir, PVQ_FILE)
    return [
        BenchmarkItem("pvq40", f"pvq-{item.number:02d}", item.value,
                      template.render(scale=scale, statement=item.statement), {"item": str(item.number)})
        for item in read_questionnaire(path)
    ]  # fmt: skip
