"""Score a run: every stored generation (without error) that has no row for the scorer yet, in batches.

Each batch is written in one transaction, so a killed run loses at most the batch in flight, and a re-run scores
only what is missing: on a finished run it makes no model or API call at all — the scorer is not even checked
(checking may load a model or call an endpoint) when there is nothing to do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from valueharm.errors import ValueharmError
from valueharm.records import GenerationRecord, ScoreRecord
from valueharm.scoring.base import Scorer, applies_to
from valueharm.store import RunStore


@dataclass(frozen=True)
class ScoreSummary:
    scorer: str
    benchmarks: tuple[str, ...]
    scored: int  # score rows written by this call
    errors: int  # of those, rows with an error
    cached: int  # generations that already had a row for this scorer (not scored again)
    failed_generations: int  # generations stored with an error: nothing to score


def score_run(
    store: RunStore,
    scorer: Scorer,
    *,
    benchmarks: Sequence[str] | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> ScoreSummary:
    """Score what is missing on `benchmarks` (default: every benchmark the scorer's kind feeds a metric on)."""
    if batch_size < 1:
        raise ValueharmError(f"batch size must be ≥ 1, got {batch_size}")
    chosen = _benchmarks(scorer, benchmarks)
    scorer_id = scorer.id
    done = store.scored_keys(scorer_id)
    todo: list[GenerationRecord] = []
    cached = failed = 0
    for benchmark in chosen:
        for record in store.generations(benchmark=benchmark):
            if record.error is not None:
                failed += 1
            elif record.key in done:
                cached += 1
            else:
                todo.append(record)
    errors = 0
    if todo:
        scorer.check()
        with _progress_bar(progress, len(todo), f"scoring with {scorer_id}") as advance:
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                scores = checked_scores(scorer.score(batch), batch, scorer_id)
                store.add_scores(scores)
                errors += sum(score.error is not None for score in scores)
                advance(len(batch))
    return ScoreSummary(scorer_id, chosen, len(todo), errors, cached, failed)


def _benchmarks(scorer: Scorer, benchmarks: Sequence[str] | None) -> tuple[str, ...]:
    """The requested benchmarks, each one the scorer's kind feeds a metric on."""
    fed = applies_to(scorer.kind)
    if benchmarks is None:
        return fed
    unfed = [benchmark for benchmark in benchmarks if benchmark not in fed]
    if unfed:
        raise ValueharmError(
            f"scorer {scorer.id} measures {scorer.kind.value}, which feeds no metric on {', '.join(unfed)}; "
            f"it applies to {', '.join(fed)}"
        )
    return tuple(dict.fromkeys(benchmarks))


def checked_scores(scores: list[ScoreRecord], batch: Sequence[GenerationRecord], scorer_id: str) -> list[ScoreRecord]:
    """One row per record, in order, under the scorer's id: anything else would cache wrong results."""
    keys = [record.key for record in batch]
    if [score.key for score in scores] != keys or any(score.scorer != scorer_id for score in scores):
        raise ValueharmError(
            f"scorer {scorer_id} returned {len(scores)} score(s) for a batch of {len(keys)} that do not match it "
            "one to one under its own id; nothing from this batch was stored"
        )
    return scores


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int, description: str) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda n: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.update(task, advance=n)
