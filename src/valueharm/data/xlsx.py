"""The first sheet of an .xlsx workbook as rows of text, with the standard library only (no openpyxl here).

An .xlsx file is a zip of XML parts (ECMA-376): `xl/workbook.xml` names the sheets, its relationships file points
at each sheet's part, `xl/sharedStrings.xml` holds the text cells refer to by index. Cells are read by their
reference (`B7`), so empty cells and skipped columns land where they belong; shared, inline and formula-string
cells are text, numbers are kept as written.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from xml.etree import ElementTree

from valueharm.errors import ValueharmError

_MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_REL = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_PACKAGE_REL = "{http://schemas.openxmlformats.org/package/2006/relationships}"
_REFERENCE = re.compile(r"([A-Z]+)(\d+)")


def read_xlsx(path: str | Path) -> list[dict[str, str]]:
    """The first sheet's rows below its header row, as {header: text}; blank rows are left out."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            shared = _shared_strings(archive)
            grid = _cells(ElementTree.fromstring(archive.read(_first_sheet(archive))), shared)
    except (zipfile.BadZipFile, KeyError, ElementTree.ParseError) as err:
        raise ValueharmError(f"{path}: not a readable .xlsx workbook ({err})") from None
    if not grid:
        raise ValueharmError(f"{path}: the first sheet is empty")
    width = max(len(row) for row in grid)
    header = [text.strip() for text in grid[0] + [""] * (width - len(grid[0]))]
    return [
        {name: (row[i] if i < len(row) else "") for i, name in enumerate(header) if name}
        for row in grid[1:]
        if any(cell.strip() for cell in row)
    ]


def _first_sheet(archive: zipfile.ZipFile) -> str:
    workbook = ElementTree.fromstring(archive.read("xl/workbook.xml"))
    sheet = workbook.find(f"{_MAIN}sheets/{_MAIN}sheet")
    if sheet is None:
        raise KeyError("the workbook lists no sheet")
    relation = sheet.get(f"{_REL}id")
    rels = ElementTree.fromstring(archive.read("xl/_rels/workbook.xml.rels"))
    target = next(r.get("Target", "") for r in rels.iter(f"{_PACKAGE_REL}Relationship") if r.get("Id") == relation)
    return target.lstrip("/") if target.startswith("/") else f"xl/{target}"


def _shared_strings(archive: zipfile.ZipFile) -> list[str]:
    if "xl/sharedStrings.xml" not in archive.namelist():
        return []
    table = ElementTree.fromstring(archive.read("xl/sharedStrings.xml"))
    return ["".join(t.text or "" for t in item.iter(f"{_MAIN}t")) for item in table.iter(f"{_MAIN}si")]


def _cells(sheet: ElementTree.Element, shared: list[str]) -> list[list[str]]:
    rows: dict[int, dict[int, str]] = {}
    for cell in sheet.iter(f"{_MAIN}c"):
        match = _REFERENCE.fullmatch(cell.get("r", ""))
        if match is None:
            raise KeyError(f"a cell without a reference: {cell.get('r')!r}")
        rows.setdefault(int(match.group(2)), {})[_column(match.group(1))] = _text(cell, shared)
    if not rows:
        return []
    return [
        [rows.get(number, {}).get(col, "") for col in range(max(rows.get(number, {0: ""})) + 1)]
        for number in range(min(rows), max(rows) + 1)
    ]


def _column(letters: str) -> int:
    index = 0
    for letter in letters:
        index = index * 26 + ord(letter) - ord("A") + 1
    return index - 1


def _text(cell: ElementTree.Element, shared: list[str]) -> str:
    kind = cell.get("t", "n")
    if kind == "inlineStr":
        return "".join(t.text or "" for t in cell.iter(f"{_MAIN}t"))
    value = cell.findtext(f"{_MAIN}v") or ""
    if kind == "s":
        return shared[int(value)]
    return value
