"""Experiments end to end on the tiny test model: validation with YAML paths, dry runs, kills and resumption."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import pytest
import yaml
from run_outcome import outcome

from valueharm.errors import ValueharmError
from valueharm.experiment import PlanSummary, builtin_config, load_config, run_experiment
from valueharm.experiment.jobs import planned_records
from valueharm.experiment.plan import GenerateJob, plan, resolve
from valueharm.settings import TrainSettings
from valueharm.store import RunStore
from valueharm.tiny import build_identity

SMALL = builtin_config("smoke")


def write_config(tmp_path: Path, config: dict, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"benchmarks": {"hex-phi": {"limitt": 3}}}, r"benchmarks\.hex-phi\.limitt: unknown key"),
        ({"profiles": {"names": ["Pwo"]}}, r"profiles: unknown profile 'Pwo'; did you mean: Pow"),
        (
            {"benchmarks": {"rtp": {"scorers": ["refusal"]}}},
            r"benchmarks\.rtp\.scorers\[0\]: scorer 'refusal'.*not apply to rtp",
        ),
        ({"benchmarks": {"rtp": {"scorers": ["judgee"]}}}, r"benchmarks\.rtp\.scorers\[0\]: unknown scorer 'judgee'"),
        ({"methods": ["vanilla", "telepathy"]}, r"methods\.1: "),
        ({"mitigation": {"models": ["vim/Nobody"]}}, r"mitigation\.models\[0\]: unknown model 'vim/Nobody'"),
        ({"benchmarks": {"hexphi": {}}}, r"benchmarks\.hexphi: unknown benchmark 'hexphi'"),
        ({"ray": {"trian": {"num_cpus": 1}}}, r"ray\.trian: unknown key; known: generate, local"),
        ({"training": {"vim": {"epochs": 0}}}, r"training\.vim\.epochs: Input should be greater than or equal to 1"),
        ({"generation": {"backend": "hff"}}, r"generation\.backend: unknown backend 'hff'; did you mean: hf"),
        ({"base_model": "/nonexistent/model"}, r"base_model: cannot load base model /nonexistent/model"),
        (
            {"analysis": {"calibrate": [{"reference": "toxicity-linear", "local": "perspective"}]}},
            r"analysis\.calibrate\[0\]\.local: 'perspective' is not among benchmarks\.rtp\.scorers",
        ),
        ({"analysis": {"calibrate": [{"reference": "perspective"}]}}, r"analysis\.calibrate\.0\.local: Field required"),
    ],
)
def test_config_errors_name_the_yaml_path_before_any_work(tmp_path: Path, data_dir: Path, change: dict, message: str):
    config = {**SMALL, **change, "data_dir": str(data_dir)}
    if "benchmarks" in change:
        config["benchmarks"] = {**SMALL["benchmarks"], **change["benchmarks"]}
        config["mitigation"] = {}
    with pytest.raises(ValueharmError, match=message):
        run_experiment(write_config(tmp_path, config), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_malformed_yaml(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nbenchmarks: [\n")
    with pytest.raises(ValueharmError, match=r"bad\.yaml:\d+: malformed YAML"):
        load_config(path)


def test_demo_config_plans(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("VALUEHARM_DATA", str(data_dir))
    with resources.as_file(resources.files("valueharm") / "configs" / "demo.yaml") as config:
        summary = run_experiment(config, tmp_path / "demo", dry_run=True)
    assert isinstance(summary, PlanSummary)
    totals = summary.totals()
    assert totals["train"] == 8 and totals["generate"] > 1000 and totals["score"] > 500
    assert not (tmp_path / "demo").exists()


def test_alignment_check_samples_the_survey_as_configured(data_dir: Path, tmp_path: Path):
    check = {"per_value": 2, "samples": 3, "temperature": 1.0}
    config = {**SMALL, "data_dir": str(data_dir), "analysis": {"alignment_check": check}}
    experiment = resolve(load_config(write_config(tmp_path, config)), tmp_path / "run", build_base=False)
    jobs = [j for j in plan(experiment) if isinstance(j, GenerateJob) and j.benchmark == "value-survey"]
    records = planned_records(experiment, jobs)
    assert {j.model_key for j in jobs} == {"vanilla", "vim/Pow", "vim/Uni", "vim/Hed", "icl/Pow", "icl/Uni", "icl/Hed"}
    for job in jobs:
        assert len(records[job.id]) == 10 * 2 * 3  # ten values × per_value × samples
        assert {r.params.temperature for r in records[job.id]} == {1.0}
        assert len({r.key for r in records[job.id]}) == len(records[job.id])  # each sample its own record


def test_a_tiny_build_given_by_path_loads_from_it_and_is_named_by_its_content(
    data_dir: Path, tmp_path: Path, tiny_model_dir: Path
):
    config = {**SMALL, "base_model": str(tiny_model_dir), "data_dir": str(data_dir)}
    experiment = resolve(load_config(write_config(tmp_path, config)), tmp_path / "run")
    assert experiment.base == str(tiny_model_dir.resolve())
    records = planned_records(experiment, [j for j in plan(experiment) if isinstance(j, GenerateJob)][:1])
    assert {r.base_model for rs in records.values() for r in rs} == {build_identity(tiny_model_dir)}


def test_vim_stages_share_settings_and_override_single_ones(tmp_path: Path):
    training = {"vim": {"epochs": 5, "learning_rate": 1e-2, "seed": 7, "threshold": 4, "stage1": {"epochs": 2}}}
    config = load_config(write_config(tmp_path, {**SMALL, "training": training}))
    vim = config.training.vim
    first, second = vim.stage("stage1"), vim.stage("stage2")
    assert type(first) is TrainSettings and (first.epochs, first.learning_rate, first.seed) == (2, 1e-2, 7)
    assert (second.epochs, second.learning_rate, second.seed) == (5, 1e-2, 7)
    assert second.batch_size == TrainSettings().batch_size  # unset: the published default
    assert (vim.data.threshold, vim.data.seed) == (4, 7)
    benign = config.training.benign.train  # the published benign recipe, not the VIM one
    assert (benign.epochs, benign.batch_size, benign.gradient_accumulation, benign.max_length) == (1, 1, 16, 2048)
    with pytest.raises(ValueharmError, match=r"training\.vim\.stage2\.limit: unknown key; known: batch_size"):
        load_config(write_config(tmp_path, {**SMALL, "training": {"vim": {"stage2": {"limit": 3}}}}))


def test_adapters_live_in_the_ray_shared_dir_for_every_executor(tmp_path: Path, data_dir: Path):
    config = {
        **SMALL, "data_dir": str(data_dir), "methods": ["vim"], "profiles": {"names": ["Pow"]}, "mitigation": {},
        "analysis": {"alignment_check": {"enabled": False}}, "ray": {"shared_dir": str(tmp_path / "shared")},
    }  # fmt: skip
    run_experiment(write_config(tmp_path, config), tmp_path / "run", progress=False)
    assert (tmp_path / "shared" / "adapters" / "vim" / "Pow" / "meta.json").is_file()
    assert not (tmp_path / "run" / "adapters").exists()
    with sqlite3.connect(tmp_path / "run" / "results.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM generations WHERE model_key = 'vim/Pow'").fetchone()[0] > 0


def run_cli(config: Path, run: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "valueharm", "run", str(config), "--run", str(run), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ},
    )  # fmt: skip


def wait_for(condition, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("the run never reached the point to kill it at")


def jobs_done(run: Path, prefix: str) -> int:
    try:
        with sqlite3.connect(run / "results.sqlite") as db:
            return db.execute(
                "SELECT COUNT(*) FROM jobs WHERE job_id LIKE ? AND status='done'", (prefix + "%",)
            ).fetchone()[0]
    except sqlite3.Error:
        return 0


def generations_stored(run: Path) -> int:
    try:
        with sqlite3.connect(run / "results.sqlite") as db:
            return db.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_killed_runs_resume_to_the_uninterrupted_result(tmp_path: Path, data_dir: Path):
    config = write_config(tmp_path, {**SMALL, "data_dir": str(data_dir)})
    clean = run_cli(config, tmp_path / "clean")
    _, err = clean.communicate(timeout=600)
    assert clean.returncode == 0, err.decode()[-2000:]
    expected = outcome(tmp_path / "clean")
    assert expected[0] and expected[1] and expected[2]
    report = (tmp_path / "clean" / "report" / "index.html").read_text()
    assert "data:image/png;base64," in report
    assert "<small>against</small>" in report  # the smoke config's calibration is in the report
    assert "planned GPU-hours" in report and (tmp_path / "clean" / "plan.json").is_file()
    with RunStore(tmp_path / "clean" / "results.sqlite") as store:
        times = store.stage_times()
    assert set(times) == {"train", "generate", "score"} and all(t["seconds"] > 0 for t in times.values())
    assert {stage: t["jobs"] for stage, t in times.items()} == {"train": 3, "generate": 22, "score": 3}

    kill_points = {
        "after the first adapter": lambda run: (run / "adapters" / "vim" / "Pow" / "meta.json").exists(),
        "mid-generation": lambda run: generations_stored(run) >= 16,
        "mid-scoring": lambda run: jobs_done(run, "score:") >= 1,
    }
    for label, reached in kill_points.items():
        run = tmp_path / label.replace(" ", "-")
        process = run_cli(config, run)
        wait_for(lambda: reached(run) or process.poll() is not None)  # noqa: B023
        process.send_signal(signal.SIGKILL)
        process.wait()
        resumed = run_cli(config, run)
        _, err = resumed.communicate(timeout=600)
        assert resumed.returncode == 0, f"{label}: {err.decode()[-2000:]}"
        assert outcome(run) == expected, label


def test_dry_run_reports_what_is_done(tmp_path: Path, data_dir: Path):
    config = {**SMALL, "data_dir": str(data_dir), "methods": ["vanilla"], "mitigation": {}}
    path = write_config(tmp_path, config)
    run_experiment(path, tmp_path / "run", progress=False)
    summary = run_experiment(path, tmp_path / "run", dry_run=True)
    assert summary.totals() == {"generate": 0, "score": 0}
    frozen = yaml.safe_load((tmp_path / "run" / "experiment.yaml").read_text())
    assert frozen["methods"] == ["vanilla"]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["versions"]["torch"].startswith("2.13") and manifest["data"]["hex-phi.csv"] == "ok"
    changed = write_config(tmp_path, {**config, "metrics": {"n_boot": 60}}, "changed.yaml")
    with pytest.raises(ValueharmError, match="started with a different config \\(changed: metrics\\)"):
        run_experiment(changed, tmp_path / "run")


def test_the_manifest_records_each_benign_baselines_files(tmp_path: Path, data_dir: Path):
    from valueharm.experiment.run import write_manifest
    from valueharm.files import sha256_of

    config = {**SMALL, "data_dir": str(data_dir), "methods": ["vanilla", "benign"], "mitigation": {},
              "benign_datasets": ["grammar", "dolly-no-safety"]}  # fmt: skip
    experiment = resolve(load_config(write_config(tmp_path, config)), tmp_path / "run", build_base=False)
    experiment.run_dir.mkdir(parents=True)
    benign = write_manifest(experiment)["benign_data"]
    assert benign["dolly-no-safety"] == {"databricks-dolly-15k-no-safety.jsonl": None}  # not fetched here
    assert benign["grammar"]["gtrain_10k.csv"] == sha256_of(data_dir / "gtrain_10k.csv")


def test_the_hypotheses_file_is_checked_against_the_benchmarks_and_guides_the_value_condition(
    tmp_path: Path, data_dir: Path
):
    table = tmp_path / "mine.yaml"
    table.write_text("hypotheses:\n  - {id: x, value: Power, direction: negative, targets: [hex-phi/malwere]}\n")
    config = {**SMALL, "data_dir": str(data_dir), "analysis": {"hypotheses_file": "mine.yaml"},
              "mitigation": {"conditions": ["value"], "models": ["vim/Pow"]}}  # fmt: skip
    with pytest.raises(ValueharmError, match=r"mine\.yaml: hypothesis 'x': unknown hex-phi category 'malwere'"):
        resolve(load_config(write_config(tmp_path, config)), tmp_path / "run", build_base=False)
    table.write_text("hypotheses:\n  - {id: x, value: Power, direction: negative, targets: [hex-phi/malware]}\n")
    experiment = resolve(load_config(write_config(tmp_path, config)), tmp_path / "run", build_base=False)
    guide = experiment.specs["vim/Pow+mitigation:value"].guide
    assert guide.lookup("hex-phi", "malware") == ((), ("Power",)) and guide.lookup("hex-phi", "adult_content") is None
    assert [h.id for h in experiment.hypotheses] == ["x"]
    config["mitigation"] = {}  # the table is checked before any work even when no mitigation uses it
    table.write_text("hypotheses:\n  - {id: x, value: Power, direction: negative, targets: [hex-phi/malwere]}\n")
    with pytest.raises(ValueharmError, match=r"unknown hex-phi category 'malwere'"):
        resolve(load_config(write_config(tmp_path, config)), tmp_path / "run", build_base=False)
    table.write_text("hypotheses:\n  - {id: x, value: Power, direction: negative, targets: [hex-phi/malware]}\n")
    config["mitigation"] = {"conditions": ["value"], "models": ["vim/Pow"], "by_category": False}
    experiment = resolve(load_config(write_config(tmp_path, config)), tmp_path / "run", build_base=False)
    assert experiment.specs["vim/Pow+mitigation:value"].guide is None


def test_by_default_the_base_is_mitigated_beside_the_aligned_models_where_it_can_be(tmp_path: Path, data_dir: Path):
    config = {**SMALL, "data_dir": str(data_dir), "mitigation": {"conditions": ["safety", "value"]}}
    specs = resolve(load_config(write_config(tmp_path, config)), tmp_path / "run", build_base=False).specs
    mitigated = sorted(key for key in specs if "+mitigation:" in key)
    aligned = sorted(key for key, spec in specs.items() if spec.method in {"vim", "icl"} and spec.mitigation is None)
    expected = [f"{key}+mitigation:{c}" for key in ["vanilla", *aligned] for c in ("safety", "value")]
    assert mitigated == sorted(expected)
    config["mitigation"]["by_category"] = False  # no instruction for the base's value condition: left out
    specs = resolve(load_config(write_config(tmp_path, config)), tmp_path / "run", build_base=False).specs
    assert "vanilla+mitigation:safety" in specs and "vanilla+mitigation:value" not in specs
