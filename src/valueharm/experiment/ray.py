"""Run an experiment's job plan on a Ray cluster: same config, same records as the local executor.

The only module of the package that imports ray (an optional extra: `pip install 'valueharm[ray]'`).

How the plan maps onto Ray:
- each TrainJob is one task (it loads the base: on a GPU cluster, one adapter per GPU at a time), writing its adapter
  to the shared directory through a temporary directory and a rename, so a killed worker leaves nothing that looks
  complete; Ray retries it (`max_retries`) when its worker dies;
- the pending GenerateJobs are split into `generate.groups` groups (default: as many as the cluster runs at once),
  keeping every job of one adapter in one group; each group is one streaming task that opens ONE backend for all its
  models and yields its records chunk by chunk. The driver starts a group once the training it needs is over
  (leaving out the models whose adapter failed, which fail with it). When its worker dies the driver starts it
  again (up to `max_retries` times) with the keys it already received, so the retry only makes what is missing;
- once generation is over, each scorer (one spec, across its benchmarks) gets the stored generations it has not
  scored, in batches shared among `score.tasks` streaming tasks; each loads the scorer once and scores one batch
  at a time, so an API scorer has at most `score.tasks` × its own `max_concurrency` requests in flight across the
  whole cluster — that bound is how API limits are shared. A task whose worker dies is started again by the
  driver for the batches not yet stored.

Results flow back to the driver, the only writer of the run store: generations as each chunk arrives, scores as
each batch returns. A job is marked done in the ledger only when every record it planned is stored without error;
a job whose task failed is marked failed and, like everything missing, done by the next run of the same command.

Adapters — the large artifacts — go to `<shared_dir>/adapters` (default: the run directory), which every node must
see at the same path; so must the data directory and a base model given as a local path. The driver checks that on
every node before any work. Connecting to an existing cluster ships the driver's valueharm source to the workers
(`runtime_env={"py_modules": [valueharm]}`), so both run the same code; the workers need valueharm's dependencies
installed (the same image as the driver). A `runtime_env` setting replaces that default.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from valueharm.errors import ValueharmError
from valueharm.experiment.config import RayResources, RaySettings, validated
from valueharm.experiment.jobs import generate_jobs, planned_records, train_jobs
from valueharm.experiment.plan import Experiment, GenerateJob, Job, ScoreJob, TrainJob

try:
    import ray
except ImportError:  # the optional extra is not installed
    ray = None

INSTALL_HINT = "the ray executor needs Ray: pip install 'valueharm[ray]'"


# ----------------------------------------------------------------------------------------------------- executor


class RayExecutor:
    """Runs the job plan as Ray tasks; the driver (this process) alone writes the run store.

    `address` None starts a local cluster for the run and shuts it down at the end (or uses the connection this
    process already has); an address (`auto` on a node of the cluster, or `host:6379`) connects and leaves the
    cluster running. Ray Client addresses (`ray://`) are refused: the driver streams generations and writes the
    store, so it belongs on a node of the cluster (log in to one, or `ray job submit -- valueharm run …`).
    `settings` is a plain dict in the shape of the config's `ray:` section (RaySettings); default: that section.
    """

    def __init__(self, address: str | None = None, settings: Mapping[str, Any] | None = None) -> None:
        if ray is None:
            raise ValueharmError(INSTALL_HINT)
        if address and address.startswith("ray://"):
            raise ValueharmError(
                f"--address {address}: Ray Client is not supported; run valueharm on a node of the cluster with "
                "--address auto (or submit it as a Ray job: ray job submit -- valueharm run …)"
            )
        self.address = address
        self.settings = None if settings is None else validated(RaySettings, settings, "ray")

    def run(self, experiment: Experiment, jobs: Sequence[Job]) -> None:
        from valueharm.store import RunStore

        settings = self.settings or experiment.config.ray
        with RunStore(experiment.store_path) as store:
            pending = [job for job in jobs if store.job_status(job.id) != "done"]
            if pending:  # a finished run starts no cluster
                with self._connected(experiment.config.progress, settings):
                    _Run(experiment, store, settings).execute(pending)

    @contextmanager
    def _connected(self, progress: bool, settings: RaySettings) -> Iterator[None]:
        if ray.is_initialized():
            yield
            return
        options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": progress}
        if self.address:
            import valueharm

            runtime_env = settings.runtime_env or {"py_modules": [valueharm]}
            ray.init(address=self.address, runtime_env=runtime_env, **options)
        else:
            local = settings.local
            ray.init(
                num_cpus=local.num_cpus, num_gpus=local.num_gpus, include_dashboard=False,
                object_store_memory=local.object_store_memory, runtime_env=settings.runtime_env, **options,
            )  # fmt: skip
        try:
            yield
        finally:
            ray.shutdown()  # stops a local cluster; only disconnects from an existing one


# ------------------------------------------------------------------------------------------------ remote work
# Module-level functions, so workers import them by name from the same valueharm as the driver.


def _train(experiment: Experiment, job: TrainJob) -> str:
    train_jobs(experiment, [job], progress=False)
    return job.id


_END = object()


def _generate(experiment: Experiment, jobs: Sequence[GenerateJob], done: set[str]) -> Iterator[Any]:
    """Stream the group's records in the chunks generate_jobs hands its sink (it runs in a thread to yield them)."""
    chunks: queue.Queue[Any] = queue.Queue()  # unbounded: a put never blocks, so the thread always ends

    def work() -> None:
        try:
            generate_jobs(experiment, jobs, done, chunks.put, progress=False)
            chunks.put(_END)
        except BaseException as error:  # handed to the caller below, raised in the task
            chunks.put(error)

    threading.Thread(target=work, daemon=True).start()
    while (item := chunks.get()) is not _END:
        if isinstance(item, BaseException):
            raise item
        yield item


