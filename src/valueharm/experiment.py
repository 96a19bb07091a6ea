"""One YAML file → a plan of jobs → a resumable run: train → generate → score → metrics → analysis → report.

The config is validated whole before any work (unknown keys, unknown names, scorers that do not apply to their
benchmark), with the YAML path of each problem. Jobs are plain serialisable units — train one adapter, generate one
(model, benchmark) slice, score one (benchmark, scorer) slice — recorded in the run's job ledger as they finish, so
the same command resumes after any interruption. An executor runs them; the local one is the default.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from valueharm import paths
from valueharm.errors import ValueharmError
from valueharm.yamlfile import read_yaml

if TYPE_CHECKING:
    from valueharm.training import TrainSettings  # imports torch: only where training runs

TINY_PREFIX = "tiny:"  # `base_model: tiny:demo` is the built-in offline model
SURVEY = "value-survey"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProfilesConfig(_Strict):
    names: list[str] = Field(default_factory=list, description="Profiles by name.")
    sets: list[str] = Field(default_factory=list, description="Named profile sets, e.g. vim154.")
    files: list[Path] = Field(default_factory=list, description="Custom profile files (YAML/CSV); all are used.")


class StepsConfig(_Strict):
    """How a stage trains; unset fields take the published defaults."""

    epochs: int | None = Field(None, ge=1)
    learning_rate: float | None = Field(None, gt=0)
    batch_size: int | None = Field(None, ge=1)
    gradient_accumulation: int | None = Field(None, ge=1)
    max_length: int | None = Field(None, ge=8)


class StageConfig(StepsConfig):
    """Training of one adapter kind."""

    limit: int | None = Field(None, ge=1, description="At most N examples per split and stage (small runs).")
    seed: int = 42


class VimStagesConfig(StageConfig):
    """Both VIM stages share these settings; `stage1` / `stage2` override single ones for one stage."""

    stage1: StepsConfig = StepsConfig()
    stage2: StepsConfig = StepsConfig()


class LoraConfigModel(_Strict):
    r: int = Field(8, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])


class TrainingConfig(_Strict):
    vim: VimStagesConfig = VimStagesConfig()
    benign: StageConfig = StageConfig()
    lora: LoraConfigModel = LoraConfigModel()
    threshold: float = Field(3.0, description="VIM stage 1: argument score ≥ threshold means 'would say'.")


class BenchmarkConfig(_Strict):
    limit: int | None = Field(None, ge=1, description="First N items (default: the published limit).")
    per_category: int | None = Field(None, ge=1, description="First N items of each category.")
    samples: int | None = Field(None, ge=1)
    max_new_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    options: dict[str, Any] = Field(default_factory=dict, description="Loader options, e.g. HolisticBiasR filters.")
    scorers: list[str] = Field(default_factory=list, description="Scorer specs NAME[:key=value,…].")


class GenerationConfig(_Strict):
    backend: str = "hf"
    options: dict[str, Any] = Field(default_factory=dict, description="Backend options, e.g. batch_size, base_url.")
    seed: int = 0


class MitigationConfig(_Strict):
    conditions: list[Literal["safety", "value", "dual"]] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list, description="Model keys to mitigate (default: every aligned one).")
    benchmarks: list[str] = Field(default_factory=list, description="Default: every benchmark of the experiment.")
    set_aside: list[str] = Field(default_factory=list, description="Values the value instruction names.")


class AlignmentCheckConfig(_Strict):
    enabled: bool = True
    per_value: int = Field(30, ge=1, description="Held-out survey questions per value.")
    samples: int = Field(1, ge=1, description="Answers per question; each value's measured score is their mean.")
    temperature: float = Field(
        0.0, ge=0, description="0 reads the most likely answer; 1 samples the model's own answer distribution."
    )


class AnalysisConfig(_Strict):
    alignment_check: AlignmentCheckConfig = AlignmentCheckConfig()
    alpha: float = Field(0.05, gt=0, lt=1)
    harm_metrics: dict[str, str] = Field(default_factory=dict, description="Benchmark → metric to correlate.")
    scores_from: Literal["target", "measured"] = "target"
    hypotheses_file: Path | None = None
    regression: bool = False


class MetricsConfig(_Strict):
    n_boot: int = Field(1000, ge=10)
    seed: int = 0


class ExperimentConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    base_model: str = Field(description="A local path, a hub id, or tiny:demo / tiny:test.")
    trust_remote_code: bool = False
    data_dir: Path | None = None
    profiles: ProfilesConfig = ProfilesConfig()
    methods: list[Literal["vanilla", "vim", "icl", "benign"]] = Field(min_length=1)
    benign_datasets: list[str] = Field(default_factory=list)
    training: TrainingConfig = TrainingConfig()
    benchmarks: dict[str, BenchmarkConfig] = Field(min_length=1)
    generation: GenerationConfig = GenerationConfig()
    mitigation: MitigationConfig = MitigationConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    metrics: MetricsConfig = MetricsConfig()
    template_dir: Path | None = None
    ray: dict[str, Any] = Field(
        default_factory=dict,
        description="Ray executor settings (valueharm.ray_executor.RaySettings): train/generate/score resources "
        "(num_gpus, num_cpus, memory), max_retries, shared_dir. They change where work runs, not its results.",
    )
    progress: bool = True

    @field_validator("methods")
    @classmethod
    def _unique_methods(cls, methods: list[str]) -> list[str]:
        if len(set(methods)) != len(methods):
            raise ValueError("each method once")
        return methods


def builtin_config(name: str) -> dict[str, Any]:
    """A config shipped with the package (`demo`, `smoke`) as a plain mapping, to run or to adapt."""
    from importlib import resources

    file = resources.files("valueharm") / "configs" / f"{name}.yaml"
    if not file.is_file():
        raise ValueharmError(f"no built-in config {name!r}")
    return yaml.safe_load(file.read_text(encoding="utf-8"))


def load_config(path: str | Path) -> ExperimentConfig:
    """Parse and validate the YAML; each problem is reported with its YAML path."""
    path = Path(path)
    document = read_yaml(path, "experiment")
    if not isinstance(document, dict):
        raise ValueharmError(f"{path}: expected a mapping of settings at the top level")
    try:
        config = ExperimentConfig.model_validate(document)
    except ValidationError as err:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {_message(e)}" for e in err.errors()]
        raise ValueharmError(f"{path}: " + "; ".join(problems)) from None
    base = path.parent
    return config.model_copy(
        update={
            "profiles": config.profiles.model_copy(
                update={"files": [_relative(base, f) for f in config.profiles.files]}
            ),
            "template_dir": _relative(base, config.template_dir) if config.template_dir else None,
            "data_dir": _relative(base, config.data_dir) if config.data_dir else None,
            "analysis": config.analysis.model_copy(
                update={"hypotheses_file": _relative(base, config.analysis.hypotheses_file)}
                if config.analysis.hypotheses_file
                else {}
            ),
        }
    )


def _message(error: dict[str, Any]) -> str:
    return "unknown key" if error["type"] == "extra_forbidden" else error["msg"]


def _relative(base: Path, path: Path) -> Path:
    """Paths in a config are relative to the config file."""
    return path if path.is_absolute() else (base / path).resolve()


# ---------------------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class TrainJob:
    kind: Literal["vim", "benign"]
    name: str  # profile or benign dataset

    @property
    def id(self) -> str:
        return f"train:{self.kind}/{self.name}"


@dataclass(frozen=True)
class GenerateJob:
    model_key: str
    benchmark: str
    needs: tuple[str, ...] = ()  # train jobs it waits for

    @property
    def id(self) -> str:
        return f"generate:{self.model_key}:{self.benchmark}"


@dataclass(frozen=True)
class ScoreJob:
    benchmark: str
    scorer: str  # the spec as written in the config

    @property
    def id(self) -> str:
        return f"score:{self.benchmark}:{self.scorer}"


Job = TrainJob | GenerateJob | ScoreJob


@dataclass
class Experiment:
    """A validated config resolved against the data: profiles, models, benchmarks, scorers — ready to plan."""

    config: ExperimentConfig
    run_dir: Path
    data_dir: Path
    base: str  # resolved base model path or hub id
    profiles: dict[str, Any]
    specs: dict[str, Any]  # model_key → ModelSpec
    adapters_dir: Path  # where adapters are trained to and loaded from (`adapters_root`)
    benchmark_items: dict[str, list[Any]] = field(default_factory=dict)
    templates: Any = None

    @property
    def store_path(self) -> Path:
        return self.run_dir / "results.sqlite"

    @property
    def report_path(self) -> Path:
        return self.run_dir / "report" / "index.html"

    def benchmark_config(self, name: str) -> BenchmarkConfig:
        """A benchmark's settings; the alignment check's survey takes its sampling from `analysis.alignment_check`."""
        if name in self.config.benchmarks:
            return self.config.benchmarks[name]
        if name != SURVEY:
            return BenchmarkConfig()
        check = self.config.analysis.alignment_check
        return BenchmarkConfig(samples=check.samples, temperature=check.temperature)

    def models_for(self, benchmark: str) -> list[str]:
        """Model keys generated on a benchmark: every unmitigated model, plus mitigated ones where configured."""
        return [key for key, spec in self.specs.items() if self._generates(spec, benchmark)]

    def _generates(self, spec: Any, benchmark: str) -> bool:
        if benchmark == SURVEY:
            return spec.mitigation is None
        if spec.mitigation is None:
            return True
        return not self.config.mitigation.benchmarks or benchmark in self.config.mitigation.benchmarks


def resolve(config: ExperimentConfig, run_dir: Path, *, build_base: bool = True) -> Experiment:
    """Check every name in the config against the data and the registries, before any work."""
    from valueharm.alignment.prompts import ModelSpec, PromptTemplates
    from valueharm.data.benchmarks import BENCHMARKS
    from valueharm.data.benign import BENIGN_DATASETS
    from valueharm.scoring.base import applies_to, build_scorer
    from valueharm.values import VALUES, resolve_profiles

    data_dir = paths.data_dir(config.data_dir)
    profiles = {}
    needs_profiles = {"vim", "icl"} & set(config.methods)
    if needs_profiles:
        with _at("profiles"):
            chosen = resolve_profiles(
                config.profiles.names, config.profiles.sets, config.profiles.files, data_dir=data_dir
            )
        if not chosen:
            raise ValueharmError(f"profiles: none given, but methods {', '.join(sorted(needs_profiles))} need them")
        profiles = {p.name: p for p in chosen}
    for index, name in enumerate(config.benign_datasets):
        with _at(f"benign_datasets[{index}]"):
            BENIGN_DATASETS.get(name)
    if "benign" in config.methods and not config.benign_datasets:
        raise ValueharmError("benign_datasets: method benign needs at least one dataset")
    for index, value in enumerate(config.mitigation.set_aside):
        if value not in VALUES:
            raise ValueharmError(f"mitigation.set_aside[{index}]: {value!r} is not one of the ten values")

    adapters = adapters_root(config, run_dir)
    specs: dict[str, ModelSpec] = {}
    for method in config.methods:
        if method == "vanilla":
            new = [ModelSpec("vanilla")]
        elif method == "benign":
            new = [ModelSpec("benign", dataset=d, adapter_path=adapters / "benign" / d) for d in config.benign_datasets]
        else:
            path = (lambda p: adapters / "vim" / p.name) if method == "vim" else (lambda p: None)
            new = [ModelSpec(method, p, adapter_path=path(p)) for p in profiles.values()]
        specs |= {spec.model_key: spec for spec in new}
    aligned = [key for key, spec in specs.items() if spec.method in {"vim", "icl"}]
    chosen_models = config.mitigation.models or aligned
    for index, key in enumerate(config.mitigation.models):
        if key not in specs:
            raise ValueharmError(f"mitigation.models[{index}]: unknown model {key!r}; models: {', '.join(specs)}")
    for condition in config.mitigation.conditions:
        for key in chosen_models:
            spec = replace(specs[key], mitigation=condition, set_aside=tuple(config.mitigation.set_aside))
            with _at("mitigation"):
                spec.__post_init__()
            specs[spec.model_key] = spec

    benchmarks = dict(config.benchmarks)
    for name, bench in benchmarks.items():
        with _at(f"benchmarks.{name}"):
            BENCHMARKS.get(name)
        for index, spec in enumerate(bench.scorers):
            with _at(f"benchmarks.{name}.scorers[{index}]"):
                scorer = build_scorer(spec, data_dir=data_dir)
                if name not in applies_to(scorer.kind):
                    raise ValueharmError(
                        f"scorer {spec!r} ({scorer.kind.value}) does not apply to {name}; "
                        f"it applies to {', '.join(applies_to(scorer.kind))}"
                    )
    for index, name in enumerate(config.mitigation.benchmarks):
        if name not in benchmarks:
            raise ValueharmError(f"mitigation.benchmarks[{index}]: {name!r} is not a benchmark of this experiment")
    with _at("template_dir"):
        templates = PromptTemplates.load(config.template_dir)
    experiment = Experiment(config, run_dir, data_dir, "", profiles, specs, adapters, templates=templates)
    for name in _benchmark_names(experiment):
        with _at(f"benchmarks.{name}"):
            experiment.benchmark_items[name] = _load_items(experiment, name)
    experiment.base = resolve_base(config, data_dir) if build_base else config.base_model
    return experiment


@contextlib.contextmanager
def _at(where: str) -> Iterator[None]:
    """Prefix a ValueharmError raised inside with the YAML path it concerns."""
    try:
        yield
    except ValueharmError as error:
        raise type(error)(f"{where}: {error}") from None


def _benchmark_names(experiment: Experiment) -> list[str]:
    names = list(experiment.config.benchmarks)
    check = experiment.config.analysis.alignment_check
    if check.enabled and any(s.method in {"vim", "icl"} for s in experiment.specs.values()) and SURVEY not in names:
        names.append(SURVEY)
    return names


def _load_items(experiment: Experiment, name: str) -> list[Any]:
    from valueharm.data.benchmarks import BENCHMARKS

    bench = experiment.config.benchmarks.get(name)
    if bench is None:  # the alignment check's survey
        return BENCHMARKS.get(name).load(
            experiment.data_dir, per_value=experiment.config.analysis.alignment_check.per_value,
            template_dir=experiment.config.template_dir,
        )  # fmt: skip
    items = BENCHMARKS.get(name).load(experiment.data_dir, bench.limit, **bench.options)
    return items if bench.per_category is None else first_per_category(items, bench.per_category)


def first_per_category(items: Sequence[Any], n: int) -> list[Any]:
    """The first `n` items of each category, in file order: small runs that still cover every category."""
    taken: dict[str, int] = {}
    kept = []
    for item in items:
        taken[item.category] = taken.get(item.category, 0) + 1
        if taken[item.category] <= n:
            kept.append(item)
    return kept


def adapters_root(config: ExperimentConfig, run_dir: Path) -> Path:
    """The run directory's `adapters/`, or `ray.shared_dir`'s when set — for every executor, so a run started on
    a cluster and resumed locally (or the other way round) finds the adapters it trained."""
    shared = config.ray.get("shared_dir")
    return (Path(shared).expanduser() if shared else run_dir) / "adapters"


def resolve_base(config: ExperimentConfig, data_dir: Path) -> str:
    """`tiny:<variant>` builds (or reuses) the built-in model; anything else is passed to transformers as is."""
    if config.base_model.startswith(TINY_PREFIX):
        from valueharm.tiny import build_tiny

        return str(build_tiny(config.base_model[len(TINY_PREFIX) :], data_dir=data_dir, progress=config.progress).path)
    from valueharm.training import base_identity

    return base_identity(config.base_model)


def plan(experiment: Experiment) -> list[Job]:
    """Every job of the experiment in dependency order: training, generation, scoring."""
    config = experiment.config
    jobs: list[Job] = []
    trains = {}
    for spec in experiment.specs.values():
        if spec.adapter is not None and spec.mitigation is None:
            job = TrainJob(spec.method, spec.dataset or spec.profile.name)
            trains[spec.name] = job
            jobs.append(job)
    for benchmark in experiment.benchmark_items:
        for key in experiment.models_for(benchmark):
            spec = experiment.specs[key]
            needs = (trains[spec.name].id,) if spec.name in trains else ()
            jobs.append(GenerateJob(key, benchmark, needs))
    for benchmark, bench in config.benchmarks.items():
        jobs += [ScoreJob(benchmark, scorer) for scorer in bench.scorers]
    return jobs


# ----------------------------------------------------------------------------------------------- job functions
# Each takes the experiment and its jobs and hands results to a `sink`: the local executor writes them to the store
# at once; a distributed one ships them to the driver, the store's only writer.


def stage_settings(stage: StepsConfig, defaults: TrainSettings) -> TrainSettings:
    """`defaults` with the settings `stage` sets (its seed too, where it has one)."""
    fields = set(StepsConfig.model_fields) | {"seed"}
    return replace(defaults, **stage.model_dump(include=fields, exclude_none=True))


def train_jobs(experiment: Experiment, jobs: Sequence[TrainJob], *, progress: bool = True) -> list[str]:
    """Train the jobs' adapters in one process on one loaded base; returns the job ids now complete."""
    from valueharm.training import LoraSettings, TrainSettings, benign_job, train_adapters, vim_jobs

    config = experiment.config
    lora = LoraSettings(config.training.lora.r, config.training.lora.alpha, config.training.lora.dropout,
                        tuple(config.training.lora.target_modules))  # fmt: skip

    vim = config.training.vim
    vim_settings = stage_settings(vim, TrainSettings())
    from valueharm.training import BENIGN_SETTINGS

    benign_settings = stage_settings(config.training.benign, BENIGN_SETTINGS)
    profiles = [experiment.profiles[job.name] for job in jobs if job.kind == "vim"]
    adapter_jobs = vim_jobs(
        profiles, experiment.data_dir, experiment.adapters_dir / "vim", stage1=stage_settings(vim.stage1, vim_settings),
        stage2=stage_settings(vim.stage2, vim_settings), threshold=config.training.threshold, seed=vim_settings.seed,
        limit=vim.limit, template_dir=config.template_dir,
    )  # fmt: skip
    adapter_jobs += [
        benign_job(
            job.name,
            experiment.data_dir,
            experiment.adapters_dir / "benign",
            settings=benign_settings,
            limit=config.training.benign.limit,
            template_dir=config.template_dir,
        )
        for job in jobs
        if job.kind == "benign"
    ]
    train_adapters(experiment.base, adapter_jobs, lora, trust_remote_code=config.trust_remote_code, progress=progress)
    return [job.id for job in jobs]


