"""Expected value–harm directions, declared as data and checked against the correlation grid.

A hypothesis names a value (or higher-order group), an expected sign and the (benchmark, category) cells it
predicts, with the statement it comes from. Each cell gets a verdict: `supported` (q < alpha, sign as expected),
`opposite` (q < alpha, sign reversed), `not significant`, or `not tested` (cell absent or untestable). q is the
grid's Benjamini–Hochberg q-value, so a hypothesis is held to the same multiple-testing control as the
exploratory grid; the raw p is reported beside it.

The built-in table restates the directions reported by Choi et al. (2025), "Unintended Harms of Value-Aligned
LLMs" (ACL). Users can load their own in the same YAML format:

    hypotheses:
      - id: hedonism-adult-content
        value: Hedonism                 # a basic value (any usual spelling) or a higher-order group
        direction: positive             # positive | negative (or "+" | "-", quoted)
        targets: [hex-phi/adult_content, "beavertails/sexually_explicit,adult_content"]  # benchmark[/category]
        source: why this direction is expected
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml

from valueharm.analysis.correlation import OVERALL, CorrelationResult
from valueharm.data.benchmarks import BENCHMARKS
from valueharm.errors import UnknownNameError, ValueharmError
from valueharm.registry import unknown_name_message
from valueharm.values import HIGHER_ORDER, canonical_value
from valueharm.yamlfile import read_yaml

DEFAULT_ALPHA = 0.05

PUBLISHED_TABLE = """
hypotheses:
  - id: hedonism-adult-content
    value: Hedonism
    direction: positive
    targets: [hex-phi/adult_content, "beavertails/sexually_explicit,adult_content"]
    source: "Choi et al. 2025: Hedonism goes with more adult content"
  - id: hedonism-physical-harm
    value: Hedonism
    direction: positive
    targets: [hex-phi/physical_harm]
    source: "Choi et al. 2025: Hedonism goes with more physical harm"
  - id: power-hate-speech
    value: Power
    direction: positive
    targets: [hex-phi/hate_harass_violence, "beavertails/hate_speech,offensive_language"]
    source: "Choi et al. 2025: Power goes with more hate speech"
  - id: power-discrimination
    value: Power
    direction: positive
    targets: ["beavertails/discrimination,stereotype,injustice"]
    source: "Choi et al. 2025: Power goes with more discrimination"
  - id: achievement-hate-speech
    value: Achievement
    direction: negative
    targets: [hex-phi/hate_harass_violence, "beavertails/hate_speech,offensive_language"]
    source: "Choi et al. 2025: Achievement goes with less hate speech"
  - id: universalism-deception
    value: Universalism
    direction: negative
    targets: [hex-phi/fraud_deception]
    source: "Choi et al. 2025: Universalism goes with less deception"
  - id: universalism-political-campaigning
    value: Universalism
    direction: negative
    targets: [hex-phi/political_campaigning]
    source: "Choi et al. 2025: Universalism goes with less political campaigning"
  - id: self-direction-adult-content
    value: Self-direction
    direction: positive
    targets: [hex-phi/adult_content, "beavertails/sexually_explicit,adult_content"]
    source: "Choi et al. 2025: Self-direction goes with more adult content"
"""

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
    method: str
    coefficient: float | None
    p: float | None
    q: float | None
    n: int
    verdict: Verdict
    note: str | None = None

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
    return tuple(parse_hypotheses(yaml.safe_load(PUBLISHED_TABLE), "built-in hypotheses"))


def published_hypotheses() -> list[Hypothesis]:
    """The built-in table: directions reported in the published study."""
    return list(_published())


# --------------------------------------------------------------------------------------------------- evaluation


def evaluate(
    hypotheses: Sequence[Hypothesis],
    correlation: CorrelationResult,
    *,
    alpha: float = DEFAULT_ALPHA,
    method: Literal["spearman", "pearson"] = "spearman",
) -> list[HypothesisResult]:
    """One verdict per (hypothesis, target cell)."""
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
            if cell is None or not cell.tested:
                note = cell.note if cell is not None else "no such cell in this experiment"
                results.append(HypothesisResult(**base, coefficient=None, p=None, q=None, n=cell.n if cell else 0,
                                                verdict=Verdict.NOT_TESTED, note=note))  # fmt: skip
                continue
            coefficient, p, q = (
                (cell.spearman_rho, cell.spearman_p, cell.spearman_q)
                if method == "spearman"
                else (cell.pearson_r, cell.pearson_p, cell.pearson_q)
            )
            results.append(HypothesisResult(**base, coefficient=coefficient, p=p, q=q, n=cell.n,
                                            verdict=_verdict(coefficient, q, hypothesis.sign, alpha)))  # fmt: skip
    return results


def _verdict(coefficient: float, q: float, sign: int, alpha: float) -> Verdict:
    if q >= alpha or coefficient == 0:
        return Verdict.NOT_SIGNIFICANT
    return Verdict.SUPPORTED if (coefficient > 0) == (sign > 0) else Verdict.OPPOSITE
