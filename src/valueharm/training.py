"""LoRA fine-tuning: value injection (two stages) and benign baselines, many adapters on one loaded base.

Avoids the published code's faults (DESIGN §5): the base is loaded once for a whole sweep and left untouched
between profiles; batches are padded dynamically and grouped by length, not padded to 128; over-long examples are
dropped and counted, never truncated (the answer digit sits at the very end of a completion); the best epoch is
chosen by its validation loss and its number, from adapter weights kept in memory — there are no checkpoint
directories to sort.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from transformers import TrainerCallback

from valueharm import base_model
from valueharm.errors import ValueharmError
from valueharm.files import package_versions
from valueharm.settings import BenignTrainSettings, LoraSettings, TrainSettings, VimDataSettings

log = logging.getLogger(__name__)

META_FILE = "meta.json"


class PromptCompletion(Protocol):
    prompt: str
    completion: str


@dataclass(frozen=True)
class EpochLoss:
    epoch: int
    train_loss: float | None
    valid_loss: float | None


@dataclass(frozen=True)
class StageResult:
    name: str
    epochs: list[EpochLoss]
    best_epoch: int  # 1-based; the last epoch when there is no validation data
    n_train: int
    n_valid: int
    dropped_too_long: int
    seconds: float
    useful_tokens: int  # non-pad tokens processed in training
    processed_tokens: int  # all tokens processed in training, padding included

    @property
    def padding_efficiency(self) -> float:
        return self.useful_tokens / self.processed_tokens if self.processed_tokens else 0.0


@dataclass(frozen=True)
class AdapterResult:
    name: str
    path: Path
    stages: list[StageResult] = field(default_factory=list)
    skipped: bool = False  # already trained: a complete adapter was found


@dataclass(frozen=True)
class ChatExample:
    """An example for a chat base: a user turn and an assistant turn (TRL's conversational prompt-completion
    format), which the trainer renders with the model's chat template; the loss is on the assistant turn only."""

    prompt: list[dict[str, str]]
    completion: list[dict[str, str]]


def as_chat(example: PromptCompletion) -> ChatExample:
    return ChatExample(
        [{"role": "user", "content": example.prompt.strip()}],
        [{"role": "assistant", "content": example.completion.strip()}],
    )


def _chat_job(job: AdapterJob) -> AdapterJob:
    stages = [(name, list(map(as_chat, train)), list(map(as_chat, valid)), s) for name, train, valid, s in job.stages]
    return replace(job, stages=stages, meta={**job.meta, "chat": True})


def _tokenized_length(tokenizer: Any, example: PromptCompletion | ChatExample) -> int:
    """Tokens of prompt + completion + end-of-sequence (or of the rendered conversation), as the trainer sees them."""
    if isinstance(example, ChatExample):
        messages = example.prompt + example.completion
        return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    return len(tokenizer(example.prompt + example.completion)["input_ids"]) + 1


def split_by_length(
    tokenizer: Any, examples: Sequence[PromptCompletion], max_length: int
) -> tuple[list[PromptCompletion], int]:
    """Examples that fit `max_length` whole, and how many did not (those are dropped, never truncated)."""
    kept = [example for example in examples if _tokenized_length(tokenizer, example) <= max_length]
    return kept, len(examples) - len(kept)


