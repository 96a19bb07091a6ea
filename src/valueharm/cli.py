"""The `valueharm` command: a thin layer over the library API. Every list/show command takes `--json`."""

from __future__ import annotations

import json
import os
import sys
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from valueharm import paths
from valueharm.errors import ValueharmError

app = typer.Typer(
    help="Safety research on value-aligned LLMs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Datasets: list, check, fetch.", no_args_is_help=True)
profiles_app = typer.Typer(help="Target value profiles.", no_args_is_help=True)
benchmarks_app = typer.Typer(help="Safety benchmarks.", no_args_is_help=True)
tiny_app = typer.Typer(help="The small offline base model used by the demo and tests.", no_args_is_help=True)
vim_app = typer.Typer(help="Value-injection (VIM) training data.", no_args_is_help=True)
train_app = typer.Typer(help="LoRA fine-tuning: VIM profiles and benign baselines.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(profiles_app, name="profiles")
app.add_typer(benchmarks_app, name="benchmarks")
app.add_typer(tiny_app, name="tiny")
app.add_typer(vim_app, name="vim")
app.add_typer(train_app, name="train")

# Piped output keeps whole table cells instead of wrapping them to 80 columns.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help=f"Data directory (default: ${paths.DATA_ENV}, else the user cache)."),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
ProfileNames = Annotated[list[str] | None, typer.Option("--profile", help="A profile by name (repeatable).")]
ProfileSets = Annotated[list[str] | None, typer.Option("--set", help="A profile set, e.g. vim154 (repeatable).")]
ProfileFiles = Annotated[
    list[Path] | None, typer.Option("--profiles-file", help="Custom profiles (YAML/CSV); all of them are used.")
]
TemplateDir = Annotated[
    Path | None, typer.Option(help="Directory of <name>.txt files that replace built-in prompt templates.")
]
Progress = Annotated[bool, typer.Option("--progress/--quiet", help="Progress bars.")]


def _profiles(names: list[str] | None, sets: list[str] | None, files: list[Path] | None, data_dir: Path) -> list:
    from valueharm.values import resolve_profiles

    profiles = resolve_profiles(names or [], sets or [], files or [], data_dir=data_dir)
    if not profiles:
        raise ValueharmError("no profiles given: use --profile NAME, --set NAME or --profiles-file FILE")
    return profiles


def _print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")


# ----------------------------------------------------------------------------------------------------------- data


@data_app.command("list")
def data_list(as_json: JsonFlag = False) -> None:
    """Every registered dataset: files, source, licence."""
    from valueharm.data.registry import DATASETS

    datasets = [dataset for _, dataset in DATASETS.items()]
    if as_json:
        _print_json([asdict(dataset) for dataset in datasets])
        return
    table = Table("dataset", "files", "licence", "source", "what it is")
    for dataset in datasets:
        table.add_row(
            dataset.name,
            "\n".join(file.path for file in dataset.files),
            dataset.licence,
            dataset.homepage,
            dataset.description,
        )
    out.print(table)


@data_app.command("check")
def data_check(
    names: Annotated[list[str] | None, typer.Argument(help="Datasets to check (default: all).")] = None,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Which registered files are present, missing or corrupt in the data directory."""
    from valueharm.data.fetch import FileStatus, check

    directory = paths.data_dir(data_dir)
    results = check(directory, names or [])
    if as_json:
        _print_json({"data_dir": str(directory), "files": [asdict(result) for result in results]})
    else:
        table = Table("dataset", "file", "status", "detail", title=f"data dir: {directory}")
        colours = {FileStatus.OK: "green", FileStatus.MISSING: "yellow", FileStatus.CORRUPT: "red"}
        for result in results:
            colour = colours.get(result.status, "cyan")
            table.add_row(result.dataset, result.path, f"[{colour}]{result.status.value}[/]", result.detail)
        out.print(table)
    if any(result.status is FileStatus.CORRUPT for result in results):
        raise typer.Exit(1)


@data_app.command("fetch")
def data_fetch(
    names: Annotated[list[str] | None, typer.Argument(help="Datasets to fetch (default: all).")] = None,
    data_dir: DataDir = None,
    mirror: Annotated[str | None, typer.Option(help="Base URL that serves <path> for every file.")] = None,
    force: Annotated[bool, typer.Option(help="Download even files that check out.")] = False,
) -> None:
    """Download datasets from their canonical sources, verified against their checksums."""
    from valueharm.data.fetch import fetch

    directory = paths.data_dir(data_dir)
    for result in fetch(directory, names or [], mirror=mirror, force=force):
        out.print(f"{result.status.value:10} {result.dataset:14} {result.path}")


# ------------------------------------------------------------------------------------------------------- profiles


@profiles_app.command("list")
def profiles_list(
    profile_set: Annotated[str, typer.Option("--set", help="Profile set (see `valueharm profiles sets`).")] = "all",
    file: Annotated[Path | None, typer.Option(help="List the profiles of a custom YAML/CSV file instead.")] = None,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """The profiles of a set, one row each with its ten scores."""
    from valueharm.values import VALUE_ABBREVIATIONS, VALUES, read_profile_file
    from valueharm.values import profile_set as load_set

    profiles = read_profile_file(file) if file else load_set(profile_set, paths.data_dir(data_dir))
    if as_json:
        _print_json([profile.to_dict() for profile in profiles])
        return
    table = Table("profile", *VALUE_ABBREVIATIONS.values(), title=f"{len(profiles)} profiles")
    for profile in profiles:
        table.add_row(profile.name, *(f"{profile.scores[value]:g}" for value in VALUES))
    out.print(table)


@profiles_app.command("sets")
def profiles_sets(as_json: JsonFlag = False) -> None:
    """The named profile sets."""
    from valueharm.values import PROFILE_SET_HELP

    if as_json:
        _print_json(PROFILE_SET_HELP)
        return
    table = Table("set", "profiles")
    for name, help_text in PROFILE_SET_HELP.items():
        table.add_row(name, help_text)
    out.print(table)


@profiles_app.command("show")
def profiles_show(
    name: str,
    file: Annotated[Path | None, typer.Option(help="Also look in this custom YAML/CSV file.")] = None,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """One profile's ten scores as a bar chart, with its higher-order group means."""
    from valueharm.values import HIGHER_ORDER, SCORE_MAX, VALUES, get_profile, read_profile_file

    custom = read_profile_file(file) if file else []
    profile = get_profile(name, paths.data_dir(data_dir), custom)
    if as_json:
        payload = profile.to_dict() | {"groups": {group: profile.group_score(group) for group in HIGHER_ORDER}}
        _print_json(payload)
        return
    table = Table("value", "score", "", title=f"{profile.name}  ({profile.provenance})", show_edge=False)
    for value in VALUES:
        score = profile.scores[value]
        table.add_row(value, f"{score:g}", "█" * round(score * 4) + "·" * round((SCORE_MAX - score) * 4))
    table.add_section()
    for group in HIGHER_ORDER:
        table.add_row(f"[dim]{group}[/]", f"[dim]{profile.group_score(group):.2f}[/]", "")
    out.print(table)


# ----------------------------------------------------------------------------------------------------- benchmarks


@benchmarks_app.command("list")
def benchmarks_list(as_json: JsonFlag = False) -> None:
    """The registered benchmarks with their published generation settings."""
    from valueharm.data.benchmarks import BENCHMARKS

    rows = [_benchmark_summary(benchmark) for _, benchmark in BENCHMARKS.items()]
    if as_json:
        _print_json(rows)
        return
    table = Table("benchmark", "kind", "samples", "new tokens", "default limit", "what it is")
    for row in rows:
        table.add_row(
            row["name"],
            row["kind"],
            str(row["samples"]),
            str(row["max_new_tokens"]),
            str(row["default_limit"] or "all"),
            row["description"],
        )
    out.print(table)


def _benchmark_summary(benchmark: Any) -> dict[str, Any]:
    return {
        "name": benchmark.name,
        "kind": benchmark.kind.value,
        "dataset": benchmark.dataset,
        "description": benchmark.description,
        "default_limit": benchmark.default_limit,
        "default_options": dict(benchmark.default_options),
        **asdict(benchmark.defaults),
    }


@benchmarks_app.command("show")
def benchmarks_show(
    name: str,
    limit: Annotated[int | None, typer.Option(help="Load the first N items (default: the published limit).")] = None,
    examples: Annotated[int, typer.Option(help="How many example items to print.")] = 3,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Size, categories and example items of one benchmark."""
    from collections import Counter

    from valueharm.data.benchmarks import BENCHMARKS

    benchmark = BENCHMARKS.get(name)
    items = benchmark.load(paths.data_dir(data_dir), limit)
    categories = Counter(item.category for item in items)
    if as_json:
        _print_json(
            _benchmark_summary(benchmark)
            | {
                "size": len(items),
                "categories": dict(categories),
                "examples": [asdict(item) for item in items[:examples]],
            }
        )
        return
    out.print(f"[bold]{benchmark.name}[/]: {benchmark.description}")
    out.print(f"{len(items)} items in {len(categories)} categories")
    table = Table("category", "items")
    for category, count in sorted(categories.items()):
        table.add_row(category, str(count))
    out.print(table)
    for item in items[:examples]:
        out.print(f"[dim]{item.item_id}[/] [{item.category}] {item.text}")


# ----------------------------------------------------------------------------------------------------------- tiny


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
        _print_json(asdict(info))
        return
    state = "reused from cache" if info.cached else f"built in {info.build_seconds:.0f} s"
    out.print(
        f"tiny model ({info.variant}) {state}: {info.n_params / 1e6:.2f} M parameters, "
        f"{info.size_bytes / 1e6:.1f} MB, final loss {info.final_loss:.3f}\n{info.path}"
    )


# ------------------------------------------------------------------------------------------------------------ vim


@vim_app.command("build-data")
def vim_build_data(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for stage1.jsonl, stage2.jsonl, counts.json.")],
    profile: Annotated[str, typer.Option(help="Profile name.")],
    profiles_file: Annotated[Path | None, typer.Option(help="Custom profiles file to look the name up in.")] = None,
    threshold: Annotated[float, typer.Option(help="Stage 1: argument score ≥ threshold means 'would say'.")] = 3.0,
    seed: Annotated[int, typer.Option(help="Split and stochastic-rounding seed (published: 42).")] = 42,
    template_dir: TemplateDir = None,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Write one profile's two-stage VIM training data."""
    from valueharm.alignment.vim_data import VimTemplates, write_vim_data
    from valueharm.values import get_profile, read_profile_file

    directory = paths.data_dir(data_dir)
    chosen = get_profile(profile, directory, read_profile_file(profiles_file) if profiles_file else [])
    counts = write_vim_data(
        chosen, directory, out_dir, threshold=threshold, seed=seed, templates=VimTemplates.load(template_dir)
    )
    if as_json:
        _print_json(counts.to_json())
        return
    table = Table("stage", "split", "examples", title=f"VIM data for {chosen.name} → {out_dir}")
    for split, by_polarity in counts.stage1.items():
        table.add_row("1", split, ", ".join(f"{k} {v}" for k, v in by_polarity.items()))
    for split, by_value in counts.stage2.items():
        table.add_row("2", split, str(sum(by_value.values())))
    out.print(table)
    for warning in counts.warnings:
        err.print(f"[yellow]warning:[/] {warning}")


# ---------------------------------------------------------------------------------------------------------- train

Base = Annotated[str, typer.Option("--base", help="Base model: a local path or hub id.")]
TrustRemoteCode = Annotated[bool, typer.Option(help="Run code shipped with the model (off unless asked).")]


def _settings(**values: object) -> object:
    from valueharm.training import TrainSettings

    return TrainSettings(**{key: value for key, value in values.items() if value is not None})


@train_app.command("vim")
def train_vim(
    base: Base,
    out_dir: Annotated[Path, typer.Option("--out", help="Adapters go to OUT/<profile>/.")],
    profile: ProfileNames = None,
    profile_set: ProfileSets = None,
    profiles_file: ProfileFiles = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs per stage (published: 5).")] = None,
    learning_rate: Annotated[float | None, typer.Option("--lr", help="Learning rate (published: 2e-5).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (published: 8).")] = None,
    max_length: Annotated[int | None, typer.Option(help="Longer examples are dropped, never cut.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most N examples per split and stage (small runs).")] = None,
    lora_r: Annotated[int, typer.Option(help="LoRA rank.")] = 8,
    lora_alpha: Annotated[int, typer.Option(help="LoRA alpha.")] = 32,
    lora_dropout: Annotated[float, typer.Option(help="LoRA dropout.")] = 0.1,
    target_modules: Annotated[str, typer.Option(help="Comma-separated modules to adapt.")] = "q_proj,v_proj",
    threshold: Annotated[float, typer.Option(help="Stage-1 'would say' threshold.")] = 3.0,
    seed: Annotated[int, typer.Option(help="Data and training seed.")] = 42,
    template_dir: TemplateDir = None,
    trust_remote_code: TrustRemoteCode = False,
    data_dir: DataDir = None,
    progress: Progress = True,
) -> None:
    """Train VIM adapters for many profiles in one process, loading the base model once."""
    from valueharm.training import LoraSettings, train_adapters, vim_jobs

    directory = paths.data_dir(data_dir)
    profiles = _profiles(profile, profile_set, profiles_file, directory)
    settings = _settings(epochs=epochs, learning_rate=learning_rate, batch_size=batch_size, max_length=max_length,
                         seed=seed)  # fmt: skip
    lora = LoraSettings(lora_r, lora_alpha, lora_dropout, tuple(m.strip() for m in target_modules.split(",")))
    jobs = vim_jobs(profiles, directory, out_dir, stage1=settings, stage2=settings, threshold=threshold, seed=seed,
                    limit=limit, template_dir=template_dir)  # fmt: skip
    _report_training(train_adapters(base, jobs, lora, trust_remote_code=trust_remote_code, progress=progress))


@train_app.command("benign")
def train_benign(
    base: Base,
    dataset: Annotated[str, typer.Option(help="grammar, alpaca, dolly or samsum.")],
    out_dir: Annotated[Path, typer.Option("--out", help="The adapter goes to OUT/<dataset>/.")],
    epochs: Annotated[int | None, typer.Option(help="Epochs (published: 1).")] = None,
    learning_rate: Annotated[float | None, typer.Option("--lr", help="Learning rate (published: 2e-5).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (published: 1, with 16 accumulation).")] = None,
    gradient_accumulation: Annotated[int | None, typer.Option(help="Accumulation steps (published: 16).")] = None,
    max_length: Annotated[int | None, typer.Option(help="Longer examples are dropped (published: 2048).")] = None,
    limit: Annotated[int | None, typer.Option(help="Train on a seeded sample of N examples.")] = None,
    template_dir: TemplateDir = None,
    trust_remote_code: TrustRemoteCode = False,
    data_dir: DataDir = None,
    progress: Progress = True,
) -> None:
    """Train a benign fine-tuning baseline adapter in the dataset's own prompt format."""
    from dataclasses import replace

    from valueharm.training import BENIGN_SETTINGS, benign_job, train_adapters

    changes = {"epochs": epochs, "learning_rate": learning_rate, "batch_size": batch_size,
               "gradient_accumulation": gradient_accumulation, "max_length": max_length}  # fmt: skip
    settings = replace(BENIGN_SETTINGS, **{k: v for k, v in changes.items() if v is not None})
    job = benign_job(dataset, paths.data_dir(data_dir), out_dir, settings=settings, limit=limit,
                     template_dir=template_dir)  # fmt: skip
    _report_training(train_adapters(base, [job], trust_remote_code=trust_remote_code, progress=progress))


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


# ------------------------------------------------------------------------------------------------------- generate


def _key_values(pairs: list[str] | None, option: str) -> dict[str, str]:
    parsed = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueharmError(f"{option} {pair!r}: expected NAME=VALUE")
        parsed[key] = value
    return parsed


def _scalar(text: str) -> object:
    """A command-line value as the number or boolean it spells, else the string."""
    lowered = text.lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


@app.command("generate")
def generate(
    base: Base,
    benchmark: Annotated[str, typer.Option(help="rtp, holisticbiasr, hex-phi, beavertails or advbench.")],
    run: Annotated[Path, typer.Option("--run", help="Run directory (results.sqlite is written there).")],
    method: Annotated[str, typer.Option(help="vanilla, vim, icl or benign.")] = "vanilla",
    profile: ProfileNames = None,
    profile_set: ProfileSets = None,
    profiles_file: ProfileFiles = None,
    dataset: Annotated[list[str] | None, typer.Option(help="Benign dataset(s), for --method benign.")] = None,
    adapter: Annotated[
        list[str] | None,
        typer.Option(help="NAME=DIR: the adapter of a profile or benign dataset (default RUN/adapters/METHOD/NAME)."),
    ] = None,
    mitigation: Annotated[str | None, typer.Option(help="safety, value or dual.")] = None,
    set_aside: Annotated[str | None, typer.Option(help="Comma-separated values the value instruction names.")] = None,
    limit: Annotated[int | None, typer.Option(help="First N benchmark items (default: the published limit).")] = None,
    samples: Annotated[int | None, typer.Option(help="Samples per item (default: published).")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Default: published.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Default: 0.1.")] = None,
    top_p: Annotated[float | None, typer.Option(help="Default: 0.75.")] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    backend: Annotated[str, typer.Option(help="hf, vllm or openai.")] = "hf",
    backend_option: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE for the backend, e.g. base_url=…, model=… (repeatable).")
    ] = None,
    template_dir: TemplateDir = None,
    data_dir: DataDir = None,
    progress: Progress = True,
) -> None:
    """Generate a method's continuations of a benchmark into the run's store (re-running resumes)."""
    from valueharm.alignment.prompts import ModelSpec, PromptTemplates
    from valueharm.data.benchmarks import BENCHMARKS
    from valueharm.generation.run import generate_slice, open_backend, sampling_params
    from valueharm.store import RunStore
    from valueharm.training import base_identity

    directory = paths.data_dir(data_dir)
    chosen = BENCHMARKS.get(benchmark)
    adapters = _key_values(adapter, "--adapter")
    aside = tuple(v.strip() for v in set_aside.split(",")) if set_aside else ()

    def spec(profile_=None, dataset_=None) -> ModelSpec:
        name = dataset_ or (profile_.name if profile_ else None)
        path = (
            Path(adapters.get(name) or run / "adapters" / method / str(name)) if method in {"vim", "benign"} else None
        )
        return ModelSpec(method, profile_, dataset_, path, mitigation, aside)

    if method == "benign":
        specs = [spec(dataset_=name) for name in dataset or []] or [spec()]
    elif method == "vanilla":
        specs = [spec()]
    else:
        specs = [spec(p) for p in _profiles(profile, profile_set, profiles_file, directory)]
    templates = PromptTemplates.load(template_dir)
    params = sampling_params(chosen, templates, seed=seed, temperature=temperature, top_p=top_p,
                             max_new_tokens=max_new_tokens)  # fmt: skip
    items = chosen.load(directory, limit)
    options = {key: _scalar(value) for key, value in _key_values(backend_option, "--backend-option").items()}
    with RunStore(run / "results.sqlite") as store:
        served = open_backend(backend, base, specs, **options)
        try:
            summary = generate_slice(store, served, specs, chosen, items, base_model=base_identity(base),
                                     params=params, samples=samples or chosen.defaults.samples,
                                     templates=templates, progress=progress)  # fmt: skip
        finally:
            served.close()
    out.print(
        f"{chosen.name}: {summary.planned} planned, {summary.already_stored} already stored, "
        f"{summary.generated} generated ({summary.failed} failed) → {run / 'results.sqlite'}"
    )
    if summary.failed:
        raise typer.Exit(1)


# --------------------------------------------------------------------------------------------- score / metrics


@app.command("score")
def score(
    run: Annotated[Path, typer.Option("--run", help="Run directory.")],
    scorer: Annotated[list[str], typer.Option(help="NAME[:key=value,…] (repeatable), e.g. lexicon, refusal.")],
    benchmark: Annotated[
        list[str] | None, typer.Option(help="Only these benchmarks (default: all it applies to).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Generations per scorer call.")] = 32,
    data_dir: DataDir = None,
    progress: Progress = True,
) -> None:
    """Score a run's generations; what is already scored is skipped, so re-running makes no model or API call."""
    from valueharm.scoring.base import build_scorer
    from valueharm.scoring.run import score_run
    from valueharm.store import RunStore

    scorers = [build_scorer(spec, data_dir=paths.data_dir(data_dir)) for spec in scorer]  # all valid before work
    with RunStore(_existing_store(run)) as store:
        for built in scorers:
            summary = score_run(store, built, benchmarks=benchmark, batch_size=batch_size, progress=progress)
            out.print(f"{summary.scorer}: {summary.scored} scored ({summary.errors} failed), {summary.cached} cached")


def _existing_store(run: Path) -> Path:
    path = run / "results.sqlite" if run.is_dir() else run
    if not path.is_file():
        raise ValueharmError(f"{run}: no results.sqlite here (generate into it first)")
    return path


@app.command("metrics")
def metrics(
    run: Annotated[Path | None, typer.Option("--run", help="Run directory.")] = None,
    imported: Annotated[
        Path | None, typer.Option("--import", help="JSONL of judged records made elsewhere (the export format).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 1000,
    published_bias_threshold: Annotated[
        bool, typer.Option(help="HolisticBiasR bias score against the published code's 0.5 % threshold.")
    ] = False,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Also write the table as CSV.")] = None,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Compute every metric with bootstrap CIs from a run (or imported records) and print the table."""
    import csv
    import tempfile

    from valueharm.data.benchmarks import BENCHMARKS
    from valueharm.metrics import compute_metrics
    from valueharm.store import RunStore

    if (run is None) == (imported is None):
        raise ValueharmError("give either --run DIR or --import FILE.jsonl")
    with tempfile.TemporaryDirectory() as scratch:
        path = _existing_store(run) if run else Path(scratch) / "imported.sqlite"
        with RunStore(path) as store:
            if imported:
                store.import_generations(imported)
            metadata = {}
            if "holisticbiasr" in {b for b, _ in store.count_generations()}:
                items = BENCHMARKS.get("holisticbiasr").load(paths.data_dir(data_dir), preferences=None)
                metadata = {item.item_id: item.metadata for item in items}
            computed = compute_metrics(
                store, metadata, seed=seed, n_boot=n_boot, published_bias_threshold=published_bias_threshold
            )
            rows = [row.to_dict() for row in computed]
    if csv_out:
        with csv_out.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["metric"])
            writer.writeheader()
            writer.writerows(rows)
    if as_json:
        _print_json(rows)
        return
    table = Table("benchmark", "model", "metric", "variant", "category", "value [95% CI]", "n", "failed")
    for row in rows:
        value = _with_ci(row["value"], row["ci_low"], row["ci_high"])
        table.add_row(row["benchmark"], row["model_key"], row["metric"], row["variant"], row["category"], value,
                      str(row["n_used"]), str(row["n_failed"]))  # fmt: skip
    out.print(table)


def _with_ci(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" + (f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else "")


# ------------------------------------------------------------------------------------------------- experiments


@app.command("run")
def run_command(
    config: Annotated[Path, typer.Argument(help="Experiment YAML.")],
    run: Annotated[Path | None, typer.Option("--run", help="Run directory (default: runs/<name>).")] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the plan and what is already done; do nothing.")] = False,
    executor: Annotated[str, typer.Option(help="local, or ray (pip install 'valueharm[ray]').")] = "local",
    address: Annotated[str | None, typer.Option(help="Ray cluster address (default: start a local one).")] = None,
    progress: Progress = True,
) -> None:
    """Run an experiment end to end: train → generate → score → metrics → analysis → report. Re-run to resume."""
    from valueharm.experiment import Experiment, make_executor, run_experiment

    result = run_experiment(config, run, dry_run=dry_run, executor=make_executor(executor, address), progress=progress)
    if isinstance(result, Experiment):
        out.print(f"report: {result.report_path}")
        return
    table = Table(
        "job",
        "units",
        "done",
        "to do",
        title=f"plan ({', '.join(f'{k}: {v} to do' for k, v in result.totals().items())})",
    )
    for row in result.rows:
        table.add_row(row["job"], str(row["units"]), str(row["done"]), str(row["todo"]))
    out.print(table)


@app.command("report")
def report(run: Annotated[Path, typer.Option("--run", help="Run directory of an experiment.")]) -> None:
    """Recompute a run's metrics and analyses and write its self-contained HTML report."""
    from valueharm.experiment import report_run

    out.print(f"report: {report_run(run).resolve()}")


@app.command("demo")
def demo(
    run: Annotated[Path, typer.Option("--run", help="Run directory.")] = Path("runs/demo"),
    progress: Progress = True,
) -> None:
    """The whole study in miniature on the tiny built-in model, offline; prints where the report is."""
    from importlib import resources

    from valueharm.experiment import run_experiment

    with resources.as_file(resources.files("valueharm") / "configs" / "demo.yaml") as config:
        experiment = run_experiment(config, run, progress=progress)
    out.print(f"[bold]report:[/] {experiment.report_path.resolve()}")


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2, never a traceback."""
    # our own bars show progress; Hugging Face's per-load bars ("Loading weights") would interleave with them
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # raised inside PEFT/TRL by transformers 5's rename; nothing a user of ours can act on
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    try:
        app()
    except ValueharmError as error:
        err.print(f"[red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)  # names like scorers[0]
        sys.exit(2)
