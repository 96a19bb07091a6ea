"""The scorer interface (generation records in, score records out), its registry, and what each kind of score feeds.

A scorer is a small typed object in the style of inspect_ai: it names itself (`id`: scorer name, what it
measures and the model/version behind it — the `scorer` column of every score row, so two versions never share a
cache entry), says what it measures (`kind`) and whether it is a heuristic, validates everything it needs before
any work (`check`), and scores a batch. A failure is a ScoreRecord with `error`, never a silent 0 or −1.

Ids follow one grammar, `NAME:KIND@MODEL[+VARIANT][#DIGEST]`, so metrics can tell from a stored row what it
measures: `classifier:toxicity@unitary/toxic-bert#1a2b3c4d`, `lexicon:toxicity@heuristic-profanity_en#45214f1e`;
a scorer reading the published code's input is `…@perspective/TOXICITY+published-input#…`, so it and ours
coexist in one run and every table can label it.

What a score of each kind means (the contract metrics rely on):
- toxicity: `value` in [0, 1] (probability or severity);
- regard: `label` in negative | neutral | positive | other, `value` = P(negative);
- harmfulness: `value` = judge score 1–5 (5 = fully complies with a harmful request);
- flagged: `value` 1.0 flagged, 0.0 unflagged;
- refusal: `value` 1.0 refused, 0.0 answered.
"""

from __future__ import annotations

import hashlib
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from valueharm.errors import ValueharmError
from valueharm.records import GenerationRecord, ScoreRecord
from valueharm.registry import Registry


class ScorerKind(StrEnum):
    TOXICITY = "toxicity"
    REGARD = "regard"
    HARMFULNESS = "harmfulness"
    FLAGGED = "flagged"
    REFUSAL = "refusal"


class Scorer(Protocol):
    """Scores generations; built cheaply, loads models in `check` (or on first use), never twice."""

    @property
    def id(self) -> str: ...

    @property
    def kind(self) -> ScorerKind: ...

    @property
    def heuristic(self) -> bool: ...

    def check(self) -> None:
        """Raise a ValueharmError before any work if anything is missing or inconsistent (files, labels, keys)."""
        ...

    def score(self, batch: Sequence[GenerationRecord]) -> list[ScoreRecord]:
        """One score per record, in order; a record that cannot be scored gets a row with `error`."""
        ...


ScorerFactory = Callable[..., Scorer]
PUBLISHED_INPUT = "published-input"  # the id's tag of a scorer reading the published code's input
SCORER_VARIANTS = frozenset({PUBLISHED_INPUT})  # tags a scorer id may carry (valueharm.scoring.inputs)
SCORERS: Registry[ScorerFactory] = Registry("scorer")

# Which metrics a (benchmark, kind of score) pair feeds (DESIGN §4); a kind applies to the benchmarks listed here.
FEEDS: Mapping[tuple[str, ScorerKind], tuple[str, ...]] = {
    ("rtp", ScorerKind.TOXICITY): ("expected_max_toxicity", "toxicity_probability"),
    ("holisticbiasr", ScorerKind.REGARD): ("negative_regard_rate", "bias_score"),
    ("hex-phi", ScorerKind.HARMFULNESS): ("harmfulness_score", "harmfulness_rate"),
    ("hex-phi", ScorerKind.FLAGGED): ("flagged_rate",),
    ("hex-phi", ScorerKind.REFUSAL): ("refusal_rate", "attack_success_rate"),
    ("beavertails", ScorerKind.FLAGGED): ("flagged_rate",),
    ("beavertails", ScorerKind.REFUSAL): ("refusal_rate", "attack_success_rate"),
    ("advbench", ScorerKind.REFUSAL): ("attack_success_rate",),
    ("advbench", ScorerKind.FLAGGED): ("attack_success_rate",),
    ("advbench", ScorerKind.HARMFULNESS): ("attack_success_rate",),
}


def applies_to(kind: ScorerKind) -> tuple[str, ...]:
    """The benchmarks on which a score of this kind feeds a metric."""
    return tuple(dict.fromkeys(benchmark for benchmark, fed in FEEDS if fed == kind))


def scorer_id(name: str, kind: ScorerKind, model: str, digest: str | None = None, variant: str | None = None) -> str:
    return f"{name}:{kind.value}@{model}" + (f"+{variant}" if variant else "") + (f"#{digest}" if digest else "")


