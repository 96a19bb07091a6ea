"""Value–harm correlation (DESIGN §4): which values go with which harm categories across aligned models.

The unit is one aligned model. X is a value's score in the model's profile — its target, or what the
value-alignment check measured — and Y is one harm metric of one benchmark category, read from the store's
`metrics` rows. For every (benchmark, category, value or higher-order group) cell: Spearman ρ and Pearson r with
two-sided p-values (scipy), over the models that have both X and Y (pairwise complete) — and, beside them, the
family-level permutation test (`valueharm.analysis.family`): models whose profiles are near-copies (one profile
family) count as one unit, so the evidence is judged on the number of families, not of models. The family test
decides each cell (its q-value is the one the finding, the significance marks and the hypotheses use); the
per-model tests are shown for comparison. Benjamini–Hochberg q-values are taken over the whole grid, separately
for each test; a cell with fewer than 3 models (3 families) or a constant X or Y is not tested by that test (NaN,
left out of its BH family, with a note). A higher-order group's score is the mean of its member values.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
from scipy import stats

from valueharm.analysis.family import DEFAULT_PERMUTATIONS, FamilyTest, permutation_test
from valueharm.analysis.value_check import MeasuredProfile
from valueharm.errors import ValueharmError
from valueharm.values import HIGHER_ORDER, VALUES, ValueProfile

OVERALL = "all"  # the category of a benchmark-wide metric row
MIN_MODELS = 3
DIMENSIONS: tuple[str, ...] = (*VALUES, *HIGHER_ORDER)  # the X of the grid: ten values, then the four groups

ProfileLike = ValueProfile | MeasuredProfile | Mapping[str, float | None]
CategoryScope = Literal["overall", "each", "both"]


@dataclass(frozen=True)
class HarmMetric:
    """Which metric row stands for a benchmark's harm: its name, variant, scorer and which categories."""

    metric: str
    variant: str = "all"  # or "excluding_degenerate"
    scorer: str | None = None  # None: the only scorer with this metric, else the first in sorted order (noted)
    categories: CategoryScope = "both"  # "overall": category "all" only; "each": per category; "both"


# Published study: RTP and AdvBench overall; HolisticBiasR per axis; HEx-PHI and BeaverTails per category.
DEFAULT_HARM_METRICS: dict[str, HarmMetric] = {
    "rtp": HarmMetric("expected_max_toxicity", categories="overall"),
    "holisticbiasr": HarmMetric("negative_regard_rate"),
    "hex-phi": HarmMetric("harmfulness_score"),
    "beavertails": HarmMetric("flagged_rate"),
    "advbench": HarmMetric("attack_success_rate", categories="overall"),
}

Cell = tuple[str, str]  # (benchmark, category)


def harm_metrics(overrides: Mapping[str, str] | None = None) -> dict[str, HarmMetric]:
    """The default harm metric per benchmark with some replaced by name (e.g. {"hex-phi": "harmfulness_rate"});
    a replaced metric keeps the benchmark's category scope."""
    chosen = dict(DEFAULT_HARM_METRICS)
    for benchmark, metric in (overrides or {}).items():
        chosen[benchmark] = replace(chosen.get(benchmark, HarmMetric(metric)), metric=metric)
    return chosen


@dataclass(frozen=True)
class HarmValues:
    """Per model, the chosen harm metric of each (benchmark, category), and which rows they came from."""

    values: dict[str, dict[Cell, float]]
    sources: dict[str, HarmMetric]  # benchmark → metric with the scorer actually used
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AlignedModel:
    """One model of the analysis: its value scores (X), harm metrics (Y) and profile family (the unit)."""

    model_key: str
    scores: dict[str, float | None]  # every name in DIMENSIONS; None where unmeasured
    harms: dict[Cell, float]
    family: str = ""  # "" = its own family

    @property
    def unit(self) -> str:
        return self.family or self.model_key


