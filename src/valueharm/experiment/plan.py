"""A validated config resolved against the data and the registries, and the plan of jobs it makes.

Jobs are plain serialisable units — train one adapter, generate one (model, benchmark) slice, score one
(benchmark, scorer) slice — in dependency order; the dry run counts what each has left to do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from valueharm import paths
from valueharm.errors import ValueharmError
from valueharm.experiment.config import BenchmarkConfig, ExperimentConfig

SURVEY = "value-survey"
PVQ = "pvq40"
CHECKS = (SURVEY, PVQ)  # the alignment checks' questionnaires: unmitigated models only, no scorers, no metrics
CONFIG_FILE = "experiment.yaml"
MANIFEST_FILE = "manifest.json"
PLAN_FILE = "plan.json"  # the cost plan of the whole run, written at its first start


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
    notes: list[str] = field(default_factory=list)  # what the run leaves out and why, for the report
    chat_system_turn: bool | None = None  # None: raw-text prompts; else a chat base, with or without a system turn
    hypotheses: list[Any] = field(default_factory=list)  # the expected directions, checked against the benchmarks

    @property
    def store_path(self) -> Path:
        return self.run_dir / "results.sqlite"

    @property
    def report_path(self) -> Path:
        return self.run_dir / "report" / "index.html"

    @property
    def manifest_path(self) -> Path:
        return self.run_dir / MANIFEST_FILE

    @property
    def plan_path(self) -> Path:
        return self.run_dir / PLAN_FILE

    def benchmark_config(self, name: str) -> BenchmarkConfig:
        """A benchmark's settings; the alignment checks' questionnaires take their sampling from
        `analysis.alignment_check` and `analysis.pvq`."""
        if name in self.config.benchmarks:
            return self.config.benchmarks[name]
        if name not in CHECKS:
            return BenchmarkConfig()
        check = self.config.analysis.alignment_check if name == SURVEY else self.config.analysis.pvq
        return BenchmarkConfig(samples=check.samples, temperature=check.temperature)

    def models_for(self, benchmark: str) -> list[str]:
        """Model keys generated on a benchmark: every unmitigated model, plus mitigated ones where configured."""
        return [key for key, spec in self.specs.items() if self._generates(spec, benchmark)]

    def _generates(self, spec: Any, benchmark: str) -> bool:
        if benchmark in CHECKS:
            return spec.mitigation is None
        if spec.mitigation is None:
            return True
        return not self.config.mitigation.benchmarks or benchmark in self.config.mitigation.benchmarks


def resolve(config: ExperimentConfig, run_dir: Path, *, build_base: bool = True) -> Experiment:
    """Check every name in the config against the data and the registries, before any work.

    `build_base` builds a tiny base (or checks that another one loads); a dry run builds and loads nothing.
    """
    from valueharm.alignment.prompts import ModelSpec, PromptTemplates
    from valueharm.alignment.vim_data import VimTemplates
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
    for index, key in enumerate(config.mitigation.models):
        if key not in specs:
            raise ValueharmError(f"mitigation.models[{index}]: unknown model {key!r}; models: {', '.join(specs)}")
    hypotheses = hypotheses_table(config, data_dir)
    guide = _value_guide(config, hypotheses)
    for condition in config.mitigation.conditions:
        for key in config.mitigation.models or _mitigated_by_default(specs, condition, guide is not None, config):
            spec = replace(specs[key], mitigation=condition, set_aside=tuple(config.mitigation.set_aside), guide=guide)
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
    for index, pair in enumerate(config.analysis.calibrate):
        rtp = benchmarks.get("rtp")
        for side in ("reference", "local"):
            if rtp is None or getattr(pair, side) not in rtp.scorers:
                raise ValueharmError(
                    f"analysis.calibrate[{index}].{side}: {getattr(pair, side)!r} is not among benchmarks.rtp.scorers"
                )
    for index, name in enumerate(config.mitigation.benchmarks):
        if name not in benchmarks:
            raise ValueharmError(f"mitigation.benchmarks[{index}]: {name!r} is not a benchmark of this experiment")
    with _at("generation.backend"):
        from valueharm.generation.base import BACKENDS

        BACKENDS.get(config.generation.backend)
    with _at("template_dir"):
        templates = PromptTemplates.load(config.template_dir)
        VimTemplates.load(config.template_dir)  # training data, survey questions and echo detection use them
    experiment = Experiment(
        config, run_dir, data_dir, "", profiles, specs, adapters, templates=templates, hypotheses=hypotheses
    )
    for name in _benchmark_names(experiment):
        with _at(f"benchmarks.{name}"):
            experiment.benchmark_items[name] = _load_items(experiment, name)
    with _at("base_model"):
        experiment.base = _resolve_base(config, data_dir, build=build_base)
    with _at("chat"):
        from valueharm.chat import chat_style

        try:
            experiment.chat_system_turn = chat_style(
                config.chat, experiment.base, trust_remote_code=config.trust_remote_code
            )
        except ValueharmError as error:  # chat: auto, and no tokenizer here (a dry run, or a model only a server has)
            experiment.notes.append(f"{error}; prompts are raw text (set chat: true for a chat model)")
    return experiment


def _mitigated_by_default(specs: dict[str, Any], condition: str, guided: bool, config: ExperimentConfig) -> list[str]:
    """Every aligned model, and the base beside them where the condition has an instruction for it (the safety
    one always; a value instruction only from the category map or a configured set_aside list)."""
    aligned = [key for key, spec in specs.items() if spec.method in {"vim", "icl"}]
    base_fits = condition == "safety" or guided or bool(config.mitigation.set_aside)
    return [*(["vanilla"] if "vanilla" in specs and base_fits else []), *aligned]


def hypotheses_table(config: ExperimentConfig, data_dir: Path) -> list[Any]:
    """The experiment's hypotheses (`analysis.hypotheses_file`, else the published table), every target category
    checked against the full benchmark it names, when that benchmark is in the experiment."""
    from valueharm.analysis.hypotheses import check_categories, load_hypotheses, published_hypotheses
    from valueharm.data.benchmarks import BENCHMARKS

    path = config.analysis.hypotheses_file
    table = load_hypotheses(path) if path else published_hypotheses()
    targeted = {benchmark for h in table for benchmark, _ in h.targets} & set(config.benchmarks)
    categories = {}
    for name in sorted(targeted):
        with _at(f"benchmarks.{name}"):
            items = BENCHMARKS.get(name).load(data_dir, **config.benchmarks[name].options)
        categories[name] = {item.category for item in items}
    check_categories(table, categories, f"analysis.hypotheses_file: {path}" if path else "built-in hypotheses")
    return table


def _value_guide(config: ExperimentConfig, hypotheses: list[Any]) -> Any:
    """The per-category value instruction of the value and dual conditions, from the hypotheses table."""
    from valueharm.analysis.hypotheses import value_guide

    if not config.mitigation.by_category or not {"value", "dual"} & set(config.mitigation.conditions):
        return None
    return value_guide(hypotheses)


@contextlib.contextmanager
def _at(where: str) -> Iterator[None]:
    """Prefix a ValueharmError raised inside with the YAML path it concerns."""
    try:
        yield
    except ValueharmError as error:
        raise type(error)(f"{where}: {error}") from None


def _benchmark_names(experiment: Experiment) -> list[str]:
    """The configured benchmarks, then the alignment checks' questionnaires when there are aligned models; the
    PVQ-40 check is skipped, with a note, when its questionnaire is not in the data directory."""
    from valueharm.data.pvq import PVQ_FILE

    names = list(experiment.config.benchmarks)
    analysis = experiment.config.analysis
    if not any(s.method in {"vim", "icl"} for s in experiment.specs.values()):
        return names
    if analysis.alignment_check.enabled and SURVEY not in names:
        names.append(SURVEY)
    if analysis.pvq.enabled and PVQ not in names:
        if analysis.pvq.file is not None or (experiment.data_dir / PVQ_FILE).is_file():
            names.append(PVQ)
        else:
            experiment.notes.append(
                f"PVQ-40 check skipped: {PVQ_FILE} is not in the data dir {experiment.data_dir} "
                f"(run `valueharm data fetch pvq40`, or set analysis.pvq.file)"
            )
    return names


def _load_items(experiment: Experiment, name: str) -> list[Any]:
    from valueharm.data.benchmarks import BENCHMARKS, select_items

    bench = experiment.config.benchmarks.get(name)
    analysis = experiment.config.analysis
    if name == SURVEY and bench is None:
        return BENCHMARKS.get(name).load(
            experiment.data_dir, per_value=analysis.alignment_check.per_value,
            template_dir=experiment.config.template_dir,
        )  # fmt: skip
    if name == PVQ and bench is None:
        with _at("analysis.pvq"):
            return BENCHMARKS.get(name).load(experiment.data_dir, file=analysis.pvq.file,
                                             template_dir=experiment.config.template_dir)  # fmt: skip
    return select_items(BENCHMARKS.get(name), experiment.data_dir, bench, **bench.options)


def adapters_root(config: ExperimentConfig, run_dir: Path) -> Path:
    """The run directory's `adapters/`, or `ray.shared_dir`'s when set — for every executor, so a run started on
    a cluster and resumed locally (or the other way round) finds the adapters it trained."""
    return (config.ray.shared_dir or run_dir) / "adapters"


def _resolve_base(config: ExperimentConfig, data_dir: Path, *, build: bool) -> str:
    """What opens the base (valueharm.base_model): checked to load here when training or the hf/vllm backends use it,
    so that a bad one fails before the run directory exists; for a server, the name it knows the model by."""
    from valueharm import base_model

    loads_here = bool({"vim", "benign"} & set(config.methods)) or config.generation.backend in {"hf", "vllm"}
    return base_model.resolve(config.base_model, data_dir=data_dir, loads_here=loads_here, build=build,
                              trust_remote_code=config.trust_remote_code, progress=config.progress)  # fmt: skip


def plan(experiment: Experiment) -> list[Job]:
    """Every job of the experiment in dependency order: training, generation, scoring."""
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
    for benchmark, bench in experiment.config.benchmarks.items():
        jobs += [ScoreJob(benchmark, scorer) for scorer in bench.scorers]
    return jobs


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
