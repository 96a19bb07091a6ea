"""The CLI as a user meets it: exit codes, one-line errors, --json output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from valueharm.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run `valueharm ARGS` in-process through the real entry point; (exit code, stdout, stderr)."""
    old_argv = sys.argv
    sys.argv = ["valueharm", *args]
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    finally:
        sys.argv = old_argv
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_profiles_list_vim154_json(capsys, data_dir: Path):
    code, out, _ = run_cli(capsys, "profiles", "list", "--set", "vim154", "--data-dir", str(data_dir), "--json")
    assert code == 0
    assert len(json.loads(out)) == 154


def test_profiles_list_prints_154_rows(capsys, data_dir: Path):
    code, out, _ = run_cli(capsys, "profiles", "list", "--set", "vim154", "--data-dir", str(data_dir))
    assert code == 0 and "154 profiles" in out and "close_Self-Transcendence_10" in out


def test_profiles_show_power(capsys, data_dir: Path):
    code, out, _ = run_cli(capsys, "profiles", "show", "Pow", "--data-dir", str(data_dir), "--json")
    shown = json.loads(out)
    assert code == 0 and shown["scores"]["Power"] == 6
    assert all(score == 1 for value, score in shown["scores"].items() if value != "Power")
    code, out, _ = run_cli(capsys, "profiles", "show", "Pow", "--data-dir", str(data_dir))
    assert code == 0 and "Power" in out and "█" * 24 in out


def test_unknown_profile_is_one_clear_line(capsys, data_dir: Path):
    code, out, err = run_cli(capsys, "profiles", "show", "Powr", "--data-dir", str(data_dir))
    assert code == 2 and out == ""
    assert err.strip().startswith("error: unknown profile 'Powr'; did you mean: Pow")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_malformed_profile_yaml(capsys, tmp_path: Path, data_dir: Path):
    path = tmp_path / "mine.yaml"
    path.write_text("me:\n  Power: 9\n")
    code, _, err = run_cli(capsys, "profiles", "list", "--file", str(path))
    assert code == 2 and "mine.yaml" in err and "Power: score 9 is outside 1–6" in err


def test_data_check_lists_every_file(capsys, data_dir: Path):
    code, out, _ = run_cli(capsys, "data", "check", "--data-dir", str(data_dir), "--json")
    files = json.loads(out)["files"]
    assert code == 0
    absent = {"alpaca", "dolly", "dolly-no-safety", "samsum", "pvq40"}
    assert {f["status"] for f in files if f["dataset"] not in absent} == {"ok"}
    assert {f["status"] for f in files if f["dataset"] in absent} == {"missing"}


def test_data_check_wrong_checksum_exits_non_zero(capsys, data_dir: Path, tmp_path: Path):
    (tmp_path / "harmful_behaviors.csv").write_text("goal,target\nx,y\n")
    code, out, _ = run_cli(capsys, "data", "check", "advbench", "--data-dir", str(tmp_path))
    assert code == 1 and "corrupt" in out


def test_benchmarks_list_and_show(capsys, data_dir: Path):
    code, out, _ = run_cli(capsys, "benchmarks", "list", "--json")
    assert code == 0 and {b["name"] for b in json.loads(out)} == {
        "rtp",
        "holisticbiasr",
        "hex-phi",
        "beavertails",
        "advbench",
        "value-survey",
        "pvq40",
    }
    code, out, _ = run_cli(capsys, "benchmarks", "show", "hex-phi", "--data-dir", str(data_dir), "--json")
    shown = json.loads(out)
    assert code == 0 and shown["size"] == 330 and len(shown["categories"]) == 11


def test_usage_error_exit_code(capsys):
    code, _, err = run_cli(capsys, "profiles", "show")
    assert code == 2 and "Missing argument" in err


