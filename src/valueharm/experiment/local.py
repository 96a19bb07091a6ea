"""Executors run a plan's jobs; the local one runs them in this process, in dependency order."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from valueharm.experiment.jobs import generate_jobs, score_job, train_jobs
from valueharm.experiment.plan import Experiment, GenerateJob, Job, ScoreJob, TrainJob


class Executor(Protocol):
    def run(self, experiment: Experiment, jobs: Sequence[Job]) -> None: ...


@contextmanager
def stage_clock(store: Any, stage: str, jobs: int) -> Iterator[None]:
    """Record the wall time of one stage of this start in the store (what the report sets beside the plan)."""
    started, clock = time.time(), time.perf_counter()
    try:
        yield
    finally:
        store.add_stage_time(stage, started, time.perf_counter() - clock, jobs)


class LocalExecutor:
    """Runs the jobs in this process, in dependency order; the job ledger records each as it completes."""

    def run(self, experiment: Experiment, jobs: Sequence[Job]) -> None:
        from valueharm.store import RunStore

        progress = experiment.config.progress
        with RunStore(experiment.store_path) as store:
            pending = [job for job in jobs if store.job_status(job.id) != "done"]
            trains = [job for job in pending if isinstance(job, TrainJob)]
            if trains:
                with stage_clock(store, "train", len(trains)):
                    for job_id in train_jobs(experiment, trains, progress=progress):
                        store.set_job(job_id, "train", "done")
            generates = [job for job in pending if isinstance(job, GenerateJob)]
            if generates:
                with stage_clock(store, "generate", len(generates)):
                    done = store.done_generation_keys()
                    complete = generate_jobs(experiment, generates, done, store.add_generations, progress=progress)
                    for job_id, ok in complete.items():
                        store.set_job(job_id, "generate", "done" if ok else "failed")
            if scores := [job for job in pending if isinstance(job, ScoreJob)]:
                with stage_clock(store, "score", len(scores)):
                    for job in scores:
                        if score_job(experiment, job, store, progress=progress):
                            store.set_job(job.id, "score", "done")
