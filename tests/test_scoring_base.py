"""The scorer registry, CLI specs, id grammar and the (benchmark, kind) → metric table."""

from __future__ import annotations

from pathlib import Path

import pytest

from valueharm.data.benchmarks import BENCHMARKS
from valueharm.errors import UnknownNameError, ValueharmError
from valueharm.scoring import FEEDS, SCORERS, ScorerKind, ScorerSpec, applies_to, build_scorer, parse_scorer_spec
from valueharm.scoring.base import scorer_id, scorer_kind, short_hash
from valueharm.scoring.heuristics import LexiconScorer


def test_known_scorers():
    assert set(SCORERS.names()) >= {"classifier", "guard", "refusal", "lexicon"}


def test_parse_typed_options():
    spec = parse_scorer_spec(" classifier:model=/models/tox, task=regard,max_length=128,trust_remote_code=yes ")
    assert spec == ScorerSpec(
        "classifier", {"model": "/models/tox", "task": "regard", "max_length": 128, "trust_remote_code": True}
    )
    assert parse_scorer_spec("refusal") == ScorerSpec("refusal", {})
    assert parse_scorer_spec("classifier:model=x,positive_label=none").options["positive_label"] is None
    assert parse_scorer_spec("lexicon:data_dir=~/data").options["data_dir"] == Path("~/data").expanduser()
    assert parse_scorer_spec("guard:model=m,template=/t.txt").options["template"] == Path("/t.txt")


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("clasifier:model=x", "unknown scorer 'clasifier'; did you mean: classifier?"),
        ("perplexity", "unknown scorer 'perplexity'; known: classifier, guard, judge, lexicon, perspective, refusal"),
        ("classifier:model=x,colour=red", "scorer 'classifier' has no option 'colour'; its options: model, task"),
        ("classifier:model=x,max_length=long", "option max_length='long': expected an integer"),
        ("classifier:model=x,trust_remote_code=maybe", "option trust_remote_code='maybe': expected true or false"),
        ("classifier:model", "expected key=value, got 'model'"),
        ("classifier:model=a,model=b", "option 'model' given twice"),
    ],
)
def test_bad_specs(spec: str, error: str):
    with pytest.raises(ValueharmError) as caught:
        parse_scorer_spec(spec)
    assert error in str(caught.value) and "\n" not in str(caught.value)


def test_unknown_scorer_is_an_unknown_name():
    with pytest.raises(UnknownNameError):
        build_scorer("perplexity")


def test_build_fills_context_and_names_missing_options(data_dir: Path):
    scorer = build_scorer("lexicon", data_dir=data_dir, device="cpu")  # device: not a lexicon option, ignored
    assert isinstance(scorer, LexiconScorer) and scorer.data_dir == data_dir
    assert build_scorer(f"lexicon:data_dir={data_dir}", data_dir="/elsewhere").data_dir == data_dir  # spec wins
    with pytest.raises(ValueharmError, match=r"scorer 'classifier' needs option\(s\) model: classifier:model=…"):
        build_scorer("classifier")
    with pytest.raises(ValueharmError, match="scorer 'refusal' has no option 'x'"):
        build_scorer(ScorerSpec("refusal", {"x": 1}))


def test_ids_encode_the_kind():
    assert scorer_id("classifier", ScorerKind.REGARD, "sasha/regardv3", "ab12cd34") == (
        "classifier:regard@sasha/regardv3#ab12cd34"
    )
    assert scorer_kind("judge:harmfulness@gpt-4o#1234") is ScorerKind.HARMFULNESS
    assert scorer_kind("lexicon:toxicity@heuristic-profanity_en#45214f1e") is ScorerKind.TOXICITY
    assert scorer_kind("classifier:toxicity@C:/models/x@2#1") is ScorerKind.TOXICITY
    for foreign in ("judge", "judge:score@x", "lexicon:toxicity", ":toxicity@x"):
        assert scorer_kind(foreign) is None
    assert short_hash("a", 1) == short_hash("a", 1) != short_hash("a", 2) and len(short_hash()) == 8


def test_every_fed_benchmark_is_registered_and_every_kind_applies_somewhere():
    assert all(benchmark in BENCHMARKS for benchmark, _ in FEEDS)
    assert applies_to(ScorerKind.TOXICITY) == ("rtp",)
    assert applies_to(ScorerKind.REFUSAL) == ("hex-phi", "beavertails", "advbench")
    assert all(applies_to(kind) for kind in ScorerKind)
