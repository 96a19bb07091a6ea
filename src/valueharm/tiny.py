"""Build the tiny offline base model used by the demo and the tests.

Real runs use 7B+ models on GPUs; everything here must run on a 2-core CPU without network. So we make a small
LLaMA-architecture causal LM in code: a byte-level BPE tokenizer trained on local English text (the arguments of
valueEval_10.csv and the corrected sentences of gtrain_10k.csv, plus instruction examples: grammar corrections
answered and half of AdvBench's behaviours refused), then a short, seeded pretraining run on the same text so that
generations look like English, the model has some safety behaviour to lose, and LoRA fine-tunes have something to
move. The result is a normal transformers checkpoint (``AutoModelForCausalLM`` / ``AutoTokenizer``), cached under a
key derived from the recipe and the corpus checksums so a changed recipe or corpus rebuilds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd
import torch
import transformers
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from valueharm.alignment.vim_data import (
    SURVEY_FILES,
    SURVEY_MAX,
    SURVEY_MIN,
    VimTemplates,
    read_arguments,
    survey_answer,
)
from valueharm.errors import DataMissingError, UnknownNameError, ValueharmError
from valueharm.files import sha256_of
from valueharm.paths import cache_dir
from valueharm.templates import Template, load_template

META_FILE = "tiny_meta.json"
"""Written last: its presence marks a complete build."""

RECIPE_VERSION = 6
"""Part of the cache key; bump it when the build code changes what a spec produces (6: survey answers in the
corpus; 5: built under MKL's strict reproducibility mode, see valueharm/__init__.py)."""

VALUE_EVAL_FILE = "valueEval_10.csv"
GRAMMAR_FILE = "gtrain_10k.csv"
HARMFUL_FILE = "harmful_behaviors.csv"
SURVEY_FILE = SURVEY_FILES["train"]

REFUSALS = (
    "I can't help with that, because it could hurt people.",
    "I cannot assist with this request. It could cause real harm.",
    "I'm sorry, but I won't do that. It is unsafe.",
    "I cannot provide that. Please ask me something else.",
)
"""The safety behaviour of the tiny base, in our own words: what value fine-tuning may wear away, as in real models."""

GRAMMAR_INSTRUCTIONS = 2000
"""Benign instruction examples (grammar correction) beside the refusals, so the model does not refuse everything."""

SURVEY_ANSWERS = 500
"""Survey questions (VIM stage 2's, in its templates) answered with uniformly random ratings: like an instruction-
tuned model, the base knows how a rating question is answered, but it holds no value profile (its alignment-check r
is near 0). Without them a value adapter has to teach the survey format too, and on this small model it then
answers every prompt in it, or not at all. How many is measured, and the figures move a lot on a model this small
(share of HEx-PHI prompts the base answers with a rating / the demo's VIM models do; their mean r, 8 questions
per value): 250 → 0.77 / 0.77, r 0.82; 500 → 0.23 / 0.30, r 0.90; 750 → 0.95 / 0.20, r 0.79; 1,000 → 0.41 / 0.91,
r 0.75; 2,000 → 0.64 / 0.48, r 0.79."""

REFUSALS_PER_BEHAVIOUR = 4
"""Each taught behaviour is refused in every wording, in a seeded order."""

REFUSAL_TRAINING_ROWS = 260
"""The tiny base is taught to refuse AdvBench's first 260 behaviours; the other 260 are held out, so an evaluation
with `offset: 260` measures refusal that generalised, and how much of it alignment wears away. (AdvBench words some
behaviours twice, so a few held-out ones are near-copies of taught ones.)"""

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}### System:\n{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}### User:\n{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'assistant' %}### Assistant:\n"
    "{% generation %}{{ message['content'] }}{{ eos_token }}{% endgeneration %}\n\n"
    "{% else %}{{ raise_exception('unknown chat role: ' + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}### Assistant:\n{% endif %}"
)
"""Plain-text turns; the assistant part is marked with {% generation %} so TRL can mask the loss to it."""


@dataclass(frozen=True)
class TinySpec:
    """One recipe: model shape and pretraining budget. Every field is part of the cache key."""

    name: str
    vocab_size: int  # BPE vocabulary, special tokens included
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int  # SwiGLU MLP width
    max_position: int  # max_position_embeddings (RoPE); longer than seq_len so callers can prompt + generate
    train_steps: int
    batch_size: int  # sequences per step
    seq_len: int  # tokens per packed training sequence
    lr: float  # peak AdamW learning rate (linear warm-up, cosine decay to 10 %)
    seed: int


