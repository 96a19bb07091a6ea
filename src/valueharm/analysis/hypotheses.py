"""Expected value–harm directions, declared as data and checked against the correlation grid.

A hypothesis names a value (or higher-order group), an expected sign and the (benchmark, category) cells it
predicts, with the statement it comes from. Each cell gets a verdict: `supported` (q < alpha, sign as expected),
`opposite` (q < alpha, sign reversed), `not significant`, or `not tested` (cell absent or untestable). The
verdict comes from the family-aware test of the grid (`method="family"`, the default: near-copies of a profile
count once) and its Benjamini–Hochberg q-value over the grid, so a hypothesis is held to the same multiple-testing
control as the exploratory grid; the raw p is reported beside it.

The built-in table (`published_hypotheses.yaml` beside this module) restates every direction reported by Choi et
al. (2025), "Unintended Harms of Value-Aligned LLMs" (ACL), on HEx-PHI's and BeaverTails' categories. The same
table drives the per-category "value" mitigation (`value_guide`): on a category, the values expected to raise its
harm are set aside and those expected to lower it are promoted. Users can load their own in the same YAML format:

    hypotheses:
      - id: hedonism-adult-content
        value: Hedonism                 # a basic value (any usual spelling) or a higher-order group
        direction: positive             # positive | negative (or "+" | "-", quoted)
        targets: [hex-phi/adult_content, "beavertails/sexually_explicit,adult_content"]  # benchmark[/category]
        source: why this direction is expected
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from valueharm.alignment.prompts import ValueGuide
from valueharm.analysis.correlation import OVERALL, CorrelationResult
from valueharm.data.benchmarks import BENCHMARKS
from valueharm.errors import UnknownNameError, ValueharmError
from valueharm.registry import unknown_name_message
from valueharm.values import HIGHER_ORDER, canonical_value
from valueharm.yamlfile import read_yaml

DEFAULT_ALPHA = 0.05

PUBLISHED_FILE = "published_hypotheses.yaml"  # beside this module

_DIRECTIONS = {"positive": 1, "+": 1, "negative": -1, "-": -1}
_GROUPS = {group.lower().replace("-", " "): group for group in HIGHER_ORDER}
_KEYS = {"id", "value", "direction", "targets", "source"}


class Verdict(StrEnum):
    SUPPORTED = "supported"
    OPPOSITE = "opposite"
    NOT_SIGNIFICANT = "not significant"
    NOT_TESTED = "not tested"


@dataclass(frozen=True)
class Hypothesis:
    id: str
    value: str  # canonical value or higher-order group name
    sign: int  # +1 or −1
    targets: tuple[tuple[str, str], ...]  # (benchmark, category)
    source: str = ""


@dataclass(frozen=True)
class HypothesisResult:
    id: str
    value: str
    expected: str  # "positive" | "negative"
    benchmark: str
    category: str
    source: str
    method: str  # the test that decided: family, spearman or pearson
    coefficient: float | None
    p: float | None
    q: float | None
    n: int
    verdict: Verdict
    note: str | None = None
    n_families: int = 0  # the independent units behind the verdict

    def row(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": str(self.verdict)}


# ------------------------------------------------------------------------------------------------------ loading


def parse_hypotheses(document: Any, where: str) -> list[Hypothesis]:
    """Hypotheses from a parsed YAML document (a list, or a mapping with a `hypotheses` list)."""
    if isinstance(document, dict) and set(document) == {"hypotheses"}:
        document = document["hypotheses"]
    if not isinstance(document, list) or not document:
        raise ValueharmError(f"{where}: expected a non-empty 'hypotheses' list")
    hypotheses: list[Hypothesis] = []
    for index, entry in enumerate(document):
        hypothesis = _parse_entry(entry, f"{where}: hypotheses[{index}]")
        if any(h.id == hypothesis.id for h in hypotheses):
            raise ValueharmError(f"{where}: hypotheses[{index}]: duplicate id {hypothesis.id!r}")
        for other in hypotheses:
            clash = [t for t in hypothesis.targets if t in other.targets]
            if clash and other.value == hypothesis.value and other.sign != hypothesis.sign:
                raise ValueharmError(
                    f"{where}: hypotheses[{index}] ({hypothesis.id}): expects {hypothesis.value} to move "
                    f"{'/'.join(clash[0])} the other way from {other.id!r}"
                )
        hypotheses.append(hypothesis)
    return hypotheses


def _parse_entry(entry: Any, where: str) -> Hypothesis:
    if not isinstance(entry, dict):
        raise ValueharmError(f"{where}: must be a mapping with id, value, direction, targets")
    if isinstance(entry.get("id"), str):
        where = f"{where} ({entry['id']})"
    missing = sorted({"id", "value", "direction", "targets"} - set(entry))
    if missing:
        raise ValueharmError(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise ValueharmError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}")
    direction = str(entry["direction"]).strip().lower()
    if direction not in _DIRECTIONS:
        raise ValueharmError(f"{where}: unknown direction {entry['direction']!r}; use positive or negative")
    targets = entry["targets"]
    if isinstance(targets, str):
        targets = [targets]
    if not isinstance(targets, list) or not targets:
        raise ValueharmError(f"{where}: targets must be a non-empty list of 'benchmark/category'")
    return Hypothesis(
        id=str(entry["id"]),
        value=_dimension(str(entry["value"]), where),
        sign=_DIRECTIONS[direction],
        targets=tuple(_target(str(t), where) for t in targets),
        source=str(entry.get("source") or ""),
    )


def _dimension(name: str, where: str) -> str:
    group = _GROUPS.get(name.strip().lower().replace("_", " ").replace("-", " "))
    if group is not None:
        return group
    try:
        return canonical_value(name)
    except UnknownNameError as err:
        raise ValueharmError(f"{where}: {err} (or a group: {', '.join(HIGHER_ORDER)})") from None


def _target(text: str, where: str) -> tuple[str, str]:
    benchmark, _, category = text.strip().partition("/")
    if benchmark not in BENCHMARKS:
        raise ValueharmError(f"{where}: {unknown_name_message('benchmark', benchmark, BENCHMARKS.names())}")
    return benchmark, category.strip() or OVERALL


def load_hypotheses(path: str | Path) -> list[Hypothesis]:
    """A user's hypothesis table from YAML; every problem names the file and the entry."""
    return parse_hypotheses(read_yaml(path, "hypothesis"), str(path))


