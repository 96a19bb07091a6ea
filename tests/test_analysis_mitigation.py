"""Mitigation deltas: the paired bootstrap against a direct implementation, and building item harms from records."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from valueharm.analysis.correlation import benjamini_hochberg
from valueharm.analysis.mitigation import (
    condition_deltas,
    item_scores,
    mitigation_deltas,
    paired_delta,
    split_model_key,
    with_q,
)
from valueharm.errors import ValueharmError
from valueharm.records import GenerationRecord, SamplingParams, ScoreRecord

JUDGE = "judge:harmfulness@tiny"
REFUSAL = "refusal:refusal@phrases-v1"


def generation(model: str, item: str, category: str = "malware", sample: int = 0, bench: str = "hex-phi",
               error: str | None = None) -> GenerationRecord:  # fmt: skip
    return GenerationRecord(model, "tiny", bench, item, category, sample, f"Q {item}", f"Q {item}",
                            SamplingParams(), text="answer", error=error)  # fmt: skip


def direct_paired_bootstrap(before: dict[str, float], after: dict[str, float], n_boot: int, seed: int) -> tuple:
    """The documented convention, written out independently: sorted shared items, one integer draw matrix."""
    items = sorted(before.keys() & after.keys())
    diff = np.array([after[i] - before[i] for i in items])
    rng = np.random.default_rng(seed)
    boot = np.empty(n_boot)
    draws = rng.integers(0, len(items), size=(n_boot, len(items)))
    for b in range(n_boot):
        boot[b] = diff[draws[b]].sum() / len(items)
    return diff.mean(), np.percentile(boot, 2.5), np.percentile(boot, 97.5)


def test_split_model_key() -> None:
    assert split_model_key("vim/Pow+mitigation:dual") == ("vim/Pow", "dual")
    assert split_model_key("benign/grammar") == ("benign/grammar", "none")


def test_paired_bootstrap_matches_a_direct_implementation() -> None:
    rng = np.random.default_rng(7)
    before = {f"i{k:03d}": float(rng.integers(1, 6)) for k in range(120)}
    after = {item: value - float(rng.integers(0, 3)) for item, value in before.items() if item != "i005"}
    after["extra"] = 1.0
    result = paired_delta(before, after, n_boot=500, seed=11)
    delta, low, high = direct_paired_bootstrap(before, after, 500, 11)
    assert result.delta == pytest.approx(delta, abs=1e-12)
    assert (result.ci_low, result.ci_high) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    assert result.n_paired == 119 and result.n_unpaired == 2
    assert result.baseline == pytest.approx(np.mean([before[i] for i in sorted(before) if i in after]))
    assert result.ci_high < 0  # harm went down on every item or stayed
    assert paired_delta(before, after, n_boot=500, seed=11) == result  # seeded
    no_ci = paired_delta(before, after, n_boot=0)
    assert no_ci.ci_low is None and no_ci.delta == result.delta
    empty = paired_delta({"a": 1.0}, {"b": 2.0})
    assert empty.n_paired == 0 and empty.n_unpaired == 2 and math.isnan(empty.delta)
    with pytest.raises(ValueharmError, match="bootstrap"):
        paired_delta(before, after, level=1.5)


def test_condition_deltas_per_category_and_order() -> None:
    items = {f"{c}-{k}": c for c in ("malware", "fraud") for k in range(20)}
    base = {i: 4.0 for i in items}
    by_condition = {
        "dual": {i: 1.0 for i in items},
        "none": base,
        "safety": {i: (2.0 if c == "malware" else 4.0) for i, c in items.items()},
    }
    deltas = condition_deltas(by_condition, model_key="vim/Pow", benchmark="hex-phi", metric="harmfulness_score",
                              categories=items, n_boot=200)  # fmt: skip
    assert [(d.condition, d.category) for d in deltas] == [
        ("safety", "all"), ("safety", "fraud"), ("safety", "malware"),
        ("dual", "all"), ("dual", "fraud"), ("dual", "malware"),
    ]  # fmt: skip
    by_key = {(d.condition, d.category): d for d in deltas}
    assert by_key[("safety", "malware")].delta == -2.0 and by_key[("safety", "fraud")].delta == 0.0
    assert by_key[("safety", "all")].delta == -1.0 and by_key[("safety", "all")].n_paired == 40
    assert by_key[("dual", "all")].ci_low == by_key[("dual", "all")].ci_high == -3.0
    assert deltas[0].row()["model_key"] == "vim/Pow"
    assert condition_deltas({"dual": base}, model_key="m", benchmark="b", metric="x") == []  # no input-only run
    single = condition_deltas({"none": base, "value": base}, model_key="m", benchmark="b", metric="x",
                              categories=dict.fromkeys(base, "one"), n_boot=10)  # fmt: skip
    assert [d.category for d in single] == ["all"]  # one category is the overall number


def test_item_scores_join_by_key_average_samples_and_skip_failures() -> None:
    records = [
        generation("vim/Pow", "a", sample=0),
        generation("vim/Pow", "a", sample=1),
        generation("vim/Pow", "b"),
        generation("vim/Pow", "c", error="timeout"),
        generation("vim/Pow", "d"),
        generation("vim/Pow", "e"),
        generation("vim/Pow", "x", bench="beavertails"),
    ]
    keys = [r.key for r in records]
    scores = [
        ScoreRecord(keys[0], JUDGE, 5.0),
        ScoreRecord(keys[1], JUDGE, 2.0),
        ScoreRecord(keys[2], JUDGE, 1.0),
        ScoreRecord(keys[3], JUDGE, 5.0),
        ScoreRecord(keys[4], JUDGE, error="unparseable"),
        ScoreRecord(keys[5], "other:harmfulness@x", 5.0),
        ScoreRecord(keys[6], JUDGE, 5.0),
    ]
    assert item_scores(records, scores, benchmark="hex-phi", scorer=JUDGE, metric="harmfulness_score") == {
        "vim/Pow": {"a": 3.5, "b": 1.0}
    }
    assert item_scores(records, scores, benchmark="hex-phi", scorer=JUDGE, metric="harmfulness_rate") == {
        "vim/Pow": {"a": 0.5, "b": 0.0}
    }
    toxicity = [ScoreRecord(keys[0], "tox", 0.2), ScoreRecord(keys[1], "tox", 0.7)]
    assert item_scores(records, toxicity, benchmark="hex-phi", scorer="tox", metric="expected_max_toxicity") == {
        "vim/Pow": {"a": 0.7}
    }
    refusals = [ScoreRecord(keys[0], REFUSAL, 1.0), ScoreRecord(keys[2], REFUSAL, 0.0)]
    assert item_scores(records, refusals, benchmark="hex-phi", scorer=REFUSAL, metric="attack_success_rate") == {
        "vim/Pow": {"a": 0.0, "b": 1.0}
    }
    with pytest.raises(ValueharmError, match="no per-item reading"):
        item_scores(records, scores, benchmark="hex-phi", scorer=JUDGE, metric="bias_score")
    with pytest.raises(ValueharmError, match="not a refusal, guard or judge"):
        item_scores(records, scores, benchmark="hex-phi", scorer="tox", metric="attack_success_rate")


def test_mitigation_deltas_from_records_recover_a_planted_reduction() -> None:
    rng = np.random.default_rng(0)
    records, scores = [], []
    for model, drop in (("vim/Pow", 0.0), ("vim/Pow+mitigation:safety", 1.0), ("vim/Pow+mitigation:dual", 2.0),
                        ("vanilla", 0.0)):  # fmt: skip
        for k in range(60):
            category = "malware" if k % 2 else "fraud_deception"
            record = generation(model, f"{category}-{k:02d}", category)
            records.append(record)
            harm = float(np.clip(rng.integers(3, 6) - drop, 1, 5))
            scores.append(ScoreRecord(record.key, JUDGE, harm))
    deltas = mitigation_deltas(records, scores, benchmark="hex-phi", scorer=JUDGE, metric="harmfulness_score",
                               n_boot=300, seed=1)  # fmt: skip
    assert {d.model_key for d in deltas} == {"vim/Pow"}  # vanilla was never mitigated
    overall = {d.condition: d for d in deltas if d.category == "all"}
    assert list(overall) == ["safety", "dual"]
    assert overall["dual"].delta < overall["safety"].delta < 0
    assert overall["dual"].ci_high < 0 and overall["dual"].n_paired == 60
    assert {d.category for d in deltas} == {"all", "malware", "fraud_deception"}
    assert mitigation_deltas(records, scores, benchmark="hex-phi", scorer=JUDGE, metric="harmfulness_score",
                             models=["vanilla"]) == []  # fmt: skip


def test_per_category_deltas_get_paired_p_and_q_over_categories_and_conditions() -> None:
    """A reduction planted in one category of one condition survives BH over every delta; the noise does not."""
    rng = np.random.default_rng(3)
    categories = [f"c{k}" for k in range(6)]
    items = {f"{c}-{i:02d}": c for c in categories for i in range(30)}
    baseline = {item: float(rng.integers(1, 6)) for item in items}
    by_condition = {"none": baseline}
    for condition in ("safety", "value"):
        by_condition[condition] = {
            item: float(np.clip(v + rng.integers(-1, 2) - (2 if condition == "value" and items[item] == "c0" else 0),
                                1, 5))
            for item, v in baseline.items()
        }  # fmt: skip
    deltas = with_q(condition_deltas(by_condition, model_key="vim/Pow", benchmark="hex-phi",
                                     metric="harmfulness_score", categories=items, n_boot=200))  # fmt: skip
    found = {(d.condition, d.category): d for d in deltas}
    planted = found[("value", "c0")]
    assert planted.q is not None and planted.q < 0.01 and planted.delta < -1
    differences = [by_condition["value"][i] - baseline[i] for i in sorted(items) if items[i] == "c0"]
    assert planted.p == pytest.approx(stats.ttest_1samp(differences, 0).pvalue)
    noise = [d for key, d in found.items() if key[1] not in {"c0", "all"}]
    assert all(d.q is not None and d.q > 0.05 for d in noise)
    expected = benjamini_hochberg([d.p for d in deltas])
    np.testing.assert_allclose([d.q for d in deltas], expected)
    assert paired_delta({"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 2.0}).p is None  # no change, no test
    assert paired_delta({"a": 1.0, "b": 2.0}, {"a": 0.0, "b": 1.0}).p == 0.0  # the same drop on every item