def _score(spec: str, data_dir: Path, batches: Sequence[Sequence[Any]]) -> Iterator[list[Any]]:
    """Load the scorer once, then yield each batch's scores, checked one to one against it."""
    from valueharm.scoring.base import build_scorer
    from valueharm.scoring.run import checked_scores

    if not batches:  # a restart after the last batch came back: load nothing
        return
    scorer = build_scorer(spec, data_dir=data_dir)
    scorer.check()
    for batch in batches:
        yield checked_scores(scorer.score(batch), batch, scorer.id)


def _probe(path: str, token: str, needed: Sequence[str]) -> list[str]:
    """What this node cannot see: the shared directory (by a token the driver wrote), the data, a local base."""
    probe = Path(path)
    missing = [] if probe.is_file() and probe.read_text() == token else [str(probe.parent)]
    return missing + [p for p in needed if not Path(p).exists()]


# ------------------------------------------------------------------------------------------------------ the run


@dataclass
class _Stream:
    """A streaming task that the driver starts again, for what the store still lacks, when its worker dies."""

    submit: Callable[[], Any]  # starts the task for the work not yet stored; returns its ObjectRefGenerator
    write: Callable[[Any], None]  # stores one chunk
    end: Callable[[Exception | None], None]  # called once: None when the task finished, else why it failed
    attempts: int = 0


