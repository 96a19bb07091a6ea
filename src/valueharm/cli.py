"""The `valueharm` command: a thin layer over the library API. Every list/show command takes `--json`."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
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
app.add_typer(data_app, name="data")
app.add_typer(profiles_app, name="profiles")
app.add_typer(benchmarks_app, name="benchmarks")
app.add_typer(tiny_app, name="tiny")

# Piped output keeps whole table cells instead of wrapping them to 80 columns.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help=f"Data directory (default: ${paths.DATA_ENV}, else the user cache)."),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


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


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2, never a traceback."""
    try:
        app()
    except ValueharmError as error:
        err.print(f"[red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)
