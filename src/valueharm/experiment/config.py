"""The experiment YAML's schema: every section a pydantic model, validated whole — `ray:` too — before any work.

Training, generation and metrics sections are the models of `valueharm.settings` (or extend them), so their
defaults and help are the ones the training code and the CLI use. Each problem is reported with its YAML path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, ValidationError, field_validator

from valueharm.errors import ValueharmError
from valueharm.settings import (
    AlignmentCheckSettings,
    BenignTraining,
    GenerationSettings,
    ItemSelection,
    LoraSettings,
    MetricsSettings,
    PvqCheckSettings,
    SamplingSettings,
    ScoringSettings,
    Settings,
    VimTraining,
    problems,
    with_defaults,
)
from valueharm.yamlfile import read_yaml

M = TypeVar("M", bound=BaseModel)


class ProfilesConfig(Settings):
    names: list[str] = Field(default_factory=list, description="Profiles by name.")
    sets: list[str] = Field(default_factory=list, description="Named profile sets, e.g. vim154.")
    files: list[Path] = Field(default_factory=list, description="Custom profile files (YAML/CSV); all are used.")


class TrainingConfig(Settings):
    vim: VimTraining = Field(VimTraining(), description="VIM adapters: data and training settings.")
    benign: BenignTraining = Field(BenignTraining(), description="Benign fine-tuning baselines.")
    lora: LoraSettings = Field(LoraSettings(), description="The shape of every adapter.")


class BenchmarkConfig(SamplingSettings, ItemSelection):
    """One benchmark of the experiment: which items, how they are sampled, how the outputs are scored."""

    options: dict[str, Any] = Field(default_factory=dict, description="Loader options, e.g. HolisticBiasR filters.")
    scorers: list[str] = Field(default_factory=list, description="Scorer specs NAME[:key=value,…].")


class MitigationConfig(Settings):
    conditions: list[Literal["safety", "value", "dual"]] = Field(
        default_factory=list, description="In-context alignment prompts to add: safety, value or both (dual)."
    )
    models: list[str] = Field(
        default_factory=list,
        description="Model keys to mitigate (default: every aligned one, and vanilla when it is a method, to compare).",
    )
    benchmarks: list[str] = Field(default_factory=list, description="Default: every benchmark of the experiment.")
    set_aside: list[str] = Field(
        default_factory=list, description="Values the value instruction names where the category map says nothing."
    )
    by_category: bool = Field(
        True,
        description="Value instruction per item category from the hypotheses table: set aside the values expected "
        "to raise its harm, promote those expected to lower it (other categories: set_aside, else the profile's top).",
    )


class CalibrationPair(Settings):
    """A local toxicity scorer lined up against a reference one on the run's RTP generations (both must be
    among benchmarks.rtp.scorers)."""

    reference: str = Field("perspective", description="The reference scorer spec, e.g. perspective.")
    local: str = Field(description="The local scorer spec, e.g. classifier:model=toxicity.")


class AnalysisConfig(Settings):
    alignment_check: AlignmentCheckSettings = Field(AlignmentCheckSettings(), description="The value-alignment check.")
    pvq: PvqCheckSettings = Field(PvqCheckSettings(), description="The PVQ-40 alignment check (needs dataset pvq40).")
    alpha: float = Field(0.05, gt=0, lt=1, description="Significance level of the hypothesis tests (on q-values).")
    permutations: int = Field(
        9_999, ge=1, description="Random orders of the family permutation test (all orders when there are fewer)."
    )
    seed: int = Field(0, description="Seed of the permutation test.")
    harm_metrics: dict[str, str] = Field(default_factory=dict, description="Benchmark → metric to correlate.")
    scores_from: Literal["target", "measured"] = Field(
        "target", description="Correlate harms with the profiles' target scores or the scores the check measured."
    )
    hypotheses_file: Path | None = Field(None, description="Expected value–harm directions (default: published).")
    regression: bool = Field(
        True, description="Regress each harm category on the ten values (or the four dimensions), family-clustered."
    )
    calibrate: list[CalibrationPair] = Field(
        default_factory=list, description="Local toxicity scorers to calibrate against a reference on RTP."
    )


# ----------------------------------------------------------------------------------------------------------- ray

_BYTES = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def _bytes(value: Any) -> Any:
    """Bytes from an int or a string such as `16GiB` or `512MB`."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        return value
    text = str(value).strip().lower().replace(" ", "")
    number = text.rstrip("kmgib")
    try:
        amount = float(number) * _BYTES[text[len(number) :]]
    except (ValueError, KeyError):
        raise ValueError(f"expected bytes (e.g. 16GiB, 512MB), got {value!r}") from None
    if amount <= 0:
        raise ValueError(f"must be positive, got {value!r}")
    return int(amount)


