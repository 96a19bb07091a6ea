"""Experiments: `run`, `report` and the `demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from valueharm.cli.common import Progress, app, out


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