def planned_records(experiment: Experiment, jobs: Sequence[GenerateJob]) -> dict[str, list[Any]]:
    """Job id → the generation records it must produce (text empty)."""
    from valueharm.data.benchmarks import BENCHMARKS
    from valueharm.generation.run import plan as plan_slice
    from valueharm.generation.run import sampling_params
    from valueharm.training import base_identity

    base_id = base_identity(experiment.base)
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
            templates=experiment.templates,
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

    backend = open_backend(
        experiment.config.generation.backend, experiment.base, specs,
        **_backend_options(experiment), **experiment.config.generation.options,
    )  # fmt: skip
    try:
        adapters = {spec.model_key: spec.adapter for spec in specs}
        for benchmark in dict.fromkeys(job.benchmark for job in jobs):
            records = [r for job in jobs if job.benchmark == benchmark for r in planned[job.id]]
            generate_records(backend, records, adapters, done=done, sink=collect, progress=progress,
                             description=f"generating {benchmark}")  # fmt: skip
    finally:
        backend.close()
    return {job.id: not any(r.key in failed for r in planned[job.id]) for job in jobs}


def _backend_options(experiment: Experiment) -> dict[str, Any]:
    return {"trust_remote_code": True} if experiment.config.trust_remote_code else {}


def score_job(experiment: Experiment, job: ScoreJob, store: Any, *, progress: bool = True) -> bool:
    """Score one (benchmark, scorer) slice; True when every generation of the slice has a score row."""
    from valueharm.scoring.base import build_scorer
    from valueharm.scoring.run import score_run

    scorer = build_scorer(job.scorer, data_dir=experiment.data_dir)
    score_run(store, scorer, benchmarks=[job.benchmark], progress=progress)
    return True