Bytes = Annotated[int, BeforeValidator(_bytes)]


class RayResources(Settings):
    """What one task asks Ray for."""

    num_cpus: float = Field(1, ge=0, description="CPUs per task.")
    num_gpus: float | None = Field(None, ge=0, description="GPUs per task; unset: 1 when the cluster has GPUs, else 0.")
    memory: Bytes | None = Field(
        None, description="Memory reserved per task in Ray's scheduler, e.g. 16GiB (not a hard limit)."
    )


class RayGenerate(RayResources):
    groups: int | None = Field(
        None, ge=1, description="Generation tasks, each one backend for its models; unset: as many as run at once."
    )


RayScoreResources = with_defaults(
    RayResources, "RayScoreResources", "What one scoring task asks Ray for: no GPU.", module=__name__, num_gpus=0
)


class RayScore(ScoringSettings, RayScoreResources):  # type: ignore[misc,valid-type]
    tasks: int = Field(
        1, ge=1, description="Tasks per scorer at once; with its max_concurrency, the bound on API requests in flight."
    )


class RayLocalCluster(Settings):
    """The cluster started for one run when no address is given."""

    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local cluster; unset: Ray's detection.")
    num_gpus: int | None = Field(None, ge=0, description="GPUs of the local cluster; unset: Ray's detection.")
    object_store_memory: Bytes = Field(
        256 * 2**20, description="Ray's object store; records and the experiment are small, so it needs little."
    )


class RaySettings(Settings):
    """The Ray executor's settings (the config's `ray:` section): where work runs, never what it produces."""

    train: RayResources = Field(RayResources(), description="Resources of each training task (one per adapter).")
    generate: RayGenerate = Field(RayGenerate(), description="Resources and number of the generation tasks.")
    score: RayScore = Field(RayScore(), description="Resources, number and batch size of the scoring tasks.")
    max_retries: int = Field(2, ge=0, description="Restarts of a task whose worker or node dies.")
    shared_dir: Annotated[Path, AfterValidator(Path.expanduser)] | None = Field(
        None, description="Where adapters go, at the same path on every node (default: the run directory)."
    )
    runtime_env: dict[str, Any] | None = Field(
        None, description="Ray runtime_env; default: ship valueharm's source when connecting to a cluster."
    )
    local: RayLocalCluster = Field(RayLocalCluster(), description="The local cluster started when no address is given.")


# ---------------------------------------------------------------------------------------------------------- cost

# Documented figures behind the defaults (their sources: valueharm.experiment.cost's docstring); a mapping given in
# the config adds to these entries or replaces them one by one.
BENIGN_EXAMPLES: dict[str, int] = {
    "alpaca": 52_002, "dolly": 15_011, "dolly-no-safety": 14_624, "grammar": 13_016, "samsum": 14_732,
}  # fmt: skip
BENIGN_TOKENS: dict[str, float] = {"alpaca": 110, "dolly": 220, "dolly-no-safety": 220, "grammar": 91, "samsum": 190}


class TrainThroughput(Settings):
    """Training tokens per second (padding included) of LoRA on a 7B base, one GPU, by precision."""

    fp32: float = Field(350, gt=0, description="fp32 (PyTorch runs fp32 matmuls without TF32 by default).")
    bf16: float = Field(3500, gt=0, description="bf16; `precision: auto` counts as bf16.")
    fp16: float = Field(3500, gt=0, description="fp16.")


class GenerateThroughput(Settings):
    """Generated tokens per second of a 7B base on one GPU, by backend (openai: not on our GPU, not counted)."""

    vllm: float = Field(2500, gt=0, description="vLLM, one engine serving many LoRA adapters in mixed batches.")
    hf: float = Field(500, gt=0, description="transformers with PEFT mixed-adapter batches.")


