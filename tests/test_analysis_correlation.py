"""Value–harm correlation on a synthetic sweep with one planted effect: Hedonism drives HEx-PHI adult content."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from valueharm.analysis.correlation import (
    DIMENSIONS,
    AlignedModel,
    HarmMetric,
    benjamini_hochberg,
    correlate,
    harm_metrics,
    harm_values,
    value_harm_analysis,
    value_scores,
)
from valueharm.analysis.value_check import MeasuredProfile
from valueharm.values import HIGHER_ORDER, VALUES, ValueProfile

HEX_CATEGORIES = ("adult_content", "fraud_deception", "malware", "physical_harm")
SCORER = "judge:harmfulness@tiny"


def metric_row(model: str, benchmark: str, category: str, metric: str, value: float | None, **extra: object) -> dict:
    row = {"model_key": model, "benchmark": benchmark, "category": category, "metric": metric, "variant": "all",
           "scorer": SCORER, "value": value, "ci_low": None, "ci_high": None, "n_used": 30, "n_failed": 0}  # fmt: skip
    return {**row, **extra}


def planted_sweep(n: int = 30, seed: int = 0, effect: float = 0.8) -> tuple[dict[str, ValueProfile], list[dict]]:
    """n random profiles; HEx-PHI adult_content harm = effect · Hedonism_z + noise, every other cell pure noise."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(1, 6, size=(n, len(VALUES)))
    hedonism = scores[:, VALUES.index("Hedonism")]
    hedonism_z = (hedonism - hedonism.mean()) / hedonism.std()
    profiles, rows = {}, []
    for i in range(n):
        model = f"vim/p{i:02d}"
        profiles[model] = ValueProfile(f"p{i:02d}", dict(zip(VALUES, scores[i], strict=True)))
        for category in HEX_CATEGORIES:
            harm = 2.5 + (effect * hedonism_z[i] if category == "adult_content" else 0) + rng.normal(0, 0.5)
            rows.append(metric_row(model, "hex-phi", category, "harmfulness_score", harm))
        rows.append(metric_row(model, "hex-phi", "all", "harmfulness_score", 2.5 + rng.normal(0, 0.2)))
        rows.append(metric_row(model, "rtp", "all", "expected_max_toxicity", 0.3 + rng.normal(0, 0.05)))
        # rows the default choice must ignore: another metric, the other variant, a model without a profile
        rows.append(metric_row(model, "hex-phi", "adult_content", "harmfulness_rate", 0.9))
        rows.append(
            metric_row(model, "hex-phi", "adult_content", "harmfulness_score", 5.0, variant="excluding_degenerate")
        )
    rows.append(metric_row("vanilla", "hex-phi", "adult_content", "harmfulness_score", 5.0))
    return profiles, rows


@pytest.fixture(scope="module")
def sweep() -> tuple[dict[str, ValueProfile], list[dict]]:
    return planted_sweep()


def test_every_cell_equals_scipy_on_independently_built_arrays(sweep) -> None:
    profiles, rows = sweep
    result = value_harm_analysis(rows, profiles)
    frame = pd.DataFrame([r for r in rows if r["metric"] in {"harmfulness_score", "expected_max_toxicity"}
                          and r["variant"] == "all" and r["model_key"] in profiles])  # fmt: skip
    x = pd.DataFrame({m: p.scores for m, p in profiles.items()}).T
    for group, members in HIGHER_ORDER.items():
        x[group] = x[list(members)].mean(axis=1)
    assert len(result.cells) == 6 * len(DIMENSIONS)  # hex-phi overall + 4 categories, rtp overall
    assert result.n_models == 30
    for cell in result.cells:
        y = frame[(frame.benchmark == cell.benchmark) & (frame.category == cell.category)].set_index("model_key")
        xs, ys = x.loc[y.index, cell.value].to_numpy(float), y["value"].to_numpy(float)
        assert cell.n == 30 and cell.tested
        assert cell.spearman_rho == pytest.approx(stats.spearmanr(xs, ys).statistic, abs=1e-12)
        assert cell.spearman_p == pytest.approx(stats.spearmanr(xs, ys).pvalue, rel=1e-9)
        assert cell.pearson_r == pytest.approx(stats.pearsonr(xs, ys).statistic, abs=1e-12)
        assert cell.pearson_p == pytest.approx(stats.pearsonr(xs, ys).pvalue, rel=1e-9)
    spearman_q = stats.false_discovery_control([c.spearman_p for c in result.cells])
    pearson_q = stats.false_discovery_control([c.pearson_p for c in result.cells])
    np.testing.assert_allclose([c.spearman_q for c in result.cells], spearman_q, rtol=1e-12)
    np.testing.assert_allclose([c.pearson_q for c in result.cells], pearson_q, rtol=1e-12)


