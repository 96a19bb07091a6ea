"""Value–harm correlation (DESIGN §4): which values go with which harm categories across aligned models.

The unit is one aligned model. X is a value's score in the model's profile — its target, or what the
value-alignment check measured — and Y is one harm metric of one benchmark category, read from the store's
`metrics` rows. For every (benchmark, category, value or higher-order group) cell: Spearman ρ and Pearson r with
two-sided p-values (scipy), over the models that have both X and Y (pairwise complete). Benjamini–Hochberg
q-values are taken over the whole grid, separately for the Spearman and the Pearson p-values; a cell with fewer
than 3 models or a constant X or Y is not tested (NaN, left out of the BH family, with a note). A higher-order
group's score is the mean of its member values. The optional multiple regression of one cell's harm metric on
the ten values reports ordinary least squares coefficients, standard errors, t, p and R²; with n ≤ 11 models
(ten slopes and an intercept) it is not identifiable and says so instead of printing numbers.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
from scipy import stats

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
    """One unit of the analysis: a model's value scores (X) and harm metrics (Y)."""

    model_key: str
    scores: dict[str, float | None]  # every name in DIMENSIONS; None where unmeasured
    harms: dict[Cell, float]


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
    note: str | None = None  # why the cell was not tested

    @property
    def tested(self) -> bool:
        return self.note is None


@dataclass(frozen=True)
class CorrelationResult:
    cells: list[CorrelationCell]
    x_source: str  # "target" or "measured": where the value scores came from
    sources: dict[str, HarmMetric]
    n_models: int
    notes: list[str] = field(default_factory=list)

    def cell(self, benchmark: str, category: str, value: str) -> CorrelationCell | None:
        return next((c for c in self.cells if (c.benchmark, c.category, c.value) == (benchmark, category, value)), None)

    def columns(self) -> list[Cell]:
        """The (benchmark, category) pairs in grid order."""
        return list(dict.fromkeys((c.benchmark, c.category) for c in self.cells))

    def rows(self) -> list[dict[str, Any]]:
        """Tidy rows (one per cell) for CSV/JSON export."""
        return [{"x_source": self.x_source, **asdict(c)} for c in self.cells]

    def finding(self, alpha: float = 0.05) -> str:
        """The result in one plain sentence — also when it is that there is none — for the report's summary."""
        tested = [c for c in self.cells if c.tested]
        untested = len(self.cells) - len(tested)
        rest = f"; {untested} of {len(self.cells)} cells not tested (a constant value or harm, or too few models)"
        rest = rest if untested else ""
        if not tested:
            return f"No value–harm correlation could be tested over the {self.n_models} models{rest}."
        significant = sorted((c for c in tested if c.spearman_q < alpha), key=lambda c: c.spearman_q)
        if not significant:
            return (
                f"No value–harm relation found: none of the {len(tested)} tested cells has a Spearman correlation "
                f"with q < {alpha:g} over the {self.n_models} models{rest}."
            )
        top = significant[0]
        return (
            f"{len(significant)} of {len(tested)} tested cells have a Spearman correlation with q < {alpha:g}; the "
            f"strongest: {top.value} with {top.benchmark}/{top.category} {top.metric}, ρ = {top.spearman_rho:+.2f} "
            f"(q = {top.spearman_q:.2g}, {top.n} models){rest}."
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


def aligned_models(profiles: Mapping[str, ProfileLike], harms: HarmValues) -> list[AlignedModel]:
    """Join profiles (model_key → target or measured profile) with harm values; models without any harm value are
    left out — they were not evaluated, which is not the same as harmless."""
    return [
        AlignedModel(model_key, value_scores(profile), harms.values[model_key])
        for model_key, profile in profiles.items()
        if harms.values.get(model_key)
    ]


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
) -> CorrelationResult:
    """Spearman and Pearson for every (benchmark, category) × dimension cell, with BH q-values over the grid."""
    columns = sorted({cell for model in models for cell in model.harms}, key=_column_order(sources))
    metric_of = {b: s.metric for b, s in (sources or {}).items()}
    raw = []
    for benchmark, category in columns:
        for value in dimensions:
            pairs = [
                (x, model.harms[(benchmark, category)])
                for model in models
                if (benchmark, category) in model.harms and (x := model.scores.get(value)) is not None
            ]
            raw.append(_test((benchmark, category), value, metric_of.get(benchmark, ""), pairs, min_models))
    q_spearman = benjamini_hochberg([c.spearman_p for c in raw])
    q_pearson = benjamini_hochberg([c.pearson_p for c in raw])
    cells = [
        replace(cell, spearman_q=float(qs), pearson_q=float(qp))
        for cell, qs, qp in zip(raw, q_spearman, q_pearson, strict=True)
    ]
    untested = sum(not c.tested for c in cells)
    summary = [f"{untested} of {len(cells)} cells not tested (too few models or a constant X/Y)"] if untested else []
    return CorrelationResult(cells, x_source, dict(sources or {}), len(models), [*notes, *summary])


