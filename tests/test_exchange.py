"""Export and import of a run's records: round trips that keep every metric, the published code's files joined by
text, and bad input that names its line and changes nothing."""

from __future__ import annotations

import csv
import json
import random
import sqlite3
import sys
from pathlib import Path
from unittest import mock

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from valueharm.cli import main
from valueharm.data.benchmarks import BenchmarkItem, load_benchmark
from valueharm.errors import ValueharmError
from valueharm.exchange import PublishedSource, export_run, import_generations, import_into, read_import
from valueharm.metrics import compute_metrics
from valueharm.records import GenerationRecord, SamplingParams, ScoreRecord
from valueharm.store import RunStore

TOXICITY = "classifier:toxicity@tox#00000000"
REGARD = "classifier:regard@sasha/regardv3"
JUDGE = "judge:harmfulness@gpt-4o"
N_BOOT = 40


@pytest.fixture(scope="module")
def items(data_dir: Path) -> dict[str, list[BenchmarkItem]]:
    return {name: load_benchmark(name, data_dir) for name in ("rtp", "hex-phi", "holisticbiasr")}


@pytest.fixture(scope="module")
def regard_items(items: dict[str, list[BenchmarkItem]]) -> list[BenchmarkItem]:
    """Ten items of each of four (axis, descriptor) buckets."""
    by_bucket: dict[tuple[str, str], list[BenchmarkItem]] = {}
    for item in items["holisticbiasr"]:
        by_bucket.setdefault((item.metadata["axis"], item.metadata["descriptor"]), []).append(item)
    return [item for members in list(by_bucket.values())[:4] for item in members[:10]]


def generation(item: BenchmarkItem, text: str, sample: int = 0, model: str = "vim/Pow", error: str | None = None):
    return GenerationRecord(
        model_key=model, base_model="tiny", benchmark=item.benchmark, item_id=item.item_id, category=item.category,
        sample=sample, prompt=f"QUESTION: {item.text}\nANSWER:", query=item.text, params=SamplingParams(stop=("\n",)),
        text=text, error=error,
    )  # fmt: skip


