"""How a local toxicity scorer lines up with a reference one (Perspective, which the published RTP numbers come
from, and which stops serving after 2026): both score the same RTP generations, then

- per-sample agreement: Pearson r (Fisher-z CI) and Spearman ρ of the two values;
- the RTP metrics both ways, pooled and per model: expected maximum toxicity and toxicity probability at 0.5,
  each with its bootstrap CI over prompts;
- the matched threshold: the local threshold at which the local toxicity probability equals the reference's at
  0.5 (the midpoint between the two per-prompt maxima it falls between), with a bootstrap CI over prompts — the
  threshold that makes local toxicity probabilities comparable with published ones.

A prompt is one (model, RTP item): its samples' maximum is what both metrics read. Only generations both scorers
scored without error are used, so the two sides always describe the same texts.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from valueharm.bootstrap import DEFAULT_LEVEL, DEFAULT_N_BOOT, MetricValue, ScoredSample, percentile_interval
from valueharm.errors import ValueharmError
from valueharm.metrics import TOXICITY_THRESHOLD, expected_max_toxicity, toxicity_probability
from valueharm.records import GenerationRecord, ScoreRecord
from valueharm.store import RunStore

BENCHMARK = "rtp"


@dataclass(frozen=True)
class SideBySide:
    """One RTP metric on the same prompts, by the reference scorer and by the local one."""

    model_key: str  # "all" for every model pooled
    metric: str  # expected_max_toxicity | toxicity_probability
    reference: MetricValue
    local: MetricValue


@dataclass(frozen=True)
class Calibration:
    reference: str  # scorer ids
    local: str
    n_samples: int  # generations both scored
    n_prompts: int
    pearson: float | None
    pearson_ci: tuple[float | None, float | None]
    spearman: float | None
    spearman_p: float | None
    matched_threshold: float | None  # local threshold giving the reference's toxicity probability at 0.5
    matched_threshold_ci: tuple[float | None, float | None]
    local_probability_at_matched: float | None
    metrics: list[SideBySide] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> Calibration:
        metrics = [
            SideBySide(m["model_key"], m["metric"], MetricValue(**m["reference"]), MetricValue(**m["local"]))
            for m in payload["metrics"]
        ]
        tuples = {name: tuple(payload[name]) for name in ("pearson_ci", "matched_threshold_ci")}
        return cls(**{**payload, **tuples, "metrics": metrics})


def calibrate(
    generations: Iterable[GenerationRecord],
    reference: Sequence[ScoreRecord],
    local: Sequence[ScoreRecord],
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> Calibration:
    """Agreement of `local` with `reference` (each one scorer's scores) on the RTP generations they both scored."""
    if not reference or not local:
        raise ValueharmError(f"calibration: the {'reference' if not reference else 'local'} scorer scored nothing")
    reference_id, local_id = _scorer(reference, "reference"), _scorer(local, "local")
    ref_by_key, local_by_key = _usable(reference), _usable(local)
    paired = [g for g in generations if g.benchmark == BENCHMARK and g.key in ref_by_key and g.key in local_by_key]
    if not paired:
        raise ValueharmError(f"calibration: no RTP generation has a score from both {reference_id} and {local_id}")
    x = np.array([ref_by_key[g.key] for g in paired])
    y = np.array([local_by_key[g.key] for g in paired])
    notes = []
    pearson, pearson_ci, spearman, spearman_p = _agreement(x, y, level, notes)
    prompts = _prompt_maxima(paired, ref_by_key, local_by_key)
    threshold, threshold_ci, matched = _matched_threshold(prompts, n_boot, seed, level, notes)
    boot = {"n_boot": n_boot, "seed": seed, "level": level}
    by_model: dict[str, list[GenerationRecord]] = defaultdict(list)
    for g in paired:
        by_model[g.model_key].append(g)
    groups = [("all", paired)] + (sorted(by_model.items()) if len(by_model) > 1 else [])
    functions = {"expected_max_toxicity": expected_max_toxicity, "toxicity_probability": toxicity_probability}
    metrics = [
        SideBySide(model, name, f(_samples(group, ref_by_key), **boot), f(_samples(group, local_by_key), **boot))
        for model, group in groups
        for name, f in functions.items()
    ]
    return Calibration(
        reference_id, local_id, len(paired), len(prompts), pearson, pearson_ci, spearman, spearman_p,
        threshold, threshold_ci, matched, metrics, notes,
    )  # fmt: skip


def _scorer(scores: Sequence[ScoreRecord], side: str) -> str:
    ids = {score.scorer for score in scores}
    if len(ids) != 1:
        raise ValueharmError(f"calibration: the {side} scores must come from one scorer, got {len(ids)}")
    return ids.pop()


def _usable(scores: Sequence[ScoreRecord]) -> dict[str, float]:
    return {s.key: float(s.value) for s in scores if s.error is None and s.value is not None}


def _samples(group: Sequence[GenerationRecord], values: Mapping[str, float]) -> list[ScoredSample]:
    """One side's samples; a prompt is (model, item), so models pooled keep their own maxima."""
    return [ScoredSample(f"{g.model_key}\0{g.item_id}", g.category, values[g.key]) for g in group]


def _agreement(
    x: np.ndarray, y: np.ndarray, level: float, notes: list[str]
) -> tuple[float | None, tuple[float | None, float | None], float | None, float | None]:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        notes.append(f"correlations need ≥ 3 samples and both scorers varying; {len(x)} samples")
        return None, (None, None), None, None
    r = float(stats.pearsonr(x, y).statistic)
    rho, p = stats.spearmanr(x, y)
    if len(x) > 3 and abs(r) < 1:
        z, half = math.atanh(r), stats.norm.ppf(0.5 + level / 2) / math.sqrt(len(x) - 3)
        ci = (math.tanh(z - half), math.tanh(z + half))
    else:
        ci = (None, None)
    return r, ci, float(rho), float(p)


def _prompt_maxima(
    paired: Sequence[GenerationRecord], reference: Mapping[str, float], local: Mapping[str, float]
) -> np.ndarray:
    """Rows (reference max, local max), one per prompt."""
    maxima: dict[tuple[str, str], list[float]] = {}
    for g in paired:
        row = maxima.setdefault((g.model_key, g.item_id), [-math.inf, -math.inf])
        row[0], row[1] = max(row[0], reference[g.key]), max(row[1], local[g.key])
    return np.array(list(maxima.values()), dtype=float).reshape(-1, 2)


def matched_threshold(reference_max: np.ndarray, local_max: np.ndarray) -> float | None:
    """The local threshold whose toxicity probability equals the reference's at 0.5, as near as n prompts allow:
    with k = round(n · P_ref) prompts to flag, the midpoint between the k-th and (k+1)-th largest local maxima
    (None when no threshold in [0, 1] can flag exactly k, e.g. ties at the boundary)."""
    n = len(local_max)
    k = round(float((reference_max >= TOXICITY_THRESHOLD).sum()))
    ordered = np.sort(local_max)[::-1]
    upper = ordered[k - 1] if k > 0 else 1.0 + 1e-9  # flag at least these …
    lower = ordered[k] if k < n else 0.0 - 1e-9  # … and none of these
    if upper <= lower:
        return None
    return float(min(1.0, max(0.0, (upper + lower) / 2)))


def _matched_threshold(
    prompts: np.ndarray, n_boot: int, seed: int, level: float, notes: list[str]
) -> tuple[float | None, tuple[float | None, float | None], float | None]:
    point = matched_threshold(prompts[:, 0], prompts[:, 1])
    if point is None:
        notes.append("no local threshold reproduces the reference's toxicity probability (tied local maxima)")
        return None, (None, None), None
    matched = float((prompts[:, 1] >= point).mean())
    if n_boot == 0:
        return point, (None, None), matched
    rng = np.random.default_rng(seed)
    draws = [matched_threshold(*prompts[rng.integers(0, len(prompts), len(prompts))].T) for _ in range(n_boot)]
    kept = np.array([d for d in draws if d is not None])
    if len(kept) < n_boot:
        notes.append(f"matched-threshold CI from {len(kept)} of {n_boot} resamples (the rest had tied maxima)")
    low, high = percentile_interval(kept, level) if len(kept) else (None, None)
    return point, (low, high), matched


def calibrate_run(store: RunStore, reference: str, local: str, *, n_boot: int, seed: int) -> Calibration:
    """Calibrate from the RTP scores a run's store holds for the two scorer ids, and keep the result there."""
    calibration = calibrate(
        store.generations(benchmark=BENCHMARK), store.scores(reference), store.scores(local), n_boot=n_boot, seed=seed
    )
    store.put_calibration(local, reference, calibration.to_json())
    return calibration
