"""Executors run a plan's jobs; the local one runs them in this process, in dependency order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from valueharm.experiment.jobs import generate_jobs, score_job, train_jobs
from valueharm.experiment.plan import Experiment, GenerateJob, Job, ScoreJob, TrainJob


class Executor(Protocol):
    def run(self, experiment: Experiment, jobs: Sequence[Job]) -> None: ...


class LocalExecutor:
    """Runs the jobs in this process, in dependency order; the job ledger records each as it completes."""

    def run(self, experiment: Experiment, jobs: Sequence[Job]) -> None:
        from valueharm.store import RunStore

        progress = experiment.config.progress
        with RunStore(experiment.store_path) as store:
            pending = [job for job in jobs if store.job_status(job.id) != "done"]
            trains = [job for job in pending if isinstance(job, TrainJob)]
            if trains:
                for job_id in train_jobs(experiment, trains, progress=progress):
                    store.set_job(job_id, "train", "done")
            generates = [job for job in pending if isinstance(job, GenerateJob)]
            if generates:
                done = store.done_generation_keys()
                complete = generate_jobs(experiment, generates, done, store.add_generations, progress=progress)
                for job_id, ok in complete.items():
                    store.set_job(job_id, "generate", "done" if ok else "failed")
            for job in (job for job in pending if isinstance(job, ScoreJob)):
                if score_job(experiment, job, store, progress=progress):
                    store.set_job(job.id, "score", "done")
