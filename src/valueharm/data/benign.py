"""Benign fine-tuning datasets (the baselines for "does any fine-tuning hurt safety?"), as uniform records.

Each record keeps the dataset's own fields under common names; the prompt format of each dataset is applied by
the alignment step, not here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from valueharm.data.registry import require_file
from valueharm.data.tables import read_table
from valueharm.errors import ValueharmError
from valueharm.registry import Registry


@dataclass(frozen=True)
class BenignExample:
    dataset: str
    item_id: str
    instruction: str  # the task as the dataset states it ("" where the task is implicit, as in grammar)
    context: str  # the input the task works on ("" if none)
    response: str  # the reference answer the model is trained to produce


BENIGN_DATASETS: Registry[Callable[[Path], list[BenignExample]]] = Registry("benign dataset")


def load_benign(name: str, data_dir: Path, limit: int | None = None) -> list[BenignExample]:
    examples = BENIGN_DATASETS.get(name)(Path(data_dir))
    return examples if limit is None else examples[:limit]


def _json_records(data_dir: Path, path: str, fields: list[str]) -> list[dict[str, Any]]:
    """Records from a JSON list or JSONL file, each checked for the named fields."""
    full = require_file(data_dir, path)
    text = full.read_text(encoding="utf-8")
    try:
        if full.suffix == ".jsonl":
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            records = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueharmError(f"{full}: malformed JSON at line {err.lineno} ({err.msg})") from None
    if not isinstance(records, list):
        raise ValueharmError(f"{full}: expected a list of records")
    for number, record in enumerate(records):
        missing = [name for name in fields if not isinstance(record, dict) or name not in record]
        if missing:
            raise ValueharmError(f"{full}: record {number} lacks field(s) {', '.join(missing)}")
    return records


@BENIGN_DATASETS.register("grammar")
def _grammar(data_dir: Path) -> list[BenignExample]:
    frame = read_table(data_dir, "gtrain_10k.csv", ["input", "target"])
    return [
        BenignExample("grammar", f"grammar-{row:05d}", "", source.strip(), target.strip())
        for row, (source, target) in enumerate(zip(frame["input"], frame["target"], strict=True))
    ]


@BENIGN_DATASETS.register("alpaca")
def _alpaca(data_dir: Path) -> list[BenignExample]:
    records = _json_records(data_dir, "alpaca_data.json", ["instruction", "input", "output"])
    return [
        BenignExample("alpaca", f"alpaca-{row:05d}", r["instruction"], r["input"], r["output"])
        for row, r in enumerate(records)
    ]


@BENIGN_DATASETS.register("dolly")
def _dolly(data_dir: Path) -> list[BenignExample]:
    return _dolly_records(data_dir, "dolly", "databricks-dolly-15k.jsonl")


@BENIGN_DATASETS.register("dolly-no-safety")
def _dolly_no_safety(data_dir: Path) -> list[BenignExample]:
    """The published baseline: Dolly without its safety-related records (registry entry `dolly-no-safety`)."""
    return _dolly_records(data_dir, "dolly-no-safety", "databricks-dolly-15k-no-safety.jsonl")


def _dolly_records(data_dir: Path, name: str, path: str) -> list[BenignExample]:
    records = _json_records(data_dir, path, ["instruction", "context", "response"])
    return [
        BenignExample(name, f"{name}-{row:05d}", r["instruction"], r["context"], r["response"])
        for row, r in enumerate(records)
    ]


@BENIGN_DATASETS.register("samsum")
def _samsum(data_dir: Path) -> list[BenignExample]:
    frame = read_table(data_dir, "samsum_train.csv", ["id", "dialogue", "summary"])
    return [
        BenignExample("samsum", f"samsum-{item_id}", "", dialogue, summary)
        for item_id, dialogue, summary in zip(frame["id"], frame["dialogue"], frame["summary"], strict=True)
    ]
