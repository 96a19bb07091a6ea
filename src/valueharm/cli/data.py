"""Datasets: `valueharm data list | check | fetch`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from valueharm import paths
from valueharm.cli.common import DataDir, JsonFlag, command_group, out, print_json

data_app = command_group("data", "Datasets: list, check, fetch.")


@data_app.command("list")
def data_list(as_json: JsonFlag = False) -> None:
    """Every registered dataset: files, source, licence."""
    from valueharm.data.registry import DATASETS

    datasets = [dataset for _, dataset in DATASETS.items()]
    if as_json:
        print_json([asdict(dataset) for dataset in datasets])
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
        print_json({"data_dir": str(directory), "files": [asdict(result) for result in results]})
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
