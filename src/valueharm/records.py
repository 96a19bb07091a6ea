"""The typed records that flow through a run: generations and scores (DESIGN §3).

They are the store's columns and the JSONL/CSV export/import format. A generation's `key` hashes everything that
determines it except its text, so the same request is never generated twice and a resumed run makes exactly the
records a clean run would.
"""

from __future__ import annotations

import hashlib
import json
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

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.max_new_tokens < 1:
            raise ValueharmError(f"sampling parameters out of range: {self}")
        object.__setattr__(self, "stop", tuple(self.stop))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def generation_key(**identity: Any) -> str:
    payload = json.dumps(identity, sort_keys=True, ensure_ascii=False, default=_jsonable)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _jsonable(value: Any) -> Any:
    if isinstance(value, SamplingParams):
        return asdict(value)
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
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> GenerationRecord:
        """From a store row or an imported JSON object (`params` as a mapping or a JSON string)."""
        unknown = set(row) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueharmError(f"unknown generation field(s): {', '.join(sorted(unknown))}")
        missing = REQUIRED_GENERATION_FIELDS - set(row)
        if missing:
            raise ValueharmError(f"generation record lacks field(s): {', '.join(sorted(missing))}")
        params = row.get("params") or {}
        values = {
            "base_model": "",
            "category": "",
            "query": row["prompt"],
            **row,
            "params": SamplingParams(**(json.loads(params) if isinstance(params, str) else params)),
            "sample": int(row["sample"]),
        }
        return cls(**values)


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
