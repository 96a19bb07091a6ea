"""Tables of the data directory: every CSV/TSV reader goes through `read_table`, which checks the named columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from valueharm.data.registry import require_file
from valueharm.errors import ValueharmError


def read_table(data_dir: Path, path: str, columns: list[str], **read_options: Any) -> pd.DataFrame:
    """A CSV/TSV from the data dir as strings, with the named columns checked before anything reads them."""
    full = require_file(data_dir, path)
    try:
        frame = pd.read_csv(full, dtype=str, keep_default_na=False, encoding="utf-8-sig", **read_options)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueharmError(f"{full}: cannot parse ({err})") from None
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueharmError(f"{full}: missing column(s) {', '.join(map(str, missing))}; found {list(frame.columns)}")
    return frame
