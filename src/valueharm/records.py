"""The typed records that flow through a run: generations and scores (DESIGN §3).

They are the store's columns and the export/import format (valueharm.exchange). A generation's `key` hashes
everything that determines it except its text, so the same request is never generated twice and a resumed run makes
exactly the records a clean run would.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from valueharm.errors import ValueharmError


@dataclass(frozen=True)
class SamplingParams:
    """Generation parameters, mapped one-to-one onto every backend."""

    temperature: float = 0.1
    top_p: float = 0.75
    max_new_tokens: int = 64
    stop: tuple[str, ...] = ()  # the same stop rules for every method compared on a benchmark
    seed: int = 0
    chat: str | None = None  # None: the prompt is raw text; "system" / "user": a conversation (valueharm.chat)

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.max_new_tokens < 1:
            raise ValueharmError(f"sampling parameters out of range: {self}")
        if self.chat not in CHAT_MODES:
            raise ValueharmError(f"params.chat must be one of system, user or null, got {self.chat!r:.60}")
        object.__setattr__(self, "stop", tuple(self.stop))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SamplingParams:
        """From a stored or imported mapping, types checked: a float where an int was hashed would change the key."""
        if not isinstance(values, Mapping):
            raise ValueharmError(f"params must be an object, got {type(values).__name__}")
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueharmError(f"unknown sampling parameter(s): {', '.join(sorted(unknown))}")
        for name, (kinds, what) in _PARAM_TYPES.items():
            if name in values and (isinstance(values[name], bool) or not isinstance(values[name], kinds)):
                raise ValueharmError(f"params.{name} must be {what}, got {values[name]!r:.60}")
        stop = values.get("stop", ())
        if not isinstance(stop, list | tuple) or not all(isinstance(s, str) for s in stop):
            raise ValueharmError(f"params.stop must be a list of strings, got {stop!r:.60}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """As stored, exported and hashed into keys; `chat` only when set, so raw-text records keep the keys and
        the format they had before chat bases existed."""
        values = asdict(self)
        if values["chat"] is None:
            del values["chat"]
        return values

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


CHAT_MODES = (None, "system", "user")
_PARAM_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "temperature": ((int, float), "a number"),
    "top_p": ((int, float), "a number"),
    "max_new_tokens": ((int,), "an integer"),
    "seed": ((int,), "an integer"),
}


def generation_key(**identity: Any) -> str:
    payload = json.dumps(identity, sort_keys=True, ensure_ascii=False, default=_jsonable)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _jsonable(value: Any) -> Any:
    if isinstance(value, SamplingParams):
        return value.to_dict()
    raise TypeError(f"cannot serialise {type(value).__name__}")


@dataclass(frozen=True)
class GenerationRecord:
    """One continuation of one benchmark item by one model. A failed request keeps its `error` and empty text."""

    model_key: str  # vanilla | vim/<profile> | icl/<profile> | benign/<dataset>, "+mitigation:<kind>" where used
    base_model: str
    benchmark: str
    item_id: str
    category: str
    sample: int
    prompt: str  # the exact model input
    query: str  # the benchmark text
    params: SamplingParams
    text: str = ""
    error: str | None = None
    key: str = field(default="")

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.identity_key())

    def identity_key(self) -> str:
        identity = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in {"text", "error", "key"}}
        return generation_key(**identity)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "params": self.params.to_dict()}

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> GenerationRecord:
        """From a store row or an imported JSON object (`params` as a mapping or a JSON string), types checked so a
        malformed import fails here rather than as a wrong key or a number stored as text."""
        unknown = set(row) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueharmError(f"unknown generation field(s): {', '.join(sorted(unknown))}")
        missing = REQUIRED_GENERATION_FIELDS - set(row)
        if missing:
            raise ValueharmError(f"generation record lacks field(s): {', '.join(sorted(missing))}")
        values = {"base_model": "", "category": "", "query": row["prompt"], "key": "", **row}
        for name in (*_TEXT_FIELDS, "key"):
            if not isinstance(values[name], str):
                raise ValueharmError(f"{name} must be a string, got {type(values[name]).__name__}")
        if values.get("error") is not None and not isinstance(values["error"], str):
            raise ValueharmError(f"error must be a string or null, got {type(values['error']).__name__}")
        sample = values["sample"]
        if isinstance(sample, bool) or not isinstance(sample, int) or sample < 0:
            raise ValueharmError(f"sample must be an integer ≥ 0, got {sample!r:.60}")
        params = values.get("params") or {}
        if isinstance(params, str):
            try:
                params = json.loads(params)
            except json.JSONDecodeError as err:
                raise ValueharmError(f"params is not valid JSON ({err})") from None
        return cls(**{**values, "params": SamplingParams.from_dict(params)})


_TEXT_FIELDS = ("model_key", "base_model", "benchmark", "item_id", "category", "prompt", "query", "text")
REQUIRED_GENERATION_FIELDS = frozenset({"model_key", "benchmark", "item_id", "sample", "prompt", "text"})


@dataclass(frozen=True)
class ScoreRecord:
    """A scorer's verdict on one generation. A failure is a row with an `error`, never a silent 0 or −1."""

    key: str  # the generation's key
    scorer: str  # name + model/version, e.g. "lexicon:profanity_en@45214f1e"
    value: float | None = None
    label: str | None = None
    raw: str | None = None  # the judge's reply, kept for audit
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def entry(self) -> dict[str, Any]:
        """The score as it travels with its generation: `"scores": {scorer: entry}` in an export."""
        return {"value": self.value, "label": self.label, "raw": self.raw, "error": self.error}

    @classmethod
    def from_entry(cls, key: str, scorer: str, entry: Any) -> ScoreRecord:
        """From an exported or imported score: an object with value/label/raw/error, or a bare number (or null)."""
        if not isinstance(scorer, str) or not scorer:
            raise ValueharmError(f"scorer names must be non-empty strings, got {scorer!r:.60}")
        if not isinstance(entry, Mapping):
            entry = {"value": entry}
        unknown = set(entry) - SCORE_ENTRY_FIELDS
        if unknown:
            raise ValueharmError(f"score {scorer!r}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
        value = entry.get("value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueharmError(f"score {scorer!r}: value must be a number or null, got {value!r:.60}")
        for name in ("label", "raw", "error"):
            if entry.get(name) is not None and not isinstance(entry[name], str):
                kind = type(entry[name]).__name__
                raise ValueharmError(f"score {scorer!r}: {name} must be a string or null, got {kind}")
        value = None if value is None else float(value)
        return cls(key, scorer, value, entry.get("label"), entry.get("raw"), entry.get("error"))


SCORE_ENTRY_FIELDS = frozenset({"value", "label", "raw", "error"})
