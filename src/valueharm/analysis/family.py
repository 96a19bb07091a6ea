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
- `cluster_robust`: the CR1 sandwich covariance of OLS coefficients with families as clusters (Liang–Zeger with
  the usual G/(G−1)·(N−1)/(N−K) small-sample factor), for t-based intervals on G − 1 degrees of freedom.
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


@lru_cache(maxsize=64)
def _orders(g: int, n_permutations: int, seed: int) -> tuple[np.ndarray, bool]:
    """Every order of g families when there are few enough, else seeded random ones (the observed one excluded
    from the count by the +1 of the p-value)."""
    if math.factorial(g) <= n_permutations:
        return np.array(list(itertools.permutations(range(g)))), True
    rng = np.random.default_rng(seed)
    return rng.permuted(np.tile(np.arange(g), (n_permutations, 1)), axis=1), False


def cluster_robust(design: np.ndarray, residuals: np.ndarray, clusters: Sequence[str]) -> np.ndarray:
    """CR1 covariance of OLS coefficients with the given clusters (families)."""
    n, k = design.shape
    _, codes = np.unique(np.asarray(clusters, dtype=object), return_inverse=True)
    g = int(codes.max()) + 1
    scores = np.zeros((g, k))
    np.add.at(scores, codes, design * residuals[:, None])
    bread = np.linalg.inv(design.T @ design)
    factor = g / (g - 1) * (n - 1) / (n - k)
    return factor * bread @ (scores.T @ scores) @ bread
