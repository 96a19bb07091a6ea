"""The family-aware test on planted, family-structured data: near-copies must not pass for independent evidence."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import linalg, stats

from valueharm.analysis.correlation import AlignedModel, correlate, value_scores
from valueharm.analysis.family import cluster_robust, family_means, permutation_test
from valueharm.analysis.hypotheses import Hypothesis, Verdict, evaluate
from valueharm.errors import ValueharmError
from valueharm.values import VALUES

CELL = ("hex-phi", "adult_content")


def families_of(x_family: np.ndarray, y_family: np.ndarray, members: int = 11, seed: int = 0):
    """Each family's members are near-copies: the family's X and Y plus a little noise."""
    rng = np.random.default_rng(seed)
    x, y, family = [], [], []
    for f, (xf, yf) in enumerate(zip(x_family, y_family, strict=True)):
        x += list(xf + rng.normal(0, 0.05, members))
        y += list(yf + rng.normal(0, 0.05, members))
        family += [f"F{f}"] * members
    return np.array(x), np.array(y), family


# 14 families whose harms happen to line up weakly with their values: Spearman of the family means 0.35 (p ≈ 0.21)
CHANCE_X = np.arange(14, dtype=float)
CHANCE_Y = np.array([5, 0, 9, 1, 12, 3, 13, 2, 6, 4, 8, 11, 10, 7], dtype=float)


def test_near_copies_make_a_chance_alignment_look_significant_but_not_to_the_family_test() -> None:
    x, y, family = families_of(CHANCE_X, CHANCE_Y)
    naive = stats.spearmanr(x, y)
    assert naive.pvalue < 0.05  # 154 "independent" models: a clear false positive
    test = permutation_test(x, y, family, n_permutations=1999, seed=3)
    assert not isinstance(test, str)
    assert test.n_families == 14 and test.p > 0.1 and not test.exact
    assert test.coefficient == pytest.approx(stats.spearmanr(CHANCE_X, CHANCE_Y).statistic, abs=0.05)


def test_a_true_family_level_effect_is_found() -> None:
    rng = np.random.default_rng(7)
    x_family = rng.uniform(1, 6, 14)
    x, y, family = families_of(x_family, 0.8 * x_family + rng.normal(0, 0.6, 14))
    test = permutation_test(x, y, family, n_permutations=1999, seed=3)
    assert not isinstance(test, str) and test.p < 0.01 and test.coefficient > 0.7
    negative = permutation_test(x, -y, family, method="pearson", n_permutations=1999, seed=3)
    assert not isinstance(negative, str) and negative.p < 0.01 and negative.coefficient < -0.7


def test_few_families_are_enumerated_exactly() -> None:
    x_family, y_family = np.array([1.0, 2, 3, 4, 5]), np.array([2.0, 1, 4, 3, 5])
    x, y, family = families_of(x_family, y_family, members=3)
    test = permutation_test(x, y, family, method="pearson", n_permutations=9999)
    assert not isinstance(test, str) and test.exact and test.permutations == 120
    xm, ym = family_means(x, family)[1], family_means(y, family)[1]
    observed = stats.pearsonr(xm, ym).statistic
    null = [stats.pearsonr(xm, ym[list(order)]).statistic for order in itertools.permutations(range(5))]
    assert test.p == pytest.approx(np.mean(np.abs(null) >= abs(observed) - 1e-12))


def test_singletons_reduce_to_an_ordinary_permutation_test() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=40)
    y = 0.4 * x + rng.normal(size=40)
    test = permutation_test(x, y, [str(i) for i in range(40)], n_permutations=9999, seed=0)
    assert not isinstance(test, str) and test.n_families == 40
    assert test.p == pytest.approx(stats.spearmanr(x, y).pvalue, abs=0.01)


def test_seeded_and_reasons_for_not_testing() -> None:
    x, y, family = families_of(CHANCE_X, CHANCE_Y)
    first, again = (permutation_test(x, y, family, n_permutations=499, seed=5) for _ in range(2))
    assert first == again
    seeds = {permutation_test(x, y, family, n_permutations=499, seed=s).p for s in range(6)}  # type: ignore[union-attr]
    assert len(seeds) > 1  # the seed chooses the random orders
    assert permutation_test(x[:22], y[:22], family[:22]) == "2 families with data; at least 3 needed"
    assert "all equal" in permutation_test([1.0] * 33, y[:33], family[:33])  # type: ignore[operator]
    with pytest.raises(ValueharmError, match="at least 1 permutation"):
        permutation_test(x, y, family, n_permutations=0)


def test_cluster_robust_is_cr2_with_bell_mccaffrey_degrees_of_freedom() -> None:
    """Against the textbook formulas written out with dense matrices (Imbens and Kolesár 2016, eqs. 8 and 11)."""
    rng = np.random.default_rng(4)
    clusters = [f"c{i % 6}" for i in range(30)]
    design = np.column_stack([np.ones(30), rng.normal(size=(30, 2))])
    residuals = rng.normal(size=30) + np.repeat(rng.normal(size=6), 5)[np.argsort(np.argsort(clusters))]
    bread = np.linalg.inv(design.T @ design)
    M = np.eye(30) - design @ bread @ design.T
    groups = [[i for i, name in enumerate(clusters) if name == f"c{g}"] for g in range(6)]
    meat = np.zeros((3, 3))
    adjust = {}
    for g, rows in enumerate(groups):
        adjust[g] = linalg.inv(linalg.sqrtm(M[np.ix_(rows, rows)])).real
        score = design[rows].T @ adjust[g] @ residuals[rows]
        meat += np.outer(score, score)
    robust = cluster_robust(design, residuals, clusters)
    np.testing.assert_allclose(robust.covariance, bread @ meat @ bread, rtol=1e-8)
    # degrees of freedom under the random-effects working model Ω = (1 − ρ)I + ρ·(same family)
    same = np.array([[a == b for b in clusters] for a in clusters], dtype=float)
    off = same - np.eye(30)
    rho = float(residuals @ off @ residuals / off.sum() / (residuals @ residuals / 30))
    omega = (1 - rho) * np.eye(30) + rho * same
    for coefficient in range(3):
        G = np.column_stack([M[:, rows] @ adjust[g] @ design[rows] @ bread[:, coefficient]
                             for g, rows in enumerate(groups)])  # fmt: skip
        gram = G.T @ omega @ G
        assert robust.df[coefficient] == pytest.approx(min(np.trace(gram) ** 2 / np.trace(gram @ gram), 5))


def grid_models(x_family: np.ndarray, y_family: np.ndarray) -> list[AlignedModel]:
    """Aligned models whose Hedonism is the family's X (other values random per family) and adult-content harm Y."""
    x, y, family = families_of(x_family, y_family)
    rng = np.random.default_rng(1)
    others = {f: rng.uniform(1, 6, len(VALUES)) for f in dict.fromkeys(family)}
    models = []
    for i, (xi, yi, f) in enumerate(zip(x, y, family, strict=True)):
        scores = dict(zip(VALUES, others[f], strict=True)) | {"Hedonism": float(xi)}
        models.append(AlignedModel(f"vim/m{i}", value_scores(scores), {CELL: float(yi)}, family=f))
    return models


