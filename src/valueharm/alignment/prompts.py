"""Prompt methods: how each model under test sees a benchmark item (one registry, DESIGN §2).

- `vanilla`: the base model; completion benchmarks get the raw text, instruction benchmarks a question/answer
  format;
- `vim`: the base with a profile's value-injection adapter, same formats;
- `benign`: the base with a benign fine-tune's adapter, same formats;
- `icl`: the base given a role-play preamble that defines the ten values and lists the profile's scores (one
  preamble per benchmark kind where the template dir has `icl_preamble_completion` / `icl_preamble_instruction`;
  a preamble with a `{query}` slot places the benchmark text itself, else the text follows it);
- any of them with a mitigation prefix: a safety instruction, a value instruction, or both (`dual`). The value
  instruction names values to set aside: per item category from a `ValueGuide` (the values expected to raise that
  category's harm set aside, those expected to lower it promoted — derived from the hypotheses table), else the
  configured list, else the profile's most important values.

Stop rules depend on the benchmark only, never on the method (the published code stopped vanilla at "\\n"/"."
but VIM never): instruction benchmarks stop where the model starts a new question, completions run to length.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from valueharm import chat
from valueharm.data.benchmarks import BenchmarkItem, BenchmarkKind
from valueharm.errors import ValueharmError
from valueharm.registry import Registry
from valueharm.templates import VALUE_SLOTS, Template, load_template
from valueharm.values import VALUES, ValueProfile

MITIGATIONS = ("safety", "value", "dual")
ADAPTER_METHODS = ("vim", "benign")


@dataclass(frozen=True)
class ValueGuide:
    """Per (benchmark, category): the values the value instruction sets aside and those it promotes."""

    entries: tuple[tuple[tuple[str, str], tuple[str, ...], tuple[str, ...]], ...] = ()

    @classmethod
    def of(cls, mapping: Mapping[tuple[str, str], tuple[tuple[str, ...], tuple[str, ...]]]) -> ValueGuide:
        return cls(tuple((cell, aside, promote) for cell, (aside, promote) in sorted(mapping.items())))

    def lookup(self, benchmark: str, category: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """(set aside, promote) for one category, or None when the guide says nothing about it."""
        return next(((a, p) for cell, a, p in self.entries if cell == (benchmark, category)), None)


@dataclass(frozen=True)
class ModelSpec:
    """One model under test: a prompt method on the base, with its adapter and/or profile, maybe mitigated."""

    method: str
    profile: ValueProfile | None = None
    dataset: str | None = None  # the benign dataset, for `benign`
    adapter_path: Path | None = None  # for `vim` and `benign`
    mitigation: str | None = None
    set_aside: tuple[str, ...] = field(default=())  # values the value instruction names
    guide: ValueGuide | None = None  # per-category values for the value instruction, where it has them

    def __post_init__(self) -> None:
        METHODS.get(self.method)  # unknown methods fail here, listing the known ones
        needs_profile = self.method in {"vim", "icl"} or (
            self.mitigation in {"value", "dual"} and not self.set_aside and self.guide is None
        )
        if needs_profile and self.profile is None:
            raise ValueharmError(f"method {self.method!r}{self._mitigated}: needs a profile")
        if self.method == "benign" and not self.dataset:
            raise ValueharmError("method 'benign': needs the benign dataset's name")
        if self.method in ADAPTER_METHODS and self.adapter_path is None:
            raise ValueharmError(f"method {self.method!r} ({self.name}): needs an adapter directory")
        if self.mitigation is not None and self.mitigation not in MITIGATIONS:
            raise ValueharmError(f"unknown mitigation {self.mitigation!r}; known: {', '.join(MITIGATIONS)}")
        unknown = [value for value in self.set_aside if value not in VALUES]
        if unknown:
            raise ValueharmError(f"values to set aside not among the ten values: {', '.join(unknown)}")

    @property
    def _mitigated(self) -> str:
        return f"+mitigation:{self.mitigation}" if self.mitigation else ""

    @property
    def name(self) -> str:
        """The unmitigated model: `vanilla`, `vim/Pow`, `icl/Pow`, `benign/grammar`."""
        if self.method == "vanilla":
            return "vanilla"
        return f"{self.method}/{self.dataset if self.method == 'benign' else self.profile.name}"  # type: ignore[union-attr]

    @property
    def model_key(self) -> str:
        return self.name + self._mitigated

    @property
    def adapter(self) -> str | None:
        """The name its adapter is served under, or None for the base model."""
        return self.name if self.method in ADAPTER_METHODS else None

    def value_instruction(self, benchmark: str, category: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(set aside, promote) for an item: the guide's entry for its category, else the given list, else the
        profile's most important values; nothing when none of these applies (a base model on an unmapped
        category)."""
        guided = self.guide.lookup(benchmark, category) if self.guide is not None else None
        if guided is not None:
            return guided
        if self.set_aside:
            return self.set_aside, ()
        if self.profile is None:
            return (), ()
        top = max(self.profile.scores.values())
        return tuple(value for value in VALUES if self.profile.scores[value] == top), ()


