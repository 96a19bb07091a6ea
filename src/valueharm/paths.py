"""Where things live: the data directory and the cache, each overridable from the environment."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "VALUEHARM_DATA"
CACHE_ENV = "VALUEHARM_CACHE"


def cache_dir() -> Path:
    """`$VALUEHARM_CACHE`, else `$XDG_CACHE_HOME/valueharm`, else `~/.cache/valueharm`."""
    if env := os.environ.get(CACHE_ENV):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "valueharm"


def data_dir(explicit: str | Path | None = None) -> Path:
    """The data directory: the explicit option, else `$VALUEHARM_DATA`, else `<cache>/data`."""
    if explicit is not None:
        return Path(explicit).expanduser()
    if env := os.environ.get(DATA_ENV):
        return Path(env).expanduser()
    return cache_dir() / "data"
