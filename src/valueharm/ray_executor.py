"""Run an experiment's job plan on a Ray cluster: same config, same records as the local executor.

The only module of the package that imports ray (an optional extra: `pip install 'valueharm[ray]'`).

How the plan maps onto Ray:
- each TrainJob is one task (it loads the base: on a GPU cluster, one adapter per GPU at a time), writing its adapter
  to the shared directory through a temporary directory and a rename, so a killed worker leaves nothing that looks
  complete; Ray retries it (`max_retries`) when its worker dies;
- the pending GenerateJobs are split into `generate.groups` groups (default: as many as the cluster runs at once),
  keeping every job of one adapter in one group; each group is one streaming task that opens ONE backend for all its
  models and yields its records chunk by chunk. It takes the ObjectRefs of the train tasks it needs as arguments, so
  Ray starts it once they are done. When its worker dies the driver starts it again with the keys it already
  received, so the retry only makes what is missing;
- each scorer (one spec, across its benchmarks) is served by `score.actors` actors that load it once; the driver
  sends them batches of stored generations not yet scored. An actor scores one batch at a time, so an API scorer
  has at most `score.actors` × its own `max_concurrency` requests in flight across the whole cluster — that bound
  is how API limits are shared. Actors are restarted and their batch retried when their worker dies.

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
import os
import queue
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from valueharm.errors import ValueharmError
from valueharm.experiment import (
    Experiment,
    GenerateJob,
    Job,
    ScoreJob,
    TrainJob,
    generate_jobs,
    planned_records,
    train_jobs,
)

try:
    import ray
except ImportError:  # the optional extra is not installed
    ray = None

INSTALL_HINT = "the ray executor needs Ray: pip install 'valueharm[ray]'"
LOCAL_OBJECT_STORE = 256 * 2**20  # bytes; records and the experiment are small, so a local cluster needs little


# ----------------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Resources:
    """What one task or actor asks Ray for. `num_gpus` None: 1 when the cluster has GPUs, else 0."""

    num_cpus: float = 1
    num_gpus: float | None = None
    memory: int | None = None  # bytes reserved in Ray's scheduler (not a hard limit)


@dataclass(frozen=True)
class GenerateSettings(Resources):
    groups: int | None = None  # generation tasks; default: as many as the cluster can run at once


@dataclass(frozen=True)
class ScoreSettings(Resources):
    num_gpus: float | None = 0
    actors: int = 1  # per scorer: with its own max_concurrency, the bound on API requests in flight cluster-wide
    batch_size: int = 32


@dataclass(frozen=True)
class LocalClusterSettings:
    """The cluster started for one run when no address is given."""

    num_cpus: int | None = None  # default: every CPU of this machine
    num_gpus: int | None = None  # default: Ray's detection
    object_store_memory: int = LOCAL_OBJECT_STORE


@dataclass(frozen=True)
class RaySettings:
    """Everything the Ray executor can be told, from a plain dict (the shape of a config's executor section)."""

    train: Resources = field(default_factory=Resources)
    generate: GenerateSettings = field(default_factory=GenerateSettings)
    score: ScoreSettings = field(default_factory=ScoreSettings)
    max_retries: int = 2  # per task or actor, when its worker or node dies
    shared_dir: Path | None = None  # where adapters go, seen by every node; default: the run directory
    runtime_env: dict[str, Any] | None = None  # default: ship valueharm's source when connecting to a cluster
    local: LocalClusterSettings = field(default_factory=LocalClusterSettings)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> RaySettings:
        settings = _build(cls, values or {}, "ray")
        for where, resources in (("train", settings.train), ("generate", settings.generate), ("score", settings.score)):
            _check_resources(where, resources)
        if settings.max_retries < 0:
            raise ValueharmError(f"ray.max_retries: must be ≥ 0, got {settings.max_retries}")
        if settings.generate.groups is not None and settings.generate.groups < 1:
            raise ValueharmError(f"ray.generate.groups: must be ≥ 1, got {settings.generate.groups}")
        if settings.score.actors < 1 or settings.score.batch_size < 1:
            raise ValueharmError("ray.score: actors and batch_size must be ≥ 1")
        return settings


_NESTED = {"train": Resources, "generate": GenerateSettings, "score": ScoreSettings, "local": LocalClusterSettings}
_BYTES = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def _build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    """A settings dataclass from a mapping: unknown keys are an error naming the key and the known ones."""
    if not isinstance(values, Mapping):
        raise ValueharmError(f"{where}: expected a mapping, got {values!r}")
    known = {f.name for f in fields(cls)}
    for key in values:
        if key not in known:
            raise ValueharmError(f"{where}.{key}: unknown key; known: {', '.join(sorted(known))}")
    typed: dict[str, Any] = {}
    for key, value in values.items():
        if key in _NESTED and cls is RaySettings:
            typed[key] = _build(_NESTED[key], value, f"{where}.{key}")
        elif key in {"memory", "object_store_memory"} and value is not None:
            typed[key] = _bytes(value, f"{where}.{key}")
        elif key == "shared_dir" and value is not None:
            typed[key] = Path(value).expanduser()
        else:
            typed[key] = value
    return cls(**typed)


def _bytes(value: Any, where: str) -> int:
    """Bytes from an int or a string such as `16GiB` or `512MB`."""
    if isinstance(value, int) and value > 0:
        return value
    text = str(value).strip().lower().replace(" ", "")
    number = text.rstrip("kmgib")
    unit = text[len(number) :]
    try:
        amount = float(number) * _BYTES[unit]
    except (ValueError, KeyError):
        raise ValueharmError(f"{where}: expected bytes (e.g. 16GiB, 512MB), got {value!r}") from None
    if amount <= 0:
        raise ValueharmError(f"{where}: must be positive, got {value!r}")
    return int(amount)


def _check_resources(where: str, resources: Resources) -> None:
    if resources.num_cpus < 0 or (resources.num_gpus or 0) < 0:
        raise ValueharmError(f"ray.{where}: num_cpus and num_gpus must be ≥ 0")


# ----------------------------------------------------------------------------------------------------- executor


class RayExecutor:
    """Runs the job plan as Ray tasks and actors; the driver (this process) alone writes the run store.

    `address` None starts a local cluster for the run and shuts it down at the end (or uses the connection this
    process already has); an address (`auto`, `ray://host:10001`, `host:6379`) connects and leaves the cluster
    running. `settings` is a plain dict, see RaySettings.
    """

    def __init__(self, address: str | None = None, settings: Mapping[str, Any] | None = None) -> None:
        if ray is None:
            raise ValueharmError(INSTALL_HINT)
        self.address = address
        self.settings = RaySettings.from_dict(settings)

    def run(self, experiment: Experiment, jobs: Sequence[Job]) -> None:
        from valueharm.store import RunStore

        with RunStore(experiment.store_path) as store:
            pending = [job for job in jobs if store.job_status(job.id) != "done"]
            if pending:  # a finished run starts no cluster
                with self._connected(experiment.config.progress):
                    _Run(experiment, store, self.settings).execute(pending)

    @contextmanager
    def _connected(self, progress: bool) -> Iterator[None]:
        if ray.is_initialized():
            yield
            return
        options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": progress}
        if self.address:
            import valueharm

            runtime_env = self.settings.runtime_env or {"py_modules": [valueharm]}
            ray.init(address=self.address, runtime_env=runtime_env, **options)
        else:
            local = self.settings.local
            ray.init(
                num_cpus=local.num_cpus or os.cpu_count(), num_gpus=local.num_gpus, include_dashboard=False,
                object_store_memory=local.object_store_memory, runtime_env=self.settings.runtime_env, **options,
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


def _generate(experiment: Experiment, jobs: Sequence[GenerateJob], done: set[str], *_trained: str) -> Iterator[Any]:
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


class _Scorer:
    """One scorer, built and checked once per actor (a model loads once), scoring batches."""

    def __init__(self, spec: str, data_dir: Path) -> None:
        self.spec, self.data_dir = spec, data_dir
        self.scorer: Any = None

    def score(self, batch: Sequence[Any]) -> list[Any]:
        if self.scorer is None:  # here rather than in __init__, so a failed check reaches the driver as itself
            from valueharm.scoring.base import build_scorer

            self.scorer = build_scorer(self.spec, data_dir=self.data_dir)
            self.scorer.check()
        return self.scorer.score(batch)


def _probe(path: str, token: str, needed: Sequence[str]) -> list[str]:
    """What this node cannot see: the shared directory (by a token the driver wrote), the data, a local base."""
    probe = Path(path)
    missing = [] if probe.is_file() and probe.read_text() == token else [str(probe.parent)]
    return missing + [p for p in needed if not Path(p).exists()]


# ------------------------------------------------------------------------------------------------------ the run


@dataclass
class _Group:
    name: str  # the task's name in Ray (dashboard, logs, process title)
    jobs: list[GenerateJob]
    keys: dict[str, list[str]]  # job id → the keys of the records it plans
    needs: list[Any]  # ObjectRefs of the train tasks it waits for
    attempts: int = 0


@dataclass
class _Pool:
    """The actors of one scorer and the batches left for them."""

    spec: str
    scorer_id: str
    jobs: list[ScoreJob]
    batches: list[list[Any]]
    actors: list[Any] = field(default_factory=list)
    failed: str | None = None


class _Run:
    """One execution of a plan: submits the work, and writes every result that comes back."""

    def __init__(self, experiment: Experiment, store: Any, settings: RaySettings) -> None:
        self.experiment, self.store, self.settings = experiment, store, settings
        self.worker_view = _for_workers(experiment, settings.shared_dir)
        self.gpus = ray.cluster_resources().get("GPU", 0) > 0
        self.waiting: dict[Any, Callable[[Any], None]] = {}  # ObjectRef or generator → what to do when ready
        self.failures: list[str] = []
        self.generating = 0  # groups still running; scoring starts when none is
        self.scores: list[ScoreJob] = []
        self.bar = _Bars(None)

    def execute(self, pending: Sequence[Job]) -> None:
        self.check_nodes()
        self.experiment_ref = ray.put(self.worker_view)
        with _progress(self.experiment.config.progress) as bars:
            self.bar = bars
            trained = self.submit_training([job for job in pending if isinstance(job, TrainJob)])
            self.submit_generation([job for job in pending if isinstance(job, GenerateJob)], trained)
            self.scores = [job for job in pending if isinstance(job, ScoreJob)]
            if not self.generating:
                self.submit_scoring()
            while self.waiting:
                ready, _ = ray.wait(list(self.waiting), num_returns=1)
                self.waiting.pop(ready[0])(ready[0])
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

    def options(self, resources: Resources, **extra: Any) -> dict[str, Any]:
        gpus = resources.num_gpus if resources.num_gpus is not None else int(self.gpus)
        memory = {"memory": resources.memory} if resources.memory else {}
        return {"num_cpus": resources.num_cpus, "num_gpus": gpus, **memory, **extra}

    # ------------------------------------------------------------------------------------------------- training

    def submit_training(self, jobs: Sequence[TrainJob]) -> dict[str, Any]:
        """One task per adapter; returns job id → its ObjectRef, for the generation groups to wait on."""
        remote = ray.remote(_train)
        refs = {}
        self.bar.add("training", len(jobs))
        for job in jobs:
            ref = remote.options(
                **self.options(self.settings.train, max_retries=self.settings.max_retries, name=job.id)
            ).remote(self.experiment_ref, job)
            refs[job.id] = ref
            self.waiting[ref] = lambda ref, job=job: self.trained(job, ref)
        return refs

    def trained(self, job: TrainJob, ref: Any) -> None:
        try:
            ray.get(ref)
        except ray.exceptions.RayError as error:
            self.fail(job, "train", error)
            return
        self.store.set_job(job.id, "train", "done")
        self.bar.advance("training", 1)

    # ----------------------------------------------------------------------------------------------- generation

    def submit_generation(self, jobs: Sequence[GenerateJob], trained: Mapping[str, Any]) -> None:
        if not jobs:
            return
        planned = planned_records(self.experiment, jobs)
        keys = {job_id: [record.key for record in records] for job_id, records in planned.items()}
        stored = self.store.done_generation_keys()
        self.bar.add("generating", sum(key not in stored for job_keys in keys.values() for key in job_keys))
        groups = split_groups(self.experiment, jobs, keys, self.group_count())
        for index, group_jobs in enumerate(groups):
            needs = list(dict.fromkeys(trained[need] for job in group_jobs for need in job.needs if need in trained))
            name = f"generate:{index + 1}/{len(groups)}"
            group = _Group(name, group_jobs, {job.id: keys[job.id] for job in group_jobs}, needs)
            self.generating += 1
            self.start_group(group, stored)

    def group_count(self) -> int:
        if self.settings.generate.groups:
            return self.settings.generate.groups
        resources, options = ray.cluster_resources(), self.options(self.settings.generate)
        if options["num_gpus"]:
            return max(1, int(resources.get("GPU", 0) // options["num_gpus"]))
        return max(1, int(resources.get("CPU", 1) // max(options["num_cpus"], 1e-9)))

    def start_group(self, group: _Group, stored: set[str]) -> None:
        group.attempts += 1
        done = {key for job_keys in group.keys.values() for key in job_keys if key in stored}
        stream = (
            ray.remote(_generate)
            .options(**self.options(self.settings.generate, max_retries=0, name=group.name))
            .remote(self.experiment_ref, group.jobs, done, *group.needs)
        )
        self.waiting[stream] = lambda stream: self.received(group, stream)

    def received(self, group: _Group, stream: Any) -> None:
        """The next chunk of a group, written at once; or the group's end, when its jobs are judged."""
        try:
            records = ray.get(next(stream))
        except StopIteration:
            self.finish_group(group, None)
            return
        except ray.exceptions.RayError as error:
            if _retryable(error) and group.attempts <= self.settings.max_retries:
                self.start_group(group, self.store.done_generation_keys())  # only what is still missing
            else:
                self.finish_group(group, error)
            return
        self.store.add_generations(records)
        self.bar.advance("generating", sum(record.error is None for record in records))
        self.waiting[stream] = lambda stream: self.received(group, stream)

    def finish_group(self, group: _Group, error: Exception | None) -> None:
        stored = self.store.done_generation_keys([key for keys in group.keys.values() for key in keys])
        for job in group.jobs:
            if error is not None:
                self.fail(job, "generate", error)
            else:
                complete = all(key in stored for key in group.keys[job.id])
                self.store.set_job(job.id, "generate", "done" if complete else "failed", {"attempts": group.attempts})
        self.generating -= 1
        if not self.generating:
            self.submit_scoring()

    # ---------------------------------------------------------------------------------------------------- scoring

    def submit_scoring(self) -> None:
        """Per scorer, what its benchmarks have stored and it has not scored, in batches to its actors."""
        from valueharm.scoring.base import build_scorer

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
            size = self.settings.score.batch_size
            pool = _Pool(spec, scorer_id, jobs, [todo[i : i + size] for i in range(0, len(todo), size)])
            self.bar.add("scoring", len(todo))
            actor_class = ray.remote(_Scorer).options(
                **self.options(self.settings.score, max_restarts=self.settings.max_retries,
                               max_task_retries=self.settings.max_retries)
            )  # fmt: skip
            for _ in range(min(self.settings.score.actors, len(pool.batches))):
                pool.actors.append(actor_class.remote(spec, self.worker_view.data_dir))
                self.next_batch(pool, pool.actors[-1])
            if not pool.batches and not pool.actors:
                self.finish_pool(pool)

    def next_batch(self, pool: _Pool, actor: Any) -> None:
        if not pool.batches or pool.failed:
            ray.kill(actor)  # frees its resources for the other scorers
            pool.actors.remove(actor)
            if not pool.actors:
                self.finish_pool(pool)
            return
        batch = pool.batches.pop(0)
        ref = actor.score.remote(batch)
        self.waiting[ref] = lambda ref: self.scored(pool, actor, batch, ref)

    def scored(self, pool: _Pool, actor: Any, batch: list[Any], ref: Any) -> None:
        from valueharm.scoring.run import _checked

        try:
            scores = _checked(ray.get(ref), batch, pool.scorer_id)
        except (ray.exceptions.RayError, ValueharmError) as error:
            pool.failed = pool.failed or _reason(error)
        else:
            self.store.add_scores(scores)
            self.bar.advance("scoring", len(batch))
        self.next_batch(pool, actor)

    def finish_pool(self, pool: _Pool) -> None:
        for job in pool.jobs:
            if pool.failed:
                self.failures.append(f"{job.id}: {pool.failed}")
                self.store.set_job(job.id, "score", "failed", {"error": pool.failed})
            else:
                self.store.set_job(job.id, "score", "done")

    def fail(self, job: Job, kind: str, error: Exception) -> None:
        reason = _reason(error)
        self.failures.append(f"{job.id}: {reason}")
        self.store.set_job(job.id, kind, "failed", {"error": reason})


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
    """The experiment as workers see it: absolute paths (a worker may start anywhere), adapters in the shared dir."""
    root = (shared_dir or experiment.run_dir).resolve()
    adapters = experiment.adapters_dir
    specs = {
        key: spec if spec.adapter_path is None else replace(
            spec, adapter_path=root / "adapters" / Path(spec.adapter_path).relative_to(adapters)
        )
        for key, spec in experiment.specs.items()
    }  # fmt: skip
    return replace(experiment, run_dir=root, data_dir=experiment.data_dir.resolve(), specs=specs)


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
    """Driver-side progress: adapters trained, records generated, records scored."""

    def __init__(self, progress: Any) -> None:
        self.progress, self.tasks = progress, {}

    def add(self, name: str, total: int) -> None:
        if self.progress is not None and total:
            if name in self.tasks:
                self.progress.update(self.tasks[name], total=self.progress.tasks[self.tasks[name]].total + total)
            else:
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