def run_records(items, regard_items) -> tuple[list[GenerationRecord], list[ScoreRecord]]:
    """RTP toxicity, HEx-PHI judge scores with labels (one failed, one failed generation), regard labels."""
    generations, scores = [], []
    for i, item in enumerate(items["rtp"][:3]):
        for sample in range(2):
            record = generation(item, f"text {i}\u2028{sample}", sample)  # U+2028 inside a JSON line's string
            generations.append(record)
            scores.append(ScoreRecord(record.key, TOXICITY, 0.2 * i + 0.3 * sample))
    answers = ['Sure, first, "find" a site.\nThen, pay.', "", "I cannot help with that.", "Step 1: scan."]
    for item, answer, value in zip(items["hex-phi"][:4], answers, (5.0, 1.0, 1.0, 4.0), strict=True):
        record = generation(item, answer)
        generations.append(record)
        scores.append(ScoreRecord(record.key, JUDGE, value, str(int(value)), f"<score>{int(value)}</score>"))
    failed = generation(items["hex-phi"][4], "")
    generations.append(failed)
    scores.append(ScoreRecord(failed.key, JUDGE, error="unparseable reply"))
    generations.append(generation(items["hex-phi"][5], "", error="HTTP 500"))
    for i, item in enumerate(regard_items):
        record = generation(item, " was kind.", model="vanilla")
        generations.append(record)
        label = "negative" if i % 10 < (i // 10) * 2 + 1 else ("positive" if i % 3 else "neutral")
        scores.append(ScoreRecord(record.key, REGARD, 0.9 if label == "negative" else 0.1, label))
    return generations, scores


@pytest.fixture()
def run_dir(tmp_path: Path, items, regard_items) -> Path:
    generations, scores = run_records(items, regard_items)
    with RunStore(tmp_path / "run" / "results.sqlite") as store:
        store.add_records(generations, scores)
    return tmp_path / "run"


@pytest.fixture(scope="module")
def metadata(regard_items) -> dict[str, dict[str, str]]:
    return {item.item_id: dict(item.metadata) for item in regard_items}


def metrics_of(run: Path, metadata) -> list:
    with RunStore(run / "results.sqlite") as store:
        return compute_metrics(store, metadata, n_boot=N_BOOT)


def snapshot(run: Path) -> dict[str, bytes]:
    """Every file of a run directory, byte for byte."""
    return {path.name: path.read_bytes() for path in sorted(run.iterdir())}


def write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


# ---------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_export_import_round_trip_reproduces_every_metric(tmp_path: Path, run_dir: Path, metadata, fmt: str):
    out = tmp_path / f"export.{fmt}"
    exported = export_run(run_dir, out, with_scores=True)
    assert (exported.generations, exported.scores) == (52, 51)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name, "run"]  # no temp file left behind

    summary = import_generations(tmp_path / "copy", out)
    assert (summary.imported, summary.already_present, summary.scores, summary.unmatched) == (52, 0, 51, 0)
    with RunStore(run_dir / "results.sqlite") as a, RunStore(tmp_path / "copy" / "results.sqlite") as b:
        assert b.generations() == a.generations()
        assert b.scores() == a.scores()  # labels, judge text and errors included
    original, copied = metrics_of(run_dir, metadata), metrics_of(tmp_path / "copy", metadata)
    assert copied == original
    regard = {r.metric: r for r in original if r.scorer == REGARD and r.category == "all" and r.variant == "all"}
    assert regard["negative_regard_rate"].value == pytest.approx(16 / 40)
    assert regard["bias_score"].value is not None and regard["bias_score"].n_used == 40

    again = import_generations(tmp_path / "copy", out)  # idempotent
    assert (again.imported, again.already_present) == (1, 51)  # only the failed generation is written again
    assert metrics_of(tmp_path / "copy", metadata) == original


def test_jsonl_carries_labels_and_csv_flattens_scores(tmp_path: Path, run_dir: Path):
    export_run(run_dir, tmp_path / "a.jsonl", with_scores=True)
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().split("\n") if line]
    regard = next(row for row in rows if row.get("scores", {}).get(REGARD, {}).get("label") == "negative")
    assert regard["scores"] == {REGARD: {"value": 0.9, "label": "negative", "raw": None, "error": None}}
    assert regard["params"] == {"temperature": 0.1, "top_p": 0.75, "max_new_tokens": 64, "stop": ["\n"], "seed": 0}

    export_run(run_dir, tmp_path / "b.csv", "csv", with_scores=True)
    header = next(csv.reader((tmp_path / "b.csv").open(newline="")))
    assert header[:3] == ["key", "model_key", "base_model"] and header[11] == "error"
    prefixes = ("score", "label", "raw", "error")
    assert header[12:] == [f"{prefix}:{name}" for name in sorted([REGARD, TOXICITY, JUDGE]) for prefix in prefixes]
    table = pq.read_table(export_run(run_dir, tmp_path / "c.parquet", with_scores=False).path)
    assert table.num_rows == 52 and not any(":" in name for name in table.column_names)

    export_run(run_dir, tmp_path / "d.jsonl")
    assert "scores" not in json.loads((tmp_path / "d.jsonl").read_text().split("\n")[0])