@cache
def _published() -> tuple[Hypothesis, ...]:
    text = resources.files("valueharm.analysis").joinpath(PUBLISHED_FILE).read_text(encoding="utf-8")
    return tuple(parse_hypotheses(yaml.safe_load(text), f"built-in {PUBLISHED_FILE}"))


def published_hypotheses() -> list[Hypothesis]:
    """The built-in table: directions reported in the published study."""
    return list(_published())


def check_categories(hypotheses: Iterable[Hypothesis], categories: Mapping[str, Iterable[str]], where: str) -> None:
    """Every target category of a benchmark in `categories` (benchmark → its category names) must exist there;
    an unknown one is one error naming the hypothesis and the known categories."""
    known = {benchmark: set(names) | {OVERALL} for benchmark, names in categories.items()}
    for hypothesis in hypotheses:
        for benchmark, category in hypothesis.targets:
            if benchmark in known and category not in known[benchmark]:
                message = unknown_name_message(f"{benchmark} category", category, sorted(known[benchmark]))
                raise ValueharmError(f"{where}: hypothesis {hypothesis.id!r}: {message}")


def value_guide(hypotheses: Iterable[Hypothesis]) -> ValueGuide:
    """The per-category value instruction: set aside the basic values expected to raise a category's harm, promote
    those expected to lower it (higher-order groups stand for their member values)."""
    entries: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
    for hypothesis in hypotheses:
        members = HIGHER_ORDER.get(hypothesis.value, (hypothesis.value,))
        for target in hypothesis.targets:
            set_aside, promote = entries.setdefault(target, ([], []))
            chosen = set_aside if hypothesis.sign > 0 else promote
            chosen += [m for m in members if m not in chosen]
    guide = {
        cell: (tuple(aside), tuple(v for v in promote if v not in aside)) for cell, (aside, promote) in entries.items()
    }
    return ValueGuide.of(guide)


# --------------------------------------------------------------------------------------------------- evaluation


def evaluate(
    hypotheses: Sequence[Hypothesis],
    correlation: CorrelationResult,
    *,
    alpha: float = DEFAULT_ALPHA,
    method: Literal["family", "spearman", "pearson"] = "family",
) -> list[HypothesisResult]:
    """One verdict per (hypothesis, target cell), by the family test unless another is asked for."""
    if not 0 < alpha < 1:
        raise ValueharmError(f"alpha must lie in (0, 1), got {alpha}")
    results = []
    for hypothesis in hypotheses:
        for benchmark, category in hypothesis.targets:
            cell = correlation.cell(benchmark, category, hypothesis.value)
            base = {
                "id": hypothesis.id,
                "value": hypothesis.value,
                "expected": "positive" if hypothesis.sign > 0 else "negative",
                "benchmark": benchmark,
                "category": category,
                "source": hypothesis.source,
                "method": method,
            }
            if cell is None or not (cell.decided if method == "family" else cell.tested):
                note = (cell.note or cell.family_note) if cell is not None else "no such cell in this experiment"
                results.append(HypothesisResult(**base, coefficient=None, p=None, q=None, n=cell.n if cell else 0,
                                                verdict=Verdict.NOT_TESTED, note=note,
                                                n_families=cell.n_families if cell else 0))  # fmt: skip
                continue
            coefficient, p, q = {
                "family": (cell.family_coefficient, cell.family_p, cell.family_q),
                "spearman": (cell.spearman_rho, cell.spearman_p, cell.spearman_q),
                "pearson": (cell.pearson_r, cell.pearson_p, cell.pearson_q),
            }[method]
            results.append(HypothesisResult(**base, coefficient=coefficient, p=p, q=q, n=cell.n,
                                            verdict=_verdict(coefficient, q, hypothesis.sign, alpha),
                                            n_families=cell.n_families))  # fmt: skip
    return results


def _verdict(coefficient: float, q: float, sign: int, alpha: float) -> Verdict:
    if q >= alpha or coefficient == 0:
        return Verdict.NOT_SIGNIFICANT
    return Verdict.SUPPORTED if (coefficient > 0) == (sign > 0) else Verdict.OPPOSITE