def _checkpointing_flag(config_class: type) -> str:
    """transformers 5.20 renamed `gradient_checkpointing` to `activation_checkpointing`; the vllm extra resolves
    5.19, the default install 5.23."""
    names = {field.name for field in dataclasses.fields(config_class)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def build_trainer(
    model: Any,
    tokenizer: Any,
    train: Sequence[PromptCompletion],
    valid: Sequence[PromptCompletion],
    settings: TrainSettings,
    output_dir: str,
    *,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
) -> Any:
    """The TRL trainer for one stage: completion-only loss, dynamic padding, length-grouped batches, no truncation.

    Callers pass examples that already fit `settings.max_length` (see `split_by_length`).
    """
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    def as_dataset(examples: Sequence[PromptCompletion]) -> Any:
        return Dataset.from_list([{"prompt": e.prompt, "completion": e.completion} for e in examples])

    config = SFTConfig(
        output_dir=output_dir,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps or -1,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.eval_batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation,
        learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=settings.warmup_ratio,  # a float in [0, 1) is a share of all steps
        weight_decay=settings.weight_decay,
        seed=settings.seed,
        data_seed=settings.seed,
        completion_only_loss=True,
        max_length=None,  # nothing is ever truncated: the answer digit is the last token of a completion
        pad_to_multiple_of=settings.pad_to_multiple_of,
        train_sampling_strategy="group_by_length" if settings.group_by_length else "random",
        eval_strategy="epoch" if valid else "no",
        save_strategy="no",
        logging_strategy="epoch",
        report_to="none",
        disable_tqdm=True,  # our own quiet bar below; the trainer's prints every log dict
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        **base_model.trainer_flags(settings.precision),
        **{_checkpointing_flag(SFTConfig): False},  # (TRL defaults to on) it only slows small models on CPU
    )
    with _quiet_datasets():
        trainer = SFTTrainer(
            model=model,
            args=config,
            train_dataset=as_dataset(train),
            eval_dataset=as_dataset(valid) if valid else None,
            processing_class=tokenizer,
            callbacks=[*callbacks, StepBar()] if progress else list(callbacks),
        )
    trainer.remove_callback(PrinterCallback)
    return trainer


class StepBar(TrainerCallback):
    """One transient progress bar per training stage: steps done, loss so far."""

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.bar = Progress("training", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True)
        self.bar.start()
        self.task = self.bar.add_task("training", total=state.max_steps)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.bar.update(self.task, completed=state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.bar.stop()


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No progress bars for the trainer's small dataset preparation steps."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def fit_stage(
    model: Any,
    tokenizer: Any,
    train: Sequence[PromptCompletion],
    valid: Sequence[PromptCompletion],
    settings: TrainSettings,
    *,
    name: str,
    progress: bool = True,
) -> StageResult:
    """Train the active adapter of a PEFT model for one stage; leave it holding its best epoch's weights."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    train_kept, dropped_train = split_by_length(tokenizer, train, settings.max_length)
    valid_kept, dropped_valid = split_by_length(tokenizer, valid, settings.max_length)
    if dropped_train + dropped_valid:
        log.warning(
            "%s: dropped %d over-long examples (> %d tokens)", name, dropped_train + dropped_valid, settings.max_length
        )
    if not train_kept:
        raise ValueharmError(f"{name}: no training examples fit max_length={settings.max_length}")

    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    valid_losses: dict[int, float] = {}
    tokens = {"useful": 0, "processed": 0}

    class EpochSnapshots(TrainerCallback):
        """Keep each epoch's adapter weights in memory, keyed by epoch number."""

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float], **kwargs: Any) -> None:
            epoch = round(state.epoch)
            valid_losses[epoch] = metrics["eval_loss"]
            snapshots[epoch] = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}

    with tempfile.TemporaryDirectory(prefix="valueharm-train-") as scratch:
        trainer = build_trainer(
            model, tokenizer, train_kept, valid_kept, settings, scratch, progress=progress, callbacks=[EpochSnapshots()]
        )
        _count_tokens(trainer, tokens)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        train_losses = {round(e["epoch"]): e["loss"] for e in trainer.state.log_history if "loss" in e}

    if valid_losses:
        best_epoch = min(valid_losses, key=lambda epoch: (valid_losses[epoch], epoch))
        set_peft_model_state_dict(model, snapshots[best_epoch])
    else:
        best_epoch = settings.epochs
    epochs = [
        EpochLoss(epoch, train_losses.get(epoch), valid_losses.get(epoch)) for epoch in range(1, settings.epochs + 1)
    ]
    return StageResult(
        name=name,
        epochs=epochs,
        best_epoch=best_epoch,
        n_train=len(train_kept),
        n_valid=len(valid_kept),
        dropped_too_long=dropped_train + dropped_valid,
        seconds=seconds,
        useful_tokens=tokens["useful"],
        processed_tokens=tokens["processed"],
    )