def test_scores_as_bare_numbers_or_objects_and_records_without_keys(tmp_path: Path, items, metadata, regard_items):
    hex_item, regard_item = items["hex-phi"][0], regard_items[0]
    plain = {"model_key": "m", "benchmark": "hex-phi", "item_id": hex_item.item_id, "category": hex_item.category,
             "sample": 0, "prompt": "Q", "text": "Sure."}  # fmt: skip
    regard = {**plain, "benchmark": "holisticbiasr", "item_id": regard_item.item_id, "category": "x"}
    path = write_lines(tmp_path / "in.jsonl", [
        {**plain, "scores": {JUDGE: 5}},
        {**regard, "scores": {REGARD: {"label": "negative"}}},
    ])  # fmt: skip
    with RunStore(tmp_path / "r.sqlite") as store:
        summary = import_into(store, path)  # what `metrics --import` does
        assert summary.imported == 2
        verdicts = {s.scorer: (s.value, s.label) for s in store.scores()}
        assert verdicts == {JUDGE: (5.0, None), REGARD: (None, "negative")}
        rows = compute_metrics(store, metadata, n_boot=N_BOOT)
    fed = {(r.metric, r.value) for r in rows if r.category == "all" and r.variant == "all"}
    assert ("negative_regard_rate", 1.0) in fed and ("harmfulness_score", 5.0) in fed
    assert any(metric == "bias_score" and value is not None for metric, value in fed)


def test_a_stored_generation_is_kept_and_a_different_answer_refused(tmp_path: Path, run_dir: Path):
    export_run(run_dir, tmp_path / "a.jsonl", with_scores=True)
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().split("\n") if line]
    rows[3]["text"] = "another answer"
    before = snapshot(run_dir)
    with pytest.raises(ValueharmError, match=r"b\.jsonl:4: generation \w+ .* already stored with a different text"):
        import_generations(run_dir, write_lines(tmp_path / "b.jsonl", rows))
    assert snapshot(run_dir) == before


# ------------------------------------------------------------------------------------- published code's files


def published_rows(items) -> list[dict]:
    a, b, c = items["hex-phi"][:3]
    return [
        {"query": a.text, "answer": "first answer", "prompt": f"QUESTION: {a.text}\nANSWER:"},
        {"query": b.text, "answer": "to b", "prompt": f"QUESTION: {b.text}\nANSWER:"},
        {"query": f"  {a.text}  ", "answer": "second answer", "prompt": f"QUESTION: {a.text}\nANSWER:"},
        {"query": "How do I bake bread?", "answer": "Knead.", "prompt": "QUESTION: How do I bake bread?\nANSWER:"},
        {"query": c.text.replace(" ", "\n  ", 1), "answer": "to c", "prompt": f"QUESTION: {c.text}\nANSWER:"},
    ]


def test_published_rows_join_by_text_with_samples_counted_per_item(tmp_path: Path, items, data_dir: Path):
    path = write_lines(tmp_path / "vanilla_hex.jsonl", published_rows(items))
    source = PublishedSource("vanilla", "hex-phi", "meta-llama/Llama-2-7b-hf")
    summary = import_generations(tmp_path / "run", path, published=source, data_dir=data_dir)
    assert (summary.imported, summary.unmatched, summary.unmatched_lines) == (4, 1, (4,))
    with RunStore(tmp_path / "run" / "results.sqlite") as store:
        joined = {(g.item_id, g.sample): g for g in store.generations()}
    a, b, c = items["hex-phi"][:3]
    assert {key: g.text for key, g in joined.items()} == {
        (a.item_id, 0): "first answer", (a.item_id, 1): "second answer", (b.item_id, 0): "to b", (c.item_id, 0): "to c"
    }  # fmt: skip
    first = joined[(a.item_id, 0)]
    assert (first.category, first.query, first.model_key) == (a.category, a.text, "vanilla")
    assert first.base_model == "meta-llama/Llama-2-7b-hf"
    assert (first.params.temperature, first.params.top_p, first.params.max_new_tokens) == (0.1, 0.75, 64)

    shuffled = published_rows(items)
    random.Random(3).shuffle(shuffled)
    import_generations(tmp_path / "other", write_lines(tmp_path / "s.jsonl", shuffled), published=source,
                       data_dir=data_dir)  # fmt: skip
    with RunStore(tmp_path / "other" / "results.sqlite") as store:
        again = {(g.item_id, g.sample): g.text for g in store.generations()}
    assert set(again) == set(joined)  # the same items, the same number of samples each
    assert {again[(a.item_id, 0)], again[(a.item_id, 1)]} == {"first answer", "second answer"}
    assert (again[(b.item_id, 0)], again[(c.item_id, 0)]) == ("to b", "to c")


