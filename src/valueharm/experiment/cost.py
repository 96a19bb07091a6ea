"""The dry run's cost plan: per stage and in total, the jobs left, tokens, API requests, GPU-hours and API cost.

Two steps, both without a model or the network. `workload` counts what the plan's jobs have left to process, from
the plan and the data: VIM examples with the VIM data builder's own splits (cheap: the arguments are read once and
no text is rendered, so the counts are exact for every profile, `limit` applied); benign examples from documented
dataset sizes (`cost.benign_examples`: Alpaca, Dolly and SAMSum are large and often not fetched before a plan);
generations from the summary's counts; judge prompts rendered from the benchmark's items. `estimate` turns those
counts into time and money with the assumptions of the config's `cost:` section — a pure function.

Definitions: training tokens = examples × epochs × mean tokens per example (real tokens, padding excluded); GPU
time divides the tokens processed — padding and validation passes included — by the throughput. Generated tokens
= generations × max_new_tokens, an upper bound (a stop string or EOS ends a sample early); prompt tokens are left
out (prefill is a small part of decoding time here). Judge requests are one per answer (a re-ask of an unreadable
reply, at most `parse_attempts` in all, is not counted); judge input tokens = the rendered rubric and query at the
judge's characters per token + the answer's max_new_tokens. Perspective is free of charge; its time is requests /
the scorer's `qps` quota. Heuristic scorers (refusal, lexicon, toxicity-linear) run on the CPU in seconds.

Assumptions (CostSettings defaults; override any in `cost:`), for Llama-2-7B on one A100-80GB:
- training throughput: a LoRA step costs ≈ 4 × 6.7e9 FLOPs per token (forward 2N, backward to the activations 2N;
  the frozen weights get no gradient). A100 peaks (NVIDIA datasheet): 19.5 TFLOPS fp32 — PyTorch runs fp32 matmuls
  without TF32 unless asked — and 312 TFLOPS bf16/fp16. At 50 % of the fp32 peak: 350 tokens/s; at 30 % of the
  bf16 peak (short sequences, batches of 8): 3,500 tokens/s. Validation forward passes cost half a training token.
- tokens per example, measured with the Llama-2 tokenizer (llama-tokenizer-js 1.2.2, the same vocabulary) on the
  built-in templates and the shared data, BOS and EOS included: VIM stage 1 69, stage 2 133, grammar 91. Alpaca,
  Dolly and SAMSum from their datasets' published sizes (Hugging Face dataset_info: 19.0 MB of text over 52,002
  rows, 12.2 MB over 15,011, 9.5 MB over 14,732) at 3.9 characters per token (measured on grammar) with our
  template: 110, 220, 190.
- padding, measured on the same tokens: random batches of 8 keep 69 % (stage 1) and 80 % (stage 2) real tokens,
  length-grouped batches 98 %; a batch of one has no padding.
- generation: a decode step of a 7B fp16 base reads its 13.5 GB of weights (≥ 6.7 ms at the A100's 2.0 TB/s), so
  128 sequences in flight give at most ~19 K tokens/s; 2,500 (vLLM) leaves room for LoRA kernels, adapter swaps,
  prefill and scheduling, 500 for transformers with PEFT. Planning figures: replace them with a measured one.
- scorers: a base-size classifier on one-sentence inputs 1,000 texts/s; a 7B guard model 20 texts/s (a
  ~400-token prefill each).
- judge: gpt-4o at its list price, $2.50 / $10.00 per million input / output tokens; its o200k tokenizer reads
  4.7–4.8 characters per token of our rubrics (measured with gpt-tokenizer 4.0.0); a reply of ~60 tokens ("Score: N"
  and a reason of one or two sentences); 2 s a request, `max_concurrency` at once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from valueharm.experiment.config import CostSettings
from valueharm.experiment.plan import Experiment, GenerateJob, Job, PlanSummary, ScoreJob, TrainJob, summarize
from valueharm.settings import TrainSettings, VimDataSettings
from valueharm.values import ValueProfile

if TYPE_CHECKING:
    from valueharm.scoring.judge import JudgeScorer

VALIDATION_COST = 0.5  # a validation token is a forward pass: 2N of a LoRA training token's 4N FLOPs
CPU_SCORERS = frozenset({"refusal", "lexicon", "toxicity-linear"})  # seconds on the CPU: not costed
API_SCORERS = frozenset({"judge", "perspective"})  # one request per text (retries aside)


# ------------------------------------------------------------------------------------------------------ workload


@dataclass(frozen=True)
class StageWork:
    """One training stage of one adapter, as the trainer will see it."""

    job: str
    data: str  # whose tokens per example apply: stage1, stage2, or a benign dataset
    train_examples: int | None  # None: a benign dataset, counted from cost.benign_examples
    valid_examples: int
    limit: int | None  # at most this many training examples (`limit`)
    epochs: int
    batch_size: int
    gradient_accumulation: int
    max_steps: int | None
    group_by_length: bool
    precision: str


@dataclass(frozen=True)
class GenerateWork:
    """One (model, benchmark) slice of generation."""

    job: str
    generations: int  # left to generate: items × samples
    max_new_tokens: int
    backend: str


@dataclass(frozen=True)
class ScoreWork:
    """One (benchmark, scorer) slice of scoring, with what its scorer's cost depends on."""

    job: str
    scorer: str  # the registered scorer name
    texts: int  # generations left to score
    prompt_chars: float = 0.0  # judge: mean characters of the rendered rubric and query
    answer_tokens: int = 0  # judge: the answers' max_new_tokens
    max_output_tokens: int | None = None  # judge: the scorer's max_tokens
    concurrency: int = 1  # judge: requests in flight at once
    qps: float | None = None  # perspective: requests per second at most


