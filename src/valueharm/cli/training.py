"""Making models: the tiny base (`tiny build`), VIM data (`vim build-data`) and LoRA training (`train vim | benign`)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from valueharm import paths
from valueharm.cli.common import (
    Base,
    ChatOption,
    DataDir,
    FromSettings,
    JsonFlag,
    ProfileFiles,
    ProfileNames,
    ProfileSets,
    Progress,
    TemplateDir,
    TrustRemoteCode,
    chat_setting,
    command_group,
    err,
    out,
    print_json,
    resolve_profiles,
    with_settings,
)
from valueharm.settings import BenignTraining, LoraSettings, VimDataSettings, VimTraining

tiny_app = command_group("tiny", "The small offline base model used by the demo and tests.")
vim_app = command_group("vim", "Value-injection (VIM) training data.")
train_app = command_group("train", "LoRA fine-tuning: VIM profiles and benign baselines.")


@tiny_app.command("build")
def tiny_build(
    variant: Annotated[str, typer.Option(help="demo (the built-in model) or test (smaller).")] = "demo",
    out_dir: Annotated[Path | None, typer.Option("--out", help="Where to write it (default: the cache).")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if cached.")] = False,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Build (or reuse) the small offline LLaMA-architecture base model."""
    from valueharm.tiny import build_tiny

    info = build_tiny(variant, data_dir=paths.data_dir(data_dir), out=out_dir, force=force, progress=not as_json)
    if as_json:
        print_json(asdict(info))
        return
    state = "reused from cache" if info.cached else f"built in {info.build_seconds:.0f} s"
    out.print(
        f"tiny model ({info.variant}) {state}: {info.n_params / 1e6:.2f} M parameters, "
        f"{info.size_bytes / 1e6:.1f} MB, final loss {info.final_loss:.3f}\n{info.path}"
    )


@vim_app.command("build-data")
@with_settings(settings=FromSettings(VimDataSettings))
def vim_build_data(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for stage1.jsonl, stage2.jsonl, counts.json.")],
    profile: Annotated[str, typer.Option(help="Profile name.")],
    settings: VimDataSettings,
    profiles_file: Annotated[Path | None, typer.Option(help="Custom profiles file to look the name up in.")] = None,
    template_dir: TemplateDir = None,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Write one profile's two-stage VIM training data."""
    from valueharm.alignment.vim_data import VimTemplates, write_vim_data
    from valueharm.values import get_profile, read_profile_file

    directory = paths.data_dir(data_dir)
    chosen = get_profile(profile, directory, read_profile_file(profiles_file) if profiles_file else [])
    counts = write_vim_data(chosen, directory, out_dir, settings, templates=VimTemplates.load(template_dir))
    if as_json:
        print_json(counts.to_json())
        return
    table = Table("stage", "split", "examples", title=f"VIM data for {chosen.name} → {out_dir}")
    for split, by_polarity in counts.stage1.items():
        table.add_row("1", split, ", ".join(f"{k} {v}" for k, v in by_polarity.items()))
    for split, by_value in counts.stage2.items():
        table.add_row("2", split, str(sum(by_value.values())))
    out.print(table)
    for warning in counts.warnings:
        err.print(f"[yellow]warning:[/] {warning}")


LORA = FromSettings(LoraSettings, prefix="lora_")


@train_app.command("vim")
@with_settings(settings=FromSettings(VimTraining, exclude=("stage1", "stage2", "preset")), lora=LORA)
def train_vim(
    base: Base,
    out_dir: Annotated[Path, typer.Option("--out", help="Adapters go to OUT/<profile>/.")],
    settings: VimTraining,
    lora: LoraSettings,
    profile: ProfileNames = None,
    profile_set: ProfileSets = None,
    profiles_file: ProfileFiles = None,
    template_dir: TemplateDir = None,
    trust_remote_code: TrustRemoteCode = False,
    chat: ChatOption = "auto",
    data_dir: DataDir = None,
    progress: Progress = True,
) -> None:
    """Train VIM adapters for many profiles in one process, loading the base model once; both stages alike."""
    from valueharm import base_model
    from valueharm.training import train_adapters, vim_jobs

    directory = paths.data_dir(data_dir)
    profiles = resolve_profiles(profile, profile_set, profiles_file, directory)
    base = base_model.resolve(base, data_dir=directory, trust_remote_code=trust_remote_code, progress=progress)
    stage = settings.stage("stage1")  # no stage overrides on the command line: both stages train alike
    jobs = vim_jobs(profiles, directory, out_dir, stage1=stage, stage2=stage, data=settings.data,
                    limit=settings.limit, valid_limit=settings.valid_limit, template_dir=template_dir)  # fmt: skip
    _report_training(train_adapters(base, jobs, lora, trust_remote_code=trust_remote_code, progress=progress,
                                    chat=_is_chat(chat, base, trust_remote_code)))  # fmt: skip


@train_app.command("benign")
@with_settings(settings=FromSettings(BenignTraining, exclude=("preset",)), lora=LORA)
def train_benign(
    base: Base,
    dataset: Annotated[str, typer.Option(help="grammar, alpaca, dolly or samsum.")],
    out_dir: Annotated[Path, typer.Option("--out", help="The adapter goes to OUT/<dataset>/.")],
    settings: BenignTraining,
    lora: LoraSettings,
    template_dir: TemplateDir = None,
    trust_remote_code: TrustRemoteCode = False,
    chat: ChatOption = "auto",
    data_dir: DataDir = None,
    progress: Progress = True,
) -> None:
    """Train a benign fine-tuning baseline adapter in the dataset's own prompt format."""
    from valueharm import base_model
    from valueharm.training import benign_job, train_adapters

    directory = paths.data_dir(data_dir)
    base = base_model.resolve(base, data_dir=directory, trust_remote_code=trust_remote_code, progress=progress)
    job = benign_job(dataset, directory, out_dir, settings=settings.train, limit=settings.limit,
                     template_dir=template_dir)  # fmt: skip
    _report_training(train_adapters(base, [job], lora, trust_remote_code=trust_remote_code, progress=progress,
                                    chat=_is_chat(chat, base, trust_remote_code)))  # fmt: skip


def _is_chat(chat: str, base: str, trust_remote_code: bool) -> bool:
    from valueharm.chat import chat_style

    return chat_style(chat_setting(chat), base, trust_remote_code=trust_remote_code) is not None


def _report_training(results: list) -> None:
    table = Table("adapter", "stage", "examples", "best epoch", "valid loss", "padding eff.", "seconds", "path")
    for result in results:
        if result.skipped:
            table.add_row(result.name, "[dim]already trained[/]", "", "", "", "", "", str(result.path))
        for stage in result.stages:
            best = stage.epochs[stage.best_epoch - 1].valid_loss
            table.add_row(result.name, stage.name, str(stage.n_train), str(stage.best_epoch),
                          "" if best is None else f"{best:.4f}", f"{stage.padding_efficiency:.2f}",
                          f"{stage.seconds:.1f}", str(result.path))  # fmt: skip
    out.print(table)
