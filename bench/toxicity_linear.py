"""Scoring speed of the `toxicity-linear` scorer (and of the `lexicon` heuristic, for reference) on real text.

Scores N RealToxicityPrompts prompts in batches of the size `score_run` uses (32) and in one batch, one CPU
process. Prints the model load time, texts per second for each, and the share of texts scored toxic (≥ 0.5).

    .venv/bin/python bench/toxicity_linear.py --data-dir ../shared/data [--n 2000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from valueharm.data.benchmarks import BENCHMARKS
from valueharm.records import GenerationRecord, SamplingParams
from valueharm.scoring import LexiconScorer, LinearToxicityScorer, Scorer

BATCH = 32


def records(data_dir: Path, n: int) -> list[GenerationRecord]:
    items = BENCHMARKS.get("rtp").load(data_dir, n)
    return [
        GenerationRecord(model_key="vanilla", base_model="bench", benchmark="rtp", item_id=item.item_id,
                         category=item.category, sample=0, prompt=item.text, query=item.text,
                         params=SamplingParams(), text=item.text)
        for item in items
    ]  # fmt: skip


def texts_per_second(scorer: Scorer, batch: Sequence[GenerationRecord], size: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(batch), size):
        scorer.score(batch[start : start + size])
    return len(batch) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--n", type=int, default=2000, help="texts to score")
    args = parser.parse_args()
    batch = records(args.data_dir, args.n)
    print(f"{len(batch)} RealToxicityPrompts prompts, mean {sum(len(r.text) for r in batch) / len(batch):.0f} chars")

    started = time.perf_counter()
    linear = LinearToxicityScorer()
    linear.check()
    print(f"{linear.id}: loaded in {time.perf_counter() - started:.2f} s")
    toxic = sum(s.label == "toxic" for s in linear.score(batch)) / len(batch)
    print(f"  {texts_per_second(linear, batch, BATCH):,.0f} texts/s in batches of {BATCH}, "
          f"{texts_per_second(linear, batch, len(batch)):,.0f} texts/s in one batch; {toxic:.1%} toxic")  # fmt: skip

    lexicon = LexiconScorer(args.data_dir)
    lexicon.check()
    print(f"{lexicon.id} (reference): {texts_per_second(lexicon, batch, BATCH):,.0f} texts/s in batches of {BATCH}")


if __name__ == "__main__":
    main()
