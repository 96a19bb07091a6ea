"""Safety benchmarks: `valueharm benchmarks list | show`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

import typer
from rich.table import Table

from valueharm import paths
from valueharm.cli.common import DataDir, JsonFlag, command_group, out, print_json

benchmarks_app = command_group("benchmarks", "Safety benchmarks.")


@benchmarks_app.command("list")
def benchmarks_list(as_json: JsonFlag = False) -> None:
    """The registered benchmarks with their published generation settings."""
    from valueharm.data.benchmarks import BENCHMARKS

    rows = [_benchmark_summary(benchmark) for _, benchmark in BENCHMARKS.items()]
    if as_json:
        print_json(rows)
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
        print_json(
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