@dataclass(frozen=True)
class Workload:
    """What a plan has left to process, per stage: the estimate's only input besides the assumptions."""

    train: tuple[StageWork, ...]
    generate: tuple[GenerateWork, ...]
    score: tuple[ScoreWork, ...]


def workload(experiment: Experiment, jobs: Sequence[Job], summary: PlanSummary) -> Workload:
    """What the plan's jobs have left to process (a finished job nothing), counted from the plan and the data."""
    todo = {row["job"]: row["todo"] for row in summary.rows}
    left = [job for job in jobs if todo[job.id] > 0]
    trains = [job for job in left if isinstance(job, TrainJob)]
    profiles = [experiment.profiles[job.name] for job in trains if job.kind == "vim"]
    counts = vim_example_counts(profiles, experiment.data_dir, experiment.config.training.vim.data) if profiles else {}
    return Workload(
        tuple(stage for job in trains for stage in _train_work(experiment, job, counts)),
        tuple(_generate_work(experiment, job, todo[job.id]) for job in left if isinstance(job, GenerateJob)),
        tuple(_score_work(experiment, job, todo[job.id]) for job in left if isinstance(job, ScoreJob)),
    )


def vim_example_counts(
    profiles: Sequence[ValueProfile], data_dir: Path, data: VimDataSettings
) -> dict[str, dict[str, tuple[int, int]]]:
    """Profile → stage → (train, valid) examples, split as the VIM data builder splits them (`stage1_splits`); stage 2
    has one example per (argument, annotated value) of the survey files, whatever the profile."""
    from valueharm.alignment.vim_data import ARGUMENTS_FILE, POLARITIES, SURVEY_FILES, read_arguments, stage1_splits

    arguments = read_arguments(data_dir, ARGUMENTS_FILE)
    survey = {split: sum(len(a.values) for a in read_arguments(data_dir, path)) for split, path in SURVEY_FILES.items()}
    counts = {}
    for profile in profiles:
        splits = stage1_splits(arguments, profile, data)
        stage1 = tuple(sum(len(splits[polarity][split]) for polarity in POLARITIES) for split in ("train", "valid"))
        counts[profile.name] = {"stage1": stage1, "stage2": (survey["train"], survey["valid"])}
    return counts