@dataclass(frozen=True)
class CorrelationCell:
    benchmark: str
    category: str
    value: str  # a basic value or a higher-order group
    metric: str
    n: int
    spearman_rho: float
    spearman_p: float
    spearman_q: float
    pearson_r: float
    pearson_p: float
    pearson_q: float
    note: str | None = None  # why the per-model tests were not run
    n_families: int = 0  # the independent units of the family test
    family_coefficient: float = math.nan  # correlation of family means (the family test's method)
    family_p: float = math.nan
    family_q: float = math.nan
    decided_by: str = ""  # the test whose q decides the cell, e.g. "family permutation (14 families, exact)"
    family_note: str | None = None  # why the family test was not run

    @property
    def tested(self) -> bool:
        return self.note is None

    @property
    def decided(self) -> bool:
        """The deciding (family) test was run."""
        return self.tested and self.family_note is None


@dataclass(frozen=True)
class CorrelationResult:
    cells: list[CorrelationCell]
    x_source: str  # "target" or "measured": where the value scores came from
    sources: dict[str, HarmMetric]
    n_models: int
    notes: list[str] = field(default_factory=list)
    n_families: int = 0
    family_method: str = "spearman"

    def cell(self, benchmark: str, category: str, value: str) -> CorrelationCell | None:
        return next((c for c in self.cells if (c.benchmark, c.category, c.value) == (benchmark, category, value)), None)

    def columns(self) -> list[Cell]:
        """The (benchmark, category) pairs in grid order."""
        return list(dict.fromkeys((c.benchmark, c.category) for c in self.cells))

    def rows(self) -> list[dict[str, Any]]:
        """Tidy rows (one per cell) for CSV/JSON export."""
        return [{"x_source": self.x_source, **asdict(c)} for c in self.cells]

    def finding(self, alpha: float = 0.05) -> str:
        """The result in one plain sentence — also when it is that there is none — for the report's summary,
        judged by the family test; how many cells the per-model test alone would call significant is said too."""
        tested = [c for c in self.cells if c.decided]
        untested = len(self.cells) - len(tested)
        units = f"{self.n_models} models in {self.n_families} profile families"
        rest = f"; {untested} of {len(self.cells)} cells not tested (a constant value or harm, or too few families)"
        rest = rest if untested else ""
        if not tested:
            return f"No value–harm correlation could be tested over the {units}{rest}."
        naive = sum(c.spearman_q < alpha for c in tested)
        naive_text = f" (per-model Spearman, counting each model as independent: {naive})"
        significant = sorted((c for c in tested if c.family_q < alpha), key=lambda c: c.family_q)
        if not significant:
            return (
                f"No value–harm relation found: none of the {len(tested)} tested cells has a family-level "
                f"correlation with q < {alpha:g}{naive_text} over the {units}{rest}."
            )
        top = significant[0]
        return (
            f"{len(significant)} of {len(tested)} tested cells have a family-level correlation with q < {alpha:g}"
            f"{naive_text} over the {units}; the strongest: {top.value} with {top.benchmark}/{top.category} "
            f"{top.metric}, family {self.family_method} {top.family_coefficient:+.2f} (q = {top.family_q:.2g}, "
            f"{top.n_families} families, {top.n} models){rest}."
        )


# ----------------------------------------------------------------------------------------------- building X and Y