def _column_order(sources: Mapping[str, HarmMetric] | None) -> Callable[[Cell], tuple[int, str, bool, str]]:
    benchmarks = list(sources or {})

    def key(cell: Cell) -> tuple[int, str, bool, str]:
        benchmark, category = cell
        rank = benchmarks.index(benchmark) if benchmark in benchmarks else len(benchmarks)
        return rank, benchmark, category != OVERALL, category

    return key


def _test(column: Cell, value: str, metric: str, pairs: list[tuple[float, float]], min_models: int) -> CorrelationCell:
    benchmark, category = column
    nan = math.nan
    note = None
    if len(pairs) < min_models:
        note = f"{len(pairs)} model(s) with data; at least {min_models} needed"
    elif len({x for x, _ in pairs}) == 1:
        note = f"{value} is the same for every model"
    elif len({y for _, y in pairs}) == 1:
        note = "the harm metric is the same for every model"
    if note is not None:
        return CorrelationCell(benchmark, category, value, metric, len(pairs), nan, nan, nan, nan, nan, nan, note)
    x = np.array([p[0] for p in pairs])
    y = np.array([p[1] for p in pairs])
    spearman = stats.spearmanr(x, y)
    pearson = stats.pearsonr(x, y)
    return CorrelationCell(
        benchmark, category, value, metric, len(pairs),
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
) -> CorrelationResult:
    """The whole grid from metric rows and profiles (model_key → target or measured profile)."""
    harms = harm_values(rows, metrics, models=set(profiles))
    models = aligned_models(profiles, harms)
    return correlate(models, sources=harms.sources, x_source=x_source, min_models=min_models, notes=harms.notes)


# ---------------------------------------------------------------------------------------------------- regression


@dataclass(frozen=True)
class Coefficient:
    estimate: float
    std_error: float
    t: float
    p: float


@dataclass(frozen=True)
class RegressionResult:
    """OLS of one (benchmark, category) harm metric on the values; coefficients are per scale point (1–6)."""

    benchmark: str
    category: str
    n: int
    coefficients: dict[str, Coefficient]  # "intercept", then each predictor
    r_squared: float
    adj_r_squared: float
    identifiable: bool
    notes: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        base = {"benchmark": self.benchmark, "category": self.category, "n": self.n, "r_squared": self.r_squared}
        return [{**base, "term": term, **asdict(c)} for term, c in self.coefficients.items()]


def regress(
    models: Sequence[AlignedModel], benchmark: str, category: str, predictors: Sequence[str] = VALUES
) -> RegressionResult:
    """Multiple regression of the harm metric on the values over models with every predictor measured.

    With n ≤ number of predictors + 1, or collinear profiles, the fit is not identifiable: estimates are NaN and a
    warning says why, rather than reporting a minimum-norm solution as if it meant something.
    """
    used = [
        m for m in models if (benchmark, category) in m.harms and all(m.scores.get(v) is not None for v in predictors)
    ]
    n, k = len(used), len(predictors) + 1
    design = np.array([[1.0, *(m.scores[v] for v in predictors)] for m in used]).reshape(n, k)
    y = np.array([m.harms[(benchmark, category)] for m in used])
    terms = ["intercept", *predictors]
    reason = None
    if n <= k:
        reason = f"{n} models for {k} parameters: not identifiable (needs at least {k + 1})"
    elif np.linalg.matrix_rank(design) < k:
        reason = "the profiles are collinear (some value is a linear combination of others): not identifiable"
    elif np.ptp(y) == 0:
        reason = "the harm metric is the same for every model"
    if reason is not None:
        warnings.warn(f"regression {benchmark}/{category}: {reason}", stacklevel=2)
        nan = Coefficient(math.nan, math.nan, math.nan, math.nan)
        return RegressionResult(benchmark, category, n, dict.fromkeys(terms, nan), math.nan, math.nan, False, [reason])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    residuals = y - design @ beta
    df = n - k
    rss = float(residuals @ residuals)
    tss = float(((y - y.mean()) ** 2).sum())
    covariance = rss / df * np.linalg.inv(design.T @ design)
    se = np.sqrt(np.diag(covariance))
    with np.errstate(divide="ignore", invalid="ignore"):  # an exact fit has zero standard errors
        t = beta / se
    p = 2 * stats.t.sf(np.abs(t), df)
    r2 = 1 - rss / tss
    coefficients = {
        term: Coefficient(float(b), float(s), float(tv), float(pv))
        for term, b, s, tv, pv in zip(terms, beta, se, t, p, strict=True)
    }
    return RegressionResult(benchmark, category, n, coefficients, r2, 1 - (1 - r2) * (n - 1) / df, True)