def _train_work(
    experiment: Experiment, job: TrainJob, vim_counts: dict[str, dict[str, tuple[int, int]]]
) -> list[StageWork]:
    training = experiment.config.training
    if job.kind == "benign":
        return [_stage(job.id, job.name, None, 0, training.benign.limit, training.benign.train)]
    vim = training.vim
    valid_limit = vim.valid_limit if vim.valid_limit is not None else vim.limit
    stages = []
    for stage in ("stage1", "stage2"):
        train, valid = vim_counts[job.name][stage]
        stages.append(_stage(job.id, stage, _capped(train, vim.limit), _capped(valid, valid_limit), None,
                             vim.stage(stage)))  # fmt: skip
    return stages


def _stage(job: str, data: str, train: int | None, valid: int, limit: int | None, settings: TrainSettings) -> StageWork:
    return StageWork(
        job, data, train, valid, limit, settings.epochs, settings.batch_size, settings.gradient_accumulation,
        settings.max_steps, settings.group_by_length, settings.precision,
    )  # fmt: skip


def _capped(count: int, limit: int | None) -> int:
    return count if limit is None else min(count, limit)


def _max_new_tokens(experiment: Experiment, benchmark: str) -> int:
    """The benchmark's max_new_tokens as configured, else its published one."""
    from valueharm.data.benchmarks import BENCHMARKS

    configured = experiment.benchmark_config(benchmark).max_new_tokens
    return configured or BENCHMARKS.get(benchmark).defaults.max_new_tokens


def _generate_work(experiment: Experiment, job: GenerateJob, generations: int) -> GenerateWork:
    tokens = _max_new_tokens(experiment, job.benchmark)
    return GenerateWork(job.id, generations, tokens, experiment.config.generation.backend)


def _score_work(experiment: Experiment, job: ScoreJob, texts: int) -> ScoreWork:
    from valueharm.scoring.base import build_scorer, parse_scorer_spec
    from valueharm.scoring.judge import JudgeScorer
    from valueharm.scoring.perspective import PerspectiveScorer

    name = parse_scorer_spec(job.scorer).name
    scorer = build_scorer(job.scorer, data_dir=experiment.data_dir)
    if isinstance(scorer, PerspectiveScorer):
        return ScoreWork(job.id, name, texts, qps=scorer.qps)
    if not isinstance(scorer, JudgeScorer):
        return ScoreWork(job.id, name, texts)
    prompt_chars = _mean_judge_prompt_chars(experiment, job.benchmark, scorer)
    answer_tokens = _max_new_tokens(experiment, job.benchmark)
    return ScoreWork(job.id, name, texts, prompt_chars, answer_tokens, scorer.max_tokens, scorer.max_concurrency)


def _mean_judge_prompt_chars(experiment: Experiment, benchmark: str, scorer: JudgeScorer) -> float:
    """Mean characters of the judge's prompt without the answer: its rubric around each item's query, rendered
    from the records of the benchmark's first generation job (every model's records share the queries)."""
    from valueharm.experiment.jobs import planned_records

    first = GenerateJob(experiment.models_for(benchmark)[0], benchmark)
    records = planned_records(experiment, [first])[first.id]
    return sum(len(scorer.prompt(record)) for record in records) / len(records) if records else 0.0


# ------------------------------------------------------------------------------------------------------ estimate


@dataclass(frozen=True)
class StageCost:
    """One stage's share of the plan (or the total)."""

    stage: str
    jobs: int = 0
    train_tokens: float = 0.0
    generated_tokens: float = 0.0
    api_requests: int = 0
    api_input_tokens: float = 0.0
    api_output_tokens: float = 0.0
    gpu_hours: float = 0.0
    api_hours: float = 0.0  # each API scorer's own time, one after another
    api_cost: float = 0.0

    def __add__(self, other: StageCost) -> StageCost:
        sums = {f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self) if f.name != "stage"}
        return StageCost(self.stage, **sums)


