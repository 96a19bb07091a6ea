"""Experiments: `run`, `report` and the `demo`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from valueharm.cli.common import Progress, app, out

if TYPE_CHECKING:
    from valueharm.experiment.cost import CostPlan


@app.command("run")
def run_command(
    config: Annotated[
        str, typer.Argument(help="Experiment YAML, or a built-in config by name (`valueharm configs list`).")
    ],
    run: Annotated[Path | None, typer.Option("--run", help="Run directory (default: runs/<name>).")] = None,
    dry_run: Annotated[
        bool, typer.Option(help="Print the plan, what is already done and what the rest will cost; do nothing.")
    ] = False,
    executor: Annotated[str, typer.Option(help="local, or ray (pip install 'valueharm\\[ray]').")] = "local",
    address: Annotated[str | None, typer.Option(help="Ray cluster address (default: start a local one).")] = None,
    progress: Progress = True,
) -> None:
    """Run an experiment end to end: train → generate → score → metrics → analysis → report. Re-run to resume."""
    from valueharm.experiment import Experiment, make_executor, run_experiment
    from valueharm.experiment.config import config_file

    with config_file(config) as path:
        result = run_experiment(
            path, run, dry_run=dry_run, executor=make_executor(executor, address), progress=progress
        )
    if isinstance(result, Experiment):
        for note in result.notes:
            out.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
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
    out.print(cost_table(result.cost))
    for note in result.cost.notes:
        out.print(f"[yellow]note:[/] {escape(note)}", highlight=False)


def cost_table(cost: CostPlan) -> Table:
    """The cost plan, one row per stage and the total; GPU cost only where a price per GPU-hour is set."""
    priced = cost.gpu_cost is not None
    columns = ["stage", "jobs", "train tokens", "generated tokens", "API requests", "API tokens in / out"]
    columns += ["GPU-hours", *(["GPU cost"] if priced else []), "API hours", "API cost"]
    table = Table(
        *columns,
        title=f"cost of what is left, on one {cost.assumptions.gpu} (assumptions: the config's `cost:`, "
        "defaults in valueharm.experiment.cost)",
    )
    price = cost.assumptions.gpu_price_per_hour or 0.0
    for stage in (*cost.stages, cost.total):
        tokens = f"{_count(stage.api_input_tokens)} / {_count(stage.api_output_tokens)}" if stage.api_requests else "–"
        cells = [stage.stage, str(stage.jobs), _count(stage.train_tokens), _count(stage.generated_tokens)]
        cells += [_count(stage.api_requests), tokens, _amount(stage.gpu_hours, 1)]
        cells += [_amount(stage.gpu_hours * price, 0, "$")] if priced else []
        cells += [_amount(stage.api_hours, 1), _amount(stage.api_cost, 2, "$")]
        if stage.stage == "total":
            table.add_section()
        table.add_row(*cells)
    return table


def _amount(value: float, decimals: int, unit: str = "") -> str:
    """Hours or money to `decimals` places: a dash for none, "< 0.1" (or "< $0.01") for less than that shows."""
    if not value:
        return "–"
    smallest = 10.0**-decimals
    if value < smallest:
        return f"< {unit}{smallest:.{decimals}f}"
    return f"{unit}{value:,.{decimals}f}"


def _count(value: float) -> str:
    """A count in the units a plan is read in: 7,272 · 13.1 M · 2.04 G; a dash for none."""
    if not value:
        return "–"
    for size, unit in ((1e9, "G"), (1e6, "M")):
        if value >= size:
            return f"{value / size:,.{2 if value < 10 * size else 1}f} {unit}"
    return f"{value:,.0f}"


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
    from valueharm.experiment import run_experiment
    from valueharm.experiment.config import builtin_config_file

    with builtin_config_file("demo") as config:
        experiment = run_experiment(config, run, progress=progress)
    out.print(f"[bold]report:[/] {experiment.report_path.resolve()}")
