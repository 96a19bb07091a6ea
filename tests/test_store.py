import json
import sqlite3
from pathlib import Path

import pytest

from valueharm.errors import ValueharmError
from valueharm.exchange import import_into
from valueharm.records import GenerationRecord, SamplingParams, ScoreRecord
from valueharm.store import RunStore


def record(item: str, sample: int = 0, text: str = "a reply", error: str | None = None) -> GenerationRecord:
    return GenerationRecord(
        model_key="vim/Pow", base_model="tiny", benchmark="hex-phi", item_id=item, category="c", sample=sample,
        prompt=f"Question: {item}\nAnswer:", query=item, params=SamplingParams(stop=("\n",)), text=text, error=error,
    )  # fmt: skip


def test_key_ignores_text_and_error_but_not_identity():
    assert record("a", text="x").key == record("a", text="y", error="boom").key
    assert record("a").key != record("a", sample=1).key
    assert record("a").key != record("b").key


def test_round_trip_and_idempotent_writes(tmp_path: Path):
    with RunStore(tmp_path / "results.sqlite") as store:
        store.add_generations([record("a"), record("b", error="HTTP 500"), record("a")])
        assert len(store.generations()) == 2
        assert store.done_generation_keys() == {record("a").key}
        (first, _) = store.generations()
        assert first == record("a") and first.params.stop == ("\n",)
        store.add_generations([record("b", text="fixed")])  # a retried failure replaces the failed row
        assert store.done_generation_keys() == {record("a").key, record("b").key}
        assert store.count_generations() == {("hex-phi", "vim/Pow"): (2, 0)}


def test_scores_failed_rows_count_as_done(tmp_path: Path):
    with RunStore(tmp_path / "r.sqlite") as store:
        store.add_scores(
            [ScoreRecord("k1", "judge", 5.0, "5", "<score>5</score>"), ScoreRecord("k2", "judge", error="unparseable")]
        )
        assert store.scored_keys("judge") == {"k1", "k2"}
        assert store.scores("judge")[1].error == "unparseable"


def test_a_failed_transaction_writes_nothing(tmp_path: Path):
    with RunStore(tmp_path / "r.sqlite") as store:
        with pytest.raises(RuntimeError), store.transaction() as db:
            db.execute("INSERT INTO jobs VALUES ('j', 'train', 'done', '{}', 0)")
            raise RuntimeError("killed")
        assert store.jobs() == []


def test_records_go_in_whole_or_not_at_all(tmp_path: Path):
    with RunStore(tmp_path / "r.sqlite") as store:
        store.add_records([record("a"), record("b", error="HTTP 500")], [ScoreRecord(record("a").key, "judge", 4.0)])
        assert len(store.generations()) == 2 and [s.value for s in store.scores()] == [4.0]
        assert store.stored_texts([record("a").key, record("b").key, "other"]) == {record("a").key: "a reply"}
        with pytest.raises(sqlite3.IntegrityError):  # a bad score row takes its generations with it
            store.add_records([record("c")], [ScoreRecord(record("c").key, None)])  # type: ignore[arg-type]
        assert len(store.generations()) == 2


def test_import_generations_reads_the_exchange_format(tmp_path: Path):
    path = tmp_path / "in.jsonl"
    good = json.dumps(
        {"model_key": "m", "benchmark": "hex-phi", "item_id": "1", "sample": 0, "prompt": "p", "text": "t",
         "scores": {"judge:harmfulness@gpt-4o": {"value": 4, "label": "4"}}}
    )  # fmt: skip
    path.write_text(good + "\n" + json.dumps({"model_key": "m", "prompt": "p"}) + "\n")
    with RunStore(tmp_path / "r.sqlite") as store:
        with pytest.raises(ValueharmError, match=r"in\.jsonl:2: generation record lacks field\(s\): benchmark"):
            import_into(store, path)
        assert store.generations() == []  # nothing half-imported
        path.write_text(good + "\n")
        assert import_into(store, path).imported == 1
        assert [(s.value, s.label) for s in store.scores()] == [(4.0, "4")]