class _Run:
    """One execution of a plan: submits the work, and writes every result that comes back."""

    def __init__(self, experiment: Experiment, store: Any, settings: RaySettings) -> None:
        self.experiment, self.store, self.settings = experiment, store, settings
        self.worker_view = _for_workers(experiment, settings.shared_dir)
        self.gpus = ray.cluster_resources().get("GPU", 0) > 0
        self.waiting: dict[Any, Callable[[Any], None]] = {}  # ObjectRef or generator → what to do when ready
        self.failures: list[str] = []
        self.training: set[str] = set()  # train jobs not over yet
        self.untrained: set[str] = set()  # train jobs that failed
        self.held: list[tuple[str, list[GenerateJob], dict[str, list[str]]]] = []  # groups waiting for training
        self.generating = 0  # groups not over yet; scoring starts when none is
        self.scores: list[ScoreJob] = []
        self.bar = _Bars(None)
        self.spans: dict[str, list[float]] = {}  # stage → [first submit, last end (wall clock), jobs]

    def began(self, stage: str, jobs: int) -> None:
        span = self.spans.setdefault(stage, [time.time(), time.time(), 0])
        span[2] += jobs

    def ended(self, stage: str) -> None:
        self.spans[stage][1] = time.time()

    def execute(self, pending: Sequence[Job]) -> None:
        self.check_nodes()
        self.experiment_ref = ray.put(self.worker_view)
        with _progress(self.experiment.config.progress) as bars:
            self.bar = bars
            self.scores = [job for job in pending if isinstance(job, ScoreJob)]
            self.submit_training([job for job in pending if isinstance(job, TrainJob)])
            if generates := [job for job in pending if isinstance(job, GenerateJob)]:
                self.submit_generation(generates)  # scoring starts when its last group is over
            else:
                self.submit_scoring()
            while self.waiting:
                ready, _ = ray.wait(list(self.waiting), num_returns=1)
                self.waiting.pop(ready[0])(ready[0])
        for stage, (start, end, jobs) in self.spans.items():  # stages overlap here: each from its first submit
            self.store.add_stage_time(stage, start, end - start, int(jobs))
        if self.failures:
            raise ValueharmError(
                f"{len(self.failures)} job(s) failed; the rest is stored, and re-running the same command retries "
                f"them. First: {self.failures[0]}"
            )

    def check_nodes(self) -> None:
        """Every node must see the shared directory (and the data, and a local base) before hours of work start."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        root = self.worker_view.run_dir
        root.mkdir(parents=True, exist_ok=True)
        probe, token = root / f".ray-probe-{uuid.uuid4().hex}", uuid.uuid4().hex
        probe.write_text(token)
        needed = [str(self.worker_view.data_dir)]
        if Path(self.experiment.base).exists():
            needed.append(self.experiment.base)
        try:
            nodes = [node for node in ray.nodes() if node["Alive"]]
            remote = ray.remote(_probe)
            refs = [
                remote.options(
                    num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
                ).remote(str(probe), token, needed)
                for node in nodes
            ]
            missing = {node["NodeManagerAddress"]: found for node, found in zip(nodes, ray.get(refs), strict=True)}
        finally:
            probe.unlink()
        problems = [f"node {node} cannot see {', '.join(paths)}" for node, paths in missing.items() if paths]
        if problems:
            raise ValueharmError(
                "; ".join(problems) + ": put the run directory (or ray.shared_dir), the data directory and a local "
                "base model on storage every node mounts at the same path"
            )

    def options(self, resources: RayResources, **extra: Any) -> dict[str, Any]:
        gpus = resources.num_gpus if resources.num_gpus is not None else int(self.gpus)
        memory = {"memory": resources.memory} if resources.memory else {}
        return {"num_cpus": resources.num_cpus, "num_gpus": gpus, **memory, **extra}

    def stream(self, work: _Stream) -> None:
        work.attempts += 1
        self.waiting[work.submit()] = lambda generator: self.received(work, generator)

    def received(self, work: _Stream, generator: Any) -> None:
        """The next chunk of a streaming task, written at once; or its end."""
        try:
            chunk = ray.get(next(generator))
        except StopIteration:
            work.end(None)
            return
        except ray.exceptions.RayError as error:
            if _retryable(error) and work.attempts <= self.settings.max_retries:
                self.stream(work)
            else:
                work.end(error)
            return
        work.write(chunk)
        self.waiting[generator] = lambda generator: self.received(work, generator)

    def fail(self, job: Job, kind: str, error: Exception | str) -> None:
        reason = error if isinstance(error, str) else _reason(error)
        self.failures.append(f"{job.id}: {reason}")
        self.store.set_job(job.id, kind, "failed", {"error": reason})

    # ------------------------------------------------------------------------------------------------- training

    def submit_training(self, jobs: Sequence[TrainJob]) -> None:
        """One task per adapter, retried by Ray when its worker dies."""
        remote = ray.remote(_train)
        if jobs:
            self.began("train", len(jobs))
        self.bar.add("training", len(jobs))
        for job in jobs:
            ref = remote.options(
                **self.options(self.settings.train, max_retries=self.settings.max_retries, name=job.id)
            ).remote(self.experiment_ref, job)
            self.training.add(job.id)
            self.waiting[ref] = lambda ref, job=job: self.trained(job, ref)

    def trained(self, job: TrainJob, ref: Any) -> None:
        self.training.discard(job.id)
        try:
            ray.get(ref)
        except ray.exceptions.RayError as error:
            self.untrained.add(job.id)
            self.fail(job, "train", error)
        else:
            self.store.set_job(job.id, "train", "done")
            self.bar.advance("training", 1)
        self.ended("train")
        self.release()

    # ----------------------------------------------------------------------------------------------- generation

    def submit_generation(self, jobs: Sequence[GenerateJob]) -> None:
        planned = planned_records(self.experiment, jobs)
        keys = {job_id: [record.key for record in records] for job_id, records in planned.items()}
        stored = self.store.done_generation_keys()
        self.bar.add("generating", sum(key not in stored for job_keys in keys.values() for key in job_keys))
        groups = split_groups(self.experiment, jobs, keys, self.group_count())
        self.held = [(f"generate:{index + 1}/{len(groups)}", group, keys) for index, group in enumerate(groups)]
        self.generating = len(groups)
        self.began("generate", len(jobs))
        self.release()

    def release(self) -> None:
        """Start each held group whose training is over — without the jobs whose adapter failed to train, so one
        failed adapter does not hold up the other models of its group."""
        for held in [held for held in self.held if not {n for job in held[1] for n in job.needs} & self.training]:
            self.held.remove(held)
            name, group, keys = held
            for job in group:
                if failed := sorted(set(job.needs) & self.untrained):
                    self.fail(job, "generate", f"needs {', '.join(failed)}, which failed")
            ready = [job for job in group if not set(job.needs) & self.untrained]
            if ready:
                self.stream(self.generation(name, ready, keys))
            else:
                self.group_over()

    def group_over(self) -> None:
        self.ended("generate")
        self.generating -= 1
        if not self.generating:
            self.submit_scoring()

    def group_count(self) -> int:
        if self.settings.generate.groups:
            return self.settings.generate.groups
        resources, options = ray.cluster_resources(), self.options(self.settings.generate)
        if options["num_gpus"]:
            return max(1, int(resources.get("GPU", 0) // options["num_gpus"]))
        return max(1, int(resources.get("CPU", 1) // max(options["num_cpus"], 1e-9)))

    def generation(self, name: str, group: list[GenerateJob], keys: Mapping[str, list[str]]) -> _Stream:
        """One group's streaming task: ONE backend for all its models."""
        remote = ray.remote(_generate).options(**self.options(self.settings.generate, max_retries=0, name=name))
        group_keys = [key for job in group for key in keys[job.id]]

        def submit() -> Any:
            done = self.store.done_generation_keys(group_keys)  # a restart makes only what is missing
            return remote.remote(self.experiment_ref, group, done)

        def write(records: list[Any]) -> None:
            self.store.add_generations(records)
            self.bar.advance("generating", sum(record.error is None for record in records))

        def end(error: Exception | None) -> None:
            """Each job is done only if every record it planned is stored without error."""
            stored = self.store.done_generation_keys(group_keys)
            for job in group:
                if error is not None:
                    self.fail(job, "generate", error)
                elif all(key in stored for key in keys[job.id]):
                    self.store.set_job(job.id, "generate", "done", {"attempts": stream.attempts})
                else:
                    self.store.set_job(job.id, "generate", "failed", {"error": "requests failed; see the records"})
            self.group_over()

        stream = _Stream(submit, write, end)
        return stream

    # ---------------------------------------------------------------------------------------------------- scoring

    def submit_scoring(self) -> None:
        """Per scorer (across its benchmarks), what is stored and not yet scored, shared by its `tasks` tasks."""
        from valueharm.scoring.base import build_scorer

        size = self.settings.score.batch_size
        if self.scores:
            self.began("score", len(self.scores))
        for spec in dict.fromkeys(job.scorer for job in self.scores):
            jobs = [job for job in self.scores if job.scorer == spec]
            scorer_id = build_scorer(spec, data_dir=self.experiment.data_dir).id
            scored = self.store.scored_keys(scorer_id)
            todo = [
                record
                for job in jobs
                for record in self.store.generations(benchmark=job.benchmark, include_failed=False)
                if record.key not in scored
            ]
            self.bar.add(f"scoring {spec}", len(todo))
            streams = self.scoring(spec, scorer_id, jobs, [todo[i : i + size] for i in range(0, len(todo), size)])
            for stream in streams:
                self.stream(stream)
            if not streams:
                self.scored(jobs, None)

    def scoring(self, spec: str, scorer_id: str, jobs: list[ScoreJob], batches: list[list[Any]]) -> list[_Stream]:
        """A scorer's streaming tasks, each loading it once for its share of the batches; none if nothing is left."""
        count = running = min(self.settings.score.tasks, len(batches))
        failures: list[str] = []

        def stream(index: int) -> _Stream:
            options = self.options(self.settings.score, max_retries=0, name=f"score:{spec}:{index + 1}/{count}")
            share = batches[index::count]

            def submit() -> Any:
                scored = self.store.scored_keys(scorer_id)  # a restart scores only what is missing
                missing = [batch for batch in share if batch[0].key not in scored]  # batches are stored whole
                return ray.remote(_score).options(**options).remote(spec, self.worker_view.data_dir, missing)

            return _Stream(submit, write, end)

        def write(scores: list[Any]) -> None:
            self.store.add_scores(scores)
            self.bar.advance(f"scoring {spec}", len(scores))

        def end(error: Exception | None) -> None:
            nonlocal running
            running -= 1
            failures.extend([_reason(error)] if error else [])
            if not running:
                self.scored(jobs, failures[0] if failures else None)

        return [stream(index) for index in range(count)]

    def scored(self, jobs: Sequence[ScoreJob], failed: str | None) -> None:
        self.ended("score")
        for job in jobs:
            if failed:
                self.fail(job, "score", failed)
            else:
                self.store.set_job(job.id, "score", "done")