def test_planted_cell_is_the_most_significant_and_positive(sweep) -> None:
    profiles, rows = sweep
    result = value_harm_analysis(rows, profiles)
    best = min(result.cells, key=lambda c: c.spearman_p)
    assert (best.benchmark, best.category, best.value) == ("hex-phi", "adult_content", "Hedonism")
    assert best.spearman_rho > 0.6 and best.pearson_r > 0.6 and best.spearman_q < 0.01
    null = [c for c in result.cells if c.category != "adult_content"]
    assert sum(c.spearman_q < 0.05 for c in null) / len(null) <= 0.05
    assert sum(c.pearson_q < 0.05 for c in null) / len(null) <= 0.05


def test_the_finding_names_the_strongest_cell_or_says_there_is_none(sweep) -> None:
    profiles, rows = sweep
    found = value_harm_analysis(rows, profiles).finding()
    assert found.startswith("1 of ") and "Hedonism with hex-phi/adult_content harmfulness_score" in found
    null_rows = [r for r in rows if r["category"] != "adult_content"]
    none = value_harm_analysis(null_rows, profiles).finding()
    assert none.startswith("No value–harm relation found: none of the ") and "over the 30 models" in none
    constant = [{**r, "value": 1.0} for r in null_rows]
    assert value_harm_analysis(constant, profiles).finding().startswith("No value–harm correlation could be tested")


def test_grid_order_and_tidy_rows(sweep) -> None:
    profiles, rows = sweep
    result = value_harm_analysis(rows, profiles)
    assert result.columns()[:2] == [("rtp", "all"), ("hex-phi", "all")]  # default benchmark order, overall first
    assert [c.value for c in result.cells[: len(DIMENSIONS)]] == list(DIMENSIONS)
    tidy = result.rows()
    assert len(tidy) == len(result.cells) and tidy[0]["x_source"] == "target" and "spearman_q" in tidy[0]


def test_benjamini_hochberg_matches_scipy_and_passes_nan_through() -> None:
    rng = np.random.default_rng(3)
    p = np.concatenate([rng.uniform(size=40), rng.uniform(0, 0.01, size=10), [0.0, 1.0, 0.5, 0.5]])
    np.testing.assert_allclose(benjamini_hochberg(p), stats.false_discovery_control(p), rtol=1e-12)
    with_nan = p.copy()
    with_nan[[3, 17]] = np.nan
    q = benjamini_hochberg(with_nan)
    assert np.isnan(q[[3, 17]]).all()
    kept = ~np.isnan(with_nan)
    np.testing.assert_allclose(q[kept], stats.false_discovery_control(with_nan[kept]), rtol=1e-12)
    assert np.isnan(benjamini_hochberg([math.nan])).all() and benjamini_hochberg([]).size == 0


