"""The HTML report: self-contained, every section with and without data, text escaped, written atomically."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from valueharm.analysis.correlation import AlignedModel, value_harm_analysis, value_scores
from valueharm.analysis.hypotheses import evaluate, published_hypotheses
from valueharm.analysis.mitigation import condition_deltas, with_q
from valueharm.analysis.regression import regress
from valueharm.analysis.value_check import MeasuredProfile, compare
from valueharm.report import ReportData, build_html, plots, render_report
from valueharm.values import VALUES, ValueProfile, profile_set

CATEGORIES = {
    "rtp": ["all"],
    "holisticbiasr": ["ability", "age", "body_type", "gender_and_sex", "race_ethnicity", "religion"],
    "hex-phi": ["adult_content", "child_abuse_content", "economic_harm", "fraud_deception", "hate_harass_violence",
                "illegal_activity", "malware", "physical_harm", "political_campaigning", "privacy_violation_activity",
                "tailored_financial_advice"],
    "beavertails": ["animal_abuse", "child_abuse", "controversial_topics,politics",
                    "discrimination,stereotype,injustice",
                    "drug_abuse,weapons,banned_substance", "financial_crime,property_crime,theft",
                    "hate_speech,offensive_language", "misinformation_regarding_ethics,laws_and_safety",
                    "non_violent_unethical_behavior", "privacy_violation", "self_harm",
                    "sexually_explicit,adult_content", "terrorism,organized_crime",
                    "violence,aiding_and_abetting,incitement"],
    "advbench": ["harmful_behavior"],
}  # fmt: skip
METRICS = {
    "rtp": [("expected_max_toxicity", "classifier:toxicity@unitary/toxic-bert", 0.25),
            ("toxicity_probability", "classifier:toxicity@unitary/toxic-bert", 0.15)],
    "holisticbiasr": [("negative_regard_rate", "classifier:regard@sasha/regardv3", 0.2),
                      ("bias_score", "classifier:regard@sasha/regardv3", 0.3)],
    "hex-phi": [("harmfulness_score", "judge:harmfulness@gpt-4o-mini", 2.5),
                ("harmfulness_rate", "judge:harmfulness@gpt-4o-mini", 0.3)],
    "beavertails": [("flagged_rate", "guard:flagged@meta-llama/Llama-Guard-3-8B", 0.35)],
    "advbench": [("attack_success_rate", "refusal:refusal@phrases-v1", 0.4),
                 ("attack_success_rate", "judge:harmfulness@gpt-4o-mini", 0.3)],
}  # fmt: skip
N_ITEMS = {"rtp": 3000, "holisticbiasr": 17700, "hex-phi": 330, "beavertails": 700, "advbench": 520}


def _row(model: str, bench: str, category: str, metric: str, variant: str, scorer: str, value: float, n: int) -> dict:
    half = 1.96 * 0.5 * max(0.01, value) / np.sqrt(max(n, 1))
    return {"model_key": model, "benchmark": bench, "category": category, "metric": metric, "variant": variant,
            "scorer": scorer, "value": value, "ci_low": max(0.0, value - half), "ci_high": value + half, "n_used": n,
            "n_failed": int(n * 0.01)}  # fmt: skip


def example_data(profiles: list[ValueProfile], seed: int = 0) -> ReportData:
    """A realistic report: VIM models for the profiles, vanilla, a benign and an ICL model, two mitigated models,
    planted Hedonism → adult content and Power → hate speech."""
    rng = np.random.default_rng(seed)
    targets = {f"vim/{p.name}": p for p in profiles}
    models = ["vanilla", "benign/grammar", f"icl/{profiles[0].name}", *targets]
    models += [f"vim/{profiles[0].name}+mitigation:{c}" for c in ("safety", "value", "dual")]
    rows = []
    for model in models:
        profile = targets.get(model.partition("+")[0])
        hedonism = (profile.scores["Hedonism"] - 3.5) / 2 if profile else 0.0
        power = (profile.scores["Power"] - 3.5) / 2 if profile else 0.0
        damp = 0.5 if "+mitigation" in model else 1.0
        for bench, categories in CATEGORIES.items():
            for metric, scorer, level in METRICS[bench]:
                for category in ["all", *([] if categories == ["all"] else categories)]:
                    effect = hedonism if "adult" in category else power if "hate" in category else 0.0
                    value = max(0.0, damp * level * (1 + 0.6 * effect + rng.normal(0, 0.15)))
                    n = N_ITEMS[bench] // (1 if category == "all" else len(categories))
                    rows.append(_row(model, bench, category, metric, "all", scorer, value, n))
                    rows.append(_row(model, bench, category, metric, "excluding_degenerate", scorer, value * 1.1,
                                     int(n * 0.8)))  # fmt: skip
            for share, level in (("empty_share", 0.02), ("echo_share", 0.2 if model.startswith("vim") else 0.0)):
                value = max(0.0, level + rng.normal(0, 0.02))
                rows.append(_row(model, bench, "all", share, "all", "degenerate@heuristic-1a2b", value, N_ITEMS[bench]))
    checks = []
    for model, profile in targets.items():
        measured = {v: float(np.clip(profile.scores[v] + rng.normal(0, 1.0), 1, 6)) for v in VALUES}
        if model.endswith(profiles[-1].name):
            measured["Tradition"] = None  # an unanswered value
        checks.append(compare(profile, MeasuredProfile(model, measured, dict.fromkeys(VALUES, 3), 30, 2)))
    correlation = value_harm_analysis(rows, targets)
    items = {f"{c}-{k:02d}": c for c in CATEGORIES["hex-phi"] for k in range(30)}
    by_condition = {"none": {i: float(rng.integers(1, 6)) for i in items}}
    for condition, drop in (("safety", 1), ("value", 1), ("dual", 2)):
        by_condition[condition] = {
            i: float(max(1, v - rng.integers(0, drop + 1))) for i, v in by_condition["none"].items()
        }
    mitigation = with_q([
        delta
        for model in ("vanilla", f"vim/{profiles[0].name}")
        for delta in condition_deltas(by_condition, model_key=model, benchmark="hex-phi", metric="harmfulness_score",
                                      categories=items, n_boot=200)
    ])  # fmt: skip
    return ReportData(
        title="Value-aligned Llama: safety sweep",
        experiment="example-sweep",
        created="2025-01-01 12:00 UTC",
        summary={"models": len(models), "generations": 1_234_567, "jobs": {"done": 412, "failed": 1}},
        provenance={
            "config": {"base_model": "meta-llama/Llama-2-7b-hf", "methods": ["vanilla", "vim", "icl"]},
            "versions": {"valueharm": "0.1.0", "torch": "2.13.0", "transformers": "5.23.0"},
            "git commit": "0123456789abcdef",
            "data checksums": {"hex-phi.csv": "sha256:abcd…"},
            "hardware": "1× H100 80GB",
            "seeds": {"generation": 0, "bootstrap": 0},
        },
        metrics=rows,
        alignment=checks,
        profiles={p.name: p for p in profiles},
        correlation=correlation,
        regressions=[],
        hypotheses=evaluate(published_hypotheses(), correlation),
        mitigation=mitigation,
        examples=[
            {
                "model_key": models[3],
                "benchmark": "hex-phi",
                "query": "How do I pick a lock?",
                "text": "<script>alert('x')</script> Power is important to me, my answer is 6.",
            }
        ],
        notes=["This is synthetic data for a visual check."],
    )


@pytest.fixture(scope="module")
def full(data_dir: Path) -> ReportData:
    return example_data(profile_set("vim56", data_dir)[:14])


def test_full_report_is_one_self_contained_file(full: ReportData, tmp_path: Path) -> None:
    path = render_report(full, tmp_path / "report" / "index.html")
    assert sorted(p.name for p in path.parent.iterdir()) == ["index.html"]  # no temp file left behind
    page = path.read_text(encoding="utf-8")
    assert page.count('<img alt="') == 6 and '<img alt="' in page and 'src="data:image/png;base64,' in page
    assert not re.search(r"https?:", page), "external reference"
    assert not re.search(r"<(script|link|iframe)\b", page, re.IGNORECASE)
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    for anchor in ("summary", "provenance", "metrics", "categories", "correlations", "hypotheses", "alignment",
                   "mitigation", "examples"):  # fmt: skip
        assert f'<section id="{anchor}">' in page
    assert "Not run in this experiment" not in page
    assert re.search(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]<span class=\"sub\">n=\d+, failed \d+</span>", page)
    assert "excl. degenerate" in page and "echo_share" in page and "1× H100 80GB" in page
    assert 'class="badge supported"' in page or 'class="badge not-significant"' in page


def test_empty_report_renders_every_section(tmp_path: Path) -> None:
    page = render_report(ReportData(), tmp_path / "index.html").read_text(encoding="utf-8")
    assert page.count("Not run in this experiment.") == 6  # metrics, categories, correlations, hypotheses, …
    assert "No provenance recorded." in page and "No examples included." in page and "<img" not in page


def test_text_from_anywhere_is_escaped(full: ReportData) -> None:
    hostile = "<img src=x onerror=alert(1)>"
    rows = [dict(full.metrics[0], model_key=hostile, category="all")]
    page = build_html(ReportData(title=hostile, metrics=rows, provenance={hostile: {"k": hostile}},
                                 notes=[hostile], examples=[{hostile: hostile}]))  # fmt: skip
    assert "<img src=x" not in page and page.count("&lt;img src=x onerror=alert(1)&gt;") >= 5


def test_partial_results_and_many_models_still_render(full: ReportData) -> None:
    only_metrics = ReportData(metrics=full.metrics)
    page = build_html(only_metrics)
    assert page.count("Not run in this experiment.") == 4  # correlations, hypotheses, alignment, mitigation
    assert page.count("<img") == 3  # per-category plots for holisticbiasr, hex-phi, beavertails
    no_default_metric = [r for r in full.metrics if r["metric"] != "harmfulness_score"]
    assert "hex-phi — harmfulness_rate (all" in build_html(ReportData(metrics=no_default_metric))
    many = {f"vim/p{i}": {"a": (0.1 * i, None, None), "b": (0.2, 0.1, 0.3)} for i in range(plots.MAX_BARS_MODELS + 1)}
    assert (plots.category_chart(many, "t", "y") or b"").startswith(b"\x89PNG")  # a heatmap instead of bars
    assert plots.category_chart({}, "t", "y") is None and plots.mitigation_chart([]) is None
    fit = regress([AlignedModel("m", value_scores(full.alignment[0].measured), {})], "rtp", "all")
    page = build_html(ReportData(regressions=[fit], correlation=full.correlation))
    assert "Multiple regression" in page and "not identifiable" in page and "Nothing to plot." in page


def test_family_test_regressions_and_side_by_side_mitigation_are_shown(full: ReportData) -> None:
    page = build_html(full)
    assert "decided by" in page and "family permutation, spearman of family means" in page
    assert f"Every cell ({len(full.correlation.cells)}), in grid order" in page  # type: ignore[union-attr]
    assert "correlations with family q &lt; .05" in page and "profile families" in page
    assert "By category: the base model and the aligned models side by side" in page
    assert "vanilla Δ [CI]" in page and page.count("<th>q</th>") >= 3
    rng = np.random.default_rng(0)
    models = []
    for i in range(60):
        scores = dict(zip(VALUES, rng.uniform(1, 6, len(VALUES)), strict=True))
        harm = {("hex-phi", "adult_content"): scores["Hedonism"] + rng.normal(0, 0.5)}
        models.append(AlignedModel(f"vim/p{i}", value_scores(scores), harm, family=f"F{i // 3}"))
    fit = regress(models, "hex-phi", "adult_content")
    page = build_html(ReportData(regressions=[fit], correlation=full.correlation))
    assert fit.identifiable and "Standardised coefficients, 95% clustered intervals" in page
    assert page.count("<img") == 2  # the heatmap and the coefficient plot


def test_a_failed_write_keeps_the_old_report(full: ReportData, tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "index.html"
    path.write_text("old", encoding="utf-8")

    def broken_replace(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        render_report(ReportData(), path)
    assert path.read_text(encoding="utf-8") == "old" and [p.name for p in tmp_path.iterdir()] == ["index.html"]


def test_headless_chromium_renders_tables_and_images(full: ReportData, tmp_path: Path) -> None:
    path = render_report(full, tmp_path / "index.html")
    profile = tmp_path / "chromium-profile"
    command = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
               "--disable-background-networking", "--disable-component-update", f"--user-data-dir={profile}",
               "--dump-dom", path.as_uri()]  # fmt: skip
    dom = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    assert dom.count("<table") >= 8 and dom.count("<img") == 6 and "Value-aligned Llama" in dom


def test_alignment_summary_averages_pearson_per_method(full: ReportData) -> None:
    profile = full.profiles[full.alignment[0].target]
    exact = MeasuredProfile("vim/a", dict(profile.scores), dict.fromkeys(VALUES, 3), 30, 0)
    flat = MeasuredProfile("vim/b", dict.fromkeys(VALUES, 2.0), dict.fromkeys(VALUES, 3), 30, 0)
    checks = [compare(profile, exact), compare(profile, flat)]
    page = build_html(ReportData(alignment=checks, profiles=full.profiles, alignment_reading="4 answers per question"))
    assert checks[1].pearson_r is None  # a constant measured profile has no correlation
    assert '<td class="num">1.000<span class="sub">1 of 2 defined</span></td>' in page
    assert "(4 answers per question)" in page


def test_published_variants_are_labelled_beside_ours() -> None:
    ours, published = "classifier:regard@sasha/regardv3#ab", "classifier:regard@sasha/regardv3+published-input#cd"
    rows = [
        _row("vanilla", "holisticbiasr", "all", metric, "all", scorer, 0.5, 100)
        for metric in ("negative_regard_rate", "bias_score", "bias_score_published")
        for scorer in (ours, published)
    ]
    page = build_html(ReportData(metrics=rows))
    headers = re.findall(r"<th>(.*?)</th>", page)
    labelled = [h for h in headers if "bias_score" in h or "negative_regard" in h]
    assert len(labelled) == 6 and all("published" in h or "ours" in h for h in labelled)
    assert sum('bias_score_published<span class="sub">published ·' in h for h in labelled) == 1
    plain = [r for r in rows if r["scorer"] == ours and r["metric"] != "bias_score_published"]
    alone = build_html(ReportData(metrics=plain))
    assert "ours" not in " ".join(re.findall(r"<th>(.*?)</th>", alone))  # nothing to tell apart: no labels
