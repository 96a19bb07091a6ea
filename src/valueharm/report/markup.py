"""HTML building blocks of the report: the `Html` marker for trusted markup, escaping, cells, tables, figures —
and the order models and benchmarks are shown in. Everything that is not `Html` is escaped on its way to the page.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from valueharm.analysis.correlation import DEFAULT_HARM_METRICS
from valueharm.analysis.mitigation import CONDITION_ORDER, split_model_key

NOT_RUN = "Not run in this experiment."
_FAMILY_ORDER = {"vanilla": 0, "benign": 1, "icl": 2, "vim": 3}


class Html(str):
    """Markup built here, already safe; any other string is escaped before it reaches the page."""


@dataclass(frozen=True)
class Cell:
    content: Html
    cls: str = ""


def esc(value: object) -> Html:
    if isinstance(value, Html):
        return value
    return Html(html.escape("—" if value is None else str(value), quote=True))


def fmt_num(value: float | int | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def fmt_p(value: float | None) -> str:
    """p- and q-values: small ones in scientific notation, so 1e-9 does not read as 0."""
    if value is not None and 0 < value < 1e-4:
        return f"{value:.1e}"
    return fmt_num(value, 4)


def num(value: float | int | None, digits: int = 3) -> Cell:
    return Cell(esc(fmt_num(value, digits)), "num")


def p_cell(value: float | None) -> Cell:
    return Cell(esc(fmt_p(value)), "num")


def html_table(headers: Sequence[object], rows: Iterable[Sequence[object]], cls: str = "") -> Html:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_td(cell) for cell in row) + "</tr>" for row in rows)
    return Html(
        f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
    )


def _td(cell: object) -> str:
    if isinstance(cell, Cell):
        return f'<td class="{cell.cls}">{cell.content}</td>' if cell.cls else f"<td>{cell.content}</td>"
    if isinstance(cell, int | float) and not isinstance(cell, bool):
        return _td(num(cell))
    return f"<td>{esc(cell)}</td>"


def with_sub(main: object, sub: object) -> Html:
    return Html(f'{esc(main)}<span class="sub">{esc(sub)}</span>')


def html_empty(message: str = NOT_RUN) -> Html:
    return Html(f'<p class="empty">{esc(message)}</p>')


def html_note(text: str) -> Html:
    return Html(f'<p class="note">{esc(text)}</p>')


def html_figure(png: bytes | None, caption: str) -> Html:
    if png is None:
        return html_empty("Nothing to plot.")
    data = base64.b64encode(png).decode("ascii")
    return Html(
        f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def html_section(anchor: str, title: str, *parts: Html) -> Html:
    return Html(f'<section id="{anchor}"><h2>{esc(title)}</h2>{"".join(parts)}</section>')


def model_order(model_key: str) -> tuple[int, str, tuple[int, str]]:
    """vanilla, benign, icl, vim; each mitigated condition right after its model."""
    base, condition = split_model_key(model_key)
    family = base.split("/", 1)[0]
    return _FAMILY_ORDER.get(family, len(_FAMILY_ORDER)), base, condition_rank(condition)


def condition_rank(condition: str) -> tuple[int, str]:
    rank = CONDITION_ORDER.index(condition) if condition in CONDITION_ORDER else len(CONDITION_ORDER)
    return rank, condition


def benchmark_order(benchmarks: Iterable[str]) -> list[str]:
    known = list(DEFAULT_HARM_METRICS)
    return sorted(set(benchmarks), key=lambda b: (known.index(b) if b in known else len(known), b))
