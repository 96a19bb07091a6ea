"""Reading the user's YAML files (profiles, experiments, hypotheses) with one kind of error message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from valueharm.errors import ValueharmError


def read_yaml(path: str | Path, what: str) -> Any:
    """The parsed document; a missing file or a syntax error is one line naming the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise ValueharmError(f"{path}: {what} file not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ValueharmError(f"{where}: malformed YAML ({getattr(err, 'problem', err)})") from None