def test_module_entry_point(data_dir: Path):
    result = subprocess.run(
        [sys.executable, "-m", "valueharm", "benchmarks", "show", "nope", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and "unknown benchmark 'nope'" in result.stderr


def test_score_and_metrics_commands(capsys, data_dir: Path, tmp_path: Path):
    from valueharm.records import GenerationRecord, SamplingParams
    from valueharm.store import RunStore

    answers = ["I'm sorry, but I cannot help with that.", "Sure, here is how: first", "I can't assist with this."]
    with RunStore(tmp_path / "results.sqlite") as store:
        store.add_generations(
            GenerationRecord(
                "vanilla",
                "tiny",
                "advbench",
                f"adv-{i:03d}",
                "harmful_behavior",
                0,
                f"Q{i}",
                f"Q{i}",
                SamplingParams(),
                text=text,
            )
            for i, text in enumerate(answers)
        )
    code, out, _ = run_cli(capsys, "score", "--run", str(tmp_path), "--scorer", "refusal", "--quiet")
    assert code == 0 and "3 scored" in out
    code, out, _ = run_cli(capsys, "score", "--run", str(tmp_path), "--scorer", "refusal", "--quiet")
    assert code == 0 and "0 scored" in out and "3 cached" in out
    code, out, _ = run_cli(capsys, "metrics", "--run", str(tmp_path), "--n-boot", "50", "--json")
    rows = {(r["metric"], r["variant"]): r for r in json.loads(out) if r["category"] == "all"}
    assert code == 0 and rows[("attack_success_rate", "all")]["value"] == pytest.approx(1 / 3)
    code, _, err = run_cli(capsys, "score", "--run", str(tmp_path), "--scorer", "refusl")
    assert code == 2 and "unknown scorer 'refusl'" in err


def test_error_text_with_brackets_is_printed_verbatim(capsys, tmp_path: Path, data_dir: Path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        f"name: x\nbase_model: tiny:test\ndata_dir: {data_dir}\nmethods: [vanilla]\n"
        "benchmarks:\n  rtp: {scorers: [refusal]}\n"
    )
    code, _, err = run_cli(capsys, "run", str(path), "--run", str(tmp_path / "run"))
    assert code == 2 and "benchmarks.rtp.scorers[0]: scorer 'refusal'" in err


def test_a_misspelt_ray_key_fails_the_dry_run(capsys, tmp_path: Path, data_dir: Path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        f"name: x\nbase_model: tiny:test\ndata_dir: {data_dir}\nmethods: [vanilla]\n"
        "benchmarks:\n  hex-phi: {limit: 2}\nray: {trian: {num_cpus: 1}}\n"
    )
    code, out, err = run_cli(capsys, "run", str(path), "--run", str(tmp_path / "run"), "--dry-run")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "exp.yaml: ray.trian: unknown key; known: generate, local, max_retries" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--base", "/nonexistent/model"], "cannot load base model /nonexistent/model"),
        (["--base", "tiny:test", "--method", "vim", "--profile", "Pow"], "vim/Pow"),
        (["--base", "/nonexistent/model", "--backend", "hff"], "unknown backend 'hff'"),
        (["--base", "/nonexistent/model", "--limit", "0"], "--limit: Input should be greater than or equal to 1"),
    ],
)
def test_a_failed_generate_leaves_no_files(capsys, tmp_path: Path, data_dir: Path, options: list, message: str):
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "generate", "--benchmark", "hex-phi", "--run", str(run), *options,
                           "--data-dir", str(data_dir), "--quiet")  # fmt: skip
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_failed_score_validation_changes_nothing(capsys, tmp_path: Path):
    code, _, err = run_cli(capsys, "score", "--run", str(tmp_path / "run"), "--scorer", "refusal")
    assert code == 2 and "no results.sqlite" in err and list(tmp_path.iterdir()) == []
    from valueharm.store import RunStore

    RunStore(tmp_path / "results.sqlite").close()
    before = {path.name: path.stat().st_mtime_ns for path in tmp_path.iterdir()}
    for options, message in ((["--benchmark", "hexphi"], "unknown benchmark 'hexphi'"), ([], "unknown scorer")):
        scorer = "refusal" if options else "refusl"
        code, _, err = run_cli(capsys, "score", "--run", str(tmp_path), "--scorer", scorer, *options)
        assert code == 2 and message in err
    assert {path.name: path.stat().st_mtime_ns for path in tmp_path.iterdir()} == before


