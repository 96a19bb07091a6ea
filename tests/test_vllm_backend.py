"""The `vllm` backend without vLLM: request construction, parameter mapping, LoRA ids, grouping, seeds, errors."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from valueharm.errors import ValueharmError
from valueharm.generation import vllm_backend as vb
from valueharm.generation.base import BACKENDS, GenerationRequest, request_seed
from valueharm.records import SamplingParams

PARAMS = SamplingParams(temperature=0.1, top_p=0.75, max_new_tokens=64, stop=("\n",), seed=5)


@dataclass(frozen=True)
class FakeLoRARequest:  # vllm.lora.request.LoRARequest's fields
    lora_name: str
    lora_int_id: int
    lora_path: str


class FakeSamplingParams:  # vllm.SamplingParams keeps its keyword arguments as attributes
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


class FakeLLM:
    """Answers "<adapter name or base>: <prompt>"; a prompt containing "TOO LONG" makes the whole call fail."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls = []

    def generate(self, prompts, sampling_params, *, lora_request=None, use_tqdm=True):
        assert len(prompts) == len(sampling_params) == len(lora_request)
        self.calls.append((list(prompts), list(sampling_params), list(lora_request)))
        if any("TOO LONG" in prompt for prompt in prompts):
            raise ValueError("The decoder prompt (length 9999) is longer than the maximum model length of 4096.")
        return [
            types.SimpleNamespace(outputs=[types.SimpleNamespace(text=f"{lora.lora_name if lora else 'base'}: {p}")])
            for p, lora in zip(prompts, lora_request, strict=True)
        ]


def make_adapter(root: Path, name: str, rank: int = 8, base: str = "base-model", **extra) -> Path:
    path = root / name
    path.mkdir(parents=True)
    config = {"r": rank, "base_model_name_or_path": base, "peft_type": "LORA", **extra}
    (path / "adapter_config.json").write_text(json.dumps(config))
    return path


def test_module_imports_without_vllm():
    assert "vllm" not in sys.modules
    assert BACKENDS.get("vllm") is vb.vllm_backend


def test_without_vllm_construction_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm now raises ImportError, installed or not
    with pytest.raises(ValueharmError, match=r"pip install 'valueharm\[vllm\]' \(GPU only\)"):
        BACKENDS.get("vllm")(base="base-model")


def test_lora_specs_have_stable_ids_paths_and_ranks(tmp_path):
    a = make_adapter(tmp_path, "vim/Pow", rank=8)
    b = make_adapter(tmp_path, "benign/alpaca", rank=16, rank_pattern={"q_proj": 32})
    specs = vb.lora_specs({"vim/Pow": a, "benign/alpaca": b})
    assert specs == vb.lora_specs({"benign/alpaca": b, "vim/Pow": a})  # the same ids in any listed order
    assert specs["benign/alpaca"] == vb.LoraSpec("benign/alpaca", 1, str(b.resolve()), 32)
    assert specs["vim/Pow"] == vb.LoraSpec("vim/Pow", 2, str(a.resolve()), 8)
    with pytest.raises(ValueharmError, match=r"adapter 'x': no adapter_config.json in"):
        vb.lora_specs({"x": tmp_path / "missing"})


@pytest.mark.parametrize(("ranks", "expected"), [([], 1), ([8], 8), ([4, 12], 16), ([33], 64), ([300], 320)])
def test_max_lora_rank_rounds_up_to_a_value_vllm_accepts(ranks, expected):
    assert vb.max_lora_rank(ranks) == expected


def test_max_lora_rank_above_vllms_limit_is_an_error():
    with pytest.raises(ValueharmError, match="LoRA rank 1024 is above"):
        vb.max_lora_rank([1024])


def test_engine_kwargs(tmp_path):
    assert vb.engine_kwargs("base-model", {}) == {"model": "base-model", "trust_remote_code": False}
    specs = vb.lora_specs({f"vim/{i}": make_adapter(tmp_path, f"vim/{i}", rank=16) for i in range(3)})
    kwargs = vb.engine_kwargs("base-model", specs, max_loras=8, options={"gpu_memory_utilization": 0.8})
    assert kwargs == {
        "model": "base-model",
        "trust_remote_code": False,
        "enable_lora": True,
        "max_loras": 3,  # no more GPU slots than adapters
        "max_lora_rank": 16,
        "gpu_memory_utilization": 0.8,
    }
    assert vb.engine_kwargs("b", specs, max_loras=2)["max_loras"] == 2


def test_sampling_kwargs_map_one_to_one_with_a_per_request_seed():
    kwargs = vb.sampling_kwargs(PARAMS, "key-1")
    assert kwargs == {
        "n": 1,
        "temperature": 0.1,
        "top_p": 0.75,
        "max_tokens": 64,
        "stop": ["\n"],
        "seed": request_seed(PARAMS, "key-1"),
    }
    assert vb.sampling_kwargs(PARAMS, "key-2")["seed"] != kwargs["seed"]  # each sample its own stream


def requests_mixed() -> list[GenerationRequest]:
    adapters = [None, "vim/Pow", "benign/alpaca", None, "vim/Pow", "benign/alpaca", "vim/Pow"]
    return [GenerationRequest(f"k{i}", f"prompt {i}", PARAMS, adapter) for i, adapter in enumerate(adapters)]