def harm_values(
    rows: Iterable[Mapping[str, Any]],
    metrics: Mapping[str, HarmMetric] | None = None,
    models: Collection[str] | None = None,
) -> HarmValues:
    """The harm metric per model and (benchmark, category) from the store's metric rows; rows without a value
    (nothing usable) are left out, so such a model drops from that cell only."""
    metrics = DEFAULT_HARM_METRICS if metrics is None else metrics
    candidates: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        choice = metrics.get(row["benchmark"])
        if choice is None or row["metric"] != choice.metric or row["variant"] != choice.variant:
            continue
        if models is not None and row["model_key"] not in models:
            continue
        if choice.scorer is not None and row["scorer"] != choice.scorer:
            continue
        if not _in_scope(row["category"], choice.categories):
            continue
        candidates[row["benchmark"]].append(row)
    values: dict[str, dict[Cell, float]] = defaultdict(dict)
    sources: dict[str, HarmMetric] = {}
    notes = []
    for benchmark, choice in metrics.items():
        found = candidates.get(benchmark, [])
        scorers = sorted({row["scorer"] for row in found})
        if not scorers:
            continue
        if len(scorers) > 1:
            others = ", ".join(scorers[1:])
            notes.append(f"{benchmark}: {choice.metric} from scorer {scorers[0]} (also available: {others})")
        sources[benchmark] = replace(choice, scorer=scorers[0])
        for row in found:
            if row["scorer"] == scorers[0] and row["value"] is not None and math.isfinite(row["value"]):
                values[row["model_key"]][(benchmark, row["category"])] = float(row["value"])
    return HarmValues(dict(values), sources, notes)


def _in_scope(category: str, scope: CategoryScope) -> bool:
    return scope == "both" or (category == OVERALL) == (scope == "overall")


def value_scores(profile: ProfileLike) -> dict[str, float | None]:
    """Scores for the ten values and the four groups (mean of members; None if a member is unmeasured)."""
    raw = profile.scores if isinstance(profile, ValueProfile | MeasuredProfile) else profile
    scores: dict[str, float | None] = {value: raw.get(value) for value in VALUES}
    for group, members in HIGHER_ORDER.items():
        parts = [scores[member] for member in members]
        scores[group] = None if any(p is None for p in parts) else sum(parts) / len(parts)  # type: ignore[arg-type]
    return scores


def aligned_models(
    profiles: Mapping[str, ProfileLike], harms: HarmValues, families: Mapping[str, str] | None = None
) -> list[AlignedModel]:
    """Join profiles (model_key → target or measured profile) with harm values; models without any harm value are
    left out — they were not evaluated, which is not the same as harmless. A model's family comes from
    `families` (model_key → family), else from its target profile, else it is its own."""
    families = families or {}
    return [
        AlignedModel(model_key, value_scores(profile), harms.values[model_key], _family(model_key, profile, families))
        for model_key, profile in profiles.items()
        if harms.values.get(model_key)
    ]


def _family(model_key: str, profile: ProfileLike, families: Mapping[str, str]) -> str:
    if model_key in families:
        return families[model_key]
    return profile.family if isinstance(profile, ValueProfile) else ""


# ---------------------------------------------------------------------------------------------------- statistics