class CostSettings(Settings):
    """Assumptions of the dry run's cost plan: throughputs of a 7B base on one GPU of class `gpu`, tokens per
    training example, and API prices. Each default is documented with its source in valueharm.experiment.cost."""

    gpu: str = Field("A100-80GB", description="The GPU class the throughputs below are for (named in the plan).")
    gpu_price_per_hour: float | None = Field(None, ge=0, description="Price of one GPU-hour; unset: not costed.")
    train_tokens_per_s: TrainThroughput = Field(TrainThroughput(), description="LoRA training throughput.")
    padding_efficiency_shuffled: float = Field(
        0.75, gt=0, le=1, description="Share of real tokens in shuffled batches of 8 (`group_by_length: false`)."
    )
    padding_efficiency_grouped: float = Field(
        0.98, gt=0, le=1, description="Share of real tokens in length-grouped batches (batches of 1 have none)."
    )
    vim_stage1_tokens: float = Field(69, gt=0, description="Mean tokens of a VIM stage-1 example (with BOS, EOS).")
    vim_stage2_tokens: float = Field(133, gt=0, description="Mean tokens of a VIM stage-2 example (with BOS, EOS).")
    benign_examples: dict[str, int] = Field(
        default_factory=lambda: dict(BENIGN_EXAMPLES),
        description="Training examples per benign dataset (added to / replacing the defaults).",
    )
    benign_tokens: dict[str, float] = Field(
        default_factory=lambda: dict(BENIGN_TOKENS),
        description="Mean tokens of an example per benign dataset (added to / replacing the defaults).",
    )
    generate_tokens_per_s: GenerateThroughput = Field(GenerateThroughput(), description="Generation throughput.")
    classifier_texts_per_s: float = Field(1000, gt=0, description="Texts per second of a `classifier` scorer.")
    guard_texts_per_s: float = Field(20, gt=0, description="Texts per second of a `guard` scorer (a 7B model).")
    judge_chars_per_token: float = Field(4.7, gt=0, description="Characters per token of the judge's tokenizer.")
    judge_output_tokens: float = Field(
        60, gt=0, description="Mean tokens of a judge's reply (at most the scorer's max_tokens)."
    )
    judge_latency_s: float = Field(2.0, gt=0, description="Seconds per judge request (max_concurrency at once).")
    judge_price_per_1k_input: float = Field(0.0025, ge=0, description="Price of 1,000 judge input tokens (gpt-4o).")
    judge_price_per_1k_output: float = Field(0.01, ge=0, description="Price of 1,000 judge output tokens (gpt-4o).")

    @field_validator("benign_examples", "benign_tokens")
    @classmethod
    def _over_defaults(cls, values: dict[str, Any], info: Any) -> dict[str, Any]:
        defaults = BENIGN_EXAMPLES if info.field_name == "benign_examples" else BENIGN_TOKENS
        return {**defaults, **values}


# ---------------------------------------------------------------------------------------------------- experiment


class ExperimentConfig(Settings):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Names the run directory runs/<name>.")
    base_model: str = Field(
        description="A model registry name (`valueharm models list`), a local path, a hub id, or tiny:demo / tiny:test."
    )
    trust_remote_code: bool = Field(False, description="Run code shipped with the model (off unless asked).")
    chat: Literal["auto"] | bool = Field(
        "auto",
        description="Prompts and training data as conversations in the base's chat template: true, false, or auto "
        "(a registry name by its role, a tiny build never, another base when its tokenizer has a chat template).",
    )
    data_dir: Path | None = Field(None, description="Data directory (default: $VALUEHARM_DATA, else the user cache).")
    profiles: ProfilesConfig = Field(ProfilesConfig(), description="Target value profiles of vim and icl.")
    methods: list[Literal["vanilla", "vim", "icl", "benign"]] = Field(min_length=1, description="Models to compare.")
    benign_datasets: list[str] = Field(default_factory=list, description="Datasets of the benign baselines.")
    training: TrainingConfig = Field(TrainingConfig(), description="How adapters are trained.")
    benchmarks: dict[str, BenchmarkConfig] = Field(min_length=1, description="Benchmark name → its settings.")
    generation: GenerationSettings = Field(GenerationSettings(), description="Backend and sampling seed.")
    mitigation: MitigationConfig = Field(MitigationConfig(), description="In-context mitigation conditions.")
    analysis: AnalysisConfig = Field(AnalysisConfig(), description="Alignment check and value–harm analyses.")
    metrics: MetricsSettings = Field(MetricsSettings(), description="Bootstrap of every metric.")
    template_dir: Path | None = Field(None, description="<name>.txt files that replace built-in prompt templates.")
    ray: RaySettings = Field(RaySettings(), description="Ray executor settings; they change where work runs only.")
    cost: CostSettings = Field(CostSettings(), description="Assumptions of the dry run's time and cost estimate.")
    progress: bool = Field(True, description="Progress bars.")

    @field_validator("methods")
    @classmethod
    def _unique_methods(cls, methods: list[str]) -> list[str]:
        if len(set(methods)) != len(methods):
            raise ValueError("each method once")
        return methods