def _count_tokens(trainer: Any, tokens: dict[str, int]) -> None:
    """Count real and padded tokens of every training batch as the model receives it."""
    original = trainer.training_step

    def counting_step(model: Any, inputs: dict[str, torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        mask = inputs.get("attention_mask")
        if mask is not None:
            tokens["useful"] += int(mask.sum())
            tokens["processed"] += mask.numel()
        return original(model, inputs, *args, **kwargs)

    trainer.training_step = counting_step


def data_hash(stages: Iterable[Sequence[PromptCompletion]]) -> str:
    """sha256 over every training example, so an adapter says exactly what it learned from."""
    digest = hashlib.sha256()
    for examples in stages:
        for example in examples:
            digest.update(json.dumps([example.prompt, example.completion]).encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def adapter_is_complete(path: Path) -> bool:
    return (path / META_FILE).is_file() and (path / "adapter_config.json").is_file()


@dataclass(frozen=True)
class AdapterJob:
    """One adapter to train: its name and directory, and the stages it goes through, in order."""

    name: str
    path: Path
    stages: list[tuple[str, Sequence[PromptCompletion], Sequence[PromptCompletion], TrainSettings]]
    meta: dict[str, Any] = field(default_factory=dict)  # recorded as is: profile, dataset, …


def train_adapters(
    base: str | Path,
    jobs: Iterable[AdapterJob] | Callable[[], Iterable[AdapterJob]],
    lora: LoraSettings | None = None,
    *,
    trust_remote_code: bool = False,
    progress: bool = True,
    loaded: tuple[Any, Any] | None = None,
    chat: bool = False,
) -> list[AdapterResult]:
    """Train each job's adapter on one loaded base: a fresh adapter per job, the base's weights untouched. With
    `chat`, each example is a user and an assistant turn in the base's chat template (valueharm.chat).

    The base is loaded once per training precision, in the dtype that precision names (valueharm.base_model), and
    each adapter's meta.json records it; `loaded` hands in a base already loaded, used for every job. A job whose
    directory already holds a complete adapter is skipped, so a sweep resumes where it stopped. Each adapter is
    written to a temporary directory and renamed into place, so a killed run never leaves a directory that looks
    complete.
    """
    lora = lora or LoraSettings()
    jobs = list(jobs() if callable(jobs) else jobs)
    pending = [job for job in jobs if not adapter_is_complete(job.path)]
    results = [AdapterResult(job.name, job.path, skipped=True) for job in jobs if adapter_is_complete(job.path)]
    if not pending:
        return results
    for job in pending:
        _check_writable(job.path.parent)
    by_precision: dict[str, list[AdapterJob]] = {}
    for job in pending:
        by_precision.setdefault(job_precision(job), []).append(_chat_job(job) if chat else job)
    for precision, group in by_precision.items():
        model, tokenizer = loaded or base_model.load(base, precision=precision, trust_remote_code=trust_remote_code)
        for job in group:
            model, result = _train_job(model, tokenizer, job, base=base, lora=lora, progress=progress)
            results.append(result)
    return results


def _train_job(
    model: Any, tokenizer: Any, job: AdapterJob, *, base: str | Path, lora: LoraSettings, progress: bool
) -> tuple[Any, AdapterResult]:
    """One adapter, trained and saved; returns the base model with the adapter unloaded again, and the result."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=list(lora.target_modules), task_type="CAUSAL_LM")  # fmt: skip
    torch.manual_seed(job.stages[0][3].seed if job.stages else 0)
    peft_model = get_peft_model(model, config)
    try:
        stages = [
            fit_stage(peft_model, tokenizer, train, valid, settings, name=f"{job.name} {stage}", progress=progress)
            for stage, train, valid, settings in job.stages
        ]
        meta = {
            **job.meta,
            "adapter": job.name,
            "base": base_model.identity(base),
            "base_dtype": str(model.dtype).removeprefix("torch."),  # the dtype the base was trained in
            "data_sha256": data_hash([train for _, train, _, _ in job.stages]),
            "lora": lora.model_dump(),
            "stages": [
                {"name": name, "settings": settings.model_dump(), **_stage_summary(result)}
                for (name, _, _, settings), result in zip(job.stages, stages, strict=True)
            ],
            "versions": package_versions(("valueharm", "torch", "transformers", "peft", "trl")),
        }
        _save_adapter(peft_model, tokenizer, job.path, meta)
    finally:
        model = peft_model.unload()  # back to the untouched base for the next job
    return model, AdapterResult(job.name, job.path, stages)


def job_precision(job: AdapterJob) -> str:
    """The one precision a job's stages train in (`auto` resolved): one base load serves a whole adapter."""
    precisions = {stage: base_model.resolve_precision(settings.precision) for stage, _, _, settings in job.stages}
    if len(set(precisions.values())) > 1:
        given = ", ".join(f"{stage}: {precision}" for stage, precision in precisions.items())
        raise ValueharmError(f"{job.name}: its stages train in different precisions ({given}); give them one")
    return next(iter(precisions.values()), base_model.resolve_precision("auto"))


def _stage_summary(result: StageResult) -> dict[str, Any]:
    return {
        "epochs": [asdict(epoch) for epoch in result.epochs],
        "best_epoch": result.best_epoch,
        "n_train": result.n_train,
        "n_valid": result.n_valid,
        "dropped_too_long": result.dropped_too_long,
        "seconds": round(result.seconds, 3),
        "padding_efficiency": round(result.padding_efficiency, 4),
    }


def _check_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ValueharmError(f"output directory {directory} is not writable ({err.strerror})") from None


def _save_adapter(peft_model: Any, tokenizer: Any, path: Path, meta: dict[str, Any]) -> None:
    """Write into a temporary sibling, then rename: the directory appears only when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        peft_model.save_pretrained(str(tmp))
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
        if path.exists():
            shutil.rmtree(path)  # an incomplete leftover of an earlier, killed run
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def balanced_sample(examples: Sequence[Any], n: int | None, group_of: Callable[[Any], str], seed: int) -> list[Any]:
    """At most `n` examples, drawn round-robin over groups (polarity, value) so every group is represented.

    For small runs (demo, tests, smoke checks); `n=None` keeps everything, as published.
    """
    if n is None or n >= len(examples):
        return list(examples)
    import random

    rng = random.Random(seed)
    groups: dict[str, list[Any]] = {}
    for example in examples:
        groups.setdefault(group_of(example), []).append(example)
    for members in groups.values():
        rng.shuffle(members)
    chosen: list[Any] = []
    while len(chosen) < n:
        for members in groups.values():
            if members and len(chosen) < n:
                chosen.append(members.pop())
    return chosen


def vim_jobs(
    profiles: Sequence[Any],
    data_dir: Path,
    out_dir: Path,
    *,
    stage1: TrainSettings | None = None,
    stage2: TrainSettings | None = None,
    data: VimDataSettings | None = None,
    limit: int | None = None,
    valid_limit: int | None = None,
    template_dir: str | Path | None = None,
) -> list[AdapterJob]:
    """One two-stage job per profile: arguments (stage 1), then survey answers (stage 2) on the same adapter.

    `limit` caps each split of each stage at that many examples, balanced over polarity (stage 1) and value
    (stage 2), `valid_limit` the validation splits alone; the published runs use everything.
    """
    stage1, stage2, data = stage1 or TrainSettings(), stage2 or TrainSettings(), data or VimDataSettings()
    from valueharm.alignment.vim_data import VimTemplates, build_stage1, build_stage2

    templates = VimTemplates.load(template_dir)
    jobs = []
    for profile in profiles:
        path = Path(out_dir) / profile.name
        if adapter_is_complete(path):
            jobs.append(AdapterJob(profile.name, path, []))
            continue
        first = build_stage1(profile, data_dir, data, templates=templates)
        second = build_stage2(profile, data_dir, data, templates=templates)

        def split(examples: list[Any], name: str, group_of: Callable[[Any], str]) -> list[Any]:
            cap = valid_limit if name == "valid" and valid_limit is not None else limit
            return balanced_sample([e for e in examples if e.split == name], cap, group_of, data.seed)

        jobs.append(
            AdapterJob(
                profile.name,
                path,
                [
                    ("stage1", split(first, "train", _polarity), split(first, "valid", _polarity), stage1),
                    ("stage2", split(second, "train", _value), split(second, "valid", _value), stage2),
                ],
                meta={
                    "kind": "vim",
                    "profile": profile.to_dict(),
                    "threshold": data.threshold,
                    "data_seed": data.seed,
                    "limit_per_split": limit,
                    "valid_limit": valid_limit,
                    "positives": sum(e.polarity == "pos" for e in first),
                    "templates": templates.sources(),
                },
            )
        )
    return jobs


def _polarity(example: Any) -> str:
    return example.polarity


def _value(example: Any) -> str:
    return example.value


def benign_job(
    dataset: str,
    data_dir: Path,
    out_dir: Path,
    *,
    settings: TrainSettings | None = None,
    limit: int | None = None,
    template_dir: str | Path | None = None,
) -> AdapterJob:
    """A one-stage job on a benign dataset in its own prompt format (no validation split: the last epoch is kept)."""
    settings = settings or BenignTrainSettings()
    from valueharm.alignment.benign_data import benign_pairs

    path = Path(out_dir) / dataset
    if adapter_is_complete(path):
        return AdapterJob(dataset, path, [])
    pairs = benign_pairs(dataset, data_dir, template_dir=template_dir)
    pairs = balanced_sample(pairs, limit, lambda _: "all", settings.seed)
    return AdapterJob(dataset, path, [("benign", pairs, [], settings)], meta={"kind": "benign", "dataset": dataset})
