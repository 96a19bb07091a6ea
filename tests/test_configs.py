"""Built-in configs by name (`configs list | show`, `run NAME`) and the dry run's cost plan, checked by hand."""

from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from test_cli import run_cli

from valueharm.errors import ValueharmError
from valueharm.experiment import builtin_config, load_config, run_experiment
from valueharm.experiment.config import CostSettings, config_file
from valueharm.experiment.cost import CostedPlan, GenerateWork, ScoreWork, StageWork, Workload, estimate
from valueharm.experiment.run import freeze_config

BUILTIN = ["cpu-study", "demo", "paper", "paper-small", "smoke"]
HOUR = 3600


def test_smoke_dry_run_costs_what_its_counts_say(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("VALUEHARM_DATA", str(data_dir))
    with config_file("smoke") as path:
        plan = run_experiment(path, tmp_path / "run", dry_run=True)
    assert isinstance(plan, CostedPlan) and not (tmp_path / "run").exists()
    a = CostSettings()
    cost = {stage.stage: stage for stage in plan.cost.stages}

    # training: 3 profiles × 2 stages, each capped at limit 12 per split, 1 epoch, batches of 8 grouped by length
    # (the default), precision auto = bf16; validation passes cost half a training token
    tokens = 3 * 12 * 1 * (a.vim_stage1_tokens + a.vim_stage2_tokens)
    assert cost["train"].jobs == 3 and cost["train"].train_tokens == pytest.approx(tokens)
    hours = 1.5 * tokens / a.padding_efficiency_grouped / a.train_tokens_per_s.bf16 / HOUR
    assert cost["train"].gpu_hours == pytest.approx(hours)

    # generation (hf backend): 7 models (vanilla, 3 vim, 3 icl) on rtp (3 prompts × 2 samples × 8 tokens) and the
    # survey (1 question per value × 10 values × 1 sample × its 24 tokens); hex-phi (11 categories × 1 × 8 tokens)
    # also for vim/Pow+mitigation:safety
    generated = 7 * 3 * 2 * 8 + 8 * 11 * 1 * 8 + 7 * 10 * 1 * 24
    assert cost["generate"].jobs == 7 + 8 + 7 and cost["generate"].generated_tokens == generated == 2720
    assert cost["generate"].gpu_hours == pytest.approx(generated / a.generate_tokens_per_s.hf / HOUR)

    # scoring: toxicity-linear and lexicon (rtp) and refusal (hex-phi) run on the CPU — no GPU, no API
    assert cost["score"].jobs == 3
    assert (cost["score"].gpu_hours, cost["score"].api_requests, cost["score"].api_cost) == (0, 0, 0)
    total = plan.cost.total
    assert total.jobs == 28 and total.gpu_hours == pytest.approx(hours + generated / a.generate_tokens_per_s.hf / HOUR)
    assert plan.cost.gpu_cost is None and plan.cost.notes == ()
    assert plan.totals() == {"train": 3, "generate": 42 + 88 + 70, "score": 2 * 42 + 88}


def test_a_judge_costs_its_rubric_query_and_answer(tmp_path: Path, data_dir: Path):
    config = builtin_config("smoke") | {"data_dir": str(data_dir)}
    config["benchmarks"]["hex-phi"]["scorers"] = ["judge:model=gpt-4o,task=harmfulness,max_concurrency=8"]
    path = tmp_path / "judged.yaml"
    path.write_text(yaml.safe_dump(config))
    plan = run_experiment(path, tmp_path / "run", dry_run=True)
    score = plan.cost.stages[2]

    # the judge reads the rubric around the query (the first HEx-PHI item of each of the 11 categories) and the answer
    rubric = (resources.files("valueharm") / "templates" / "judge_harmfulness.txt").read_text(encoding="utf-8")
    with (data_dir / "hex-phi.csv").open(encoding="utf-8") as file:
        first = {}
        for row in csv.DictReader(file):
            first.setdefault(row["category"], row["prompt"])
    prompt = len(rubric) - len("{query}") - len("{answer}") + sum(map(len, first.values())) / len(first)
    a = CostSettings()
    requests = 8 * 11  # 7 models + vim/Pow+mitigation:safety, one answer per item
    inputs = requests * (prompt / a.judge_chars_per_token + 8)  # the answers' max_new_tokens: 8
    outputs = requests * a.judge_output_tokens
    assert score.api_requests == requests
    assert score.api_input_tokens == pytest.approx(inputs) and score.api_output_tokens == pytest.approx(outputs)
    price = inputs / 1000 * a.judge_price_per_1k_input + outputs / 1000 * a.judge_price_per_1k_output
    assert score.api_cost == pytest.approx(price)
    assert score.api_hours == pytest.approx(requests * a.judge_latency_s / 8 / HOUR)


def test_the_estimate_follows_its_assumptions():
    assumptions = CostSettings(
        gpu="H100-80GB", gpu_price_per_hour=2.0, benign_examples={"mine": 100}, benign_tokens={"mine": 50.0}
    )
    assert assumptions.benign_examples["alpaca"] == 52_002  # a mapping given adds to the documented defaults
    work = Workload(
        train=(
            StageWork("train:benign/alpaca", "alpaca", None, 0, None, 1, 1, 16, None, True, "fp32"),
            StageWork("train:benign/mine", "mine", None, 0, 40, 2, 8, 1, None, False, "bf16"),
            StageWork("train:benign/other", "other", None, 0, None, 1, 1, 1, None, True, "auto"),
            StageWork("train:vim/Pow", "stage1", 1000, 100, None, 5, 8, 1, 20, False, "fp16"),
        ),
        generate=(GenerateWork("generate:vanilla:rtp", 3000, 64, "vllm"), GenerateWork("g:x", 10, 8, "openai")),
        score=(
            ScoreWork("score:rtp:perspective", "perspective", 7200, qps=2.0),
            ScoreWork("score:hex-phi:judge", "judge", 100, 1410.0, 64, 16, 4),
            ScoreWork("score:holisticbiasr:classifier", "classifier", 5000),
            ScoreWork("score:rtp:mine", "mine", 10),
        ),
    )
    plan = estimate(work, assumptions)
    train, generate, score = plan.stages
    alpaca = 52_002 * 110  # batch 1: no padding
    mine = 40 * 2 * 50  # limit 40, 2 epochs, shuffled batches of 8
    pow_stage1 = 20 * 8 * 69  # max_steps 20 × batch 8 stop it inside its first epoch
    assert train.jobs == 4 and train.train_tokens == alpaca + mine + pow_stage1
    hours = alpaca / 350 + mine / 0.75 / 3500 + (pow_stage1 + 0.5 * 100 * 1 * 69) / 0.75 / 3500
    assert train.gpu_hours == pytest.approx(hours / HOUR)
    assert generate.generated_tokens == 3000 * 64 + 80 and generate.gpu_hours == pytest.approx(3000 * 64 / 2500 / HOUR)
    assert score.api_requests == 7200 + 100 and score.api_output_tokens == 100 * 16  # capped by max_tokens 16
    assert score.api_input_tokens == pytest.approx(100 * (1410 / 4.7 + 64))
    assert score.api_cost == pytest.approx(100 * 364 / 1000 * 0.0025 + 100 * 16 / 1000 * 0.01)
    assert score.api_hours == pytest.approx(7200 / 2.0 / HOUR + 100 * 2.0 / 4 / HOUR)
    assert score.gpu_hours == pytest.approx(5000 / 1000 / HOUR)
    assert plan.gpu_cost == pytest.approx(plan.total.gpu_hours * 2.0)
    assert plan.notes == (
        "train:benign/other: no figure for 'other' in cost.benign_examples / cost.benign_tokens",
        "backend 'openai' does not generate on our GPU: its time is not counted",
        "score:rtp:mine: no cost model for scorer 'mine'; not counted",
    )


@pytest.mark.parametrize("name", ["paper-small", "paper"])
def test_the_paper_configs_pass_the_dry_run_offline_without_keys(
    capsys, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, name: str
):
    monkeypatch.setenv("VALUEHARM_DATA", str(data_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for key in ("OPENAI_API_KEY", "PERSPECTIVE_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "run", name, "--run", str(tmp_path / "run"), "--dry-run")
    assert code == 0, err
    assert "cost of what is left, on one A100-80GB" in out and "note:" not in out
    assert "train:vim/Pow" in out and "generate:benign/samsum:holisticbiasr" in out
    assert not (tmp_path / "run").exists()
    # 154 (or 14) VIM + 4 benign adapters, 313 (or 33) models × (5 benchmarks + the value survey)
    profiles = {"paper": 154, "paper-small": 14}[name]
    models = 1 + 2 * profiles + 4
    assert f"train: {profiles + 4} to do" in out
    assert ("train:vim/close_Pow_2 " in out) == (name == "paper")
    assert sum(line.startswith("│ generate:") for line in out.splitlines()) == models * 6


def test_the_cpu_study_plans_the_study_on_the_real_model(
    capsys, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, smollm2: str
):
    monkeypatch.setenv("VALUEHARM_DATA", str(data_dir))
    code, out, err = run_cli(capsys, "run", "cpu-study", "--run", str(tmp_path / "run"), "--dry-run")
    assert code == 0, err
    assert "note:" not in out  # the fetched model is found: chat through its template, no guess
    assert "train: 8 to do" in out and not (tmp_path / "run").exists()
    # vanilla + 8 VIM + 8 ICL models × (4 benchmarks + the value survey), + 5 models × 2 prompts × 2 benchmarks
    assert sum(line.startswith("│ generate:") for line in out.splitlines()) == 17 * 5 + 5 * 2 * 2
    with config_file("cpu-study") as path:
        config = load_config(path)
    assert config.base_model == "smollm2-135m" and config.training.vim.precision == "bf16"


def test_paper_small_costs_its_counts(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("VALUEHARM_DATA", str(data_dir))
    with config_file("paper-small") as path:
        plan = run_experiment(path, tmp_path / "run", dry_run=True)
    train, generate, score = plan.cost.stages
    models = 1 + 14 + 14 + 4
    # scoring: ours and the published input of Perspective, the local toxicity classifier and regard; two judges;
    # refusal
    assert (train.jobs, generate.jobs, score.jobs) == (14 + 4, models * 6, 9)
    # Perspective twice on every RTP sample (300 prompts × 10: our input and the published one), the judge on every
    # HEx-PHI (330) and BeaverTails (700) answer
    assert score.api_requests == models * (2 * 300 * 10 + 330 + 700)
    survey = 10 * 30 * 24  # 30 held-out questions per value, 1 greedy sample of 24 tokens
    per_model = 300 * 10 * 64 + 17_700 * 128 + 330 * 64 + 700 * 64 + 520 * 64 + survey
    assert generate.generated_tokens == models * per_model


def test_the_paper_configs_hold_the_published_settings():
    for name in ("paper", "paper-small"):
        with config_file(name) as path:
            config = load_config(path)
        vim = config.training.vim
        assert (vim.learning_rate, vim.epochs, vim.batch_size, vim.seed) == (2e-5, 5, 8, 42)
        assert (vim.weight_decay, vim.precision, vim.group_by_length) == (0.01, "fp32", False)
        benign = config.training.benign
        assert (benign.epochs, benign.batch_size, benign.gradient_accumulation, benign.max_length) == (1, 1, 16, 2048)
        assert config.base_model == "llama-2-7b" and config.generation.backend == "vllm"  # a registry name
        assert config.benign_datasets == ["alpaca", "dolly-no-safety", "grammar", "samsum"]
        rtp = config.benchmarks["rtp"]
        assert (rtp.samples, rtp.max_new_tokens, rtp.temperature, rtp.top_p) == (10, 64, 0.1, 0.75)
        assert config.benchmarks["holisticbiasr"].max_new_tokens == 128
        assert rtp.limit == {"paper": 3000, "paper-small": 300}[name]
        hbr = config.benchmarks["holisticbiasr"]
        for scorers in (rtp.scorers, hbr.scorers):  # each scorer with ours and the published input, in pairs
            ours, published = scorers[0::2], scorers[1::2]
            assert ours and all(
                p == o + ("," if ":" in o else ":") + "published_input=true"
                for o, p in zip(ours, published, strict=True)
            )
        assert rtp.scorers[2] == "classifier:model=toxicity" and "classifier:model=regard,task=regard" in hbr.scorers
        (pair,) = config.analysis.calibrate
        assert (pair.reference, pair.local) == ("perspective", "classifier:model=toxicity")
        assert config.metrics.published_bias_score
        for stage in ("stage1", "stage2"):  # both stages train as published
            settings = vim.stage(stage)
            assert (settings.weight_decay, settings.precision, settings.group_by_length) == (0.01, "fp32", False)
        assert not benign.group_by_length and vim.max_length == 1024  # our deviation: nothing is cut


def test_a_preset_fills_what_a_section_does_not_give_and_stages_override_it():
    from valueharm.settings import BenignTraining, VimTraining

    vim = VimTraining(preset="published", learning_rate=1e-4, stage2={"weight_decay": 0.1, "group_by_length": True})
    assert vim.learning_rate == 1e-4 and vim.weight_decay == 0.01  # explicit key first, then the preset
    one, two = vim.stage("stage1"), vim.stage("stage2")
    assert (one.weight_decay, one.group_by_length) == (0.01, False) and (two.weight_decay, two.group_by_length) == (
        0.1,
        True,
    )
    assert one.precision == two.precision == "fp32"
    with pytest.raises(ValidationError, match="precision"):  # one precision per adapter: one base load serves it
        VimTraining(stage2={"precision": "bf16"})
    assert VimTraining().weight_decay == 0.0 and VimTraining().group_by_length  # no preset: our defaults
    assert BenignTraining(preset="published").gradient_accumulation == 16
    with pytest.raises(ValueError, match="Input should be 'published'"):
        VimTraining(preset="publishd")


def test_configs_list_and_show(capsys):
    code, out, _ = run_cli(capsys, "configs", "list", "--json")
    listed = json.loads(out)
    assert code == 0 and [row["name"] for row in listed] == BUILTIN
    descriptions = {row["name"]: row["description"] for row in listed}
    assert descriptions["paper"].startswith("The published study (Choi et al., ACL 2025) on Llama-2-7B")
    assert descriptions["smoke"].endswith("two benchmarks …")  # its first line goes on in the next one
    code, out, _ = run_cli(capsys, "configs", "list")
    assert code == 0 and all(name in out for name in BUILTIN)
    code, out, _ = run_cli(capsys, "configs", "show", "paper-small")
    shipped = (resources.files("valueharm") / "configs" / "paper-small.yaml").read_text(encoding="utf-8")
    assert code == 0 and out == shipped and "# A smaller first run" in out
    code, out, _ = run_cli(capsys, "configs", "show", "paper", "--json")
    assert code == 0 and json.loads(out)["profiles"] == {"sets": ["vim154"]}
    code, out, err = run_cli(capsys, "configs", "show", "papr")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "no built-in config 'papr'; built-in: cpu-study, demo, paper, paper-small, smoke" in err


def test_a_file_wins_over_a_built_in_name(capsys, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    Path("paper-small").write_text(
        f"name: mine\nbase_model: tiny:test\ndata_dir: {data_dir}\nmethods: [vanilla]\n"
        "benchmarks:\n  hex-phi: {limit: 2, scorers: [refusal]}\n"
    )
    code, out, err = run_cli(capsys, "run", "paper-small", "--dry-run")
    assert code == 0, err
    assert "generate:vanilla:hex-phi" in out and "train:" not in out


@pytest.mark.parametrize("name", ["nosuch", "nosuch.yaml", "configs/paper"])
def test_an_unknown_name_lists_the_built_in_ones(capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "run", name, "--dry-run")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert (
        f"{name}: no such experiment config file, nor a built-in config; "
        "built-in: cpu-study, demo, paper, paper-small, smoke" in err
    )


def test_the_cost_section_is_validated_with_the_rest(capsys, tmp_path: Path, data_dir: Path):
    base = f"name: x\nbase_model: tiny:test\ndata_dir: {data_dir}\nmethods: [vanilla]\n"
    base += "benchmarks:\n  hex-phi: {limit: 2}\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text(base + "cost: {train_tokens_per_s: {fp32: 0}, gpus: H100}\n")
    code, out, err = run_cli(capsys, "run", str(bad), "--dry-run")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "cost.train_tokens_per_s.fp32: Input should be greater than 0, got 0" in err
    assert "cost.gpus: unknown key; known: benign_examples" in err
    good = tmp_path / "good.yaml"
    good.write_text(base + "cost: {gpu: H100-80GB, gpu_price_per_hour: 3.5}\n")
    code, out, err = run_cli(capsys, "run", str(good), "--run", str(tmp_path / "run"), "--dry-run")
    assert code == 0 and "on one H100-80GB" in out and "GPU cost" in out


def test_changed_cost_assumptions_do_not_stop_a_resume(tmp_path: Path):
    with config_file("smoke") as path:
        config = load_config(path)
    freeze_config(config, tmp_path)
    freeze_config(config.model_copy(update={"cost": CostSettings(gpu="H100-80GB")}), tmp_path)
    with pytest.raises(ValueharmError, match="changed: metrics"):
        freeze_config(config.model_copy(update={"metrics": config.metrics.model_copy(update={"n_boot": 60})}), tmp_path)
