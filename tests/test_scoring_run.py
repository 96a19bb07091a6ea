"""score_run on a real RunStore: only missing work is done, in batches; a finished run makes no scorer call."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from test_scoring_classifier import CLEAN, TOXIC, build_classifier

from valueharm.errors import ValueharmError
from valueharm.records import GenerationRecord, SamplingParams, ScoreRecord
from valueharm.scoring import ClassifierScorer, RefusalScorer, ScorerKind, score_run
from valueharm.store import RunStore


def generation(benchmark: str, item: str, text: str, error: str | None = None, model: str = "vim/Pow"):
    return GenerationRecord(
        model_key=model, base_model="tiny", benchmark=benchmark, item_id=item, category="c", sample=0,
        prompt=f"QUESTION: {item}\nANSWER:", query=item, params=SamplingParams(), text=text, error=error,
    )  # fmt: skip


@dataclass
class Counting:
    """Wraps a scorer and counts every call that could load a model or reach an API."""

    inner: RefusalScorer | ClassifierScorer
    checks: int = 0
    batches: list[int] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.inner.id

    @property
    def kind(self) -> ScorerKind:
        return self.inner.kind

    @property
    def heuristic(self) -> bool:
        return self.inner.heuristic

    def check(self) -> None:
        self.checks += 1
        self.inner.check()

    def score(self, batch: Sequence[GenerationRecord]) -> list[ScoreRecord]:
        self.batches.append(len(batch))
        return self.inner.score(batch)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    store = RunStore(tmp_path / "results.sqlite")
    records = [
        generation("advbench", f"adv-{i:03d}", "I'm sorry, I can't." if i % 2 else "Sure, here is") for i in range(5)
    ]
    records += [
        generation("advbench", "adv-009", "", error="HTTP 500"),
        generation("rtp", "rtp-00000", "Sure, here is"),
        generation("hex-phi", "a-01", "I cannot help with that."),
    ]
    store.add_generations(records)
    yield store
    store.close()


def test_scores_missing_work_in_batches_and_nothing_on_rerun(store: RunStore):
    scorer = Counting(RefusalScorer())
    summary = score_run(store, scorer, batch_size=2, progress=False)
    assert (summary.scored, summary.errors, summary.cached, summary.failed_generations) == (6, 0, 0, 1)
    assert summary.benchmarks == ("hex-phi", "beavertails", "advbench") and summary.scorer == scorer.id
    assert scorer.checks == 1 and scorer.batches == [2, 2, 2]  # batches run across benchmarks
    rows = {s.key: s for s in store.scores(scorer.id)}
    assert len(rows) == 6 and sum(s.value for s in rows.values()) == 3  # adv-001, adv-003, hex-phi refused
    assert generation("rtp", "rtp-00000", "").key not in rows  # rtp is not a refusal benchmark

    again = Counting(RefusalScorer())
    summary = score_run(store, again, progress=False)
    assert (again.checks, again.batches) == (0, [])
    assert (summary.scored, summary.cached, summary.failed_generations) == (0, 6, 1)


def test_new_generations_and_retried_failures_are_scored_once(store: RunStore):
    score_run(store, RefusalScorer(), progress=False)
    store.add_generations(
        [generation("advbench", "adv-009", "I cannot do that."), generation("advbench", "adv-010", "x")]
    )
    scorer = Counting(RefusalScorer())
    summary = score_run(store, scorer, benchmarks=["advbench"], progress=False)
    assert (summary.scored, summary.cached, summary.failed_generations, scorer.batches) == (2, 5, 0, [2])


def test_inapplicable_benchmarks_and_bad_batch_sizes_fail_before_work(store: RunStore):
    scorer = Counting(RefusalScorer())
    with pytest.raises(ValueharmError, match="measures refusal, which feeds no metric on rtp; it applies to hex-phi"):
        score_run(store, scorer, benchmarks=["advbench", "rtp"], progress=False)
    with pytest.raises(ValueharmError, match="batch size must be ≥ 1"):
        score_run(store, scorer, batch_size=0, progress=False)
    assert (scorer.checks, scorer.batches, store.scores()) == (0, [], [])


class Broken(RefusalScorer):
    def score(self, batch: Sequence[GenerationRecord]) -> list[ScoreRecord]:
        return super().score(batch)[:-1]


def test_a_scorer_that_drops_rows_stores_nothing_from_that_batch(store: RunStore):
    with pytest.raises(ValueharmError, match=r"returned 3 score\(s\) for a batch of 4 .* nothing from this batch"):
        score_run(store, Broken(), batch_size=4, progress=False)
    assert store.scores() == []


@dataclass
class Failing:
    """A regard scorer whose every verdict is an error row."""

    id: str = "classifier:regard@stub#0"
    kind: ScorerKind = ScorerKind.REGARD
    heuristic: bool = False
    calls: int = 0

    def check(self) -> None:
        """Nothing to load."""

    def score(self, batch: Sequence[GenerationRecord]) -> list[ScoreRecord]:
        self.calls += 1
        return [ScoreRecord(r.key, self.id, error="query matches no regard template") for r in batch]


def test_failed_scores_are_kept_and_not_retried(tmp_path: Path):
    with RunStore(tmp_path / "r.sqlite") as store:
        store.add_generations([generation("holisticbiasr", "h1", " kind.", model="vanilla")])
        first, second = Failing(), Failing()
        assert score_run(store, first, progress=False).errors == 1
        assert score_run(store, second, progress=False).cached == 1 and second.calls == 0
        assert store.scores()[0].error == "query matches no regard template"


@pytest.fixture(scope="module")
def toxicity_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_classifier(tmp_path_factory.mktemp("tox"), {0: "non-toxic", 1: "toxic"}, {0: CLEAN, 1: TOXIC})


def test_rerun_with_a_real_classifier_loads_no_model(tmp_path: Path, toxicity_model: Path):
    path = toxicity_model
    with RunStore(tmp_path / "r.sqlite") as store:
        store.add_generations([generation("rtp", f"rtp-{i:05d}", text) for i, text in enumerate(TOXIC + CLEAN)])
        first = Counting(ClassifierScorer(model=str(path)))
        assert score_run(store, first, batch_size=3, progress=False).scored == 8 and first.batches == [3, 3, 2]
        second = Counting(ClassifierScorer(model=str(path)))
        assert score_run(store, second, progress=False).cached == 8
        assert (second.checks, second.batches, second.inner._loaded) == (0, [], None)  # weights never loaded


def test_a_classifier_whose_labels_do_not_match_fails_before_any_work(tmp_path: Path, toxicity_model: Path):
    path = toxicity_model
    with RunStore(tmp_path / "r.sqlite") as store:
        store.add_generations([generation("holisticbiasr", "h1", " kind.")])
        scorer = Counting(ClassifierScorer(model=str(path), task="regard"))
        with pytest.raises(ValueharmError, match="do not match task regard"):
            score_run(store, scorer, progress=False)
        assert (scorer.checks, scorer.batches, store.scores()) == (1, [], [])