TINY_VARIANTS: dict[str, TinySpec] = {
    spec.name: spec
    for spec in (
        # The demo's model must be good enough that a LoRA adapter can tie an answer to a value's name a few
        # tokens back — the base of the value-alignment check. Measured on this 2-core CPU: the same shape with a
        # 4,096 vocabulary and 450 steps (loss 5.6) learned the answer format but not which values matter; 1,000
        # steps do. The 2,048 vocabulary halves the cost of the output layer, which dominates at this size.
        TinySpec(
            name="demo",
            vocab_size=2048,
            hidden_size=192,
            num_layers=4,
            num_heads=4,
            intermediate_size=512,
            max_position=1024,
            train_steps=1000,
            batch_size=8,
            seq_len=128,
            lr=3e-3,
            seed=0,
        ),
        TinySpec(
            name="test",
            vocab_size=1024,
            hidden_size=64,
            num_layers=2,
            num_heads=2,
            intermediate_size=128,
            max_position=1024,
            train_steps=300,
            batch_size=8,
            seq_len=64,
            lr=1e-2,
            seed=0,
        ),
    )
}


@dataclass(frozen=True)
class TinyModelInfo:
    """What `build_tiny` made (or found in the cache)."""

    path: Path
    variant: str
    n_params: int
    size_bytes: int  # all files of the checkpoint directory
    build_seconds: float  # of the build that made it, also when reused from the cache
    final_loss: float  # mean training loss over the last steps
    cached: bool  # True when an existing complete build was reused


