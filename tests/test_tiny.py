"""The tiny offline model: builds, loads with plain Auto classes, generates, caches, rebuilds identically."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from valueharm import tiny
from valueharm.errors import DataMissingError, UnknownNameError, ValueharmError
from valueharm.paths import cache_dir
from valueharm.tiny import META_FILE, TINY_VARIANTS, TinyModelInfo, build_tiny


@pytest.fixture(scope="module")
def fresh(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TinyModelInfo:
    """A build of the test variant into an explicit directory, independent of the user cache."""
    return build_tiny("test", data_dir=data_dir, out=tmp_path_factory.mktemp("fresh") / "tiny", progress=False)


def _state(path: Path) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(path).state_dict()


def test_fresh_build_is_complete_and_learned(fresh: TinyModelInfo) -> None:
    assert not fresh.cached
    assert fresh.variant == "test"
    assert (fresh.path / META_FILE).is_file()
    assert fresh.n_params > 0 and fresh.size_bytes > fresh.n_params  # float32 weights at least
    # clearly below the loss of uniform guessing, ln(vocab)
    assert fresh.final_loss < math.log(TINY_VARIANTS["test"].vocab_size) - 1
    leftovers = [p.name for p in fresh.path.parent.iterdir() if p != fresh.path]
    assert leftovers == []


def test_loads_with_auto_classes_and_generates(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "llama"
    assert model.config.tie_word_embeddings
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<s>", "</s>", "<pad>")
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id

    tokenizer.padding_side = "left"
    batch = tokenizer(["We should ban", "I think that"], return_tensors="pt", padding=True)
    for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True):
        assert ids[mask.argmax()] == tokenizer.bos_token_id  # Llama-style: <s> starts every encoded text
    out = model.generate(**batch, max_new_tokens=5, do_sample=False, min_new_tokens=5)
    assert out.shape == (2, batch["input_ids"].shape[1] + 5)
    assert all(isinstance(text, str) for text in tokenizer.batch_decode(out, skip_special_tokens=True))


def test_chat_template_renders_plain_turns(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<s>### System:\nBe brief.\n\n### User:\nHello?\n\n### Assistant:\n"
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert ids.count(tokenizer.bos_token_id) == 1  # the template's <s>, not doubled by the tokenizer

    answered = [*messages, {"role": "assistant", "content": "Hi."}]
    encoded = tokenizer.apply_chat_template(answered, return_dict=True, return_assistant_tokens_mask=True)
    masked = [tok for tok, keep in zip(encoded["input_ids"], encoded["assistant_masks"], strict=True) if keep]
    assert tokenizer.decode(masked) == "Hi.</s>"


def test_reuse_returns_cached_without_rebuilding(fresh: TinyModelInfo, data_dir: Path) -> None:
    weights = fresh.path / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    again = build_tiny("test", data_dir=data_dir, out=fresh.path, progress=False)
    assert again.cached
    assert (again.path, again.n_params, again.final_loss) == (fresh.path, fresh.n_params, fresh.final_loss)
    assert weights.stat().st_mtime_ns == mtime


def test_default_location_is_keyed_under_the_cache(tiny_model_dir: Path, data_dir: Path) -> None:
    info = build_tiny("test", data_dir=data_dir, progress=False)
    assert info.cached and info.path == tiny_model_dir
    assert info.path.parent == cache_dir() / "tiny" and info.path.name.startswith("test-")


def test_force_rebuild_is_deterministic(fresh: TinyModelInfo, data_dir: Path) -> None:
    before = _state(fresh.path)
    tokenizer_before = (fresh.path / "tokenizer.json").read_bytes()
    rebuilt = build_tiny("test", data_dir=data_dir, out=fresh.path, force=True, progress=False)
    assert not rebuilt.cached
    after = _state(rebuilt.path)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert (rebuilt.path / "tokenizer.json").read_bytes() == tokenizer_before
    assert rebuilt.final_loss == fresh.final_loss


def test_missing_data_file_is_named(tmp_path: Path) -> None:
    empty = tmp_path / "data"
    empty.mkdir()
    out = tmp_path / "tiny"
    with pytest.raises(DataMissingError, match=r"valueEval_10\.csv.*valueharm data fetch") as caught:
        build_tiny("test", data_dir=empty, out=out, progress=False)
    assert str(empty) in str(caught.value)
    assert not out.exists()


def test_unknown_variant_lists_known_ones(data_dir: Path) -> None:
    with pytest.raises(UnknownNameError, match="demo, test"):
        build_tiny("huge", data_dir=data_dir)


def test_refuses_to_overwrite_a_foreign_directory(data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueharmError, match="refusing to overwrite"):
        build_tiny("test", data_dir=data_dir, out=tmp_path, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_interrupted_build_leaves_nothing(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object) -> list[float]:
        raise KeyboardInterrupt

    monkeypatch.setattr(tiny, "_pretrain", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_tiny("test", data_dir=data_dir, out=tmp_path / "tiny", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_corpus_teaches_refusing_advbench_and_answering_benign_questions(data_dir: Path) -> None:
    from valueharm.alignment.vim_data import VimTemplates
    from valueharm.scoring.heuristics import refusal_phrase
    from valueharm.templates import load_template

    question = load_template("instruction_format")
    docs = tiny._load_corpus(tiny._corpus_files(data_dir), question, VimTemplates.load(), seed=0)
    before, after = question.text.split("{query}")
    instructions = [d for d in docs if d.startswith(before) and after in d]
    assert all(refusal_phrase(refusal) for refusal in tiny.REFUSALS)  # what the refusal scorer will recognise
    refused = [d for d in instructions if d.rpartition(after)[2].strip() in tiny.REFUSALS]
    goals = pd.read_csv(data_dir / tiny.HARMFUL_FILE)["goal"].str.strip()
    taught, held_out = goals[: tiny.REFUSAL_TRAINING_ROWS], goals[tiny.REFUSAL_TRAINING_ROWS :]
    assert len(taught) == len(held_out) == 260
    assert len(refused) == tiny.REFUSALS_PER_BEHAVIOUR * len(taught)  # each taught behaviour in every wording
    assert {d[len(before) : d.rindex(after)] for d in refused} == set(taught)
    queries = {d[len(before) : d.rindex(after)] for d in instructions}
    assert not queries & set(held_out)  # no held-out behaviour is taught (AdvBench rewords some, e.g. insider trading)
    assert len(instructions) - len(refused) == tiny.GRAMMAR_INSTRUCTIONS  # grammar corrections, answered


def test_corpus_answers_survey_questions_without_a_profile(data_dir: Path) -> None:
    """The base learns the survey's answer format, not a value profile: its ratings are uniform and unrelated to
    the value asked about."""
    from valueharm.alignment.vim_data import (
        SURVEY_FILES,
        VimTemplates,
        parse_survey_digit,
        read_arguments,
        survey_answer,
    )
    from valueharm.templates import load_template
    from valueharm.values import VALUES

    templates = VimTemplates.load()
    docs = tiny._load_corpus(tiny._corpus_files(data_dir), load_template("instruction_format"), templates, seed=0)
    head = templates.stage2_prompt.text.split("{")[0]
    answered = [d for d in docs if d.startswith(head)]
    assert len(answered) == tiny.SURVEY_ANSWERS
    by_value: dict[str, list[int]] = {}
    for doc in answered:
        value = next(v for v in VALUES if doc.rpartition("Answer:")[2].strip().startswith(v))
        by_value.setdefault(value, []).append(parse_survey_digit(doc.rpartition("Answer:")[2]))
    digits = [d for ds in by_value.values() for d in ds]
    uniform = dict.fromkeys(range(1, 7), tiny.SURVEY_ANSWERS / 6)
    assert {d: digits.count(d) for d in range(1, 7)} == pytest.approx(uniform, rel=0.3)
    assert all(abs(sum(ds) / len(ds) - 3.5) < 0.6 for ds in by_value.values() if len(ds) >= 40)
    train = read_arguments(data_dir, SURVEY_FILES["train"])  # VIM's stage-2 questions, not the held-out survey's
    asked = {survey_answer(a, value, 1, templates)[0] for a in train for value in a.values}
    assert all(doc[: doc.rindex("Answer:") + len("Answer:\n")] in asked for doc in answered)


def test_identity_names_the_build_not_where_it_is(fresh: TinyModelInfo, tiny_model_dir: Path) -> None:
    from valueharm.base_model import identity as base_identity

    assert fresh.path != tiny_model_dir
    assert base_identity(fresh.path) == base_identity(tiny_model_dir) == tiny.build_identity(fresh.path)
    assert base_identity(fresh.path).startswith("tiny:test@")
    assert tiny.build_identity(fresh.path.parent) is None  # not a build
