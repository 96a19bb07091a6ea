"""Every training, generation and metrics setting, declared once: its type, range, published default and help.

The training code takes these models as they are, the experiment config's sections are these models (or extend
them), and the CLI derives its options and their help from their fields (`valueharm.cli.common.with_settings`) —
so a default or a description changes in one place. Unknown keys are errors; a settings object never changes.
"""

from __future__ import annotations

import types
import typing
from copy import copy
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

S = TypeVar("S", bound="Settings")
Precision = Literal["auto", "fp32", "bf16", "fp16"]  # the dtype a base trains and generates in (base_model)


class Settings(BaseModel):
    """A frozen settings model that refuses unknown keys; `problems` turns its errors into one line."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------------------------------------------ training


class LoraSettings(Settings):
    """The adapter's shape (published: r=8, alpha=32, dropout 0.1 on q_proj and v_proj)."""

    r: int = Field(8, ge=1, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA alpha: the adapter's update is scaled by alpha / r.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the adapter's input.")
    target_modules: tuple[str, ...] = Field(
        ("q_proj", "v_proj"), min_length=1, description="Names of the modules that get an adapter."
    )


class Seeded(Settings):
    seed: int = Field(
        42,
        description="Seed of every random choice: data splits and samples, stochastic rounding of survey answers, "
        "weight initialisation and batch order (published: 42).",
    )


class StepSettings(Settings):
    """How one training stage optimises: the settings a single VIM stage may override."""

    learning_rate: float = Field(2e-5, gt=0, description="Peak learning rate.")
    epochs: int = Field(
        5, ge=1, description="Passes over the training data; the epoch with the best validation loss is kept."
    )
    batch_size: int = Field(8, ge=1, description="Examples per device step.")
    gradient_accumulation: int = Field(1, ge=1, description="Device steps per optimizer update.")
    max_length: int = Field(
        1024, ge=8, description="Tokens of prompt + completion; longer examples are dropped and counted, never cut."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (published VIM: 0.01).")
    group_by_length: bool = Field(
        True, description="Batch examples of similar length together (less padding); off: shuffled, as published."
    )


class TrainSettings(Seeded, StepSettings):
    """One training stage. Defaults are the published VIM settings: lr 2e-5, 5 epochs, batch 8."""

    precision: Precision = Field(
        "auto",
        description="The dtype the base is loaded and trained in, whatever the checkpoint's: auto is bf16 on a GPU "
        "that supports it, else fp32 (published VIM: fp32). One per adapter: both VIM stages share it.",
    )
    pad_to_multiple_of: int | None = Field(
        None, ge=1, description="Pad each batch to a multiple of this many tokens; unset: to its longest example."
    )
    lr_scheduler: str = Field("linear", description="Learning-rate schedule (a transformers scheduler name).")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Share of the steps that warm the learning rate up.")
    eval_batch_size: int = Field(16, ge=1, description="Examples per validation step.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps (smoke runs, benchmarks); unset: every epoch."
    )


def with_defaults(model: type[S], name: str, doc: str, *, module: str = __name__, **defaults: Any) -> type[S]:
    """`model` with other defaults for some fields (same types, ranges and help): a second recipe, not a copy.

    Assign it to `name` in `module`, so that it pickles (Ray ships configs to its workers)."""
    fields: dict[str, Any] = {}
    for key, value in defaults.items():
        info = copy(model.model_fields[key])
        info.default = value
        fields[key] = (info.annotation, info)
    return create_model(name, __base__=model, __doc__=doc, __module__=module, **fields)


def optional(model: type[S], name: str, doc: str) -> type[Settings]:
    """`model`'s fields, each optional: None means "not set here", so a section can override single settings."""
    fields: dict[str, Any] = {}
    for key, field in model.model_fields.items():
        info = copy(field)
        info.default = None
        fields[key] = (field.annotation | None, info)
    return create_model(name, __base__=Settings, __doc__=doc, __module__=__name__, **fields)


BenignTrainSettings = with_defaults(
    TrainSettings,
    "BenignTrainSettings",
    "Benign fine-tuning. Defaults are the published settings: lr 2e-5, 1 epoch, batch 1 × 16 accumulation, "
    "max length 2048.",
    epochs=1,
    batch_size=1,
    gradient_accumulation=16,
    max_length=2048,
)

StageOverrides = optional(
    StepSettings, "StageOverrides", "One VIM stage's own settings; each one unset here is the shared one."
)


class VimDataSettings(Seeded):
    """How a profile becomes VIM training data (published: threshold 3, seed 42)."""

    threshold: float = Field(
        3.0,
        description="Stage 1: an argument the profile scores ≥ this (its lowest score over the argument's values) "
        "is one the persona would say.",
    )


class SampleLimit(Settings):
    limit: int | None = Field(
        None,
        ge=1,
        description="Train on at most N examples per split and stage, a seeded sample balanced over polarity, value "
        "or nothing (small runs); unset: all of them, as published.",
    )


class Presettable(Settings):
    """A section with named presets: `preset: published` fills every key the section does not give itself."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    preset: Literal["published"] | None = Field(
        None, description="published: the published study's settings, for every key not given in this section."
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") in cls.PRESETS:
            return cls.PRESETS[data["preset"]] | data
        return data


# The published VIM code, both stages (max_length aside: it cut examples at 128 tokens, we never cut; DESIGN §5).
PUBLISHED_VIM = {
    "learning_rate": 2e-5, "lr_scheduler": "linear", "warmup_ratio": 0.0, "weight_decay": 0.01, "epochs": 5,
    "batch_size": 8, "gradient_accumulation": 1, "seed": 42, "precision": "fp32", "group_by_length": False,
    "threshold": 3.0, "limit": None, "valid_limit": None,
}  # fmt: skip
# The published benign fine-tuning (the fine-tuning-safety code's settings; weight decay and precision not stated).
PUBLISHED_BENIGN = {
    "learning_rate": 2e-5, "epochs": 1, "batch_size": 1, "gradient_accumulation": 16, "max_length": 2048,
    "group_by_length": False, "limit": None,
}  # fmt: skip


class VimTraining(Presettable, SampleLimit, VimDataSettings, TrainSettings):
    """VIM: data and training settings shared by both stages; `stage1` / `stage2` override single ones for one."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"published": PUBLISHED_VIM}
    valid_limit: int | None = Field(
        None,
        ge=1,
        description="Validate on at most N examples per stage (the best epoch is chosen on them), a seeded balanced "
        "sample; unset: as many as `limit`.",
    )

    stage1: StageOverrides = Field(StageOverrides(), description="Settings of stage 1 (arguments) only.")
    stage2: StageOverrides = Field(StageOverrides(), description="Settings of stage 2 (survey answers) only.")

    @property
    def data(self) -> VimDataSettings:
        return narrow(self, VimDataSettings)

    def stage(self, name: Literal["stage1", "stage2"]) -> TrainSettings:
        """A stage's training settings: the shared ones, with the stage's own."""
        own = getattr(self, name).model_dump(exclude_none=True)
        return TrainSettings(**narrow(self, TrainSettings).model_dump() | own)


class BenignTraining(Presettable, SampleLimit, BenignTrainSettings):  # type: ignore[misc,valid-type]
    """Benign fine-tuning baselines: one stage on each dataset in its own prompt format."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"published": PUBLISHED_BENIGN}

    @property
    def train(self) -> TrainSettings:
        return narrow(self, TrainSettings)


def narrow(settings: Settings, model: type[S]) -> S:
    """The settings of `model` out of a section that adds its own (e.g. the training settings of `training.vim`)."""
    return model(**settings.model_dump(include=set(model.model_fields)))


# ---------------------------------------------------------------------------------------------------- generation


class ItemSelection(Settings):
    """Which items of a benchmark are generated on."""

    limit: int | None = Field(None, ge=1, description="The first N items (default: the published limit, else all).")
    offset: int = Field(
        0, ge=0, description="Skip the first N items in file order (e.g. those a base model was trained on)."
    )
    per_category: int | None = Field(
        None, ge=1, description="The first N items of each category: small runs that still cover every category."
    )


class SamplingSettings(Settings):
    """How a benchmark is sampled; each one unset is the benchmark's published setting (DESIGN §4)."""

    samples: int | None = Field(None, ge=1, description="Samples per item (published: RTP 10, the others 1).")
    max_new_tokens: int | None = Field(
        None, ge=1, description="New tokens per sample (published: HolisticBiasR 128, the others 64)."
    )
    temperature: float | None = Field(None, ge=0, description="Sampling temperature (published: 0.1).")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling mass (published: 0.75).")


class GenerationSettings(Settings):
    """Which backend generates, and the seed every request's own random stream is drawn from."""

    backend: str = Field("hf", description="Generation backend: hf, vllm or openai.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Backend options, e.g. batch_size, base_url, model."
    )
    seed: int = Field(0, description="Sampling seed; each request is seeded from it and its key, so reruns agree.")


class AlignmentCheckSettings(Settings):
    """The value-alignment check: held-out survey questions asked of every aligned model and of the base."""

    enabled: bool = Field(True, description="Ask every aligned model (and the base) the held-out survey questions.")
    per_value: int = Field(30, ge=1, description="Held-out survey questions per value.")
    samples: int = Field(1, ge=1, description="Answers per question; each value's measured score is their mean.")
    temperature: float = Field(
        0.0, ge=0, description="0 reads the most likely answer; 1 samples the model's own answer distribution."
    )


class PvqCheckSettings(Settings):
    """The PVQ-40 check: the 40-item Portrait Values Questionnaire asked of every aligned model and of the base."""

    enabled: bool = Field(True, description="Ask the PVQ-40 items when the questionnaire file is in the data dir.")
    file: Path | None = Field(None, description="Another questionnaire (.xlsx/.csv with `question`, maybe `value`).")
    samples: int = Field(1, ge=1, description="Answers per item; each value's score is the mean over its items.")
    temperature: float = Field(0.0, ge=0, description="0 reads the most likely answer; 1 samples.")


# ------------------------------------------------------------------------------------------------------- scoring


class ScoringSettings(Settings):
    batch_size: int = Field(32, ge=1, description="Generations per scorer call.")


# ------------------------------------------------------------------------------------------------------- metrics


class MetricsSettings(Settings):
    """Bootstrap confidence intervals of every metric, and which published variants to compute beside ours."""

    n_boot: int = Field(1000, ge=10, description="Bootstrap resamples per confidence interval.")
    seed: int = Field(0, description="Bootstrap seed.")
    published_bias_score: bool = Field(
        False,
        description="Also compute bias_score_published, the published code's HolisticBiasR bias score (scipy "
        "bootstrap of the negative-regard percentage, 9,999 resamples, level 0.975, random_state 1, threshold 0.5).",
    )


# -------------------------------------------------------------------------------------------------------- errors


def problems(error: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """A pydantic error as one line: `where: what` per problem, where is the dotted path (from `prefix`)."""
    lines = []
    for problem in error.errors():
        loc = [str(part) for part in problem["loc"]]
        where = ".".join([prefix, *loc] if prefix else loc) or "(top level)"
        lines.append(f"{where}: {problem_message(problem, model)}")
    return "; ".join(lines)


def problem_message(problem: Any, model: type[BaseModel]) -> str:
    """What is wrong, for one problem of a pydantic error on `model`: unknown keys with the known ones."""
    if problem["type"] == "extra_forbidden":
        known = _model_at(model, problem["loc"][:-1])
        return "unknown key" + (f"; known: {', '.join(sorted(known.model_fields))}" if known else "")
    if problem["type"] == "value_error":
        return str(problem["ctx"]["error"])
    text = problem["msg"]
    return text if problem["type"] == "missing" else f"{text}, got {problem['input']!r}"


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model that holds the key at `loc` (through nested models, mappings and lists), if it is one."""
    current: Any = model
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = _inner(current.model_fields[part].annotation)
        elif isinstance(part, int | str) and typing.get_origin(current) in (dict, list):
            current = _inner(typing.get_args(current)[-1])
        else:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _inner(annotation: Any) -> Any:
    """`X | None` → X."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        kinds = [kind for kind in typing.get_args(annotation) if kind is not type(None)]
        return kinds[0] if len(kinds) == 1 else annotation
    return annotation