def test_the_grid_and_the_hypotheses_are_decided_by_the_family_test() -> None:
    result = correlate(grid_models(CHANCE_X / 3 + 1, CHANCE_Y), n_permutations=999)
    cell = result.cell(*CELL, "Hedonism")
    assert cell is not None and cell.decided and cell.n == 154 and cell.n_families == 14
    assert cell.spearman_p < 0.05 and cell.family_q > 0.05
    assert cell.decided_by.startswith("family permutation") and "14 families" in cell.decided_by
    assert result.n_families == 14 and "14 profile families" in result.finding()
    hypothesis = Hypothesis("h", "Hedonism", 1, (CELL,))
    [verdict] = evaluate([hypothesis], result)
    assert verdict.method == "family" and verdict.verdict == Verdict.NOT_SIGNIFICANT and verdict.n_families == 14
    [naive] = evaluate([hypothesis], result, method="spearman")
    assert naive.verdict == Verdict.SUPPORTED  # what counting near-copies as independent would have claimed

    rng = np.random.default_rng(9)
    x_family = rng.uniform(1, 6, 14)
    real = correlate(grid_models(x_family, x_family + rng.normal(0, 0.5, 14)), n_permutations=999)
    [found] = evaluate([hypothesis], real)
    assert found.verdict == Verdict.SUPPORTED and found.q is not None and found.q < 0.05


def test_too_few_families_leave_the_cell_undecided() -> None:
    models = grid_models(np.array([1.0, 5.0]), np.array([0.0, 1.0]))
    cell = correlate(models, n_permutations=99).cell(*CELL, "Hedonism")
    assert cell is not None and cell.tested and not cell.decided and math.isnan(cell.family_q)
    assert cell.family_note == "2 families with data; at least 3 needed"
    [verdict] = evaluate([Hypothesis("h", "Hedonism", 1, (CELL,))], correlate(models, n_permutations=99))
    assert verdict.verdict == Verdict.NOT_TESTED and verdict.note == cell.family_note
