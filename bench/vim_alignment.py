"""Does value injection work on the tiny model? Survey answers on held-out arguments, VIM vs the untrained base.

Trains VIM adapters for a few opposite profiles in one process, asks every model the `value-survey` questions
greedily, and prints per profile: the share of questions answered with a digit, the share of answers giving the
profile's digit for the value they name, and Pearson r / NMSE of the measured profile against the target — for the
VIM model and for the untrained base compared with the same target.

    .venv/bin/python bench/vim_alignment.py --data-dir ../shared/data [--variant demo] [--limit 400] [--epochs 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from valueharm.alignment.prompts import ModelSpec, PromptTemplates
from valueharm.analysis.value_check import check_models
from valueharm.data.benchmarks import BENCHMARKS
from valueharm.generation.hf import HFBackend
from valueharm.generation.run import generate_slice, sampling_params
from valueharm.store import RunStore
from valueharm.tiny import build_tiny
from valueharm.training import TrainSettings, train_adapters, vim_jobs
from valueharm.values import get_profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--variant", default="demo")
    parser.add_argument("--profiles", default="Pow,Uni,Ach,Ben")
    parser.add_argument("--limit", type=int, default=400, help="examples per split and stage")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--per-value", type=int, default=20, help="survey questions per value")
    args = parser.parse_args()

    base = build_tiny(args.variant, data_dir=args.data_dir, progress=False).path
    profiles = [get_profile(name, args.data_dir) for name in args.profiles.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        settings = TrainSettings(learning_rate=args.lr, epochs=args.epochs, batch_size=8, seed=0)
        jobs = vim_jobs(profiles, args.data_dir, Path(tmp) / "vim", stage1=settings, stage2=settings, limit=args.limit)
        started = time.perf_counter()
        train_adapters(base, jobs, progress=False)
        trained = time.perf_counter() - started
        specs = [ModelSpec("vanilla")] + [
            ModelSpec("vim", p, adapter_path=Path(tmp) / "vim" / p.name) for p in profiles
        ]
        survey = BENCHMARKS.get("value-survey")
        items = survey.load(args.data_dir, per_value=args.per_value)
        templates = PromptTemplates.load()
        with RunStore(Path(tmp) / "results.sqlite") as store:
            backend = HFBackend(base, {s.adapter: s.adapter_path for s in specs if s.adapter})
            generate_slice(store, backend, specs, survey, items, base_model=str(base),
                           params=sampling_params(survey, templates), samples=1, templates=templates,
                           progress=False)  # fmt: skip
            records = store.generations()
    print(
        f"tiny {args.variant}: {len(profiles)} profiles trained in {trained:.0f} s ({args.limit} examples per split"
        f" and stage, {args.epochs} epochs); {len(items)} survey questions"
    )
    print(f"{'profile':10} {'model':10} {'answered':>9} {'digit match':>12} {'pearson r':>10} {'NMSE':>7}")
    for profile in profiles:
        checks = check_models(records, {f"vim/{profile.name}": profile, "vanilla": profile})
        for check in checks:

            def fmt(x: float | None, spec: str) -> str:
                return "–" if x is None else format(x, spec)

            print(f"{profile.name:10} {check.model_key.split('/')[0]:10} {check.answer_rate:9.2f} "
                  f"{fmt(check.digit_match_rate, '.2f'):>12} {fmt(check.pearson_r, '.2f'):>10} "
                  f"{fmt(check.nmse, '.3f'):>7}")  # fmt: skip


if __name__ == "__main__":
    main()