@dataclass(frozen=True)
class CostPlan:
    """The estimate: per stage (train, generate, score), in total, under which assumptions, with what was left out."""

    stages: tuple[StageCost, ...]
    assumptions: CostSettings
    notes: tuple[str, ...] = ()

    @property
    def total(self) -> StageCost:
        total = StageCost("total")
        for stage in self.stages:
            total += stage
        return total

    @property
    def gpu_cost(self) -> float | None:
        """The GPU-hours at `cost.gpu_price_per_hour`, when a price is set."""
        price = self.assumptions.gpu_price_per_hour
        return None if price is None else self.total.gpu_hours * price


def estimate(work: Workload, assumptions: CostSettings) -> CostPlan:
    """Time and money of a workload under the assumptions; a pure function of its arguments."""
    notes: list[str] = []
    train = [_train_cost(stage, assumptions, notes) for stage in work.train]
    generate = [_generate_cost(job, assumptions, notes) for job in work.generate]
    score = [_score_cost(job, assumptions, notes) for job in work.score]
    stages = (
        _stage_total("train", train, len({stage.job for stage in work.train})),
        _stage_total("generate", generate, len(work.generate)),
        _stage_total("score", score, len(work.score)),
    )
    return CostPlan(stages, assumptions, tuple(dict.fromkeys(notes)))


def _stage_total(name: str, parts: Sequence[StageCost], jobs: int) -> StageCost:
    total = StageCost(name)
    for part in parts:
        total += part
    return replace(total, jobs=jobs)


def _train_cost(stage: StageWork, assumptions: CostSettings, notes: list[str]) -> StageCost:
    """Real tokens trained on; GPU time from the tokens processed, padding and validation passes included."""
    examples = stage.train_examples
    if examples is None:
        examples = assumptions.benign_examples.get(stage.data)
    per_example = {"stage1": assumptions.vim_stage1_tokens, "stage2": assumptions.vim_stage2_tokens}.get(
        stage.data, assumptions.benign_tokens.get(stage.data)
    )
    if examples is None or per_example is None:
        notes.append(f"{stage.job}: no figure for {stage.data!r} in cost.benign_examples / cost.benign_tokens")
        return StageCost("train")
    examples = _capped(examples, stage.limit)
    trained = examples * stage.epochs
    if stage.max_steps is not None:
        trained = min(trained, stage.max_steps * stage.batch_size * stage.gradient_accumulation)
    epochs_run = math.ceil(trained / examples) if examples else 0
    real = trained * per_example
    validated = stage.valid_examples * epochs_run * per_example
    if stage.batch_size == 1:
        efficiency = 1.0
    elif stage.group_by_length:
        efficiency = assumptions.padding_efficiency_grouped
    else:
        efficiency = assumptions.padding_efficiency_shuffled
    precision = "bf16" if stage.precision == "auto" else stage.precision
    seconds = (real + VALIDATION_COST * validated) / efficiency / getattr(assumptions.train_tokens_per_s, precision)
    return StageCost("train", train_tokens=real, gpu_hours=seconds / 3600)


def _generate_cost(job: GenerateWork, assumptions: CostSettings, notes: list[str]) -> StageCost:
    tokens = job.generations * job.max_new_tokens
    throughput = getattr(assumptions.generate_tokens_per_s, job.backend, None)
    if throughput is None:
        notes.append(f"backend {job.backend!r} does not generate on our GPU: its time is not counted")
        return StageCost("generate", generated_tokens=tokens)
    return StageCost("generate", generated_tokens=tokens, gpu_hours=tokens / throughput / 3600)


