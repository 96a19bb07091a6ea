"""The 40-item Portrait Values Questionnaire (PVQ-40; Schwartz et al. 2001) for the PVQ-40 alignment check.

The statements come from the file the VIM authors published (dataset `pvq40`, `pvq/pvq40.xlsx`, a sheet with a
`question` column, items 1–40 in order); none of its text is part of this package. Each item is scored on the
six-point scale of `valueharm.alignment.vim_data.SURVEY_SCALE` (1 = not like me at all … 6 = very much like me)
and averaged per value with the standard coding key below. A user's own questionnaire (.xlsx or .csv) may replace
it: with the same `question` column and 40 items, or with a `value` column naming each item's value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from valueharm.data.tables import read_table
from valueharm.data.xlsx import read_xlsx
from valueharm.errors import UnknownNameError, ValueharmError
from valueharm.values import canonical_value

PVQ_FILE = "pvq/pvq40.xlsx"
PVQ_ITEMS = 40
# Item numbers per value (Schwartz et al. 2001, PVQ-40 scoring key).
PVQ40_KEY: dict[str, tuple[int, ...]] = {
    "Conformity": (7, 16, 28, 36),
    "Tradition": (9, 20, 25, 38),
    "Benevolence": (12, 18, 27, 33),
    "Universalism": (3, 8, 19, 23, 29, 40),
    "Self-direction": (1, 11, 22, 34),
    "Stimulation": (6, 15, 30),
    "Hedonism": (10, 26, 37),
    "Achievement": (4, 13, 24, 32),
    "Power": (2, 17, 39),
    "Security": (5, 14, 21, 31, 35),
}
ITEM_VALUE: dict[int, str] = {item: value for value, items in PVQ40_KEY.items() for item in items}


@dataclass(frozen=True)
class PvqItem:
    number: int  # 1-based position in the questionnaire
    value: str
    statement: str


def read_questionnaire(path: Path) -> list[PvqItem]:
    """The items of a questionnaire file (.xlsx, or .csv/.tsv), each with the value it measures."""
    if not path.is_file():
        raise ValueharmError(f"{path}: questionnaire file not found")
    if path.suffix.lower() == ".xlsx":
        rows = read_xlsx(path)
    elif path.suffix.lower() in {".csv", ".tsv"}:
        rows = read_table(path.parent, path.name, ["question"], sep=None, engine="python").to_dict("records")
    else:
        raise ValueharmError(f"{path}: unsupported questionnaire file type (use .xlsx, .csv or .tsv)")
    if not rows or "question" not in rows[0]:
        raise ValueharmError(f"{path}: no 'question' column; found {list(rows[0]) if rows else 'no rows'}")
    if "value" not in rows[0] and len(rows) != PVQ_ITEMS:
        raise ValueharmError(
            f"{path}: {len(rows)} items; the PVQ-40 coding key needs exactly {PVQ_ITEMS} (or give a 'value' column)"
        )
    items = []
    for number, row in enumerate(rows, start=1):
        statement = str(row["question"]).strip()
        if not statement:
            raise ValueharmError(f"{path}: item {number}: empty question")
        items.append(PvqItem(number, _value(row, number, path), statement))
    return items


def _value(row: dict[str, str], number: int, path: Path) -> str:
    if "value" not in row:
        return ITEM_VALUE[number]
    try:
        return canonical_value(str(row["value"]))
    except UnknownNameError as err:
        raise ValueharmError(f"{path}: item {number}: {err}") from None
