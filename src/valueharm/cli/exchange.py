"""Results in and out of a run: `export` and `import` (formats: valueharm.exchange)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from valueharm import paths
from valueharm.cli.common import DataDir, app, out
from valueharm.errors import ValueharmError


@app.command("export")
def export(
    run: Annotated[Path, typer.Option("--run", help="Run directory.")],
    format: Annotated[
        str | None, typer.Option("--format", help="jsonl, csv or parquet (default: by --out's suffix, else jsonl).")
    ] = None,
    output: Annotated[Path | None, typer.Option("--out", help="Output file (default: RUN/results.FORMAT).")] = None,
    with_scores: Annotated[bool, typer.Option("--with-scores", help="Add every score, with its label.")] = False,
) -> None:
    """Write a run's generations (and scores) to one file that `valueharm import` and other tools read."""
    from valueharm.exchange import export_run, store_path

    fmt = format or (output.suffix.lstrip(".") if output and output.suffix else "jsonl")
    summary = export_run(run, output or store_path(run).with_suffix(f".{fmt}"), fmt, with_scores=with_scores)
    scores = f", {summary.scores} scores" if with_scores else ""
    out.print(f"{summary.generations} generations{scores} → {summary.path}", markup=False, highlight=False)


@app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="Records made elsewhere: valueharm jsonl/csv/parquet, or published.")],
    run: Annotated[Path, typer.Option("--run", help="Run directory (its results.sqlite is created if need be).")],
    model_key: Annotated[
        str | None, typer.Option(help="Published-code file: whose answers, e.g. vanilla or vim/Pow.")
    ] = None,
    benchmark: Annotated[str | None, typer.Option(help="Published-code file: the benchmark it answers.")] = None,
    base_model: Annotated[str, typer.Option(help="Published-code file: the base model.")] = "",
    limit: Annotated[
        int | None, typer.Option(help="Published-code file: join against the first N items (default: published).")
    ] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Published-code file (default: published).")] = None,
    temperature: Annotated[float | None, typer.Option(help="Published-code file (default: 0.1).")] = None,
    top_p: Annotated[float | None, typer.Option(help="Published-code file (default: 0.75).")] = None,
    stop: Annotated[list[str] | None, typer.Option(help="Published-code file: a stop string (repeatable).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Add generations (and scores) made elsewhere to a run, so its scorers, metrics and report run on them.

    Valueharm records need no options. The published code's {query, answer, prompt} files need --model-key and
    --benchmark; their rows are joined to the benchmark's items by query text, and rows matching none are reported.
    """
    from valueharm.data.benchmarks import BENCHMARKS
    from valueharm.exchange import PublishedSource, import_generations, shown_lines
    from valueharm.records import SamplingParams

    if (model_key is None) != (benchmark is None):
        raise ValueharmError("give both --model-key and --benchmark (for a published-code file) or neither")
    published = None
    if model_key is not None and benchmark is not None:
        defaults = BENCHMARKS.get(benchmark).defaults
        params = SamplingParams(
            temperature=defaults.temperature if temperature is None else temperature,
            top_p=defaults.top_p if top_p is None else top_p,
            max_new_tokens=defaults.max_new_tokens if max_new_tokens is None else max_new_tokens,
            stop=tuple(stop or ()),
        )
        published = PublishedSource(model_key, benchmark, base_model, params, limit)
    summary = import_generations(run, file, published=published, data_dir=paths.data_dir(data_dir))
    out.print(
        f"{file}: {summary.imported} generations imported, {summary.already_present} already present, "
        f"{summary.scores} scores",
        markup=False,
        highlight=False,
    )
    if summary.unmatched:
        lines = shown_lines(summary.unmatched_lines)
        out.print(f"{summary.unmatched} rows matched no {benchmark} item and were not imported (lines {lines})",
                  markup=False, highlight=False)  # fmt: skip
