"""Results in and out of a run: export its records, import generations (and scores) made elsewhere.

Both directions go through the records of valueharm.records, and `metrics --import` reads files with this module
too (RunStore.import_generations), so there is one format and one parser.

**JSON lines** (`.jsonl`, the reference format): one generation per line with the fields of GenerationRecord —
`key`, `model_key`, `base_model`, `benchmark`, `item_id`, `category`, `sample`, `prompt`, `query`, `params` (an
object), `text`, `error` — and, exported `--with-scores`, `"scores": {scorer: {"value", "label", "raw", "error"}}`.
On import `key` may be left out (it is recomputed; a given one must match the fields), `base_model` and `category`
default to "", `query` to the prompt, and a score may be an object with any of its four fields or a bare number
(`{"judge:harmfulness@gpt-4o": 4}`, no label). A JSON array of the same objects is read as well.

**CSV and Parquet**: one row per generation, the same columns with `params` as a JSON string, then for each scorer
four columns `score:<scorer>`, `label:<scorer>`, `raw:<scorer>`, `error:<scorer>`, empty where that scorer has no
row for the generation. In CSV an empty `key`, `error` or score cell means null. Import reads all three by suffix.

**The published code's output** (`published=PublishedSource(...)`): one file per model and benchmark, a JSON array
or JSON lines of `{"query", "answer", "prompt"}` with `answer` a string or a list of samples (RTP's ten). Rows are
joined to the benchmark's items (the registry's default subset unless `limit`/`options` say otherwise) by query text
with whitespace normalised, never by row position; the k-th answer to an item is its sample k, and answers to a text
that several items share (4 of RTP's first 3,000 prompts appear twice) are dealt to those items in turn. Rows that
match no item are reported with their line numbers and not imported; if no row matches, that is an error.

A file is read and checked whole before anything is written: a bad line raises `ValueharmError("FILE:LINE: what is
wrong")` (Parquet: `FILE:row N`), the store stays as it was, and a store the import would have created is removed.
The records then go in with one transaction. A generation already stored without error is left as it is (counted as
already present, its scores still imported); one stored with a different text is an error, since one request cannot
have two answers.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from valueharm import paths
from valueharm.data.benchmarks import BENCHMARKS, BenchmarkItem
from valueharm.errors import ValueharmError
from valueharm.records import GenerationRecord, SamplingParams, ScoreRecord
from valueharm.store import GENERATION_COLUMNS, RunStore

EXPORT_FORMATS = ("jsonl", "csv", "parquet")
STORE_FILE = "results.sqlite"
PUBLISHED_FIELDS = ("query", "answer", "prompt")
FLAT_SCORE_COLUMNS = {"score": "value", "label": "label", "raw": "raw", "error": "error"}  # prefix → score field
SHOWN_LINES = 5  # unmatched line numbers named in messages


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    generations: int
    scores: int


@dataclass(frozen=True)
class PublishedSource:
    """What a published-code output file leaves unsaid: whose answers they are, to which benchmark, made how."""

    model_key: str  # e.g. vanilla, vim/Pow
    benchmark: str
    base_model: str = ""
    params: SamplingParams | None = None  # default: the benchmark's published settings, no stop rule, seed 0
    limit: int | None = None  # the items joined against: the benchmark's default subset unless given
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportedLine:
    """One generation read from a file, with the line it came from (for messages) and its scores."""

    line: int
    generation: GenerationRecord
    scores: tuple[ScoreRecord, ...] = ()


@dataclass(frozen=True)
class ImportSummary:
    path: Path
    imported: int  # generations written (new, or replacing a failed one)
    already_present: int  # stored before without error: left as they were
    scores: int  # score rows written
    unmatched_lines: tuple[int, ...] = ()  # published format: rows whose query matches no benchmark item

    @property
    def unmatched(self) -> int:
        return len(self.unmatched_lines)


def store_path(run: str | Path) -> Path:
    """The store of a run directory (or the store file itself)."""
    run = Path(run)
    return run if run.is_file() else run / STORE_FILE


# ------------------------------------------------------------------------------------------------------ export


def export_run(
    run_dir: str | Path, out: str | Path, format: str | None = None, *, with_scores: bool = False
) -> ExportSummary:
    """Write a run's generations (with their scores) to `out` as jsonl, csv or parquet (default: by its suffix).

    The file appears whole or not at all (temp file + rename), so a reader never sees half an export.
    """
    out = Path(out)
    fmt = format or out.suffix.lstrip(".")
    if fmt not in EXPORT_FORMATS:
        raise ValueharmError(f"{out}: unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
    path = store_path(run_dir)
    if not path.is_file():
        raise ValueharmError(f"{run_dir}: no {STORE_FILE} here")
    with RunStore(path) as store:
        generations = store.generations()
        scores = store.scores() if with_scores else []
    by_key: dict[str, dict[str, ScoreRecord]] = defaultdict(dict)
    for score in scores:
        by_key[score.key][score.scorer] = score
    scorers = sorted({score.scorer for score in scores})
    if fmt == "jsonl":
        rows = [exchange_row(record, by_key.get(record.key, {}) if with_scores else None) for record in generations]
        _write_atomically(out, lambda tmp: _write_jsonl(tmp, rows))
    else:
        flat = [_flat_row(record, by_key.get(record.key, {}), scorers) for record in generations]
        writer = _write_csv if fmt == "csv" else _write_parquet
        _write_atomically(out, lambda tmp: writer(tmp, flat, scorers))
    return ExportSummary(out, len(generations), len(scores))


def exchange_row(record: GenerationRecord, scores: Mapping[str, ScoreRecord] | None = None) -> dict[str, Any]:
    """One generation as a JSON object of the exchange format; `scores` (scorer → score) adds a `scores` field."""
    row = {"key": record.key, **record.to_dict()}
    if scores is not None:
        row["scores"] = {name: score.entry() for name, score in sorted(scores.items())}
    return row


def _flat_row(record: GenerationRecord, scores: Mapping[str, ScoreRecord], scorers: Sequence[str]) -> dict[str, Any]:
    values = record.to_dict()
    row = {column: values[column] for column in GENERATION_COLUMNS}
    row["params"] = json.dumps(record.params.to_dict(), sort_keys=True)
    for scorer in scorers:
        entry = scores[scorer].entry() if scorer in scores else {}
        for prefix, name in FLAT_SCORE_COLUMNS.items():
            row[f"{prefix}:{scorer}"] = entry.get(name)
    return row


def _write_atomically(out: Path, write: Callable[[Path], None]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(handle)
    tmp = Path(name)
    try:
        write(tmp)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _flat_columns(scorers: Sequence[str]) -> list[str]:
    return [*GENERATION_COLUMNS, *(f"{prefix}:{scorer}" for scorer in scorers for prefix in FLAT_SCORE_COLUMNS)]


def _write_csv(path: Path, rows: list[dict[str, Any]], scorers: Sequence[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=_flat_columns(scorers))
        writer.writeheader()
        writer.writerows(rows)


def _write_parquet(path: Path, rows: list[dict[str, Any]], scorers: Sequence[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {"sample": pa.int64(), **{f"score:{scorer}": pa.float64() for scorer in scorers}}
    schema = pa.schema([(column, types.get(column, pa.string())) for column in _flat_columns(scorers)])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


# ------------------------------------------------------------------------------------------------------ import


def import_generations(
    run_dir: str | Path,
    file: str | Path,
    *,
    published: PublishedSource | None = None,
    data_dir: str | Path | None = None,
) -> ImportSummary:
    """Add the generations (and scores) in `file` to a run's store, creating it if need be; see the module doc.

    `published` reads the published code's `{query, answer, prompt}` rows, joined to the benchmark items found in
    `data_dir`. On any error the store is as before, and a store (or run directory) this call made is removed.
    """
    file = Path(file)
    lines, unmatched = read_import(file, published=published, data_dir=data_dir)
    path = store_path(run_dir)
    created = [parent for parent in (path.parent, *path.parent.parents) if not parent.exists()]
    fresh = not path.exists()
    try:
        with RunStore(path) as store:
            return write_import(store, file, lines, unmatched)
    except BaseException:
        if fresh:
            for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                leftover.unlink(missing_ok=True)
            for directory in created:  # innermost first
                directory.rmdir()
        raise


def import_into(
    store: RunStore,
    file: str | Path,
    *,
    published: PublishedSource | None = None,
    data_dir: str | Path | None = None,
) -> ImportSummary:
    """As import_generations, into an open store (e.g. the scratch store of `metrics --import`)."""
    lines, unmatched = read_import(Path(file), published=published, data_dir=data_dir)
    return write_import(store, Path(file), lines, unmatched)


def read_import(
    file: str | Path,
    *,
    published: PublishedSource | None = None,
    data_dir: str | Path | None = None,
) -> tuple[list[ImportedLine], tuple[int, ...]]:
    """Every record of a file, checked, and the lines of published-format rows that matched no item."""
    file = Path(file)
    if not file.is_file():
        raise ValueharmError(f"{file}: file not found")
    if published is not None:
        return _read_published(file, published, data_dir)
    csv_file = file.suffix.lower() == ".csv"
    rows = _parquet_rows(file) if _is_parquet(file) else _csv_rows(file) if csv_file else _json_objects(file)
    lines = [_parse_row(file, line, row) for line, row in rows]
    if not lines:
        raise ValueharmError(f"{file}: no records")
    first: dict[str, int] = {}
    for imported in lines:
        key = imported.generation.key
        if key in first:
            again = f"the same generation as {_place(file, first[key])} (key {key})"
            raise ValueharmError(f"{_at(file, imported.line)}: {again}")
        first[key] = imported.line
    return lines, ()


def write_import(
    store: RunStore, file: Path, lines: Sequence[ImportedLine], unmatched: tuple[int, ...] = ()
) -> ImportSummary:
    """Checked records into the store in one transaction; a stored generation is kept, and must have the same text."""
    stored = store.stored_texts(imported.generation.key for imported in lines)
    generations: list[GenerationRecord] = []
    scores: list[ScoreRecord] = []
    present = 0
    for imported in lines:
        record = imported.generation
        if record.key not in stored:
            generations.append(record)
            scores += imported.scores
            continue
        present += 1
        if record.error is None:
            if stored[record.key] != record.text:
                raise ValueharmError(
                    f"{_at(file, imported.line)}: generation {record.key} ({record.model_key}, {record.item_id}, "
                    f"sample {record.sample}) is already stored with a different text; import it under another "
                    "model key"
                )
            scores += imported.scores  # the same answer: its scores apply
    store.add_records(generations, scores)
    return ImportSummary(file, len(generations), present, len(scores), unmatched)


def _at(file: Path, line: int) -> str:
    """`FILE:LINE` for text files, `FILE:row N` for Parquet (which has no lines)."""
    return f"{file}:row {line}" if _is_parquet(file) else f"{file}:{line}"


def _place(file: Path, line: int) -> str:
    return f"row {line}" if _is_parquet(file) else f"line {line}"


def _is_parquet(file: Path) -> bool:
    return file.suffix.lower() == ".parquet"


def _parse_row(file: Path, line: int, row: Any) -> ImportedLine:
    """One exchange-format object → its generation and scores, or a ValueharmError naming the line."""
    at = _at(file, line)
    if not isinstance(row, dict):
        raise ValueharmError(f"{at}: expected an object, got {type(row).__name__}")
    if set(PUBLISHED_FIELDS) <= set(row) and "model_key" not in row:
        raise ValueharmError(
            f"{at}: a row of the published code's {{query, answer, prompt}} format; import it with --model-key and "
            "--benchmark (library: published=PublishedSource(...))"
        )
    fields = {name: value for name, value in row.items() if name != "scores"}
    try:
        record = GenerationRecord.from_dict(fields)
        if fields.get("key") and fields["key"] != record.identity_key():
            raise ValueharmError("key does not match the record's fields")
        BENCHMARKS.get(record.benchmark)  # an unknown one lists the known ones
        entries = row.get("scores") or {}
        if not isinstance(entries, dict):
            raise ValueharmError(f"scores must be an object (scorer → score), got {type(entries).__name__}")
        scores = tuple(ScoreRecord.from_entry(record.key, name, entry) for name, entry in entries.items())
    except ValueharmError as err:
        raise ValueharmError(f"{at}: {err}") from None
    return ImportedLine(line, record, scores)


def _read_text(file: Path) -> str:
    data = file.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueharmError(f"{file}:{line}: not UTF-8 text ({err.reason})") from None


def _json_objects(file: Path) -> Iterator[tuple[int, Any]]:
    """(line, value) of each JSON line, or of each element of a top-level JSON array."""
    text = _read_text(file)
    if text.lstrip().startswith("["):
        yield from _json_array(file, text)
        return
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028 may sit inside a string
        if line.strip():
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueharmError(f"{file}:{number}: invalid JSON ({err.msg}, column {err.colno})") from None


def _json_array(file: Path, text: str) -> Iterator[tuple[int, Any]]:
    """Elements of a JSON array with the line each starts on, decoded one by one so errors keep their line."""
    decoder = json.JSONDecoder()
    pos = _skip_space(text, text.index("[") + 1)
    if pos < len(text) and text[pos] == "]":
        return
    line, counted = 1, 0  # the line of text[counted], advanced as the elements are read

    def line_at(position: int) -> int:
        nonlocal line, counted
        line, counted = line + text.count("\n", counted, position), position
        return line

    while True:
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise ValueharmError(f"{file}:{err.lineno}: invalid JSON ({err.msg}, column {err.colno})") from None
        yield line_at(pos), value
        pos = _skip_space(text, end)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_space(text, pos + 1)
        elif pos < len(text) and text[pos] == "]" and not text[pos + 1 :].strip():
            return
        else:
            raise ValueharmError(f"{file}:{line_at(pos)}: invalid JSON (expected ',' or the closing ']')")


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _csv_rows(file: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(first line, row) of an exported CSV, cells typed as in the JSON form (empty → null where null is meant)."""
    reader = csv.DictReader(io.StringIO(_read_text(file), newline=""))
    start = 2
    try:
        for cells in reader:
            if None in cells or None in cells.values():
                raise ValueharmError(f"{file}:{start}: not as many cells as the header has columns")
            yield start, _unflatten(file, start, cells, from_text=True)
            start = reader.line_num + 1
    except csv.Error as err:
        raise ValueharmError(f"{file}:{start}: not valid CSV ({err})") from None


