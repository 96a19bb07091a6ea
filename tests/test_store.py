import json
from pathlib import Path

import pytest

from valueharm.errors import ValueharmError
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


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_export(tmp_path: Path, fmt: str):
    with RunStore(tmp_path / "r.sqlite") as store:
        store.add_generations([record("a"), record("b")])
        store.add_scores([ScoreRecord(record("a").key, "lexicon", 0.25)])
        assert store.export_generations(tmp_path / f"out.{fmt}") == 2
    assert (tmp_path / f"out.{fmt}").stat().st_size > 0


def test_import_round_trip(tmp_path: Path):
    with RunStore(tmp_path / "a.sqlite") as store:
        store.add_generations([record("a"), record("b")])
        store.add_scores([ScoreRecord(record("a").key, "judge", 4.0)])
        store.export_generations(tmp_path / "out.jsonl")
    with RunStore(tmp_path / "b.sqlite") as other:
        assert other.import_generations(tmp_path / "out.jsonl") == 2
        assert other.generations() == [record("a"), record("b")]
        assert [s.value for s in other.scores("judge")] == [4.0]


def test_import_errors_name_the_line(tmp_path: Path):
    path = tmp_path / "in.jsonl"
    good = json.dumps(
        {"model_key": "m", "benchmark": "hex-phi", "item_id": "1", "sample": 0, "prompt": "p", "text": "t"}
    )
    path.write_text(good + "\n" + json.dumps({"model_key": "m", "prompt": "p"}) + "\n")
    with RunStore(tmp_path / "r.sqlite") as store:
        with pytest.raises(ValueharmError, match=r"in\.jsonl:2: generation record lacks field\(s\): benchmark"):
            store.import_generations(path)
        assert store.generations() == []  # nothing half-imported
        path.write_text(good.replace('"t"}', '"t", "key": "forged"}') + "\n")
        with pytest.raises(ValueharmError, match="key does not match"):
            store.import_generations(path)


def test_unknown_export_format(tmp_path: Path):
    with RunStore(tmp_path / "r.sqlite") as store, pytest.raises(ValueharmError, match="unknown export format"):
        store.export_generations(tmp_path / "out.xlsx")
