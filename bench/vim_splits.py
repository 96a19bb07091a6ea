"""Check that VIM stage-1 splits reproduce the published pandas selection for all 154 profiles of the sweep.

For each profile of `vim154`, the train/valid/test ids of positives and negatives built by valueharm must equal an
independent pandas computation (min score over annotated values ≥ threshold, then `sample(frac=0.8)` and
`sample(frac=0.5)` of the rest, random_state = seed), in the same order. Prints per-profile counts, the range of
positives, profiles stage 1 can only teach one side of, and the time taken; exits 1 on any mismatch.

    python bench/vim_splits.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from valueharm.alignment.vim_data import (
    ARGUMENTS_FILE,
    POLARITIES,
    STAGE1_SPLITS,
    VimTemplates,
    read_arguments,
    stage1_examples,
)
from valueharm.data.registry import require_file
from valueharm.paths import data_dir as default_data_dir
from valueharm.settings import VimDataSettings
from valueharm.values import VALUES, ValueProfile, profile_set

Splits = dict[tuple[str, str], list[int]]


def pandas_splits(frame: pd.DataFrame, profile: ValueProfile, threshold: float, seed: int) -> Splits:
    """The published recipe written out with pandas alone, for comparison."""
    scores = np.where(frame[list(VALUES)].to_numpy() == 1, np.array(profile.vector), np.inf).min(axis=1)
    splits: Splits = {}
    for polarity, subset in (("pos", frame[scores >= threshold]), ("neg", frame[scores < threshold])):
        train = subset.sample(frac=0.8, random_state=seed)
        rest = subset.drop(train.index)
        valid = rest.sample(frac=0.5, random_state=seed)
        for split, rows in (("train", train), ("valid", valid), ("test", rest.drop(valid.index))):
            splits[polarity, split] = rows.index.tolist()
    return splits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="data directory (default: $VALUEHARM_DATA)")
    published = VimDataSettings()
    parser.add_argument("--threshold", type=float, default=published.threshold, help="positive if min score ≥ this")
    parser.add_argument("--seed", type=int, default=published.seed, help="pandas random_state of the split")
    args = parser.parse_args()
    data_dir = default_data_dir(args.data_dir)

    start = time.perf_counter()
    profiles = profile_set("vim154", data_dir)
    arguments = read_arguments(data_dir, ARGUMENTS_FILE)
    frame = pd.read_csv(require_file(data_dir, ARGUMENTS_FILE), sep="\t", index_col=0)
    templates = VimTemplates.load()
    mismatches, positives, one_sided = [], {}, []
    print(f"{'profile':32} " + " ".join(f"{p}/{s:5}" for s in STAGE1_SPLITS for p in POLARITIES))
    for profile in profiles:
        ours: Splits = {(p, s): [] for p in POLARITIES for s in STAGE1_SPLITS}
        settings = VimDataSettings(threshold=args.threshold, seed=args.seed)
        for example in stage1_examples(arguments, profile, settings, templates=templates):
            ours[example.polarity, example.split].append(example.argument_id)
        if ours != pandas_splits(frame, profile, args.threshold, args.seed):
            mismatches.append(profile.name)
        positives[profile.name] = sum(len(ours["pos", s]) for s in STAGE1_SPLITS)
        if positives[profile.name] in (0, len(arguments)):
            one_sided.append(profile.name)
        print(f"{profile.name:32} " + " ".join(f"{len(ours[p, s]):9d}" for s in STAGE1_SPLITS for p in POLARITIES))
    elapsed = time.perf_counter() - start

    low, high = min(positives, key=positives.get), max(positives, key=positives.get)
    print(f"\nprofiles: {len(profiles)}, arguments: {len(arguments)}, threshold {args.threshold:g}, seed {args.seed}")
    median = np.median(list(positives.values()))
    print(f"positives: min {positives[low]} ({low}), max {positives[high]} ({high}), median {median:g}")
    print(f"one-sided (no positives or no negatives): {len(one_sided)}: {', '.join(one_sided) or '-'}")
    print(
        f"mismatches with the pandas selection: {len(mismatches)}{': ' + ', '.join(mismatches) if mismatches else ''}"
    )
    print(f"time: {elapsed:.1f} s")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