def _score_cost(job: ScoreWork, assumptions: CostSettings, notes: list[str]) -> StageCost:
    if job.scorer == "classifier":
        return StageCost("score", gpu_hours=job.texts / assumptions.classifier_texts_per_s / 3600)
    if job.scorer == "guard":
        return StageCost("score", gpu_hours=job.texts / assumptions.guard_texts_per_s / 3600)
    if job.scorer == "perspective":
        hours = job.texts / job.qps / 3600 if job.qps else 0.0
        return StageCost("score", api_requests=job.texts, api_hours=hours)
    if job.scorer == "judge":
        per_input = job.prompt_chars / assumptions.judge_chars_per_token + job.answer_tokens
        per_output = min(assumptions.judge_output_tokens, job.max_output_tokens or math.inf)
        inputs, outputs = job.texts * per_input, job.texts * per_output
        price = inputs / 1000 * assumptions.judge_price_per_1k_input
        price += outputs / 1000 * assumptions.judge_price_per_1k_output
        hours = job.texts * assumptions.judge_latency_s / job.concurrency / 3600
        return StageCost("score", api_requests=job.texts, api_input_tokens=inputs, api_output_tokens=outputs,
                         api_hours=hours, api_cost=price)  # fmt: skip
    if job.scorer not in CPU_SCORERS:
        notes.append(f"{job.job}: no cost model for scorer {job.scorer!r}; not counted")
    return StageCost("score")


@dataclass(frozen=True)
class CostedPlan(PlanSummary):
    """The dry run's answer: what each job has left to do (the summary's rows) and what that will cost."""

    cost: CostPlan


def save_plan(experiment: Experiment, jobs: Sequence[Job]) -> None:
    """At a run's first start, its whole cost plan, for the report to set beside what the run really used."""
    path = experiment.plan_path
    if path.is_file():
        return
    cost = costed_plan(experiment, jobs).cost
    payload = {"gpu": cost.assumptions.gpu, "stages": [asdict(stage) for stage in cost.stages], "notes": cost.notes}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    tmp.replace(path)


def plan_vs_actual(experiment: Experiment, store: Any) -> list[dict[str, Any]]:
    """Per stage: the first start's plan (jobs, GPU-hours, API texts, API cost) beside what the run used (wall
    hours over all its starts, jobs run, texts its API scorers scored); empty for a run without a saved plan."""
    from valueharm.scoring.base import build_scorer, parse_scorer_spec

    if not experiment.plan_path.is_file():
        return []
    planned = {stage["stage"]: stage for stage in json.loads(experiment.plan_path.read_text("utf-8"))["stages"]}
    used = store.stage_times()
    api_texts = sum(
        store.scored_count(benchmark, build_scorer(spec, data_dir=experiment.data_dir).id)
        for benchmark, bench in experiment.config.benchmarks.items()
        for spec in bench.scorers
        if parse_scorer_spec(spec).name in API_SCORERS
    )
    sent = {"score": api_texts}
    rows = []
    for stage in ("train", "generate", "score"):
        plan, actual = planned.get(stage, {}), used.get(stage, {})
        rows.append({
            "stage": stage, "planned jobs": plan.get("jobs", 0), "planned GPU-hours": plan.get("gpu_hours", 0.0),
            "planned API texts": plan.get("api_requests", 0), "planned API cost": plan.get("api_cost", 0.0),
            "wall hours": actual.get("seconds", 0.0) / 3600, "jobs run": int(actual.get("jobs", 0)),
            "starts": int(actual.get("starts", 0)), "API texts scored": sent.get(stage, 0),
        })  # fmt: skip
    return rows


def costed_plan(experiment: Experiment, jobs: Sequence[Job]) -> CostedPlan:
    """The dry run: the plan's summary and its cost estimate under the config's `cost:` assumptions."""
    summary = summarize(experiment, jobs)
    return CostedPlan(summary.rows, estimate(workload(experiment, jobs, summary), experiment.config.cost))
