"""What each job does, for any executor: train adapters, generate slices, score slices.

Each takes the experiment and its jobs and hands results to a `sink`: the local executor writes them to the store
at once; a distributed one ships them to the driver, the store's only writer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from valueharm.experiment.plan import Experiment, GenerateJob, ScoreJob, TrainJob


def train_jobs(experiment: Experiment, jobs: Sequence[TrainJob], *, progress: bool = True) -> list[str]:
    """Train the jobs' adapters in one process on one loaded base; returns the job ids now complete."""
    from valueharm.training import benign_job, train_adapters, vim_jobs

    config = experiment.config
    vim, benign = config.training.vim, config.training.benign
    profiles = [experiment.profiles[job.name] for job in jobs if job.kind == "vim"]
    adapter_jobs = vim_jobs(
        profiles, experiment.data_dir, experiment.adapters_dir / "vim", stage1=vim.stage("stage1"),
        stage2=vim.stage("stage2"), data=vim.data, limit=vim.limit, valid_limit=vim.valid_limit,
        template_dir=config.template_dir,
    )  # fmt: skip
    adapter_jobs += [
        benign_job(
            job.name,
            experiment.data_dir,
            experiment.adapters_dir / "benign",
            settings=benign.train,
            limit=benign.limit,
            template_dir=config.template_dir,
        )
        for job in jobs
        if job.kind == "benign"
    ]
    train_adapters(
        experiment.base, adapter_jobs, config.training.lora, trust_remote_code=config.trust_remote_code,
        progress=progress, chat=experiment.chat_system_turn is not None,
    )  # fmt: skip
    return [job.id for job in jobs]


def planned_records(experiment: Experiment, jobs: Sequence[GenerateJob]) -> dict[str, list[Any]]:
    """Job id → the generation records it must produce (text empty)."""
    from valueharm import base_model
    from valueharm.data.benchmarks import BENCHMARKS
    from valueharm.generation.run import plan as plan_slice
    from valueharm.generation.run import sampling_params

    base_id = base_model.identity(experiment.base)
    records = {}
    for job in jobs:
        benchmark = BENCHMARKS.get(job.benchmark)
        bench = experiment.benchmark_config(job.benchmark)
        params = sampling_params(
            benchmark, experiment.templates, seed=experiment.config.generation.seed, temperature=bench.temperature,
            top_p=bench.top_p, max_new_tokens=bench.max_new_tokens,
        )  # fmt: skip
        records[job.id] = plan_slice(
            [experiment.specs[job.model_key]], benchmark, experiment.benchmark_items[job.benchmark],
            base_model=base_id, params=params, samples=bench.samples or benchmark.defaults.samples,
            templates=experiment.templates, chat_system_turn=experiment.chat_system_turn,
        )  # fmt: skip
    return records


def generate_jobs(
    experiment: Experiment,
    jobs: Sequence[GenerateJob],
    done: set[str],
    sink: Any,
    *,
    progress: bool = True,
) -> dict[str, bool]:
    """Generate every job's missing records with ONE backend serving all their adapters, in mixed batches.

    Returns job id → complete (no failed request); `done` holds the keys already stored.
    """
    from valueharm.generation.run import generate_records, open_backend

    planned = planned_records(experiment, jobs)
    specs = [experiment.specs[job.model_key] for job in jobs]
    failed: set[str] = set()

    def collect(records: list[Any]) -> None:
        failed.update(r.key for r in records if r.error is not None)
        sink(records)

    generation = experiment.config.generation
    trust = {"trust_remote_code": True} if experiment.config.trust_remote_code else {}
    backend = open_backend(generation.backend, experiment.base, specs, **trust, **generation.options)
    try:
        adapters = {spec.model_key: spec.adapter for spec in specs}
        for benchmark in dict.fromkeys(job.benchmark for job in jobs):
            records = [r for job in jobs if job.benchmark == benchmark for r in planned[job.id]]
            generate_records(backend, records, adapters, done=done, sink=collect, progress=progress,
                             description=f"generating {benchmark}")  # fmt: skip
    finally:
        backend.close()
    return {job.id: not any(r.key in failed for r in planned[job.id]) for job in jobs}


def score_job(experiment: Experiment, job: ScoreJob, store: Any, *, progress: bool = True) -> bool:
    """Score one (benchmark, scorer) slice; True when every generation of the slice has a score row."""
    from valueharm.scoring.base import build_scorer
    from valueharm.scoring.run import score_run

    scorer = build_scorer(job.scorer, data_dir=experiment.data_dir)
    score_run(store, scorer, benchmarks=[job.benchmark], progress=progress)
    return True