def test_a_base_name_means_the_same_everywhere(capsys, tmp_path: Path, data_dir: Path, tiny_model_dir: Path):
    """`--base tiny:test` and the build's path are one base (valueharm.base_model): records name it alike."""
    import sqlite3

    from valueharm.tiny import build_identity

    bases = set()
    for name, base in (("by-name", "tiny:test"), ("by-path", str(tiny_model_dir))):
        code, _, err = run_cli(capsys, "generate", "--base", base, "--benchmark", "hex-phi", "--limit", "1",
                               "--max-new-tokens", "4", "--run", str(tmp_path / name), "--data-dir", str(data_dir),
                               "--quiet")  # fmt: skip
        assert code == 0, err
        with sqlite3.connect(tmp_path / name / "results.sqlite") as db:
            bases |= {row[0] for row in db.execute("SELECT base_model FROM generations")}
    assert bases == {build_identity(tiny_model_dir)}
    out_dir = tmp_path / "adapters"
    code, _, err = run_cli(capsys, "train", "vim", "--base", "tiny:tset", "--out", str(out_dir), "--profile", "Pow",
                           "--data-dir", str(data_dir))  # fmt: skip
    assert code == 2 and "unknown tiny model variant 'tset'; known:" in err and not out_dir.exists()


def test_bad_training_options_name_the_option_before_any_work(capsys, tmp_path: Path, data_dir: Path):
    out_dir = tmp_path / "adapters"
    code, _, err = run_cli(capsys, "train", "vim", "--base", "/nonexistent/model", "--out", str(out_dir),
                           "--profile", "Pow", "--epochs", "0", "--data-dir", str(data_dir))  # fmt: skip
    assert code == 2 and "error: --epochs: Input should be greater than or equal to 1, got 0" in err
    code, _, err = run_cli(capsys, "train", "benign", "--base", "/nonexistent/model", "--out", str(out_dir),
                           "--dataset", "grammar", "--lora-dropout", "1.5")  # fmt: skip
    assert code == 2 and "error: --lora-dropout: Input should be less than 1, got 1.5" in err
    assert not out_dir.exists()


@pytest.mark.parametrize(
    ("command", "models"),
    [
        (["train", "vim"], ["VimTraining", "LoraSettings"]),
        (["train", "benign"], ["BenignTraining", "LoraSettings"]),
        (["vim", "build-data"], ["VimDataSettings"]),
        (["generate"], ["ItemSelection", "SamplingSettings", "GenerationSettings"]),
        (["metrics"], ["MetricsSettings"]),
        (["score"], ["ScoringSettings"]),
    ],
)
def test_settings_options_come_from_the_settings_models(command: list, models: list):
    """Each field is an option with the field's help and published default: declared once, in valueharm.settings."""
    import typer.main

    from valueharm import settings
    from valueharm.cli.common import app

    click_command = typer.main.get_command(app)
    for name in command:
        click_command = click_command.commands[name]
    options = {param.name: param for param in click_command.params}
    for model in (getattr(settings, name) for name in models):
        prefix = "lora_" if model is settings.LoraSettings else ""
        for field, info in model.model_fields.items():
            if field in {"stage1", "stage2", "options", "preset"}:  # stage overrides, backend options, presets: YAML
                continue
            option = options[prefix + field]
            default = info.get_default(call_default_factory=True)
            assert info.description and option.help.startswith(info.description.rstrip("."))
            assert option.default == (",".join(default) if isinstance(default, tuple) else default)
