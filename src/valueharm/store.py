"""The run's SQLite store: generations, scores, metrics and the job ledger (`results.sqlite`, DESIGN §3).

Every write is one transaction, so a killed run loses at most the batch in flight and never leaves half a batch.
Keys make writes idempotent: storing a generation or score again replaces it, and callers skip what is stored.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from valueharm.errors import ValueharmError
from valueharm.records import GenerationRecord, ScoreRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    key TEXT PRIMARY KEY,
    model_key TEXT NOT NULL,
    base_model TEXT NOT NULL,
    benchmark TEXT NOT NULL,
    item_id TEXT NOT NULL,
    category TEXT NOT NULL,
    sample INTEGER NOT NULL,
    prompt TEXT NOT NULL,
    query TEXT NOT NULL,
    params TEXT NOT NULL,
    text TEXT NOT NULL,
    error TEXT,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS generations_by_model ON generations (benchmark, model_key);
CREATE TABLE IF NOT EXISTS scores (
    key TEXT NOT NULL,
    scorer TEXT NOT NULL,
    value REAL,
    label TEXT,
    raw TEXT,
    error TEXT,
    created REAL NOT NULL,
    PRIMARY KEY (key, scorer)
);
CREATE TABLE IF NOT EXISTS metrics (
    model_key TEXT NOT NULL,
    benchmark TEXT NOT NULL,
    category TEXT NOT NULL,
    metric TEXT NOT NULL,
    variant TEXT NOT NULL,
    scorer TEXT NOT NULL,
    value REAL,
    ci_low REAL,
    ci_high REAL,
    n_used INTEGER NOT NULL,
    n_failed INTEGER NOT NULL,
    PRIMARY KEY (model_key, benchmark, category, metric, variant, scorer)
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    detail TEXT NOT NULL,
    updated REAL NOT NULL
);
"""

GENERATION_COLUMNS = (
    "key", "model_key", "base_model", "benchmark", "item_id", "category", "sample", "prompt", "query", "params",
    "text", "error",
)  # fmt: skip
EXPORT_FORMATS = ("jsonl", "csv", "parquet")