def split_groups(
    experiment: Experiment, jobs: Sequence[GenerateJob], keys: Mapping[str, Sequence[str]], count: int
) -> list[list[GenerateJob]]:
    """At most `count` groups of similar size (in records), every job of one adapter in the same group — so each
    adapter loads in one worker only. Largest units first, each to the lightest group; ties keep plan order."""
    units: dict[str, list[GenerateJob]] = {}
    for job in jobs:
        units.setdefault(experiment.specs[job.model_key].name, []).append(job)
    groups: list[list[GenerateJob]] = [[] for _ in range(min(count, len(units)))]
    loads = [0] * len(groups)
    for unit in sorted(units.values(), key=lambda unit: -sum(len(keys[job.id]) for job in unit)):
        lightest = loads.index(min(loads))
        groups[lightest] += unit
        loads[lightest] += sum(len(keys[job.id]) for job in unit)
    order = {job.id: index for index, job in enumerate(jobs)}
    return [sorted(group, key=lambda job: order[job.id]) for group in groups if group]


def _for_workers(experiment: Experiment, shared_dir: Path | None) -> Experiment:
    """The experiment as workers see it: absolute paths (a worker may start anywhere), adapters in the shared dir
    (the config's `ray.shared_dir` already puts them there; an executor given another one moves them)."""
    root = (shared_dir or experiment.run_dir).resolve()
    adapters = root / "adapters" if shared_dir else experiment.adapters_dir.resolve()
    specs = {
        key: spec if spec.adapter_path is None else replace(
            spec, adapter_path=adapters / Path(spec.adapter_path).relative_to(experiment.adapters_dir)
        )
        for key, spec in experiment.specs.items()
    }  # fmt: skip
    return replace(experiment, run_dir=root, data_dir=experiment.data_dir.resolve(), specs=specs,
                   adapters_dir=adapters)  # fmt: skip


def _retryable(error: Exception) -> bool:
    """A worker, node or object lost — not an exception raised by our code (that would fail again)."""
    return isinstance(error, ray.exceptions.RayError) and not isinstance(error, ray.exceptions.RayTaskError)


def _reason(error: Exception) -> str:
    """One line: the original exception of a failed task, or Ray's own first line."""
    cause = getattr(error, "cause", None)
    if isinstance(error, ray.exceptions.RayTaskError) and cause is not None:
        return str(cause) if isinstance(cause, ValueharmError) else f"{type(cause).__name__}: {cause}"
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


class _Bars:
    """Driver-side progress: adapters trained, records generated, records scored per scorer."""

    def __init__(self, progress: Any) -> None:
        self.progress, self.tasks = progress, {}

    def add(self, name: str, total: int) -> None:
        if self.progress is not None and total:
            self.tasks[name] = self.progress.add_task(name, total=total)

    def advance(self, name: str, amount: int) -> None:
        if self.progress is not None and name in self.tasks:
            self.progress.advance(self.tasks[name], amount)


@contextmanager
def _progress(enabled: bool) -> Iterator[_Bars]:
    if not enabled:
        yield _Bars(None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        yield _Bars(progress)
