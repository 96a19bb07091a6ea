"""The run's SQLite store: generations, scores, metrics, scorer calibrations, stage times and the job ledger
(`results.sqlite`, DESIGN §3).

Every write is one transaction, so a killed run loses at most the batch in flight and never leaves half a batch.
Keys make writes idempotent: storing a generation or score again replaces it, and callers skip what is stored.
Export and import of a run's records live in valueharm.exchange.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
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
CREATE TABLE IF NOT EXISTS calibrations (
    local TEXT NOT NULL,
    reference TEXT NOT NULL,
    result TEXT NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (local, reference)
);
CREATE TABLE IF NOT EXISTS stage_times (
    started REAL NOT NULL,
    stage TEXT NOT NULL,
    seconds REAL NOT NULL,
    jobs INTEGER NOT NULL
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
_INSERT_GENERATION = (
    f"INSERT OR REPLACE INTO generations ({', '.join(GENERATION_COLUMNS)}, created) "
    f"VALUES ({', '.join('?' * len(GENERATION_COLUMNS))}, ?)"
)
_INSERT_SCORE = "INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?, ?, ?)"


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
        now = time.time()
        rows = [(*_generation_row(record), now) for record in records]
        with self.transaction() as db:
            db.executemany(_INSERT_GENERATION, rows)
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
            db.executemany(_INSERT_SCORE, rows)
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

    # ---------------------------------------------------------------------------------------------- calibrations

    def put_calibration(self, local: str, reference: str, result: dict[str, Any]) -> None:
        """A local scorer's calibration against a reference one (replacing an earlier one of the same pair)."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO calibrations VALUES (?, ?, ?, ?)",
                (local, reference, json.dumps(result), time.time()),
            )

    def calibrations(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT result FROM calibrations ORDER BY reference, local")
        return [json.loads(result) for (result,) in rows]

    # ----------------------------------------------------------------------------------------------------- jobs

    def add_stage_time(self, stage: str, started: float, seconds: float, jobs: int) -> None:
        """Wall time one start of the run spent in a stage (train, generate, score), and the jobs it ran."""
        with self.transaction() as db:
            db.execute("INSERT INTO stage_times VALUES (?, ?, ?, ?)", (started, stage, seconds, jobs))

    def stage_times(self) -> dict[str, dict[str, float]]:
        """Per stage, summed over the run's starts: seconds, jobs run, starts."""
        rows = self._db.execute(
            "SELECT stage, SUM(seconds), SUM(jobs), COUNT(*) FROM stage_times GROUP BY stage ORDER BY MIN(started)"
        )
        return {stage: {"seconds": seconds, "jobs": jobs, "starts": starts} for stage, seconds, jobs, starts in rows}

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

    # ------------------------------------------------------------------------------------------------- imports

    def add_records(self, generations: Iterable[GenerationRecord], scores: Iterable[ScoreRecord]) -> None:
        """Generations and their scores in one transaction: an import goes in whole or not at all."""
        rows = [(*_generation_row(record), time.time()) for record in generations]
        score_rows = [(r.key, r.scorer, r.value, r.label, r.raw, r.error, time.time()) for r in scores]
        with self.transaction() as db:
            db.executemany(_INSERT_GENERATION, rows)
            db.executemany(_INSERT_SCORE, score_rows)

    def stored_texts(self, keys: Iterable[str]) -> dict[str, str]:
        """Key → text of those generations stored without error (what an import must not overwrite)."""
        keys, found = list(keys), {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            sql = f"SELECT key, text FROM generations WHERE error IS NULL AND key IN ({', '.join('?' * len(chunk))})"
            found.update(self._db.execute(sql, chunk))
        return found


def _filters(**conditions: str | None) -> tuple[list[str], list[str]]:
    where, args = [], []
    for column, value in conditions.items():
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    return where, args


def _generation_row(record: GenerationRecord) -> tuple[Any, ...]:
    values = record.to_dict()
    values["params"] = json.dumps(record.params.to_dict(), sort_keys=True)
    return tuple(values[column] for column in GENERATION_COLUMNS)


def _generation_record(row: Sequence[Any]) -> GenerationRecord:
    return GenerationRecord.from_dict(dict(zip(GENERATION_COLUMNS, row, strict=True)))
