"""`valueharm doctor --gpu`: what works on this machine, checked in a few minutes before any real run."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from valueharm import paths
from valueharm.cli.common import DataDir, JsonFlag, app, out, print_json

COLOURS = {"ok": "green", "failed": "red", "skipped": "yellow"}


@app.command("doctor")
def doctor(
    gpu: Annotated[bool, typer.Option("--gpu", help="Check CUDA and vLLM too (the first hour on a GPU).")] = False,
    model: Annotated[
        str | None,
        typer.Option(help="A base to check with: registry name, tiny:VARIANT, path or hub id (default: tiny:test)."),
    ] = None,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Load a model in each backend, check two LoRA adapters change it and mixed batches equal single ones, and
    measure tokens/s; exits 1 when a check fails. Without a GPU it says what it skipped."""
    from valueharm.doctor import run_doctor

    def echo(check) -> None:
        if not as_json:
            mark = f"[{COLOURS[check.status]}]{check.status:<7}[/]"
            out.print(f"{mark} {check.name}: {escape(check.detail)} [dim]({check.seconds:.1f} s)[/]", highlight=False)

    with tempfile.TemporaryDirectory(prefix="valueharm-doctor-") as scratch:
        report = run_doctor(gpu=gpu, work_dir=Path(scratch), data_dir=paths.data_dir(data_dir), model=model, echo=echo)
    if as_json:
        print_json(report.to_json())
    if report.failed:
        raise typer.Exit(1)