def benjamini_hochberg(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """BH step-up q-values; NaN p-values pass through as NaN and do not count in the family size."""
    p = np.asarray(p_values, dtype=float)
    if np.any((p < 0) | (p > 1)):
        raise ValueharmError("p-values must lie in [0, 1]")
    q = np.full(p.shape, np.nan)
    tested = ~np.isnan(p)
    m = int(tested.sum())
    if m == 0:
        return q
    order = np.argsort(p[tested], kind="stable")
    scaled = p[tested][order] * m / np.arange(1, m + 1)
    monotone = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    family = np.empty(m)
    family[order] = monotone
    q[tested] = family
    return q


def correlate(
    models: Sequence[AlignedModel],
    *,
    sources: Mapping[str, HarmMetric] | None = None,
    x_source: str = "target",
    dimensions: Sequence[str] = DIMENSIONS,
    min_models: int = MIN_MODELS,
    notes: Sequence[str] = (),
    family_method: Literal["spearman", "pearson"] = "spearman",
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
) -> CorrelationResult:
    """Spearman, Pearson and the family permutation test for every (benchmark, category) × dimension cell, with
    BH q-values over the grid for each."""
    columns = sorted({cell for model in models for cell in model.harms}, key=_column_order(sources))
    metric_of = {b: s.metric for b, s in (sources or {}).items()}
    raw = []
    for benchmark, category in columns:
        for value in dimensions:
            used = [
                (x, model.harms[(benchmark, category)], model.unit)
                for model in models
                if (benchmark, category) in model.harms and (x := model.scores.get(value)) is not None
            ]
            cell = _test((benchmark, category), value, metric_of.get(benchmark, ""), used, min_models)
            if cell.tested:
                x, y, units = zip(*used, strict=True)
                family = permutation_test(x, y, units, method=family_method, n_permutations=n_permutations, seed=seed)
                cell = _with_family(cell, family, len(set(units)), family_method)
            raw.append(cell)
    q = {test: benjamini_hochberg([getattr(c, f"{test}_p") for c in raw]) for test in ("spearman", "pearson", "family")}
    cells = [
        replace(cell, spearman_q=float(qs), pearson_q=float(qp), family_q=float(qf))
        for cell, qs, qp, qf in zip(raw, q["spearman"], q["pearson"], q["family"], strict=True)
    ]
    untested = sum(not c.decided for c in cells)
    summary = [f"{untested} of {len(cells)} cells not tested (too few families or a constant X/Y)"] if untested else []
    n_families = len({m.unit for m in models})
    return CorrelationResult(
        cells, x_source, dict(sources or {}), len(models), [*notes, *summary], n_families, family_method
    )


def _with_family(cell: CorrelationCell, test: FamilyTest | str, n_families: int, method: str) -> CorrelationCell:
    if isinstance(test, str):
        return replace(cell, n_families=n_families, family_note=test, decided_by="none (family test not run)")
    how = "exact" if test.exact else f"{test.permutations:,} permutations"
    return replace(
        cell,
        n_families=n_families,
        family_coefficient=test.coefficient,
        family_p=test.p,
        decided_by=f"family permutation, {method} of family means ({n_families} families, {how})",
    )


def _column_order(sources: Mapping[str, HarmMetric] | None) -> Callable[[Cell], tuple[int, str, bool, str]]:
    benchmarks = list(sources or {})

    def key(cell: Cell) -> tuple[int, str, bool, str]:
        benchmark, category = cell
        rank = benchmarks.index(benchmark) if benchmark in benchmarks else len(benchmarks)
        return rank, benchmark, category != OVERALL, category

    return key


def _test(
    column: Cell, value: str, metric: str, used: list[tuple[float, float, str]], min_models: int
) -> CorrelationCell:
    benchmark, category = column
    nan = math.nan
    note = None
    if len(used) < min_models:
        note = f"{len(used)} model(s) with data; at least {min_models} needed"
    elif len({x for x, _, _ in used}) == 1:
        note = f"{value} is the same for every model"
    elif len({y for _, y, _ in used}) == 1:
        note = "the harm metric is the same for every model"
    if note is not None:
        return CorrelationCell(benchmark, category, value, metric, len(used), nan, nan, nan, nan, nan, nan, note,
                               decided_by="none (not tested)")  # fmt: skip
    x = np.array([p[0] for p in used])
    y = np.array([p[1] for p in used])
    spearman = stats.spearmanr(x, y)
    pearson = stats.pearsonr(x, y)
    return CorrelationCell(
        benchmark, category, value, metric, len(used),
        float(spearman.statistic), float(spearman.pvalue), nan,
        float(pearson.statistic), float(pearson.pvalue), nan,
    )  # fmt: skip


def value_harm_analysis(
    rows: Iterable[Mapping[str, Any]],
    profiles: Mapping[str, ProfileLike],
    *,
    metrics: Mapping[str, HarmMetric] | None = None,
    x_source: str = "target",
    min_models: int = MIN_MODELS,
    families: Mapping[str, str] | None = None,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
) -> CorrelationResult:
    """The whole grid from metric rows and profiles (model_key → target or measured profile)."""
    harms = harm_values(rows, metrics, models=set(profiles))
    models = aligned_models(profiles, harms, families)
    return correlate(models, sources=harms.sources, x_source=x_source, min_models=min_models, notes=harms.notes,
                     n_permutations=n_permutations, seed=seed)  # fmt: skip
