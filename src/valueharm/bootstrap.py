"""Bootstrap confidence intervals over benchmark items, and the sample type every metric reads.

The bootstrap resamples items (prompts), not samples, so a metric that aggregates several samples per prompt (RTP)
keeps them together: a percentile interval of `n_boot` resamples drawn from `numpy.random.default_rng(seed)` as
`integers(0, n_items, size=(n_boot, n_items))` over the items in sorted item-id order. Shares and means over samples
are ratios (sum over resampled items / samples in them).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from valueharm.errors import ValueharmError

DEFAULT_N_BOOT = 1000
DEFAULT_LEVEL = 0.95
_CHUNK = 4_000_000  # resampled indices held in memory at once


@dataclass(frozen=True)
class ScoredSample:
    """One generation with one scorer's verdict on it: what metric functions read."""

    item_id: str
    category: str
    value: float | None = None
    label: str | None = None
    failed: bool = False  # the generation failed, or its score is missing or has an error


@dataclass(frozen=True)
class MetricValue:
    value: float | None  # None when no sample could be used
    ci_low: float | None
    ci_high: float | None
    n_used: int
    n_failed: int


def ratio_estimate(
    numerators: np.ndarray,
    denominators: np.ndarray,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    level: float = DEFAULT_LEVEL,
    rng: np.random.Generator,
) -> tuple[float | None, float | None, float | None]:
    """sum(num) / sum(den) over units, with a percentile bootstrap CI resampling units."""
    check_bootstrap(n_boot, level)
    if len(numerators) == 0:
        return None, None, None
    point = float(numerators.sum() / denominators.sum())
    if n_boot == 0:
        return point, None, None
    low, high = percentile_interval(bootstrap_ratios(numerators, denominators, n_boot, rng), level)
    return point, low, high


def bootstrap_ratios(
    numerators: np.ndarray, denominators: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """The ratio in each of `n_boot` resamples of the units; drawn in chunks (same numbers) to bound memory."""
    n = len(numerators)
    stats = np.empty(n_boot)
    rows = max(1, _CHUNK // n)
    for start in range(0, n_boot, rows):
        index = rng.integers(0, n, size=(min(rows, n_boot - start), n))
        stats[start : start + len(index)] = numerators[index].sum(axis=1) / denominators[index].sum(axis=1)
    return stats


def percentile_interval(stats: np.ndarray, level: float) -> tuple[float, float]:
    low, high = np.percentile(stats, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def check_bootstrap(n_boot: int, level: float) -> None:
    if n_boot < 0:
        raise ValueharmError(f"bootstrap resamples must be ≥ 0, got {n_boot}")
    if not 0 < level < 1:
        raise ValueharmError(f"confidence level must be between 0 and 1, got {level}")


def usable(sample: ScoredSample, needs: str) -> bool:
    return not sample.failed and (sample.label if needs == "label" else sample.value) is not None


def by_item(samples: Iterable[ScoredSample], needs: str) -> tuple[dict[str, list[ScoredSample]], int]:
    """Usable samples grouped by item in sorted item order, and the number of unusable ones."""
    groups: dict[str, list[ScoredSample]] = defaultdict(list)
    failed = 0
    for sample in samples:
        if usable(sample, needs):
            groups[sample.item_id].append(sample)
        else:
            failed += 1
    return dict(sorted(groups.items())), failed


def estimate(
    samples: Iterable[ScoredSample],
    per_item: Callable[[list[ScoredSample]], tuple[float, float]],
    *,
    needs: str,
    n_boot: int,
    seed: int,
    level: float,
) -> MetricValue:
    groups, failed = by_item(samples, needs)
    pairs = np.array([per_item(group) for group in groups.values()], dtype=float).reshape(-1, 2)
    rng = np.random.default_rng(seed)
    value, low, high = ratio_estimate(pairs[:, 0], pairs[:, 1], n_boot=n_boot, level=level, rng=rng)
    return MetricValue(value, low, high, sum(map(len, groups.values())), failed)


def share(
    samples: Iterable[ScoredSample],
    predicate: Callable[[ScoredSample], bool],
    *,
    needs: str = "value",
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> MetricValue:
    """Share of usable samples meeting `predicate` (`needs`: the field a sample must have, "value" or "label")."""
    return estimate(
        samples,
        lambda group: (sum(map(predicate, group)), len(group)),
        needs=needs,
        n_boot=n_boot,
        seed=seed,
        level=level,
    )


def mean_value(
    samples: Iterable[ScoredSample], *, n_boot: int = DEFAULT_N_BOOT, seed: int = 0, level: float = DEFAULT_LEVEL
) -> MetricValue:
    """Mean of the samples' values."""
    return estimate(
        samples,
        lambda group: (sum(s.value for s in group if s.value is not None), len(group)),
        needs="value",
        n_boot=n_boot,
        seed=seed,
        level=level,
    )