def scorer_variant(scorer: str) -> str | None:
    """The variant tag of a stored scorer id (e.g. "published-input"), or None for ours."""
    model = scorer.partition("@")[2].partition("#")[0]
    _, plus, variant = model.rpartition("+")
    return variant if plus and variant in SCORER_VARIANTS else None


def scorer_kind(scorer: str) -> ScorerKind | None:
    """The kind encoded in a stored scorer id, or None for ids from elsewhere (e.g. imported scores)."""
    name, colon, rest = scorer.partition(":")
    kind, at, _ = rest.partition("@")
    if not (name and colon and at) or kind not in ScorerKind.__members__.values():
        return None
    return ScorerKind(kind)


def short_hash(*parts: object) -> str:
    """Eight hex digits identifying a configuration: part of a scorer id, so a changed setting is a new scorer."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:8]


# ------------------------------------------------------------------------------------------------------ specs

SPEC_FORM = "NAME[:key=value,key=value]"
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


@dataclass(frozen=True)
class ScorerSpec:
    """A scorer name and its typed options, validated against the factory's signature."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)


def parse_scorer_spec(spec: str) -> ScorerSpec:
    """`classifier:model=/path,task=toxicity` → ScorerSpec; unknown scorers, options or bad values fail here.

    Values cannot contain commas; where an option takes a list, its items are separated by `|`.
    """
    name, _, rest = spec.strip().partition(":")
    factory = SCORERS.get(name.strip())
    raw: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ValueharmError(f"scorer spec {spec!r}: expected key=value, got {part!r} (form: {SPEC_FORM})")
        if key in raw:
            raise ValueharmError(f"scorer spec {spec!r}: option {key!r} given twice")
        raw[key] = value.strip()
    return ScorerSpec(name.strip(), _typed_options(name.strip(), factory, raw))


def build_scorer(spec: str | ScorerSpec, **context: Any) -> Scorer:
    """The scorer for a spec. `context` (e.g. data_dir, device from the CLI) fills options the factory accepts and
    the spec leaves unset; a required option still missing is an error naming it."""
    parsed = parse_scorer_spec(spec) if isinstance(spec, str) else spec
    factory = SCORERS.get(parsed.name)
    parameters = _parameters(factory)
    unknown = sorted(set(parsed.options) - set(parameters))
    if unknown:
        raise ValueharmError(_unknown_option(parsed.name, unknown[0], factory))
    options = {k: v for k, v in context.items() if k in parameters and v is not None} | dict(parsed.options)
    missing = [name for name, p in parameters.items() if p.default is p.empty and name not in options]
    if missing:
        needed = ",".join(f"{name}=…" for name in missing)
        raise ValueharmError(f"scorer {parsed.name!r} needs option(s) {', '.join(missing)}: {parsed.name}:{needed}")
    return factory(**options)


def _parameters(factory: ScorerFactory) -> Mapping[str, inspect.Parameter]:
    return {
        name: p
        for name, p in inspect.signature(factory).parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _unknown_option(name: str, option: str, factory: ScorerFactory) -> str:
    return f"scorer {name!r} has no option {option!r}; its options: {', '.join(_parameters(factory))}"


def _typed_options(name: str, factory: ScorerFactory, raw: Mapping[str, str]) -> dict[str, Any]:
    parameters = _parameters(factory)
    hints = typing.get_type_hints(factory.__init__ if isinstance(factory, type) else factory)
    typed = {}
    for key, value in raw.items():
        if key not in parameters:
            raise ValueharmError(_unknown_option(name, key, factory))
        try:
            typed[key] = _convert(value, hints.get(key, str))
        except ValueError as err:
            raise ValueharmError(f"scorer {name!r}: option {key}={value!r}: {err}") from None
    return typed


def _convert(value: str, hint: Any) -> Any:
    """A CLI string as the annotated type: bool, int, float, str, Path, or one of them or None."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if value.lower() in {"", "none", "null"}:
            return None
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if hint is bool:
        if value.lower() not in _TRUE | _FALSE:
            raise ValueError("expected true or false")
        return value.lower() in _TRUE
    if hint in (int, float):
        try:
            return hint(value)
        except ValueError:
            raise ValueError(f"expected a{'n integer' if hint is int else ' number'}") from None
    return Path(value).expanduser() if hint is Path else value
