"""What a run stored, in a comparable form — for tests that compare runs (resumed vs clean, Ray vs local)."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def outcome(run: Path) -> tuple:
    """Generation texts, scores, metrics and the job ledger, each sorted."""
    with sqlite3.connect(run / "results.sqlite") as db:
        generations = sorted(db.execute("SELECT key, model_key, benchmark, text FROM generations WHERE error IS NULL"))
        scores = sorted(db.execute("SELECT key, scorer, value, label FROM scores"))
        metrics = sorted(
            db.execute("SELECT model_key, benchmark, category, metric, variant, value, ci_low, n_used FROM metrics")
        )
        jobs = sorted(db.execute("SELECT job_id, status FROM jobs"))
    return generations, scores, metrics, jobs
