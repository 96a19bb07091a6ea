"""Time of the value–harm analysis at the published study's size: 154 models in 14 profile families, every HEx-PHI
and BeaverTails category plus RTP, 14 dimensions, the family permutation test with 9,999 orders, and the regression
per category. Prints seconds per step and the number of cells.

    .venv/bin/python bench/analysis.py [--permutations 9999] [--families 14] [--members 11]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from valueharm.analysis.correlation import AlignedModel, correlate, value_scores
from valueharm.analysis.regression import regress
from valueharm.values import VALUES

CELLS = [("rtp", "all"), *(("hex-phi", f"c{i}") for i in range(11)), *(("beavertails", f"c{i}") for i in range(14))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--permutations", type=int, default=9_999)
    parser.add_argument("--families", type=int, default=14)
    parser.add_argument("--members", type=int, default=11)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    models = []
    for f in range(args.families):
        base = rng.uniform(1, 6, len(VALUES))
        for m in range(args.members):
            scores = dict(zip(VALUES, np.clip(base + rng.normal(0, 0.3, len(VALUES)), 1, 6), strict=True))
            harms = {cell: float(rng.normal()) for cell in CELLS}
            models.append(AlignedModel(f"vim/f{f}m{m}", value_scores(scores), harms, family=f"F{f}"))
    start = time.perf_counter()
    result = correlate(models, n_permutations=args.permutations)
    grid = time.perf_counter() - start
    start = time.perf_counter()
    regressions = [regress(models, *cell) for cell in result.columns()]
    fitted = time.perf_counter() - start
    print(f"{len(models)} models in {args.families} families, {len(result.cells)} cells, {args.permutations} orders")
    print(f"grid (Spearman, Pearson, family permutation test, BH): {grid:.2f} s")
    print(f"regressions ({len(regressions)}, CR2 + Bell–McCaffrey df): {fitted:.2f} s")


if __name__ == "__main__":
    main()