# ---------------------------------------------------------------------------------------------------- executors


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


def make_executor(name: str, address: str | None = None) -> Executor:
    """`local`, or `ray` (its code lives in valueharm.ray_executor; ray is an optional extra)."""
    if name == "local":
        if address:
            raise ValueharmError("--address is for the ray executor")
        return LocalExecutor()
    if name == "ray":
        from valueharm.ray_executor import RayExecutor

        return RayExecutor(address)
    raise ValueharmError(f"unknown executor {name!r}; known: local, ray")


# ------------------------------------------------------------------------------------------------------- the run


CONFIG_FILE = "experiment.yaml"
RUNTIME_ONLY = {"progress", "ray"}  # settings that may differ between the starts of one run
MANIFEST_FILE = "manifest.json"


def freeze_config(config: ExperimentConfig, run_dir: Path) -> None:
    """Write the resolved config at the first start; later starts must bring the same one (progress aside)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    frozen = run_dir / CONFIG_FILE
    current = config.model_dump(mode="json", exclude=RUNTIME_ONLY)
    if frozen.is_file():
        before = yaml.safe_load(frozen.read_text(encoding="utf-8")) or {}
        changed = sorted(key for key in set(before) | set(current) if before.get(key) != current.get(key))
        if changed:
            raise ValueharmError(
                f"{frozen}: this run was started with a different config (changed: {', '.join(changed)}); "
                "use another --run directory, or restore the config"
            )
        return
    tmp = frozen.with_name(CONFIG_FILE + ".tmp")
    tmp.write_text(yaml.safe_dump(current, sort_keys=False, allow_unicode=True), encoding="utf-8")
    tmp.replace(frozen)


def write_manifest(experiment: Experiment) -> dict[str, Any]:
    """Provenance: versions, git commit, data checksums, seeds, hardware — rewritten at every start."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from valueharm.data.fetch import check

    versions = {}
    for name in ("valueharm", "torch", "transformers", "peft", "trl", "datasets", "accelerate", "vllm", "ray"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    config = experiment.config
    manifest = {
        "experiment": config.name,
        "base_model": experiment.base,
        "versions": versions,
        "git_commit": _git_commit(),
        "data_dir": str(experiment.data_dir),
        "data": {c.path: c.status.value for c in check(experiment.data_dir) if c.status.value != "missing"},
        "seeds": {
            "training": config.training.vim.seed,
            "generation": config.generation.seed,
            "metrics": config.metrics.seed,
        },
        "hardware": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        },
    }
    path = experiment.run_dir / MANIFEST_FILE
    tmp = path.with_name(MANIFEST_FILE + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    tmp.replace(path)
    return manifest


def _git_commit() -> str | None:
    """The commit of the valueharm source, when it runs from a git checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


@dataclass(frozen=True)
class PlanSummary:
    """What a run will do: per job kind, what is done and what is left."""

    rows: list[dict[str, Any]]

    def totals(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for row in self.rows:
            totals[row["kind"]] = totals.get(row["kind"], 0) + row["todo"]
        return totals


def summarize(experiment: Experiment, jobs: Sequence[Job]) -> PlanSummary:
    """The dry run: jobs, counts of generations and scorer calls, and what is already done — without any model."""
    from valueharm.store import RunStore

    rows = []
    store = RunStore(experiment.store_path) if experiment.store_path.exists() else None
    try:
        status = {job.id: store.job_status(job.id) if store else None for job in jobs}
        counts = store.count_generations() if store else {}
        items_per = {
            name: len(items) * (experiment.benchmark_config(name).samples or _samples(name))
            for name, items in experiment.benchmark_items.items()
        }
        for job in jobs:
            done = status[job.id] == "done"
            if isinstance(job, TrainJob):
                rows.append({"kind": "train", "job": job.id, "units": 1, "done": int(done), "todo": int(not done)})
            elif isinstance(job, GenerateJob):
                total = items_per[job.benchmark]
                stored, failed = counts.get((job.benchmark, job.model_key), (0, 0))
                rows.append({"kind": "generate", "job": job.id, "units": total, "done": stored - failed,
                             "todo": 0 if done else total - (stored - failed)})  # fmt: skip
            else:
                total = sum(items_per[job.benchmark] for _ in experiment.models_for(job.benchmark))
                scored = store.scored_count(job.benchmark, _scorer_id(job, experiment)) if store else 0
                rows.append({"kind": "score", "job": job.id, "units": total, "done": scored,
                             "todo": 0 if done else total - scored})  # fmt: skip
    finally:
        if store:
            store.close()
    return PlanSummary(rows)


def _samples(benchmark: str) -> int:
    from valueharm.data.benchmarks import BENCHMARKS

    return BENCHMARKS.get(benchmark).defaults.samples


def _scorer_id(job: ScoreJob, experiment: Experiment) -> str:
    from valueharm.scoring.base import build_scorer

    return build_scorer(job.scorer, data_dir=experiment.data_dir).id


def run_experiment(
    config_path: str | Path,
    run_dir: str | Path | None = None,
    *,
    dry_run: bool = False,
    executor: Executor | None = None,
    progress: bool | None = None,
) -> Experiment | PlanSummary:
    """Validate, plan, and (unless `dry_run`) execute and finish the experiment; safe to re-run to resume."""
    config = load_config(config_path)
    if progress is not None:
        config = config.model_copy(update={"progress": progress})
    run_dir = Path(run_dir) if run_dir else Path("runs") / config.name
    experiment = resolve(config, run_dir, build_base=not dry_run)
    jobs = plan(experiment)
    if dry_run:
        return summarize(experiment, jobs)
    freeze_config(config, run_dir)
    write_manifest(experiment)
    (executor or LocalExecutor()).run(experiment, jobs)
    finish(experiment)
    return experiment


def report_run(run_dir: str | Path) -> Path:
    """Recompute metrics and analyses of a run from its frozen config and store, and write its report again."""
    run_dir = Path(run_dir)
    frozen = run_dir / CONFIG_FILE
    if not frozen.is_file() or not (run_dir / "results.sqlite").is_file():
        raise ValueharmError(f"{run_dir}: not an experiment run (no {CONFIG_FILE} or results.sqlite)")
    experiment = resolve(load_config(frozen), run_dir)
    return finish(experiment)


def finish(experiment: Experiment) -> Path:
    """Metrics, the value-alignment check, the analyses and the report, all from what the store holds."""
    from valueharm.metrics import compute_metrics
    from valueharm.report import ReportData, render_report
    from valueharm.store import RunStore
    from valueharm.training import base_identity

    config = experiment.config
    metadata = {item.item_id: item.metadata for items in experiment.benchmark_items.values() for item in items}
    with RunStore(experiment.store_path) as store:
        compute_metrics(store, metadata, seed=config.metrics.seed, n_boot=config.metrics.n_boot)
        rows = store.metrics()
        generations = store.generations()
        scores = store.scores()
        jobs = store.jobs()
    checks = alignment_checks(experiment, generations)
    correlation, regressions, hypotheses, notes = value_harm(experiment, rows, checks)
    data = ReportData(
        title=f"valueharm: {config.name}",
        experiment=config.name,
        summary={
            "base model": base_identity(experiment.base),
            "models": len([s for s in experiment.specs.values() if s.mitigation is None]),
            "benchmarks": ", ".join(experiment.benchmark_items),
            "generations": len(generations),
            "failed generations": sum(g.error is not None for g in generations),
            "scores": len(scores),
            "jobs done": sum(j["status"] == "done" for j in jobs),
            "jobs failed": sum(j["status"] == "failed" for j in jobs),
        },
        provenance=json.loads((experiment.run_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
        | {"config": config.model_dump(mode="json", exclude={"progress"})},
        metrics=rows,
        alignment=checks,
        alignment_reading=_survey_reading(config.analysis.alignment_check),
        profiles=experiment.profiles,
        correlation=correlation,
        regressions=regressions,
        hypotheses=hypotheses,
        mitigation=mitigation(experiment, generations, scores),
        examples=_examples(generations),
        notes=notes,
    )
    return render_report(data, experiment.report_path)


def _survey_reading(check: AlignmentCheckConfig) -> str:
    answers = f"{check.samples} answer{'s' if check.samples > 1 else ''} per question"
    return f"{answers}, sampled at temperature {check.temperature:g}" if check.temperature > 0 else f"{answers}, greedy"


def alignment_checks(experiment: Experiment, generations: Sequence[Any]) -> list[Any]:
    """Each aligned model against its target; the untrained base against every target, as the reference."""
    from valueharm.analysis.value_check import SURVEY_BENCHMARK, compare, measure, read_answer

    survey = [g for g in generations if g.benchmark == SURVEY_BENCHMARK and g.error is None]
    measured = measure(survey)
    answers = {key: [read_answer(g) for g in survey if g.model_key == key] for key in measured}
    checks = []
    for key, spec in experiment.specs.items():
        if spec.profile is not None and spec.mitigation is None and key in measured:
            checks.append(compare(spec.profile, measured[key], answers[key]))
    if "vanilla" in measured:
        checks += [
            compare(profile, measured["vanilla"], answers["vanilla"]) for profile in experiment.profiles.values()
        ]
    return checks


def value_harm(experiment: Experiment, rows: Sequence[dict[str, Any]], checks: Sequence[Any]) -> tuple[Any, ...]:
    """Correlations over the aligned models of one method (VIM if present: methods are not pooled), hypotheses."""
    from valueharm.analysis.correlation import aligned_models, correlate, harm_metrics, harm_values, regress
    from valueharm.analysis.hypotheses import evaluate, load_hypotheses, published_hypotheses

    analysis = experiment.config.analysis
    notes: list[str] = []
    method = next((m for m in ("vim", "icl") if m in experiment.config.methods), None)
    if method is None:
        return None, [], [], ["value–harm analysis: no aligned models (methods vim or icl)"]
    models = {key: s.profile for key, s in experiment.specs.items() if s.method == method and s.mitigation is None}
    if analysis.scores_from == "measured":
        measured = {c.model_key: c.measured for c in checks if c.model_key in models}
        models = {key: measured[key] for key in models if key in measured}
    notes.append(f"value–harm correlations over the {len(models)} {method} models ({analysis.scores_from} scores)")
    harms = harm_values(rows, harm_metrics(analysis.harm_metrics), models=set(models))
    aligned = aligned_models(models, harms)
    correlation = correlate(aligned, sources=harms.sources, x_source=analysis.scores_from, notes=harms.notes)
    hypotheses_table = load_hypotheses(analysis.hypotheses_file) if analysis.hypotheses_file else published_hypotheses()
    hypotheses = evaluate(hypotheses_table, correlation, alpha=analysis.alpha)
    regressions = []
    if analysis.regression:
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            regressions = [regress(aligned, benchmark, "all") for benchmark in harms.sources]
        notes += [str(w.message) for w in caught]
    return correlation, regressions, hypotheses, notes


def mitigation(experiment: Experiment, generations: Sequence[Any], scores: Sequence[Any]) -> list[Any]:
    """Deltas of every mitigation condition vs input only, per benchmark, scorer and metric it feeds."""
    from valueharm.analysis.mitigation import mitigation_deltas
    from valueharm.scoring.base import FEEDS, build_scorer

    config = experiment.config
    if not config.mitigation.conditions:
        return []
    deltas = []
    for benchmark in config.mitigation.benchmarks or list(config.benchmarks):
        for spec in config.benchmarks[benchmark].scorers:
            scorer = build_scorer(spec, data_dir=experiment.data_dir)
            for metric in FEEDS.get((benchmark, scorer.kind), ()):
                deltas += mitigation_deltas(
                    generations, scores, benchmark=benchmark, scorer=scorer.id, metric=metric,
                    models=config.mitigation.models or None, n_boot=config.metrics.n_boot, seed=config.metrics.seed,
                )  # fmt: skip
    return deltas


def _examples(generations: Sequence[Any], per_model: int = 2) -> list[dict[str, str]]:
    """A few outputs per (model, benchmark) to read next to the numbers."""
    taken: dict[tuple[str, str], int] = {}
    examples = []
    for g in generations:
        if g.error is None and taken.get((g.model_key, g.benchmark), 0) < per_model:
            taken[(g.model_key, g.benchmark)] = taken.get((g.model_key, g.benchmark), 0) + 1
            examples.append({"model_key": g.model_key, "benchmark": g.benchmark, "query": g.query, "text": g.text})
    return examples
