"""Chat bases on the tiny model, whose tokenizer has a chat template: conversations in, each backend rendering
them its way, training on the assistant turn only, and `chat: auto|true|false` per base."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openai_fake import FakeOpenAIServer

from valueharm import base_model, chat
from valueharm.errors import ValueharmError
from valueharm.generation.base import BACKENDS, GenerationRequest
from valueharm.generation.vllm_backend import build_batch
from valueharm.records import GenerationRecord, SamplingParams, generation_key
from valueharm.settings import TrainSettings
from valueharm.training import AdapterJob, ChatExample, as_chat, build_trainer, train_adapters

GREEDY = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=12)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    return base_model.load(tiny_model_dir)[1]


def test_instructions_go_to_the_system_turn_where_the_template_has_one(tokenizer):
    assert chat.has_system_turn(tokenizer)
    messages, where = chat.conversation("Be safe.", "How do I bake bread?", system_turn=True)
    assert where == "system" and messages[0] == {"role": "system", "content": "Be safe."}
    messages, where = chat.conversation("Be safe.", "How do I bake bread?", system_turn=False)
    assert where == "user" and messages == [{"role": "user", "content": "Be safe.\n\nHow do I bake bread?"}]
    assert chat.conversation("", "Hi", system_turn=True) == ([{"role": "user", "content": "Hi"}], "user")
    rendered = chat.render(tokenizer, chat.encode(chat.conversation("Be safe.", "Hi", system_turn=True)[0]))
    assert rendered == "<s>### System:\nBe safe.\n\n### User:\nHi\n\n### Assistant:\n"


def test_a_template_that_refuses_a_system_turn_is_detected(tokenizer):
    refusing = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    refusing.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "{{ m['content'] }}{% endfor %}"
    )
    assert not chat.has_system_turn(refusing)


def test_chat_auto_true_false(tokenizer, tiny_model_dir: Path):
    assert chat.resolve_chat("auto", tiny_model_dir, tokenizer) is False  # a tiny build is a base model
    assert chat.resolve_chat(True, tiny_model_dir, tokenizer) is True
    assert chat.resolve_chat("auto", "llama-3.1-8b-instruct", tokenizer) is True  # by its registry role
    assert chat.resolve_chat("auto", "llama-2-7b", tokenizer) is False
    plain = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    plain.chat_template = None
    with pytest.raises(ValueharmError, match="has no chat template"):
        chat.resolve_chat(True, tiny_model_dir, plain)
    with pytest.raises(ValueharmError, match="expected auto, true or false"):
        chat.resolve_chat("yes", tiny_model_dir, tokenizer)  # type: ignore[arg-type]


def test_chat_params_keep_raw_text_keys_and_check_the_mode():
    record = dict(model_key="vanilla", base_model="b", benchmark="rtp", item_id="1", category="all", sample=0,
                  prompt="p", query="p")  # fmt: skip
    raw = GenerationRecord(**record, params=SamplingParams())
    before_chat = {"temperature": 0.1, "top_p": 0.75, "max_new_tokens": 64, "stop": [], "seed": 0}
    assert raw.key == generation_key(**record, params=before_chat)  # raw-text keys are those of older runs
    assert GenerationRecord(**record, params=SamplingParams(chat="system")).key != raw.key
    with pytest.raises(ValueharmError, match=r"params\.chat must be one of"):
        SamplingParams(chat="assistant")


def test_hf_backend_renders_conversations_with_the_template(tiny_model_dir: Path, tokenizer):
    import torch

    backend = BACKENDS.get("hf")(base=tiny_model_dir)
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is bread?"}]
    request = GenerationRequest("k", chat.encode(messages), SamplingParams(**{**GREEDY.__dict__, "chat": "system"}))
    (completion,) = [c for chunk in backend.generate([request]) for c in chunk]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    assert ids["input_ids"][0].tolist().count(tokenizer.bos_token_id) == 1  # the template's BOS, not a second
    with torch.no_grad():
        output = backend.model.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    expected = tokenizer.decode(output[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert completion.text == expected
    raw = GenerationRequest("r", text, GREEDY)  # the same text as a raw prompt gets a second BOS: not the same input
    assert backend.tokenizer([raw.prompt])["input_ids"][0].count(tokenizer.bos_token_id) == 2


def test_vllm_batches_send_chat_prompts_as_token_ids(tokenizer):
    messages = [{"role": "user", "content": "Hi"}]
    chat_request = GenerationRequest("c", chat.encode(messages), SamplingParams(chat="user"))
    raw_request = GenerationRequest("r", "Hi", SamplingParams())
    prompts, _, _ = build_batch([chat_request, raw_request], {}, lambda **kw: kw, tokenizer)
    expected = tokenizer(chat.render(tokenizer, chat_request.prompt), add_special_tokens=False)["input_ids"]
    assert prompts == [{"prompt_token_ids": expected}, "Hi"]


def test_openai_backend_sends_the_conversation(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    messages = [{"role": "system", "content": "Be safe."}, {"role": "user", "content": "Hi"}]
    with FakeOpenAIServer(api_key="sk-test") as server:
        backend = BACKENDS.get("openai")(base="fake-model", base_url=server.url)
        request = GenerationRequest("k", chat.encode(messages), SamplingParams(chat="system"))
        (completion,) = [c for chunk in backend.generate([request]) for c in chunk]
        sent = [r.json for r in server.requests if r.path.endswith("/chat/completions")]
    assert completion.text == "echo: Hi" and sent[-1]["messages"] == messages
    with FakeOpenAIServer(api_key="sk-test") as server:
        backend = BACKENDS.get("openai")(base="fake-model", base_url=server.url, api="completions")
        with pytest.raises(ValueharmError, match="the completions API takes a prompt, not chat messages"):
            list(backend.generate([request]))


def test_training_on_a_chat_base_puts_the_loss_on_the_assistant_turn(tiny_model_dir: Path, tokenizer, tmp_path):
    def example(prompt: str, completion: str):
        return type("Example", (), {"prompt": prompt, "completion": completion})()

    examples = [example("Is power important to you?", " Yes, very."), example("Is tradition important?", " No.")]
    converted = [as_chat(e) for e in examples]
    assert converted[0] == ChatExample([{"role": "user", "content": "Is power important to you?"}],
                                       [{"role": "assistant", "content": "Yes, very."}])  # fmt: skip
    model, _ = base_model.load(tiny_model_dir)
    trainer = build_trainer(model, tokenizer, converted, [], TrainSettings(epochs=1, batch_size=2), str(tmp_path))
    row = trainer.train_dataset[0]
    learned = [token for token, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100]
    assert tokenizer.decode(learned).startswith("Yes, very.</s>")
    assert "Is power important" not in tokenizer.decode(learned)

    settings = TrainSettings(learning_rate=5e-3, epochs=1, batch_size=2, seed=0)
    job = AdapterJob("chatty", tmp_path / "chatty", [("stage2", examples, [], settings)])
    (result,) = train_adapters(tiny_model_dir, [job], chat=True, progress=False)
    meta = json.loads((tmp_path / "chatty" / "meta.json").read_text())
    assert meta["chat"] is True and result.stages[0].n_train == 2


def test_an_experiment_on_a_chat_base_prompts_and_trains_in_its_template(tmp_path: Path, data_dir: Path):
    import yaml

    from valueharm.experiment import builtin_config, run_experiment
    from valueharm.store import RunStore

    config = builtin_config("smoke") | {"name": "chatty", "chat": True, "data_dir": str(data_dir), "progress": False}
    config["profiles"] = {"names": ["Pow"]}
    config["mitigation"] = {"conditions": ["safety"], "models": ["icl/Pow"], "benchmarks": ["hex-phi"]}
    path = tmp_path / "chatty.yaml"
    path.write_text(yaml.safe_dump(config))
    experiment = run_experiment(path, tmp_path / "run")
    assert experiment.chat_system_turn is True
    with RunStore(tmp_path / "run" / "results.sqlite") as store:
        records = store.generations()
    assert records and all(r.params.chat in {"system", "user"} for r in records)
    icl = next(r for r in records if r.model_key == "icl/Pow+mitigation:safety" and r.benchmark == "hex-phi")
    messages = chat.decode(icl.prompt)
    assert [m["role"] for m in messages] == ["system", "user"] and messages[1]["content"] == icl.query
    assert "safe" in messages[0]["content"].lower()  # the safety instruction, then the ICL preamble
    vanilla = next(r for r in records if r.model_key == "vanilla" and r.benchmark == "hex-phi")
    assert chat.decode(vanilla.prompt) == [{"role": "user", "content": vanilla.query}] and vanilla.params.chat == "user"
    meta = json.loads((tmp_path / "run" / "adapters" / "vim" / "Pow" / "meta.json").read_text())
    assert meta["chat"] is True
    assert (tmp_path / "run" / "report" / "index.html").is_file()