def validated(model: type[M], values: Any, where: str = "") -> M:
    """`values` as a `model`, or one ValueharmError line naming each problem's path (from `where`)."""
    try:
        return model.model_validate(values)
    except ValidationError as error:
        raise ValueharmError(problems(error, model, where)) from None


def builtin_config_names() -> list[str]:
    """The configs shipped with the package (`demo`, `paper`, …), each runnable by name: `valueharm run NAME`."""
    return sorted(file.name.removesuffix(".yaml") for file in _builtin_dir().iterdir() if file.name.endswith(".yaml"))


def builtin_config_text(name: str) -> str:
    """A built-in config's YAML as shipped, comments included; an unknown name lists the built-in ones."""
    if name not in builtin_config_names():
        raise ValueharmError(f"no built-in config {name!r}; built-in: {', '.join(builtin_config_names())}")
    return (_builtin_dir() / f"{name}.yaml").read_text(encoding="utf-8")


def builtin_config(name: str) -> dict[str, Any]:
    """A config shipped with the package (`demo`, `smoke`) as a plain mapping, to run or to adapt."""
    return yaml.safe_load(builtin_config_text(name))


@contextlib.contextmanager
def config_file(name_or_path: str | Path) -> Iterator[Path]:
    """The experiment YAML a command names: a file that exists wins, else a built-in config by name (`paper-small`,
    without `.yaml`); anything else is one error listing the built-in names."""
    path = Path(name_or_path)
    if path.is_file():
        yield path
        return
    if str(name_or_path) not in builtin_config_names():
        raise ValueharmError(
            f"{name_or_path}: no such experiment config file, nor a built-in config; "
            f"built-in: {', '.join(builtin_config_names())}"
        )
    with builtin_config_file(str(name_or_path)) as file:
        yield file


@contextlib.contextmanager
def builtin_config_file(name: str) -> Iterator[Path]:
    """A shipped config as a file on disk (it may sit inside a zipped package)."""
    with resources.as_file(_builtin_dir() / f"{name}.yaml") as file:
        yield file


def _builtin_dir() -> Traversable:
    return resources.files("valueharm") / "configs"


def load_config(path: str | Path) -> ExperimentConfig:
    """Parse and validate the YAML; each problem is reported with its YAML path. Paths are relative to the file."""
    path = Path(path)
    document = read_yaml(path, "experiment")
    if not isinstance(document, dict):
        raise ValueharmError(f"{path}: expected a mapping of settings at the top level")
    try:
        config = validated(ExperimentConfig, document)
    except ValueharmError as error:
        raise ValueharmError(f"{path}: {error}") from None
    base = path.parent
    profiles, hypotheses, pvq = config.profiles, config.analysis.hypotheses_file, config.analysis.pvq
    return config.model_copy(
        update={
            "profiles": profiles.model_copy(update={"files": [_relative(base, f) for f in profiles.files]}),
            "template_dir": _relative(base, config.template_dir) if config.template_dir else None,
            "data_dir": _relative(base, config.data_dir) if config.data_dir else None,
            "analysis": config.analysis.model_copy(
                update={
                    "hypotheses_file": _relative(base, hypotheses) if hypotheses else None,
                    "pvq": pvq.model_copy(update={"file": _relative(base, pvq.file) if pvq.file else None}),
                }
            ),
        }
    )


def _relative(base: Path, path: Path) -> Path:
    """Paths in a config are relative to the config file."""
    return path if path.is_absolute() else (base / path).resolve()
