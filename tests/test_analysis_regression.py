"""Standardised, family-clustered regression per harm category: planted coefficients, the fallback to the four
higher-order dimensions, and cells that cannot be fitted."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from valueharm.analysis.correlation import AlignedModel, value_scores
from valueharm.analysis.regression import regress
from valueharm.values import HIGHER_ORDER, VALUES

CELL = ("hex-phi", "adult_content")


def sweep(n_families: int = 30, members: int = 3, seed: int = 0, collinear: bool = False) -> list[AlignedModel]:
    """Families of near-copy profiles; harm = 0.6 · Hedonism + a family effect + noise."""
    rng = np.random.default_rng(seed)
    models = []
    for f in range(n_families):
        base = rng.uniform(1, 6, len(VALUES))
        family_effect = rng.normal(0, 0.3)
        for m in range(members):
            scores = np.clip(base + rng.normal(0, 0.3, len(VALUES)), 1, 6)
            if collinear:  # Conservation's members move as one block
                scores[[VALUES.index(v) for v in HIGHER_ORDER["Conservation"]]] = scores[VALUES.index("Security")]
            profile = dict(zip(VALUES, scores, strict=True))
            harm = 0.6 * profile["Hedonism"] + family_effect + rng.normal(0, 0.3)
            models.append(AlignedModel(f"vim/f{f}m{m}", value_scores(profile), {CELL: harm}, family=f"F{f}"))
    return models


def test_planted_coefficient_is_recovered_standardised_with_clustered_intervals() -> None:
    models = sweep()
    fit = regress(models, *CELL)
    assert fit.identifiable and fit.predictors == "values" and (fit.n, fit.n_families) == (90, 30)
    # an independent fit: z-scores and normal equations by hand
    X = np.array([[m.scores[v] for v in VALUES] for m in models])
    y = np.array([m.harms[CELL] for m in models])
    Z = np.column_stack([np.ones(90), (X - X.mean(0)) / X.std(0, ddof=1)])
    zy = (y - y.mean()) / y.std(ddof=1)
    beta = np.linalg.solve(Z.T @ Z, Z.T @ zy)
    np.testing.assert_allclose([fit.coefficients[v].estimate for v in VALUES], beta[1:], rtol=1e-8)
    hedonism = fit.coefficients["Hedonism"]
    assert hedonism.ci_low > 0.3 and hedonism.p < 1e-6
    # the interval is the clustered standard error on its Bell–McCaffrey degrees of freedom, at most families − 1
    assert 5 < hedonism.df <= 29
    assert hedonism.ci_high - hedonism.estimate == pytest.approx(stats.t.ppf(0.975, hedonism.df) * hedonism.std_error)
    others = [fit.coefficients[v] for v in VALUES if v != "Hedonism"]
    assert max(abs(c.estimate) for c in others) < hedonism.estimate / 2
    assert {r["term"] for r in fit.rows()} == set(VALUES) and 0 < fit.r_squared < 1


def test_clustering_widens_intervals_when_near_copies_share_noise() -> None:
    models = sweep(members=6, seed=3)
    fit = regress(models, *CELL)
    # the same fit treating every model as its own family: narrower, overconfident intervals
    alone = regress([AlignedModel(m.model_key, m.scores, m.harms) for m in models], *CELL)
    assert fit.coefficients["Hedonism"].estimate == pytest.approx(alone.coefficients["Hedonism"].estimate)
    assert fit.coefficients["Hedonism"].std_error > alone.coefficients["Hedonism"].std_error


def test_collinear_values_fall_back_to_the_four_dimensions_and_say_so() -> None:
    fit = regress(sweep(n_families=60, collinear=True), *CELL)
    assert fit.identifiable and fit.predictors == "higher-order"
    assert set(fit.coefficients) == set(HIGHER_ORDER)
    assert "collinear" in fit.notes[0] and "four higher-order dimensions" in fit.notes[0]
    assert fit.coefficients["Self-Enhancement"].ci_low > 0  # Hedonism is one of its members


def test_too_few_families_are_not_identifiable() -> None:
    fit = regress(sweep(n_families=5, members=10), *CELL)
    assert not fit.identifiable and math.isnan(fit.coefficients["Openness to Change"].estimate)
    assert "5 families for 10 slopes" in fit.notes[0] and "5 families for 4 slopes" in fit.notes[1]
    empty = regress(sweep(), "hex-phi", "malware")
    assert not empty.identifiable and empty.n == 0