class RunStore:
    """One run's results. Open it with `RunStore(path)`; it creates the schema on first use."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as err:
            raise ValueharmError(f"{self.path}: cannot open the run store ({err})") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ---------------------------------------------------------------------------------------------- generations

    def add_generations(self, records: Iterable[GenerationRecord]) -> int:
        rows = [_generation_row(record) for record in records]
        now = time.time()
        with self.transaction() as db:
            db.executemany(
                f"INSERT OR REPLACE INTO generations ({', '.join(GENERATION_COLUMNS)}, created) "
                f"VALUES ({', '.join('?' * len(GENERATION_COLUMNS))}, ?)",
                [(*row, now) for row in rows],
            )
        return len(rows)

    def done_generation_keys(self, keys: Iterable[str] | None = None) -> set[str]:
        """Keys stored without error (failed requests are tried again on the next run)."""
        done = {key for (key,) in self._db.execute("SELECT key FROM generations WHERE error IS NULL")}
        return done if keys is None else done & set(keys)

    def generations(
        self, *, benchmark: str | None = None, model_key: str | None = None, include_failed: bool = True
    ) -> list[GenerationRecord]:
        where, args = _filters(benchmark=benchmark, model_key=model_key)
        if not include_failed:
            where.append("error IS NULL")
        sql = f"SELECT {', '.join(GENERATION_COLUMNS)} FROM generations"
        sql += (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY benchmark, model_key, item_id, sample"
        return [_generation_record(row) for row in self._db.execute(sql, args)]

    def count_generations(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(benchmark, model_key) → (stored, failed)."""
        rows = self._db.execute(
            "SELECT benchmark, model_key, COUNT(*), SUM(error IS NOT NULL) FROM generations GROUP BY 1, 2"
        )
        return {(b, m): (n, int(failed or 0)) for b, m, n, failed in rows}

    # --------------------------------------------------------------------------------------------------- scores

    def add_scores(self, records: Iterable[ScoreRecord]) -> int:
        rows = [(r.key, r.scorer, r.value, r.label, r.raw, r.error, time.time()) for r in records]
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        return len(rows)

    def scored_keys(self, scorer: str) -> set[str]:
        """Keys this scorer has a row for, failed or not: a failure is a result, not a to-do."""
        return {key for (key,) in self._db.execute("SELECT key FROM scores WHERE scorer = ?", (scorer,))}

    def scores(self, scorer: str | None = None) -> list[ScoreRecord]:
        where, args = _filters(scorer=scorer)
        sql = "SELECT key, scorer, value, label, raw, error FROM scores" + (
            " WHERE " + " AND ".join(where) if where else ""
        )
        return [ScoreRecord(*row) for row in self._db.execute(sql + " ORDER BY key, scorer", args)]

    def scored_count(self, benchmark: str, scorer: str) -> int:
        """How many generations of a benchmark have a row for this scorer."""
        sql = "SELECT COUNT(*) FROM scores s JOIN generations g ON g.key = s.key WHERE g.benchmark = ? AND s.scorer = ?"
        return int(self._db.execute(sql, (benchmark, scorer)).fetchone()[0])

    def scorers(self) -> list[str]:
        return [name for (name,) in self._db.execute("SELECT DISTINCT scorer FROM scores ORDER BY 1")]

    # -------------------------------------------------------------------------------------------------- metrics

    def replace_metrics(self, rows: Sequence[dict[str, Any]]) -> None:
        """Metrics are derived data: each computation replaces the whole table."""
        columns = ("model_key", "benchmark", "category", "metric", "variant", "scorer", "value", "ci_low", "ci_high",
                   "n_used", "n_failed")  # fmt: skip
        with self.transaction() as db:
            db.execute("DELETE FROM metrics")
            db.executemany(
                f"INSERT INTO metrics ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                [tuple(row[c] for c in columns) for row in rows],
            )

    def metrics(self) -> list[dict[str, Any]]:
        cursor = self._db.execute("SELECT * FROM metrics ORDER BY benchmark, metric, variant, model_key, category")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    # ----------------------------------------------------------------------------------------------------- jobs

    def job_status(self, job_id: str) -> str | None:
        row = self._db.execute("SELECT status FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return row[0] if row else None

    def set_job(self, job_id: str, kind: str, status: str, detail: dict[str, Any] | None = None) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?)",
                (job_id, kind, status, json.dumps(detail or {}, default=str), time.time()),
            )

    def jobs(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT job_id, kind, status, detail, updated FROM jobs ORDER BY updated")
        return [{"job_id": j, "kind": k, "status": s, "detail": json.loads(d), "updated": u} for j, k, s, d, u in rows]

    # ------------------------------------------------------------------------------------------ export / import

    def export_generations(self, path: str | Path, fmt: str | None = None) -> int:
        """Write every generation (with its scores, one column per scorer) as JSONL, CSV or Parquet."""
        path = Path(path)
        fmt = fmt or path.suffix.lstrip(".")
        if fmt not in EXPORT_FORMATS:
            raise ValueharmError(f"{path}: unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
        scores: dict[str, dict[str, Any]] = {}
        for score in self.scores():
            scores.setdefault(score.key, {})[score.scorer] = score.value if score.error is None else None
        rows = [
            {**record.to_dict(), "params": asdict(record.params), "scores": scores.get(record.key, {})}
            for record in self.generations()
        ]
        tmp = path.with_name(path.name + ".tmp")
        if fmt == "jsonl":
            tmp.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        else:
            flat = [
                {**{k: v for k, v in row.items() if k not in {"params", "scores"}},
                 "params": json.dumps(row["params"]), **{f"score:{k}": v for k, v in row["scores"].items()}}
                for row in rows
            ]  # fmt: skip
            if fmt == "csv":
                columns = list(dict.fromkeys(key for row in flat for key in row)) or list(GENERATION_COLUMNS)
                with tmp.open("w", newline="", encoding="utf-8") as handle:
                    writer = csv.DictWriter(handle, fieldnames=columns)
                    writer.writeheader()
                    writer.writerows(flat)
            else:
                import pyarrow as pa
                import pyarrow.parquet as pq

                pq.write_table(pa.Table.from_pylist(flat), tmp)
        tmp.replace(path)
        return len(rows)

    def import_generations(self, path: str | Path) -> int:
        """Load generations made elsewhere from JSONL (the export format; `scores` maps scorer → value)."""
        path = Path(path)
        if not path.is_file():
            raise ValueharmError(f"{path}: file not found")
        records, scores = [], []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                row_scores = row.pop("scores", None) or {}
                record = GenerationRecord.from_dict(row)
            except (json.JSONDecodeError, ValueharmError, TypeError, ValueError) as err:
                raise ValueharmError(f"{path}:{number}: {err}") from None
            if row.get("key") and row["key"] != record.identity_key():
                raise ValueharmError(f"{path}:{number}: key does not match the record's fields")
            records.append(record)
            scores += [ScoreRecord(record.key, scorer, value) for scorer, value in row_scores.items()]
        self.add_generations(records)
        if scores:
            self.add_scores(scores)
        return len(records)


def _filters(**conditions: str | None) -> tuple[list[str], list[str]]:
    where, args = [], []
    for column, value in conditions.items():
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    return where, args


def _generation_row(record: GenerationRecord) -> tuple[Any, ...]:
    values = record.to_dict()
    values["params"] = json.dumps(asdict(record.params), sort_keys=True)
    return tuple(values[column] for column in GENERATION_COLUMNS)


def _generation_record(row: Sequence[Any]) -> GenerationRecord:
    return GenerationRecord.from_dict(dict(zip(GENERATION_COLUMNS, row, strict=True)))
