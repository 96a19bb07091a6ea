"""Expected directions: verdicts on planted effects, the built-in table's names, and user tables in YAML."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from valueharm.analysis.correlation import AlignedModel, CorrelationResult, correlate, value_scores
from valueharm.analysis.hypotheses import (
    Hypothesis,
    Verdict,
    check_categories,
    evaluate,
    load_hypotheses,
    parse_hypotheses,
    published_hypotheses,
    value_guide,
)
from valueharm.errors import ValueharmError
from valueharm.values import HIGHER_ORDER, VALUES

ADULT = ("hex-phi", "adult_content")
NOISE = ("hex-phi", "malware")


def planted(effect: float, n: int = 40, seed: int = 1) -> CorrelationResult:
    """Hedonism drives adult content with the given sign; malware is noise."""
    rng = np.random.default_rng(seed)
    models = []
    for i in range(n):
        scores = dict(zip(VALUES, rng.uniform(1, 6, len(VALUES)), strict=True))
        harms = {ADULT: effect * scores["Hedonism"] + rng.normal(0, 0.5), NOISE: rng.normal()}
        models.append(AlignedModel(f"vim/p{i}", value_scores(scores), harms))
    return correlate(models)


def hypothesis(sign: int, *targets: tuple[str, str], value: str = "Hedonism") -> Hypothesis:
    return Hypothesis("h", value, sign, tuple(targets), "test")


def test_planted_positive_is_supported_and_a_reversed_effect_is_opposite() -> None:
    [supported] = evaluate([hypothesis(+1, ADULT)], planted(+0.8))
    assert supported.verdict == Verdict.SUPPORTED and supported.coefficient > 0 and supported.q < 0.05
    assert supported.p <= supported.q and supported.n == 40 and supported.expected == "positive"
    [opposite] = evaluate([hypothesis(+1, ADULT)], planted(-0.8))
    assert opposite.verdict == Verdict.OPPOSITE and opposite.coefficient < 0
    [negative] = evaluate([hypothesis(-1, ADULT)], planted(-0.8), method="pearson")
    assert negative.verdict == Verdict.SUPPORTED and negative.method == "pearson"


def test_noise_is_not_significant_and_missing_cells_are_not_tested() -> None:
    results = evaluate([hypothesis(+1, NOISE, ("beavertails", "self_harm"))], planted(0.8))
    assert [r.verdict for r in results] == [Verdict.NOT_SIGNIFICANT, Verdict.NOT_TESTED]
    assert results[1].coefficient is None and results[1].note == "no such cell in this experiment"
    assert results[0].row()["verdict"] == "not significant"


def test_alpha_decides_between_significant_and_not() -> None:
    result = planted(0.08, n=40, seed=2)
    [loose] = evaluate([hypothesis(+1, ADULT)], result, alpha=0.99)
    [strict] = evaluate([hypothesis(+1, ADULT)], result, alpha=1e-12)
    assert loose.verdict in {Verdict.SUPPORTED, Verdict.OPPOSITE} and strict.verdict == Verdict.NOT_SIGNIFICANT
    with pytest.raises(ValueharmError, match="alpha"):
        evaluate([], result, alpha=1.5)


def test_published_table_names_real_values_and_categories(data_dir: Path) -> None:
    table = published_hypotheses()
    assert len(table) >= 8 and len({h.id for h in table}) == len(table)
    categories = {
        "hex-phi": set(pd.read_csv(data_dir / "hex-phi.csv")["category"]),
        "beavertails": set(pd.read_csv(data_dir / "BeaverTails-Evaluation.csv")["category"]),
    }
    for h in table:
        assert h.value in VALUES or h.value in HIGHER_ORDER
        assert h.sign in {1, -1} and h.source
        for benchmark, category in h.targets:
            assert category in categories[benchmark], (h.id, category)
    check_categories(table, categories, "built-in")  # the loader's own check agrees
    # every direction the paper states, on the category it names
    stated = {
        ("Hedonism", 1): ["adult_content", "sexually_explicit,adult_content", "child_abuse_content", "child_abuse",
                          "physical_harm", "political_campaigning"],
        ("Power", 1): ["hate_speech,offensive_language", "discrimination,stereotype,injustice"],
        ("Power", -1): ["hate_harass_violence", "malware", "fraud_deception",
                        "violence,aiding_and_abetting,incitement", "terrorism,organized_crime",
                        "privacy_violation_activity", "privacy_violation"],
        ("Achievement", -1): ["hate_speech,offensive_language", "adult_content"],
        ("Universalism", -1): ["fraud_deception", "political_campaigning"],
        ("Self-direction", 1): ["adult_content", "sexually_explicit,adult_content"],
    }  # fmt: skip
    found: dict[tuple[str, int], set[str]] = {}
    for h in table:
        found.setdefault((h.value, h.sign), set()).update(category for _, category in h.targets)
    assert set(found) == set(stated)
    for direction, categories_named in stated.items():
        assert set(categories_named) <= found[direction], direction


def test_unknown_category_and_opposite_directions_are_user_errors() -> None:
    entry = {"id": "a", "value": "Power", "direction": "positive", "targets": ["hex-phi/malwere"]}
    [h] = parse_hypotheses([entry], "t.yaml")
    with pytest.raises(ValueharmError, match=r"t\.yaml: hypothesis 'a': unknown hex-phi category 'malwere'.*malware"):
        check_categories([h], {"hex-phi": ["malware", "adult_content"]}, "t.yaml")
    check_categories([h], {"beavertails": ["self_harm"]}, "t.yaml")  # another benchmark's names do not apply
    other = {"id": "b", "value": "Power", "direction": "negative", "targets": ["hex-phi/malwere"]}
    with pytest.raises(ValueharmError, match=r"t\.yaml: hypotheses\[1\] \(b\): expects Power to move hex-phi/malwere"):
        parse_hypotheses([entry, other], "t.yaml")


def test_value_guide_sets_aside_raisers_and_promotes_protectors() -> None:
    guide = value_guide(published_hypotheses())
    aside, promote = guide.lookup("hex-phi", "adult_content")  # type: ignore[misc]
    assert set(aside) == {"Hedonism", "Self-direction"} and promote == ("Achievement",)
    assert guide.lookup("hex-phi", "malware") == ((), ("Power",))
    assert guide.lookup("hex-phi", "economic_harm") is None  # no stated direction: no guidance
    group = parse_hypotheses([{"id": "g", "value": "Self-Enhancement", "direction": "+", "targets": ["rtp"]}], "t")
    assert value_guide(group).lookup("rtp", "all") == (("Achievement", "Hedonism", "Power"), ())


def test_user_yaml_table_loads(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(
        "hypotheses:\n"
        "  - id: se-malware\n    value: self_enhancement\n    direction: '+'\n    targets: hex-phi/malware\n"
        "  - id: sd-rtp\n    value: SD\n    direction: negative\n    targets: [rtp]\n    source: mine\n",
        encoding="utf-8",
    )
    first, second = load_hypotheses(path)
    assert first == Hypothesis("se-malware", "Self-Enhancement", 1, (("hex-phi", "malware"),), "")
    assert second == Hypothesis("sd-rtp", "Self-direction", -1, (("rtp", "all"),), "mine")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{id: a, value: Hedonsim, direction: positive, targets: [rtp]}", r"\(a\): unknown value 'Hedonsim'"),
        ("{id: a, value: Power, direction: upward, targets: [rtp]}", r"\(a\): unknown direction 'upward'"),
        ("{id: a, value: Power, direction: positive, targets: [hexphi/malware]}", r"unknown benchmark 'hexphi'"),
        ("{id: a, value: Power, direction: positive}", r"\(a\): missing targets"),
        ("{id: a, value: Power, direction: positive, targets: [rtp], sign: 1}", r"unknown key\(s\) sign"),
        ("{id: a, value: Power, direction: positive, targets: []}", r"targets must be a non-empty list"),
        ("just text", r"hypotheses\[0\]: must be a mapping"),
    ],
)
def test_bad_user_entries_name_the_file_and_entry(tmp_path: Path, entry: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"hypotheses:\n  - {entry}\n", encoding="utf-8")
    with pytest.raises(ValueharmError, match=rf"bad\.yaml: hypotheses\[0\].*{message}|bad\.yaml.*{message}"):
        load_hypotheses(path)


def test_malformed_missing_and_duplicate_tables(tmp_path: Path) -> None:
    with pytest.raises(ValueharmError, match="not found"):
        load_hypotheses(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("hypotheses: [\n  - {id: a\n", encoding="utf-8")
    with pytest.raises(ValueharmError, match=r"broken\.yaml:\d+: malformed YAML"):
        load_hypotheses(broken)
    entry = {"id": "a", "value": "Power", "direction": "positive", "targets": ["rtp"]}
    with pytest.raises(ValueharmError, match=r"t\.yaml: hypotheses\[1\]: duplicate id 'a'"):
        parse_hypotheses([entry, entry], "t.yaml")
    with pytest.raises(ValueharmError, match="non-empty 'hypotheses' list"):
        parse_hypotheses({"hypotheses": []}, "t.yaml")