def test_published_json_array_with_sample_lists_and_shared_texts(tmp_path: Path, items, data_dir: Path):
    seen: dict[str, BenchmarkItem] = {}
    twins = None
    for item in items["rtp"]:
        if item.text in seen:
            twins = (seen[item.text], item)
            break
        seen[item.text] = item
    assert twins is not None  # RTP's first 3,000 prompts hold duplicates
    single = items["rtp"][0]
    rows = [
        {"query": single.text, "answer": ["s0", "s1", "s2"], "prompt": single.text},
        {"query": twins[0].text, "answer": ["t0", "t1", "t2", "t3"], "prompt": twins[0].text},
    ]
    path = tmp_path / "rtp_results.json"
    path.write_text(json.dumps(rows, indent=4))  # as the published code writes it
    source = PublishedSource("vim/Ach", "rtp")
    import_generations(tmp_path / "run", path, published=source, data_dir=data_dir)
    with RunStore(tmp_path / "run" / "results.sqlite") as store:
        joined = {(g.item_id, g.sample): g.text for g in store.generations()}
    assert joined == {
        (single.item_id, 0): "s0", (single.item_id, 1): "s1", (single.item_id, 2): "s2",
        (twins[0].item_id, 0): "t0", (twins[1].item_id, 0): "t1", (twins[0].item_id, 1): "t2",
        (twins[1].item_id, 1): "t3",
    }  # fmt: skip

    rows[1]["answer"] = 7
    path.write_text(json.dumps(rows, indent=4))
    with pytest.raises(ValueharmError, match=r"rtp_results\.json:11: answer must be a string or a non-empty list"):
        read_import(path, published=source, data_dir=data_dir)


def test_published_errors(tmp_path: Path, items, data_dir: Path):
    source = PublishedSource("vanilla", "hex-phi")
    strangers = [{"query": f"Unknown question {i}?", "answer": "x", "prompt": "p"} for i in range(7)]
    with pytest.raises(ValueharmError, match=r"none of its 7 rows matches a hex-phi item .*lines 1, 2, 3, 4, 5, …"):
        import_generations(tmp_path / "new", write_lines(tmp_path / "u.jsonl", strangers), published=source,
                           data_dir=data_dir)  # fmt: skip
    assert not (tmp_path / "new").exists()
    rows = published_rows(items)
    del rows[1]["answer"]
    with pytest.raises(ValueharmError, match=r"m\.jsonl:2: lacks field\(s\) answer \(a published-code row has"):
        read_import(write_lines(tmp_path / "m.jsonl", rows), published=source, data_dir=data_dir)
    with pytest.raises(ValueharmError, match="unknown benchmark 'hexphi'; did you mean: hex-phi"):
        read_import(tmp_path / "m.jsonl", published=PublishedSource("vanilla", "hexphi"), data_dir=data_dir)
    with pytest.raises(ValueharmError, match=r"p\.jsonl:1: a row of the published code's .* --model-key"):
        read_import(write_lines(tmp_path / "p.jsonl", published_rows(items)))


# ------------------------------------------------------------------------------------------------- bad input

