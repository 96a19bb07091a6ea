"""Inference that respects profile families: near-copies of one profile are one independent unit, not many.

The published sweep's 154 profiles are 14 families (an extreme and its 10 nearest ESS respondents; reverses are
families of two): models of one family share almost all of their target profile, so their harms move together
whatever the value under test, and counting them as 154 independent observations makes p-values far too small.

- `permutation_test`: the family-level permutation test of the value–harm grid. Each family is one unit, its X
  and Y the means over its models; the statistic is the correlation of those means (Spearman or Pearson) and its
  null distribution comes from permuting the families' harms among families — whole families move, near-copies
  stay together. All G! orders are enumerated when G! ≤ the permutation count (the p-value is then exact), else
  `n_permutations` random orders from `numpy.random.default_rng(seed)`, the same draws for every cell with the
  same number of families, with p = (1 + #{|r*| ≥ |r|}) / (1 + n_permutations). The effective number of
  independent units is the number of families.
- `cluster_robust`: the CR2 sandwich covariance of OLS coefficients with families as clusters (Bell and McCaffrey
  2002: each family's residuals scaled by (I − H_gg)^(−1/2), which removes most of the downward bias of the
  plain Liang–Zeger estimator when there are few clusters), and per coefficient the Bell–McCaffrey degrees of
  freedom of its t distribution (Imbens and Kolesár 2016: (tr G'G)² / tr (G'G)², at most G − 1). With 14 families
  and ten slopes these are far fewer than G − 1; intervals on G − 1 would reject a true null about three times as
  often as they say.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from scipy import stats

from valueharm.errors import ValueharmError

DEFAULT_PERMUTATIONS = 9_999
MIN_FAMILIES = 3
_TIE = 1e-12  # |r*| ≥ |r| up to rounding, so ties count against the observed statistic

Method = Literal["spearman", "pearson"]


@dataclass(frozen=True)
class FamilyTest:
    """A correlation of family means with its permutation p-value."""

    coefficient: float
    p: float
    n_families: int
    permutations: int  # orders compared with the observed one
    exact: bool  # every order enumerated


def family_means(values: Sequence[float], families: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The families in first-seen order and the mean of `values` over each family's members."""
    order = list(dict.fromkeys(families))
    index = {family: i for i, family in enumerate(order)}
    codes = np.array([index[f] for f in families])
    sums = np.bincount(codes, weights=np.asarray(values, dtype=float), minlength=len(order))
    return order, sums / np.bincount(codes, minlength=len(order))


def permutation_test(
    x: Sequence[float],
    y: Sequence[float],
    families: Sequence[str],
    *,
    method: Method = "spearman",
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
) -> FamilyTest | str:
    """The family-level test of one cell, or why it cannot be run (fewer than 3 families, a constant mean)."""
    if n_permutations < 1:
        raise ValueharmError(f"the permutation test needs at least 1 permutation, got {n_permutations}")
    if not len(x) == len(y) == len(families):
        raise ValueharmError("x, y and families must have one entry per model")
    _, x_means = family_means(x, families)
    _, y_means = family_means(y, families)
    g = len(x_means)
    if g < MIN_FAMILIES:
        return f"{g} famil{'y' if g == 1 else 'ies'} with data; at least {MIN_FAMILIES} needed"
    if np.ptp(x_means) == 0 or np.ptp(y_means) == 0:
        return "the family means of the value or of the harm are all equal"
    if method == "spearman":
        x_means, y_means = stats.rankdata(x_means), stats.rankdata(y_means)
    xs, ys = _unit(x_means), _unit(y_means)
    observed = float(xs @ ys)
    orders, exact = _orders(g, n_permutations, seed)
    null = ys[orders] @ xs
    extreme = int(np.sum(np.abs(null) >= abs(observed) - _TIE))
    p = extreme / len(orders) if exact else (1 + extreme) / (1 + len(orders))
    return FamilyTest(observed, min(1.0, p), g, len(orders), exact)


def _unit(values: np.ndarray) -> np.ndarray:
    centred = values - values.mean()
    return centred / math.sqrt(float(centred @ centred))


@lru_cache(maxsize=8)
def _orders(g: int, n_permutations: int, seed: int) -> tuple[np.ndarray, bool]:
    """Every order of g families when there are few enough, else seeded random ones (the observed one excluded
    from the count by the +1 of the p-value)."""
    if math.factorial(g) <= n_permutations:
        return np.array(list(itertools.permutations(range(g)))), True
    rng = np.random.default_rng(seed)
    return rng.permuted(np.tile(np.arange(g), (n_permutations, 1)), axis=1), False


@dataclass(frozen=True)
class ClusterRobust:
    covariance: np.ndarray  # CR2, k × k
    df: np.ndarray  # Bell–McCaffrey degrees of freedom per coefficient


def cluster_robust(design: np.ndarray, residuals: np.ndarray, clusters: Sequence[str]) -> ClusterRobust:
    """CR2 covariance of OLS coefficients with the given clusters (families), and each coefficient's degrees of
    freedom."""
    n, k = design.shape
    bread = np.linalg.inv(design.T @ design)
    annihilator = np.eye(n) - design @ bread @ design.T  # I − H
    labels = np.asarray(clusters, dtype=object)
    meat = np.zeros((k, k))
    blocks = []  # per cluster: (I − H)[:, g] A_g X_g (X'X)⁻¹, n × k
    for cluster in dict.fromkeys(clusters):
        rows = np.flatnonzero(labels == cluster)
        adjust = _inverse_sqrt(annihilator[np.ix_(rows, rows)])
        score = design[rows].T @ (adjust @ residuals[rows])
        meat += np.outer(score, score)
        blocks.append(annihilator[:, rows] @ adjust @ design[rows] @ bread)
    stacked = np.stack(blocks)  # G × n × k
    rho = _within_correlation(residuals, labels)
    sums = np.stack([stacked[:, labels == c, :].sum(axis=1) for c in dict.fromkeys(clusters)])  # G × G × k
    gram = (1 - rho) * np.einsum("gnl,hnl->lgh", stacked, stacked) + rho * np.einsum("cgl,chl->lgh", sums, sums)
    traces = np.trace(gram, axis1=1, axis2=2)
    squares = np.einsum("lgh,lhg->l", gram, gram)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.minimum(traces**2 / squares, len(blocks) - 1)
    return ClusterRobust(bread @ meat @ bread, df)


def _within_correlation(residuals: np.ndarray, labels: np.ndarray) -> float:
    """The residuals' within-family correlation (random-effects working model of the degrees of freedom), in [0, 1)."""
    pairs = products = 0.0
    for cluster in dict.fromkeys(labels):
        e = residuals[labels == cluster]
        products += float(e.sum() ** 2 - e @ e)
        pairs += len(e) * (len(e) - 1)
    variance = float(residuals @ residuals) / len(residuals)
    if pairs == 0 or variance == 0:
        return 0.0
    return min(max(products / pairs / variance, 0.0), 0.99)


def _inverse_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric inverse square root, as a pseudo-inverse where an eigenvalue is 0 (a family that alone fixes a
    coefficient has no residual to scale)."""
    eigenvalues, vectors = np.linalg.eigh(matrix)
    kept = eigenvalues > 1e-10
    scale = np.zeros_like(eigenvalues)
    scale[kept] = 1 / np.sqrt(eigenvalues[kept])
    return (vectors * scale) @ vectors.T
