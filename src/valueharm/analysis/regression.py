"""Which values go with a harm once the others are held fixed: multiple regression per harm category.

Per (benchmark, category): the harm metric regressed by OLS on the ten target values, over the models with every
predictor. Harm and predictors are standardised (z-scores), so a coefficient is the SDs of harm per SD of the
value and coefficients compare across values and categories. Standard errors are cluster-robust with profile
families as clusters (CR2, `valueharm.analysis.family.cluster_robust`), and each coefficient's interval and p use
a t distribution on its Bell–McCaffrey degrees of freedom (at most G − 1, G families): near-copies of a profile
are not independent evidence, and with few families and many slopes far fewer degrees of freedom are left.

The ten values are often too collinear to separate (the published extremes move in blocks: a higher-order group
at 6 raises two or three values together). When the ten are collinear (rank-deficient, or a variance inflation
factor above `MAX_VIF`), or there are too few families for ten slopes, the harm is regressed on the four
higher-order dimensions instead, and the result says so. When even that is not identifiable, it says why rather
than printing numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from valueharm.analysis.correlation import AlignedModel
from valueharm.analysis.family import cluster_robust
from valueharm.values import HIGHER_ORDER, VALUES

MAX_VIF = 10.0  # the usual threshold above which a coefficient's variance is too inflated to read
DEFAULT_LEVEL = 0.95


@dataclass(frozen=True)
class Coefficient:
    """A standardised coefficient with its family-clustered standard error, t, p and interval."""

    estimate: float
    std_error: float
    t: float
    p: float
    ci_low: float
    ci_high: float
    df: float  # of its t distribution (Bell–McCaffrey)


@dataclass(frozen=True)
class RegressionResult:
    """The standardised regression of one (benchmark, category) harm metric."""

    benchmark: str
    category: str
    n: int  # models
    n_families: int  # clusters; each coefficient's t has at most n_families − 1 degrees of freedom
    predictors: str  # "values" (the ten) or "higher-order" (the four dimensions)
    coefficients: dict[str, Coefficient]  # per predictor (no intercept: standardised variables have mean 0)
    r_squared: float
    adj_r_squared: float
    identifiable: bool
    level: float = DEFAULT_LEVEL
    notes: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        base = {
            "benchmark": self.benchmark,
            "category": self.category,
            "n": self.n,
            "n_families": self.n_families,
            "predictors": self.predictors,
            "r_squared": self.r_squared,
        }
        return [{**base, "term": term, **asdict(c)} for term, c in self.coefficients.items()]


def regress(
    models: Sequence[AlignedModel], benchmark: str, category: str, *, level: float = DEFAULT_LEVEL
) -> RegressionResult:
    """The harm of one cell on the ten values, or on the four higher-order dimensions when the ten cannot be
    separated (stated in the notes)."""
    used = [m for m in models if (benchmark, category) in m.harms and all(m.scores.get(v) is not None for v in VALUES)]
    y = np.array([m.harms[(benchmark, category)] for m in used])
    units = [m.unit for m in used]
    n, g = len(used), len(set(units))
    ten = _design(used, VALUES)
    problem = _unusable(ten, g)
    notes = []
    predictors, design = "values", ten
    if problem is not None:
        predictors, design = "higher-order", _design(used, tuple(HIGHER_ORDER))
        notes.append(f"{problem}: regressed on the four higher-order dimensions instead of the ten values")
        problem = _unusable(design, g)
    names = VALUES if predictors == "values" else tuple(HIGHER_ORDER)
    if problem is None and (n == 0 or np.ptp(y) == 0):
        problem = "the harm metric is the same for every model"
    if problem is not None:
        nan = Coefficient(*(math.nan,) * 7)
        notes.append(f"not identifiable: {problem}")
        coefficients = dict.fromkeys(names, nan)
        return RegressionResult(benchmark, category, n, g, predictors, coefficients, math.nan, math.nan, False,
                                level, notes)  # fmt: skip
    return _fit(benchmark, category, design, _z(y), units, names, level, notes)


def _design(models: Sequence[AlignedModel], predictors: Sequence[str]) -> np.ndarray:
    rows = [[m.scores[p] for p in predictors] for m in models]
    return np.array(rows, dtype=float).reshape(len(models), len(predictors))


def _z(values: np.ndarray) -> np.ndarray:
    return (values - values.mean(axis=0)) / values.std(axis=0, ddof=1)


def _unusable(design: np.ndarray, n_families: int) -> str | None:
    """Why these predictors cannot be estimated with family-clustered errors, or None."""
    n, k = design.shape
    if n_families <= k + 1:
        return f"{n_families} families for {k} slopes and an intercept (clustered errors need at least {k + 2})"
    if n <= k + 1:
        return f"{n} models for {k} slopes and an intercept"
    if np.any(np.ptp(design, axis=0) == 0):
        return "a predictor is the same for every model"
    correlation = np.corrcoef(design, rowvar=False)
    if np.linalg.matrix_rank(correlation) < k:
        return "the predictors are collinear (one is a linear combination of others)"
    vif = float(np.max(np.diag(np.linalg.inv(correlation))))
    if vif > MAX_VIF:
        return f"the predictors are collinear (largest variance inflation factor {vif:.0f} > {MAX_VIF:g})"
    return None


def _fit(
    benchmark: str,
    category: str,
    predictors: np.ndarray,
    y: np.ndarray,
    units: Sequence[str],
    names: Sequence[str],
    level: float,
    notes: list[str],
) -> RegressionResult:
    n, k = predictors.shape
    design = np.column_stack([np.ones(n), _z(predictors)])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    residuals = y - design @ beta
    robust = cluster_robust(design, residuals, units)
    se = np.sqrt(np.maximum(np.diag(robust.covariance), 0.0))
    df = robust.df
    with np.errstate(divide="ignore", invalid="ignore"):  # an exact fit has zero standard errors
        t = beta / se
    p = 2 * stats.t.sf(np.abs(t), df)
    half = stats.t.ppf(0.5 + level / 2, df) * se
    rss = float(residuals @ residuals)
    r2 = 1 - rss / float(y @ y)  # y is centred
    coefficients = {
        name: Coefficient(float(b), float(s), float(tv), float(pv), float(b - h), float(b + h), float(d))
        for name, b, s, tv, pv, h, d in zip(names, beta[1:], se[1:], t[1:], p[1:], half[1:], df[1:], strict=True)
    }
    adjusted = 1 - (1 - r2) * (n - 1) / (n - k - 1)
    return RegressionResult(benchmark, category, n, len(set(units)), "values" if k == len(VALUES) else "higher-order",
                            coefficients, r2, adjusted, True, level, notes)  # fmt: skip