def _parquet_rows(file: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(file)
    except (pa.ArrowException, OSError) as err:
        raise ValueharmError(f"{file}: not a readable Parquet file ({err})") from None
    for number, cells in enumerate(table.to_pylist(), start=1):
        yield number, _unflatten(file, number, cells, from_text=False)


def _unflatten(file: Path, line: int, cells: Mapping[str, Any], *, from_text: bool) -> dict[str, Any]:
    """A flat row (generation columns + `score:`/`label:`/`raw:`/`error:` columns per scorer) → the JSON form."""
    row: dict[str, Any] = {}
    scores: dict[str, dict[str, Any]] = defaultdict(dict)
    for column, cell in cells.items():
        prefix, colon, scorer = column.partition(":")
        if colon and prefix in FLAT_SCORE_COLUMNS:
            if cell is not None and cell != "":
                value = _number(file, line, column, cell) if prefix == "score" else cell
                scores[scorer][FLAT_SCORE_COLUMNS[prefix]] = value
        elif from_text and column in {"key", "error"} and cell == "":
            continue  # null
        elif from_text and column == "sample":
            row[column] = int(cell) if cell.strip().isdigit() else cell  # anything else fails as a wrong type
        else:
            row[column] = cell
    if scores:
        row["scores"] = dict(scores)
    return row


def _number(file: Path, line: int, column: str, cell: Any) -> Any:
    if not isinstance(cell, str):
        return cell
    try:
        return float(cell)
    except ValueError:
        raise ValueharmError(f"{_at(file, line)}: {column} must be a number, got {_short(cell)}") from None


# -------------------------------------------------------------------------------------------- published format


def _read_published(
    file: Path, source: PublishedSource, data_dir: str | Path | None
) -> tuple[list[ImportedLine], tuple[int, ...]]:
    """The published code's rows joined to benchmark items by normalised query text (see the module doc)."""
    if not source.model_key:
        raise ValueharmError("a published-format import needs a model key (e.g. vanilla, vim/Pow)")
    benchmark = BENCHMARKS.get(source.benchmark)
    items = benchmark.load(paths.data_dir(data_dir), source.limit, **source.options)
    by_text: dict[str, list[BenchmarkItem]] = defaultdict(list)
    for item in items:
        by_text[_normalise(item.text)].append(item)
    defaults = benchmark.defaults
    params = source.params or SamplingParams(defaults.temperature, defaults.top_p, defaults.max_new_tokens)
    dealt: Counter[str] = Counter()
    lines: list[ImportedLine] = []
    unmatched: list[int] = []
    for line, row in _json_objects(file):
        query, answers, prompt = _published_row(_at(file, line), row)
        text = _normalise(query)
        candidates = by_text.get(text)
        if not candidates:
            unmatched.append(line)
            continue
        for answer in answers:
            n = dealt[text]
            dealt[text] += 1
            item = candidates[n % len(candidates)]
            record = GenerationRecord(
                model_key=source.model_key, base_model=source.base_model, benchmark=benchmark.name,
                item_id=item.item_id, category=item.category, sample=n // len(candidates), prompt=prompt,
                query=item.text, params=params, text=answer,
            )  # fmt: skip
            lines.append(ImportedLine(line, record))
    if not lines:
        if not unmatched:
            raise ValueharmError(f"{file}: no records")
        raise ValueharmError(
            f"{file}: none of its {len(unmatched)} rows matches a {benchmark.name} item by query text (lines "
            f"{shown_lines(unmatched)}); check --benchmark and the items' subset"
        )
    return lines, tuple(unmatched)


def _published_row(at: str, row: Any) -> tuple[str, list[str], str]:
    if not isinstance(row, dict):
        raise ValueharmError(f"{at}: expected an object with {', '.join(PUBLISHED_FIELDS)}, got {type(row).__name__}")
    if "model_key" in row:
        raise ValueharmError(f"{at}: a valueharm record; import it without --model-key/--benchmark")
    missing = [name for name in PUBLISHED_FIELDS if name not in row]
    unknown = sorted(set(row) - set(PUBLISHED_FIELDS))
    if missing or unknown:
        problem = f"lacks field(s) {', '.join(missing)}" if missing else f"unknown field(s) {', '.join(unknown)}"
        raise ValueharmError(f"{at}: {problem} (a published-code row has {', '.join(PUBLISHED_FIELDS)})")
    query, answer, prompt = (row[name] for name in PUBLISHED_FIELDS)
    for name, value in (("query", query), ("prompt", prompt)):
        if not isinstance(value, str):
            raise ValueharmError(f"{at}: {name} must be a string, got {_short(value)}")
    answers = [answer] if isinstance(answer, str) else answer
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        raise ValueharmError(f"{at}: answer must be a string or a non-empty list of strings, got {_short(answer)}")
    return query, answers, prompt


def _normalise(text: str) -> str:
    return " ".join(text.split())


def shown_lines(lines: Sequence[int]) -> str:
    """The first few line numbers, for a message."""
    return ", ".join(map(str, lines[:SHOWN_LINES])) + (", …" if len(lines) > SHOWN_LINES else "")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"
