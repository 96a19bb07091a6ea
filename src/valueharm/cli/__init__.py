"""The `valueharm` command: a thin layer over the library API. Every list/show command takes `--json`.

Each module registers one command group on `common.app`; importing it here is all it takes to add one.
"""

from __future__ import annotations

import os
import sys
import warnings

from rich.markup import escape

# `--help` lists the command groups in import order: keep it the order of the workflow.
# isort: off
from valueharm.cli import data  # noqa: F401
from valueharm.cli import profiles  # noqa: F401
from valueharm.cli import benchmarks  # noqa: F401
from valueharm.cli import training  # noqa: F401
from valueharm.cli import models  # noqa: F401
from valueharm.cli import evaluate  # noqa: F401
from valueharm.cli import exchange  # noqa: F401
from valueharm.cli import configs  # noqa: F401
from valueharm.cli import experiment  # noqa: F401
from valueharm.cli import doctor  # noqa: F401

# isort: on
from valueharm.cli.common import app, err
from valueharm.errors import ValueharmError


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
