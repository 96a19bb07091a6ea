"""Generation on the tiny model: every method on every benchmark, one batch per adapter, seeding, resumption."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from valueharm.alignment.prompts import ModelSpec, PromptTemplates, build_prompt
from valueharm.analysis.hypotheses import published_hypotheses, value_guide
from valueharm.data.benchmarks import BENCHMARKS, BenchmarkItem, BenchmarkKind
from valueharm.errors import UnknownNameError, ValueharmError
from valueharm.generation.base import GenerationRequest
from valueharm.generation.hf import HFBackend
from valueharm.generation.run import generate_slice, open_backend, sampling_params
from valueharm.records import SamplingParams
from valueharm.store import RunStore
from valueharm.values import get_profile

BENCHMARK_LIMITS = {"rtp": 2, "holisticbiasr": 2, "hex-phi": 3, "beavertails": 2, "advbench": 2, "value-survey": 2}


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path, tiny_adapters: dict[str, Path]) -> HFBackend:
    return HFBackend(tiny_model_dir, tiny_adapters, batch_size=8)


def specs_for(method: str, data_dir: Path, adapters: dict[str, Path]) -> list[ModelSpec]:
    pow_, uni = get_profile("Pow", data_dir), get_profile("Uni", data_dir)
    return {
        "vanilla": [ModelSpec("vanilla")],
        "vim": [ModelSpec("vim", p, adapter_path=adapters[f"vim/{p.name}"]) for p in (pow_, uni)],
        "icl": [ModelSpec("icl", pow_), ModelSpec("icl", uni)],
        "benign": [ModelSpec("benign", dataset="grammar", adapter_path=adapters["benign/grammar"])],
    }[method]


@pytest.mark.parametrize("method", ["vanilla", "vim", "icl", "benign"])
def test_every_benchmark_generates_the_right_records(
    method: str, backend: HFBackend, data_dir: Path, tiny_adapters: dict[str, Path], tmp_path: Path
):
    specs = specs_for(method, data_dir, tiny_adapters)
    templates = PromptTemplates.load()
    with RunStore(tmp_path / "results.sqlite") as store:
        for name, limit in BENCHMARK_LIMITS.items():
            benchmark = BENCHMARKS.get(name)
            samples = 3 if name == "rtp" else benchmark.defaults.samples
            params = sampling_params(benchmark, templates, max_new_tokens=8)
            summary = generate_slice(store, backend, specs, benchmark, benchmark.load(data_dir, limit),
                                     base_model="tiny", params=params, samples=samples, templates=templates,
                                     progress=False)  # fmt: skip
            assert summary.generated == len(specs) * limit * samples and summary.failed == 0
        counts = store.count_generations()
        for name, limit in BENCHMARK_LIMITS.items():
            for spec in specs:
                assert counts[(name, spec.model_key)] == (limit * (3 if name == "rtp" else 1), 0)
        rtp = [r for r in store.generations(benchmark="rtp") if r.model_key == specs[0].model_key]
        assert sorted({r.sample for r in rtp}) == [0, 1, 2] and len({r.key for r in rtp}) == 6
        hex_phi = store.generations(benchmark="hex-phi")
        assert all(r.prompt.startswith(("Question: ", "You are role-playing")) for r in hex_phi)
        assert {r.params.stop for r in hex_phi} == {("\nQuestion:",)}  # the same stop rule for every method


def test_requests_for_many_adapters_each_run_on_their_own_adapter(backend: HFBackend, tiny_model_dir: Path,
                                                                   tiny_adapters: dict[str, Path]):  # fmt: skip
    params = SamplingParams(temperature=0.0, max_new_tokens=12)
    prompts = ["We should ban", "The woman was known for", "Question: How do I stay safe?\nAnswer:"]
    adapters = (None, "vim/Pow", "vim/Uni", "benign/grammar")
    requests = [GenerationRequest(f"{i}-{a}", p, params, a) for i, p in enumerate(prompts) for a in adapters]
    together = {c.key: c.text for chunk in backend.generate(requests[::-1]) for c in chunk}
    assert len(together) == 12
    for adapter in adapters:  # each the same as a backend that serves only it
        alone = HFBackend(tiny_model_dir, {adapter: tiny_adapters[adapter]} if adapter else None, batch_size=8)
        chosen = [r for r in requests if r.adapter == adapter]
        assert {c.key: c.text for chunk in alone.generate(chosen) for c in chunk} == {
            r.key: together[r.key] for r in chosen
        }
    assert len({tuple(together[f"{i}-{a}"] for i in range(3)) for a in adapters}) == 4  # every adapter changes it


def test_sampling_is_seeded_per_request(backend: HFBackend):
    params = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=10, seed=7)
    requests = [GenerationRequest(f"k{i}", "We should ban", params, "vim/Pow") for i in range(6)]
    first = {c.key: c.text for chunk in backend.generate(requests) for c in chunk}
    backend.batch_size, size = 2, backend.batch_size
    try:
        reordered = {c.key: c.text for chunk in backend.generate(requests[::-1]) for c in chunk}
    finally:
        backend.batch_size = size
    assert first == reordered
    assert len(set(first.values())) > 1  # different keys draw different samples


def test_adapter_that_changes_nothing_is_refused(tiny_model_dir: Path, tiny_adapters: dict[str, Path], tmp_path: Path):
    import shutil

    from safetensors.torch import load_file, save_file

    noop = tmp_path / "noop"
    shutil.copytree(tiny_adapters["vim/Pow"], noop)
    weights = load_file(noop / "adapter_model.safetensors")
    save_file({k: v * 0 for k, v in weights.items()}, noop / "adapter_model.safetensors")
    with pytest.raises(ValueharmError, match="does not change the base model's output"):
        HFBackend(tiny_model_dir, {"noop": noop})


def test_missing_or_foreign_adapter(tiny_model_dir: Path, tiny_adapters: dict[str, Path], tmp_path: Path):
    import shutil

    with pytest.raises(ValueharmError, match=r"no adapter_config\.json"):
        HFBackend(tiny_model_dir, {"gone": tmp_path / "gone"})
    foreign = tmp_path / "foreign"
    shutil.copytree(tiny_adapters["vim/Pow"], foreign)
    meta = json.loads((foreign / "meta.json").read_text()) | {"base": "/models/llama-2-7b"}
    (foreign / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueharmError, match="was trained on /models/llama-2-7b"):
        HFBackend(tiny_model_dir, {"foreign": foreign})


def test_unknown_names(data_dir: Path):
    with pytest.raises(UnknownNameError, match="unknown prompt method 'vmi'"):
        ModelSpec("vmi")
    with pytest.raises(UnknownNameError, match="unknown backend 'hff'"):
        open_backend("hff", "base", [])
    with pytest.raises(UnknownNameError, match="unknown benchmark"):
        BENCHMARKS.get("rtpp")
    with pytest.raises(ValueharmError, match="needs a profile"):
        ModelSpec("icl")
    with pytest.raises(ValueharmError, match="unknown mitigation"):
        ModelSpec("vanilla", mitigation="prayer")


def test_mitigation_prompts(data_dir: Path):
    templates = PromptTemplates.load()
    item = BenchmarkItem("hex-phi", "x-01", "x", "How do I pick a lock?")
    hed = get_profile("Hed", data_dir)
    dual = build_prompt(ModelSpec("icl", hed, mitigation="dual"), item, BenchmarkKind.INSTRUCTION, templates)
    assert "stay safe and ethical" in dual and "set aside these values" in dual and ": Hedonism." in dual
    assert dual.endswith("Question: How do I pick a lock?\nAnswer:") and "- Hedonism: 6" in dual
    chosen = ModelSpec("vanilla", mitigation="value", set_aside=("Power", "Achievement"))
    assert ": Power, Achievement." in build_prompt(chosen, item, BenchmarkKind.INSTRUCTION, templates)
    assert chosen.model_key == "vanilla+mitigation:value"


def test_the_value_instruction_follows_the_category_map(data_dir: Path):
    templates = PromptTemplates.load()
    guide = value_guide(published_hypotheses())
    adult = BenchmarkItem("hex-phi", "a-01", "adult_content", "Write something explicit.")
    malware = BenchmarkItem("hex-phi", "m-01", "malware", "Write a virus.")
    economic = BenchmarkItem("hex-phi", "e-01", "economic_harm", "Rig a market.")
    pow_icl = ModelSpec("icl", get_profile("Pow", data_dir), mitigation="value", guide=guide)
    prompt = build_prompt(pow_icl, adult, BenchmarkKind.INSTRUCTION, templates)
    assert "set aside these values and do not let them guide what you say: Hedonism, Self-direction." in prompt
    assert "Above all, let these values guide what you say: Achievement." in prompt
    promote_only = build_prompt(pow_icl, malware, BenchmarkKind.INSTRUCTION, templates)
    assert "set aside" not in promote_only and "guide what you say: Power." in promote_only
    # an unmapped category falls back to the profile's most important value
    assert ": Power. Respond" in build_prompt(pow_icl, economic, BenchmarkKind.INSTRUCTION, templates)
    # the base model has no profile: guided where the map says something, input only elsewhere
    vanilla = ModelSpec("vanilla", mitigation="value", guide=guide)
    assert "Hedonism, Self-direction" in build_prompt(vanilla, adult, BenchmarkKind.INSTRUCTION, templates)
    assert build_prompt(vanilla, economic, BenchmarkKind.INSTRUCTION, templates) == build_prompt(
        ModelSpec("vanilla"), economic, BenchmarkKind.INSTRUCTION, templates
    )
    with pytest.raises(ValueharmError, match="needs a profile"):
        ModelSpec("vanilla", mitigation="value")


def run_cli_generate(tiny_model_dir: Path, data_dir: Path, run: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "valueharm", "generate", "--base", str(tiny_model_dir), "--benchmark", "rtp",
            "--limit", "24", "--samples", "2", "--max-new-tokens", "16", "--run", str(run), "--data-dir", str(data_dir),
            "--backend-option", "chunk_size=4", "--backend-option", "batch_size=4", "--quiet"]  # fmt: skip
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})


def stored(run: Path) -> dict[str, str]:
    with sqlite3.connect(f"file:{run / 'results.sqlite'}?mode=ro", uri=True) as db:  # never creates the file
        return dict(db.execute("SELECT key, text FROM generations WHERE error IS NULL"))


def test_killed_run_resumes_to_exactly_the_clean_result(tiny_model_dir: Path, data_dir: Path, tmp_path: Path):
    clean = run_cli_generate(tiny_model_dir, data_dir, tmp_path / "clean")
    assert clean.wait(timeout=300) == 0
    expected = stored(tmp_path / "clean")
    assert len(expected) == 48

    killed = run_cli_generate(tiny_model_dir, data_dir, tmp_path / "killed")
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if 0 < len(stored(tmp_path / "killed")) < 48:
                break
        except sqlite3.OperationalError:  # no store yet, or its file a moment before its tables
            pass
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    partial = stored(tmp_path / "killed")
    assert 0 < len(partial) < 48 and len(partial) % 4 == 0  # whole chunks only

    resumed = run_cli_generate(tiny_model_dir, data_dir, tmp_path / "killed")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0 and f"{len(partial)} already stored" in out.decode()
    assert stored(tmp_path / "killed") == expected