def test_untestable_cells_are_nan_noted_and_left_out_of_bh() -> None:
    models = [
        AlignedModel(f"m{i}", {**dict.fromkeys(DIMENSIONS, float(i)), "Power": 3.0},
                     {("hex-phi", "malware"): float(i % 3), ("hex-phi", "physical_harm"): 1.0}
                     if i < 5 else {("hex-phi", "malware"): float(i % 3)})
        for i in range(8)
    ]  # fmt: skip
    models.append(AlignedModel("few", dict.fromkeys(DIMENSIONS, 1.0), {("rtp", "all"): 0.2}))
    result = correlate(models, dimensions=("Power", "Hedonism"))
    power = result.cell("hex-phi", "malware", "Power")
    assert power is not None and not power.tested and "same for every model" in (power.note or "")
    assert math.isnan(power.spearman_rho) and math.isnan(power.spearman_q)
    constant_y = result.cell("hex-phi", "physical_harm", "Hedonism")
    assert constant_y is not None and "harm metric is the same" in (constant_y.note or "")
    too_few = result.cell("rtp", "all", "Hedonism")
    assert too_few is not None and too_few.n == 1 and "at least 3" in (too_few.note or "")
    tested = [c for c in result.cells if c.tested]
    assert len(tested) == 1
    assert tested[0].spearman_q == pytest.approx(tested[0].spearman_p)  # a family of one
    assert any("not tested" in note for note in result.notes)


def test_harm_values_choose_metric_variant_scorer_and_scope() -> None:
    rows = [
        metric_row("a", "hex-phi", "malware", "harmfulness_score", 2.0),
        metric_row("a", "hex-phi", "malware", "harmfulness_score", 4.0, scorer="judge:harmfulness@zz"),
        metric_row("a", "hex-phi", "malware", "harmfulness_score", 3.0, variant="excluding_degenerate"),
        metric_row("a", "hex-phi", "all", "harmfulness_score", None),
        metric_row("a", "rtp", "all", "expected_max_toxicity", 0.4),
        metric_row("b", "advbench", "harmful_behavior", "attack_success_rate", 0.7),
        metric_row("b", "advbench", "all", "attack_success_rate", 0.7),
    ]
    harms = harm_values(rows)
    assert harms.values == {"a": {("hex-phi", "malware"): 2.0, ("rtp", "all"): 0.4}, "b": {("advbench", "all"): 0.7}}
    assert harms.sources["hex-phi"].scorer == SCORER
    assert any("also available: judge:harmfulness@zz" in note for note in harms.notes)
    chosen = harm_values(rows, {"hex-phi": HarmMetric("harmfulness_score", "excluding_degenerate", categories="each")})
    assert chosen.values == {"a": {("hex-phi", "malware"): 3.0}}
    assert harm_values(rows, models={"b"}).values == {"b": {("advbench", "all"): 0.7}}
    other_scorer = harm_values(rows, {"hex-phi": HarmMetric("harmfulness_score", scorer="judge:harmfulness@zz")})
    assert other_scorer.values["a"] == {("hex-phi", "malware"): 4.0} and not other_scorer.notes


def test_harm_metric_overrides_keep_the_benchmark_scope() -> None:
    chosen = harm_metrics({"hex-phi": "harmfulness_rate", "rtp": "toxicity_probability", "custom": "x"})
    assert chosen["hex-phi"] == HarmMetric("harmfulness_rate", categories="both")
    assert chosen["rtp"] == HarmMetric("toxicity_probability", categories="overall")
    assert chosen["custom"].metric == "x" and chosen["beavertails"].metric == "flagged_rate"


def test_measured_profiles_use_pairwise_complete_models(sweep) -> None:
    profiles, rows = sweep
    measured = {
        model: MeasuredProfile(model, {**profile.scores, "Power": None if i < 5 else profile.scores["Power"]},
                               dict.fromkeys(VALUES, 3), 30, 0)
        for i, (model, profile) in enumerate(profiles.items())
    }  # fmt: skip
    result = value_harm_analysis(rows, measured, x_source="measured")
    assert result.x_source == "measured"
    assert result.cell("hex-phi", "malware", "Power").n == 25  # type: ignore[union-attr]
    assert result.cell("hex-phi", "malware", "Self-Enhancement").n == 25  # type: ignore[union-attr]
    assert result.cell("hex-phi", "malware", "Hedonism").n == 30  # type: ignore[union-attr]
    scores = value_scores(measured["vim/p00"])
    assert scores["Power"] is None and scores["Self-Enhancement"] is None
    assert scores["Conservation"] == pytest.approx(
        np.mean([profiles["vim/p00"].scores[v] for v in HIGHER_ORDER["Conservation"]])
    )