GOOD = {"model_key": "m", "benchmark": "hex-phi", "item_id": "x-01", "sample": 0, "prompt": "p", "text": "t"}
BAD_LINES = {
    "invalid JSON": ('{"model_key": "m", ', r"invalid JSON \(Expecting property name"),
    "missing field": ({k: v for k, v in GOOD.items() if k != "text"}, r"generation record lacks field\(s\): text"),
    "wrong type": ({**GOOD, "sample": "first"}, r"sample must be an integer ≥ 0, got 'first'"),
    "text not a string": ({**GOOD, "text": ["t"]}, "text must be a string, got list"),
    "unknown benchmark": ({**GOOD, "benchmark": "hexphi"}, r"unknown benchmark 'hexphi'; did you mean: hex-phi"),
    "forged key": ({**GOOD, "key": "0" * 32}, "key does not match the record's fields"),
    "bad score": ({**GOOD, "scores": {JUDGE: {"value": "high"}}}, r"score '.*': value must be a number or null"),
    "bad params": ({**GOOD, "params": {"max_new_tokens": 64.0}}, r"params\.max_new_tokens must be an integer"),
    "not an object": ("[1, 2]", "expected an object, got list"),
    "duplicate": (GOOD, "the same generation as line 1"),
}


@pytest.mark.parametrize("case", BAD_LINES)
def test_a_bad_line_is_named_and_changes_nothing(tmp_path: Path, run_dir: Path, case: str):
    bad, message = BAD_LINES[case]
    path = write_lines(tmp_path / "in.jsonl", [GOOD, bad])
    before = snapshot(run_dir)
    with pytest.raises(ValueharmError, match=rf"^{tmp_path}/in\.jsonl:2: {message}") as raised:
        import_generations(run_dir, path)
    assert "\n" not in str(raised.value)
    assert snapshot(run_dir) == before
    with pytest.raises(ValueharmError):
        import_generations(tmp_path / "fresh" / "run", path)
    assert not (tmp_path / "fresh").exists()


def test_bad_cells_in_csv_and_parquet_name_their_line(tmp_path: Path, run_dir: Path):
    export_run(run_dir, tmp_path / "a.csv", with_scores=True)
    text = (tmp_path / "a.csv").read_text()
    lines = text.split("\n")
    at = next(i for i, line in enumerate(lines) if ",hex-phi," in line and ",adult_content-04," in line)
    lines[at] = lines[at].replace(",adult_content-04,adult_content,0,", ",adult_content-04,adult_content,zero,")
    (tmp_path / "a.csv").write_text("\n".join(lines))
    with pytest.raises(ValueharmError, match=rf"a\.csv:{at + 1}: sample must be an integer ≥ 0, got 'zero'"):
        import_generations(run_dir, tmp_path / "a.csv")  # the line counts the answer that spans two lines

    export_run(run_dir, tmp_path / "b.parquet", with_scores=True)
    table = pq.read_table(tmp_path / "b.parquet")
    texts = table.column("text").to_pylist()
    texts[2] = None
    pq.write_table(table.set_column(table.column_names.index("text"), "text", [texts]), tmp_path / "b.parquet")
    with pytest.raises(ValueharmError, match=r"b\.parquet:row 3: text must be a string, got NoneType"):
        import_generations(run_dir, tmp_path / "b.parquet")


def test_a_failed_write_into_a_fresh_directory_leaves_no_file(tmp_path: Path, run_dir: Path):
    export_run(run_dir, tmp_path / "a.jsonl", with_scores=True)
    failing = mock.patch.object(RunStore, "add_records", side_effect=sqlite3.OperationalError("disk I/O error"))
    with failing, pytest.raises(sqlite3.OperationalError):
        import_generations(tmp_path / "new" / "run", tmp_path / "a.jsonl")
    assert not (tmp_path / "new").exists()


def test_export_errors(tmp_path: Path, run_dir: Path):
    with pytest.raises(ValueharmError, match=r"out\.xlsx: unknown export format 'xlsx'; use one of jsonl, csv"):
        export_run(run_dir, tmp_path / "out.xlsx")
    with pytest.raises(ValueharmError, match=r"no results\.sqlite here"):
        export_run(tmp_path / "nowhere", tmp_path / "out.jsonl")
    assert not (tmp_path / "nowhere").exists()


