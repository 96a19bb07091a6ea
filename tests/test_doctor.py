"""`valueharm doctor`: on this CPU machine the hf backend is checked for real on the tiny model and the GPU steps
are skipped, saying so; the vllm steps run against a stand-in engine to check their wiring."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from test_cli import run_cli
from test_vllm_backend import FakeLoRARequest, FakeSamplingParams

from valueharm import doctor
from valueharm.doctor import make_adapters, run_doctor


def test_doctor_on_cpu_checks_hf_and_says_what_it_skipped(capsys, tiny_model_dir: Path, data_dir: Path):
    code, out, err = run_cli(capsys, "doctor", "--gpu", "--model", str(tiny_model_dir), "--json")
    assert code == 0, err
    checks = {check["name"]: check for check in json.loads(out)["checks"]}
    assert checks["cuda"]["status"] == "skipped" and "no CUDA device" in checks["cuda"]["detail"]
    assert checks["vllm"]["status"] == "skipped"
    for name in ("model", "adapters", "hf: load", "hf: adapters change the output",
                 "hf: mixed batch = single-adapter batches", "hf: throughput"):  # fmt: skip
        assert checks[name]["status"] == "ok", checks[name]
    assert "a ≠ b on" in checks["hf: adapters change the output"]["detail"]
    assert json.loads(out)["tokens_per_second"]["hf"] > 0


def test_zero_adapters_fail_the_output_check(tiny_model_dir: Path, tmp_path: Path, monkeypatch):
    """The checks can fail: adapters that do not change the model are caught (by the backend's own probe)."""
    import torch

    real = make_adapters

    def zero_adapters(base, root, names=doctor.ADAPTERS):
        from safetensors.torch import load_file, save_file

        made = real(base, root, names)
        for path in made.values():
            weights = path / "adapter_model.safetensors"
            save_file({k: torch.zeros_like(v) for k, v in load_file(weights).items()}, weights)
        return made

    monkeypatch.setattr(doctor, "make_adapters", zero_adapters)
    report = run_doctor(gpu=False, work_dir=tmp_path, data_dir=tmp_path, model=str(tiny_model_dir), echo=lambda c: None)
    assert report.failed
    (load,) = [c for c in report.checks if c.name == "hf: load"]
    assert load.status == "failed" and "does not change the base model's output" in load.detail
    assert [c.name for c in report.checks][-1] == "hf: load"  # nothing after a failed load


class EchoLLM:
    """A stand-in vLLM engine: greedy "output" names the adapter, so the wiring can be checked without a GPU."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def generate(self, prompts, sampling_params, *, lora_request=None, use_tqdm=True):
        return [
            types.SimpleNamespace(outputs=[types.SimpleNamespace(text=f" {lora.lora_name if lora else 'base'} {p}")])
            for p, lora in zip(prompts, lora_request, strict=True)
        ]


def test_vllm_steps_with_a_stand_in_engine(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams, fake.__version__ = EchoLLM, FakeSamplingParams, "0.32.0"
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = FakeLoRARequest
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setitem(sys.modules, "vllm.lora", types.ModuleType("vllm.lora"))
    monkeypatch.setitem(sys.modules, "vllm.lora.request", request)
    monkeypatch.setattr(doctor, "cuda_description", lambda: "a stand-in GPU")
    report = run_doctor(gpu=True, work_dir=tmp_path, data_dir=tmp_path, model=str(tiny_model_dir), echo=lambda c: None)
    checks = {c.name: c for c in report.checks}
    assert checks["cuda"].detail == "a stand-in GPU" and checks["vllm import"].detail == "vllm 0.32.0"
    for name in ("vllm: load", "vllm: adapters change the output", "vllm: mixed batch = single-adapter batches"):
        assert checks[name].status == "ok", checks[name]
    assert set(report.tokens_per_second) == {"hf", "vllm"} and not report.failed