@dataclass(frozen=True)
class PromptTemplates:
    instruction: Template
    icl_completion: Template
    icl_instruction: Template
    safety: Template
    value: Template
    promote: Template

    @classmethod
    def load(cls, template_dir: str | Path | None = None) -> PromptTemplates:
        names = ("instruction_format", "icl_preamble_completion", "icl_preamble_instruction", "mitigation_safety",
                 "mitigation_value", "mitigation_promote")  # fmt: skip
        return cls(*(load_template(name, template_dir=template_dir) for name in names))

    def icl_preamble(self, kind: BenchmarkKind) -> Template:
        return self.icl_instruction if kind is BenchmarkKind.INSTRUCTION else self.icl_completion

    def instruction_stop(self) -> tuple[str, ...]:
        """Where an answer ends: the model starting the next question (the format's first line prefix)."""
        prefix = self.instruction.text.split("{query}")[0].strip()
        return (f"\n{prefix}",) if prefix else ()


@dataclass(frozen=True)
class PromptParts:
    """An item as a method shows it: instructions (mitigation, then the method's own preamble), then the text."""

    mitigation: tuple[str, ...]
    preamble: str | None
    text: str

    def as_text(self) -> str:
        """The raw-text prompt: mitigation lines, the preamble, the text, a blank line between each."""
        head = ["\n".join(p.strip() for p in self.mitigation)] if self.mitigation else []
        head += [self.preamble.rstrip()] if self.preamble else []
        return "".join(part + "\n\n" for part in head) + self.text

    def instructions(self) -> str:
        """What a chat model gets as its system turn (or before the text in the user turn)."""
        return "\n\n".join(p for p in ("\n".join(m.strip() for m in self.mitigation), self.preamble or "") if p)


# A method gets the item, its kind, the templates, and the text it is shown as; it returns its preamble and text.
PromptMethod = Callable[[ModelSpec, BenchmarkItem, BenchmarkKind, PromptTemplates, str], tuple[str | None, str]]
METHODS: Registry[PromptMethod] = Registry("prompt method")


def benchmark_text(item: BenchmarkItem, kind: BenchmarkKind, templates: PromptTemplates, *, chat: bool = False) -> str:
    """The item as every method shows it: raw for completions, in the question/answer format for instructions —
    raw for both on a chat model, whose template gives the turns their form."""
    if kind is BenchmarkKind.COMPLETION or chat:
        return item.text
    return templates.instruction.render(query=item.text)


@METHODS.register("vanilla")
@METHODS.register("vim")
@METHODS.register("benign")
def _as_is(spec: ModelSpec, item: BenchmarkItem, kind: BenchmarkKind, templates: PromptTemplates, text: str):
    return None, text  # the adapter, not the prompt, is what differs


@METHODS.register("icl")
def _icl(spec: ModelSpec, item: BenchmarkItem, kind: BenchmarkKind, templates: PromptTemplates, text: str):
    assert spec.profile is not None
    scores = {slot: f"{spec.profile.scores[value]:g}" for slot, value in VALUE_SLOTS.items()}
    ratings = "\n".join(f"- {value}: {spec.profile.scores[value]:g}" for value in VALUES)
    preamble = templates.icl_preamble(kind)
    if "query" in preamble.fields:  # the preamble places the benchmark text itself
        return None, preamble.render(ratings=ratings, query=item.text, **scores)
    return preamble.render(ratings=ratings, **scores), text


def prompt_parts(
    spec: ModelSpec, item: BenchmarkItem, kind: BenchmarkKind, templates: PromptTemplates, *, chat: bool = False
) -> PromptParts:
    """The mitigation instructions, the method's preamble and the text of one item."""
    preamble, text = METHODS.get(spec.method)(spec, item, kind, templates, benchmark_text(item, kind, templates,
                                                                                            chat=chat))  # fmt: skip
    mitigation = []
    if spec.mitigation in {"safety", "dual"}:
        mitigation.append(templates.safety.render())
    if spec.mitigation in {"value", "dual"}:
        set_aside, promote = spec.value_instruction(item.benchmark, item.category)
        if set_aside:
            mitigation.append(templates.value.render(values=", ".join(set_aside)))
        if promote:
            mitigation.append(templates.promote.render(values=", ".join(promote)))
    return PromptParts(tuple(mitigation), preamble, text)


def build_prompt(spec: ModelSpec, item: BenchmarkItem, kind: BenchmarkKind, templates: PromptTemplates) -> str:
    """The exact model input for one item on a raw-text base: mitigation prefix, then the method's prompt."""
    return prompt_parts(spec, item, kind, templates).as_text()


def build_conversation(
    spec: ModelSpec, item: BenchmarkItem, kind: BenchmarkKind, templates: PromptTemplates, *, system_turn: bool
) -> tuple[str, str]:
    """The prompt of one item on a chat base (a conversation as JSON), and where its instructions went."""
    parts = prompt_parts(spec, item, kind, templates, chat=True)
    messages, where = chat.conversation(parts.instructions(), parts.text, system_turn=system_turn)
    return chat.encode(messages), where


def stop_rules(kind: BenchmarkKind, templates: PromptTemplates) -> tuple[str, ...]:
    """The benchmark's stop strings, identical for every method compared on it."""
    return templates.instruction_stop() if kind is BenchmarkKind.INSTRUCTION else ()