def build_tiny(
    variant: str = "demo",
    *,
    data_dir: Path,
    out: Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> TinyModelInfo:
    """Build (or reuse) the tiny model of `variant`; default location is `<cache>/tiny/<variant>-<key>`.

    A complete build in the target (same key) is reused unless `force`. The build happens in a temporary
    directory beside the target and is renamed into place at the end, so an interrupted build never looks
    complete. Weights are bit-identical across builds on the same machine (same seed, data order and threads).
    """
    spec, files, question, survey, checksums, key = _recipe(variant, Path(data_dir))
    target = Path(out) if out is not None else cache_dir() / "tiny" / f"{variant}-{key}"

    if not force and (info := _load_complete(target, key)) is not None:
        return info
    _check_replaceable(target)

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        _build_into(tmp, spec, files, question, survey, checksums, key, progress)
        installed = _install(tmp, target, key, force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    info = _load_complete(target, key)
    if info is None:
        raise ValueharmError(f"{target} is incomplete right after the build; another process may be writing it")
    return replace(info, cached=not installed)


def find_tiny(variant: str, *, data_dir: Path) -> TinyModelInfo | None:
    """The complete build of `variant` in the cache, without building it (None when there is none)."""
    *_, key = _recipe(variant, Path(data_dir))
    return _load_complete(cache_dir() / "tiny" / f"{variant}-{key}", key)


def _recipe(variant: str, data_dir: Path) -> tuple[TinySpec, list[Path], Template, VimTemplates, dict[str, str], str]:
    """What a build of `variant` is made of, and its cache key: the spec, the corpus files, the instruction and
    survey formats (part of the recipe), their checksums."""
    if variant not in TINY_VARIANTS:
        raise UnknownNameError(f"unknown tiny model variant {variant!r}; known: {', '.join(TINY_VARIANTS)}")
    spec = TINY_VARIANTS[variant]
    files = _corpus_files(data_dir)
    question, survey = load_template("instruction_format"), VimTemplates.load()
    checksums = {str(path.relative_to(data_dir)): sha256_of(path) for path in files} | {
        template.name: hashlib.sha256(template.text.encode()).hexdigest()
        for template in (question, survey.stage2_prompt, survey.stage2_completion)
    }
    return spec, files, question, survey, checksums, _cache_key(spec, checksums)


# ----------------------------------------------------------------------------------------------- corpus


def _corpus_files(data_dir: Path) -> list[Path]:
    """The corpus files, checked for presence before any work."""
    files = [data_dir / name for name in (VALUE_EVAL_FILE, GRAMMAR_FILE, HARMFUL_FILE, SURVEY_FILE)]
    for path in files:
        if not path.is_file():
            raise DataMissingError(
                f"{path.relative_to(data_dir)} not found in data directory {data_dir}; run `valueharm data fetch` "
                "or point --data-dir / $VALUEHARM_DATA at a directory that has it"
            )
    return files


def _load_corpus(files: list[Path], question: Template, survey: VimTemplates, seed: int) -> list[str]:
    """Plain text — unique premises, conclusions and corrected sentences — and instruction examples in the
    benchmarks' question/answer format: grammar corrections answered, AdvBench's first REFUSAL_TRAINING_ROWS
    behaviours refused (the rest are held out for evaluation) — and survey questions answered at random. Shuffled
    with `seed` so sources interleave."""
    value_eval = pd.read_csv(files[0], sep="\t", usecols=["Conclusion", "Premise"], dtype=str)
    grammar = pd.read_csv(files[1], encoding="utf-8-sig", usecols=["input", "target"], dtype=str).dropna()
    harmful = pd.read_csv(files[2], usecols=["goal"], dtype=str)["goal"].iloc[:REFUSAL_TRAINING_ROWS].dropna()
    columns = [value_eval["Premise"], value_eval["Conclusion"], grammar["target"]]
    texts = {text.strip(): None for column in columns for text in column.dropna()}
    docs = [text for text in texts if text]
    rng = random.Random(seed)
    pairs = grammar.sample(n=min(GRAMMAR_INSTRUCTIONS, len(grammar)), random_state=seed)
    docs += [
        question.render(query=f"Correct the grammar of this sentence: {row.input.strip()}") + " " + row.target.strip()
        for row in pairs.itertuples()
    ]
    docs += [
        question.render(query=goal.strip()) + " " + refusal
        for goal in harmful
        for refusal in rng.sample(REFUSALS, REFUSALS_PER_BEHAVIOUR)
    ]
    asked = [(a, value) for a in read_arguments(files[3].parent, files[3].name) for value in a.values]
    for argument, value in rng.sample(asked, min(SURVEY_ANSWERS, len(asked))):
        docs.append("".join(survey_answer(argument, value, rng.randint(SURVEY_MIN, SURVEY_MAX), survey)))
    rng.shuffle(docs)
    return docs


# -------------------------------------------------------------------------------------------- tokenizer


def _train_tokenizer(docs: list[str], vocab_size: int, max_length: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (no unknown bytes) with Llama-style special tokens: `<s>` prepended on encode."""
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[UNK, BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(docs, trainer=trainer, length=len(docs))
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        add_bos_token=True,
        add_eos_token=False,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=max_length,
    )


def _pack(docs: list[str], tokenizer: PreTrainedTokenizerFast, seq_len: int) -> torch.Tensor:
    """`<s> doc </s>` for every document, concatenated and cut into rows of `seq_len` (remainder dropped)."""
    # the backend directly: documents longer than model_max_length are fine here, they get cut into rows
    encodings = tokenizer.backend_tokenizer.encode_batch(docs, add_special_tokens=False)
    flat = [tok for enc in encodings for tok in (tokenizer.bos_token_id, *enc.ids, tokenizer.eos_token_id)]
    n_rows = len(flat) // seq_len
    if n_rows == 0:
        raise ValueharmError(f"corpus too small: {len(flat)} tokens for sequences of {seq_len}")
    return torch.tensor(flat[: n_rows * seq_len], dtype=torch.long).view(n_rows, seq_len)


# -------------------------------------------------------------------------------------------- pretraining


def _make_model(spec: TinySpec, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """A randomly initialised Llama with `spec`'s shape and the tokenizer's special ids."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=spec.max_position,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return model


def _batches(rows: torch.Tensor, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless seeded epochs over the packed rows: the data order depends on `seed` only."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(rows), generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield rows[order[start : start + batch_size]]


def _lr_factor(step: int, total: int) -> float:
    """Linear warm-up over the first 5 % of steps, then cosine decay to 10 % of the peak."""
    warmup = max(1, total // 20)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def _pretrain(model: LlamaForCausalLM, rows: torch.Tensor, spec: TinySpec, progress: bool) -> list[float]:
    """Plain AdamW loop over packed rows; returns the loss of every step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.01, betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, spec.train_steps))
    batches = _batches(rows, min(spec.batch_size, len(rows)), spec.seed)
    losses: list[float] = []
    model.train()
    with _progress_bar(progress, spec.train_steps, f"pretraining tiny model ({spec.name})") as advance:
        for _ in range(spec.train_steps):
            batch = next(batches)
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            advance(losses[-1])
    model.eval()
    return losses


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int, description: str) -> Iterator[Callable[[float], None]]:
    """A rich bar on stderr showing the running loss, or a no-op when disabled."""
    if not enabled:
        yield lambda loss: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total, loss="-")
        yield lambda loss: bar.update(task, advance=1, loss=f"{loss:.3f}")


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Use `n` intra-op threads for the build only, restoring the caller's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _no_transformers_bars() -> Iterator[None]:
    """Hide transformers' one-step "Writing model shards" bar, which is noise beside our own."""
    enabled = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            transformers.utils.logging.enable_progress_bar()


def _available_cpus() -> int:
    """CPUs this process may run on (affinity-aware where the OS reports it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# ------------------------------------------------------------------------------------------------ build


def _build_into(
    tmp: Path,
    spec: TinySpec,
    files: list[Path],
    question: Template,
    survey: VimTemplates,
    checksums: dict[str, str],
    key: str,
    progress: bool,
) -> None:
    """Tokenizer, pretraining, save; the meta file goes last."""
    start = time.perf_counter()
    docs = _load_corpus(files, question, survey, spec.seed)
    tokenizer = _train_tokenizer(docs, spec.vocab_size, spec.max_position)
    rows = _pack(docs, tokenizer, spec.seq_len)
    # fork_rng: seeding here must not disturb the caller's global RNG stream
    with torch.random.fork_rng(devices=[]), _torch_threads(_available_cpus()):
        torch.manual_seed(spec.seed)
        model = _make_model(spec, tokenizer)
        losses = _pretrain(model, rows, spec, progress)
    tokenizer.save_pretrained(tmp)
    with _no_transformers_bars():
        model.save_pretrained(tmp)
    tail = losses[-min(10, len(losses)) :]
    meta = {
        "variant": spec.name,
        "key": key,
        "recipe_version": RECIPE_VERSION,
        "spec": asdict(spec),
        "n_params": model.num_parameters(),
        "first_loss": losses[0],
        "final_loss": sum(tail) / len(tail),
        "build_seconds": round(time.perf_counter() - start, 2),
        "corpus": {"files": checksums, "documents": len(docs), "tokens": rows.numel()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    tmp.chmod(0o755)  # mkdtemp makes it private; a cache entry should read like any other directory


def _install(tmp: Path, target: Path, key: str, force: bool) -> bool:
    """Move the finished build into place; False when a concurrent build of the same key got there first."""
    if not target.exists():
        os.replace(tmp, target)
        return True
    if not force and _load_complete(target, key) is not None:
        return False
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, old / target.name)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return True


def build_identity(path: Path) -> str | None:
    """`tiny:<variant>@<key>` for a complete tiny build at `path` (its recipe and corpus, not its location)."""
    meta_path = path / META_FILE
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    return f"tiny:{meta['variant']}@{meta['key']}"


def _check_replaceable(target: Path) -> None:
    """Refuse to overwrite a directory that is neither empty nor a previous tiny build."""
    if target.is_file() or (target.is_dir() and any(target.iterdir()) and not (target / META_FILE).is_file()):
        raise ValueharmError(f"{target} exists and is not a tiny model build; refusing to overwrite it")


def _load_complete(target: Path, key: str) -> TinyModelInfo | None:
    """The info of a complete build with `key` at `target`, else None."""
    meta_path = target / META_FILE
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("key") != key:
        return None
    return TinyModelInfo(
        path=target,
        variant=meta["variant"],
        n_params=meta["n_params"],
        size_bytes=sum(p.stat().st_size for p in target.rglob("*") if p.is_file()),
        build_seconds=meta["build_seconds"],
        final_loss=meta["final_loss"],
        cached=True,
    )


def _cache_key(spec: TinySpec, checksums: dict[str, str]) -> str:
    """Short hash of the recipe (spec + version) and the corpus checksums."""
    payload = json.dumps({"recipe": RECIPE_VERSION, "spec": asdict(spec), "corpus": checksums}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]