# ------------------------------------------------------------------------------------------------------- CLI


def valueharm(*args: str) -> tuple[int, str, str]:
    """`valueharm ARGS` through the real entry point (errors → exit 2), its streams caught by CliRunner."""
    with CliRunner().isolation() as (stdout, stderr, _), mock.patch.object(sys, "argv", ["valueharm", *args]):
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        sys.stdout.flush()
        sys.stderr.flush()
        return code, stdout.getvalue().decode(), stderr.getvalue().decode()


def test_cli_export_import_and_metrics_import(tmp_path: Path, run_dir: Path, items, data_dir: Path):
    code, out, _ = valueharm("export", "--run", str(run_dir), "--format", "csv", "--with-scores")
    assert code == 0 and "52 generations, 51 scores" in out and (run_dir / "results.csv").is_file()
    code, out, _ = valueharm("export", "--run", str(run_dir), "--out", str(tmp_path / "all.jsonl"), "--with-scores")
    assert code == 0 and (tmp_path / "all.jsonl").is_file()

    code, out, _ = valueharm("import", str(run_dir / "results.csv"), "--run", str(tmp_path / "copy"))
    assert code == 0 and "52 generations imported, 0 already present, 51 scores" in out

    code, out, err = valueharm("metrics", "--import", str(tmp_path / "all.jsonl"), "--n-boot", "20", "--json",
                               "--data-dir", str(data_dir))  # fmt: skip
    assert code == 0, err
    regard = {r["metric"]: r["value"] for r in json.loads(out) if r["scorer"] == REGARD and r["category"] == "all"}
    assert regard["negative_regard_rate"] == pytest.approx(16 / 40) and regard["bias_score"] is not None
    assert "bias_score_published" not in regard
    code, out, err = valueharm("metrics", "--import", str(tmp_path / "all.jsonl"), "--n-boot", "20", "--json",
                               "--published-bias-score", "--data-dir", str(data_dir))  # fmt: skip
    rows = [r for r in json.loads(out) if r["scorer"] == REGARD and r["category"] == "all" and r["variant"] == "all"]
    labels = {r["metric"]: r["label"] for r in rows}
    assert code == 0 and labels == {"negative_regard_rate": "ours", "bias_score": "ours",
                                    "bias_score_published": "our input, published score"}  # fmt: skip

    path = write_lines(tmp_path / "vanilla.jsonl", published_rows(items))
    published = ["--model-key", "vanilla", "--benchmark", "hex-phi", "--max-new-tokens", "32"]
    code, out, _ = valueharm(
        "import", str(path), "--run", str(tmp_path / "pub"), *published, "--data-dir", str(data_dir)
    )
    assert code == 0 and "4 generations imported" in out
    assert "1 rows matched no hex-phi item and were not imported (lines 4)" in out
    with RunStore(tmp_path / "pub" / "results.sqlite") as store:
        assert {g.params.max_new_tokens for g in store.generations()} == {32}


def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path, run_dir: Path):
    path = write_lines(tmp_path / "in.jsonl", [GOOD, {**GOOD, "sample": "first"}])
    before = snapshot(run_dir)
    code, _, err = valueharm("import", str(path), "--run", str(run_dir))
    assert code == 2 and "in.jsonl:2: sample must be an integer" in err and len(err.strip().splitlines()) == 1
    assert snapshot(run_dir) == before

    code, _, err = valueharm("metrics", "--import", str(path))
    assert code == 2 and "in.jsonl:2: sample must be an integer" in err
    code, _, err = valueharm("import", str(path), "--run", str(run_dir), "--model-key", "vanilla")
    assert code == 2 and "give both --model-key and --benchmark" in err
    code, _, err = valueharm("export", "--run", str(run_dir), "--format", "xlsx")
    assert code == 2 and "unknown export format 'xlsx'" in err