def test_plan_chunks_groups_by_adapter_and_keeps_every_request_once():
    requests = requests_mixed()
    chunks = vb.plan_chunks(requests, ["vim/Pow", "benign/alpaca"], chunk_size=3)
    assert [len(chunk) for chunk in chunks] == [3, 3, 1]
    flat = [r for chunk in chunks for r in chunk]
    assert sorted(r.key for r in flat) == sorted(r.key for r in requests)
    assert [r.adapter for r in flat] == [None, None, "benign/alpaca", "benign/alpaca", "vim/Pow", "vim/Pow", "vim/Pow"]
    assert [r.key for r in flat if r.adapter == "vim/Pow"] == ["k1", "k4", "k6"]  # stable within a group
    with pytest.raises(ValueharmError, match=r"unknown adapter\(s\) \['vim/Ach'\]; loaded: \['vim/Pow'\]"):
        vb.plan_chunks([GenerationRequest("k", "p", PARAMS, "vim/Ach")], ["vim/Pow"], 4)


def test_build_batch_makes_parallel_lists_with_one_lora_request_per_adapter(tmp_path):
    specs = vb.lora_specs({n: make_adapter(tmp_path, n) for n in ["vim/Pow", "benign/alpaca"]})
    loras = vb.lora_requests(specs, FakeLoRARequest)
    assert loras["vim/Pow"] == FakeLoRARequest("vim/Pow", 2, str((tmp_path / "vim/Pow").resolve()))
    requests = requests_mixed()
    prompts, sampling, lora = vb.build_batch(requests, loras, FakeSamplingParams)
    assert prompts == [r.prompt for r in requests]
    assert [s.seed for s in sampling] == [request_seed(PARAMS, r.key) for r in requests]
    assert all(s.max_tokens == 64 and s.stop == ["\n"] for s in sampling)
    assert lora[0] is None and lora[3] is None
    assert lora[1] is lora[4] is loras["vim/Pow"]  # built once, reused


def test_generate_chunk_is_one_engine_call_and_applies_stop(tmp_path):
    loras = vb.lora_requests(vb.lora_specs({"vim/Pow": make_adapter(tmp_path, "vim/Pow")}), FakeLoRARequest)
    requests = [
        GenerationRequest("a", "first\nsecond", PARAMS),
        GenerationRequest("b", "x", PARAMS, "vim/Pow"),
    ]
    llm = FakeLLM()
    done = vb.generate_chunk(llm, requests, loras, FakeSamplingParams)
    assert len(llm.calls) == 1
    assert [(c.key, c.text, c.error) for c in done] == [("a", "base: first", None), ("b", "vim/Pow: x", None)]


def test_a_request_vllm_rejects_fails_alone_with_its_reason():
    requests = [GenerationRequest(f"k{i}", p, PARAMS) for i, p in enumerate(["ok 1", "TOO LONG", "ok 2"])]
    llm = FakeLLM()
    done = {c.key: c for c in vb.generate_chunk(llm, requests, {}, FakeSamplingParams)}
    assert (done["k0"].text, done["k2"].text) == ("base: ok 1", "base: ok 2")
    assert done["k1"].text == "" and done["k1"].error.startswith("vllm rejected the request: The decoder prompt")
    assert len(llm.calls) == 4  # the batch, then each request alone


def test_backend_wires_engine_adapters_and_chunks(tmp_path, monkeypatch):
    """With stand-ins for vllm's classes: one engine, LoRA enabled, one generate call per chunk."""
    fake_vllm = types.ModuleType("vllm")
    fake_vllm.LLM = FakeLLM
    fake_vllm.SamplingParams = FakeSamplingParams
    fake_request = types.ModuleType("vllm.lora.request")
    fake_request.LoRARequest = FakeLoRARequest
    monkeypatch.setitem(sys.modules, "vllm", fake_vllm)
    monkeypatch.setitem(sys.modules, "vllm.lora", types.ModuleType("vllm.lora"))
    monkeypatch.setitem(sys.modules, "vllm.lora.request", fake_request)
    adapters = {name: make_adapter(tmp_path, name, rank=16) for name in ["vim/Pow", "benign/alpaca"]}

    backend = BACKENDS.get("vllm")(base="base-model", adapters=adapters, chunk_size=4)
    assert backend.llm.kwargs == {
        "model": "base-model",
        "trust_remote_code": False,
        "enable_lora": True,
        "max_loras": 2,
        "max_lora_rank": 16,
    }
    requests = requests_mixed()
    chunks = list(backend.generate(requests))
    assert [len(chunk) for chunk in chunks] == [4, 3] and len(backend.llm.calls) == 2
    texts = {c.key: c.text for chunk in chunks for c in chunk}
    assert texts == {r.key: f"{r.adapter or 'base'}: {r.prompt}" for r in requests}
    backend.close()

    other = make_adapter(tmp_path, "other", base="another-model")
    with pytest.raises(ValueharmError, match="was trained on another-model, not on base-model"):
        BACKENDS.get("vllm")(base="base-model", adapters={"other": other})
