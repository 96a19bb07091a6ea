"""Does value injection work on the tiny model? Survey answers on held-out arguments, VIM vs the untrained base.

Trains VIM adapters for a few opposite profiles in one process and asks every model the `value-survey` questions,
greedily and then `--samples` times at `--temperature`. For each reading it prints, per profile: the share of
questions answered with a digit, the share answered with the profile's digit for the value they name (and the same
among answered ones), and Pearson r / NMSE of the measured profile against the target — for the VIM model and for
the untrained base compared with the same target. Defaults are the demo's settings.

    .venv/bin/python bench/vim_alignment.py --data-dir ../shared/data [--variant demo]
        [--limit 100] [--epochs 5] [--stage1-epochs 2] [--samples 4] [--temperature 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from valueharm.alignment.prompts import ModelSpec, PromptTemplates
from valueharm.analysis.value_check import check_models
from valueharm.data.benchmarks import BENCHMARKS
from valueharm.generation.hf import HFBackend
from valueharm.generation.run import generate_slice, sampling_params
from valueharm.store import RunStore
from valueharm.tiny import build_tiny
from valueharm.training import LoraSettings, TrainSettings, train_adapters, vim_jobs
from valueharm.values import get_profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--variant", default="demo")
    parser.add_argument("--profiles", default="Self-Enhancement,Self-Transcendence,Openness_to_Change,Conservation")
    parser.add_argument("--limit", type=int, default=100, help="examples per split and stage")
    parser.add_argument("--epochs", type=int, default=5, help="stage 2 (and stage 1 unless --stage1-epochs)")
    parser.add_argument("--stage1-epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
    parser.add_argument("--per-value", type=int, default=20, help="survey questions per value")
    parser.add_argument("--samples", type=int, default=4, help="answers per question, besides the greedy one")
    parser.add_argument("--temperature", type=float, default=1.0, help="of the sampled answers")
    args = parser.parse_args()
    lora = LoraSettings(r=args.lora_r, alpha=32, target_modules=tuple(args.lora_targets.split(",")))

    base = build_tiny(args.variant, data_dir=args.data_dir, progress=False).path
    profiles = [get_profile(name, args.data_dir) for name in args.profiles.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        settings = TrainSettings(learning_rate=args.lr, epochs=args.epochs, batch_size=8, seed=0)
        first = replace(settings, epochs=args.stage1_epochs or args.epochs)
        jobs = vim_jobs(profiles, args.data_dir, Path(tmp) / "vim", stage1=first, stage2=settings, limit=args.limit)
        started = time.perf_counter()
        train_adapters(base, jobs, lora, progress=False)
        trained = time.perf_counter() - started
        specs = [ModelSpec("vanilla")] + [
            ModelSpec("vim", p, adapter_path=Path(tmp) / "vim" / p.name) for p in profiles
        ]
        survey = BENCHMARKS.get("value-survey")
        items = survey.load(args.data_dir, per_value=args.per_value)
        templates = PromptTemplates.load()
        backend = HFBackend(base, {s.adapter: s.adapter_path for s in specs if s.adapter})
        readings = {"greedy": (0.0, 1), f"{args.samples} samples at temperature {args.temperature:g}": (
            args.temperature, args.samples)}  # fmt: skip
        records = {}
        for reading, (temperature, samples) in readings.items():
            with RunStore(Path(tmp) / f"{temperature}.sqlite") as store:
                generate_slice(store, backend, specs, survey, items, base_model=str(base),
                               params=sampling_params(survey, templates, temperature=temperature), samples=samples,
                               templates=templates, progress=False)  # fmt: skip
                records[reading] = store.generations()
    print(
        f"tiny {args.variant}: {len(profiles)} profiles trained in {trained:.0f} s ({args.limit} examples per split"
        f" and stage, {first.epochs} + {args.epochs} epochs, LoRA r={args.lora_r} on {args.lora_targets});"
        f" {len(items)} survey questions on held-out arguments"
    )
    for reading, answers in records.items():
        _print_checks(reading, answers, profiles)


def _print_checks(reading: str, records: list[Any], profiles: list[Any]) -> None:
    print(f"\nanswers read {reading}")
    columns = ("answered", "own digit", "of answered", "pearson r", "NMSE")
    print(f"{'profile':20} {'model':8} " + " ".join(f"{c:>11}" for c in columns))
    pearson: dict[str, list[float]] = {"vim": [], "vanilla": []}
    for profile in profiles:
        for check in check_models(records, {f"vim/{profile.name}": profile, "vanilla": profile}):
            method = check.model_key.split("/")[0]
            own = check.answer_rate * (check.digit_match_rate or 0.0)
            if check.pearson_r is not None:
                pearson[method].append(check.pearson_r)
            cells = (f"{check.answer_rate:.2f}", f"{own:.2f}", _fmt(check.digit_match_rate, ".2f"),
                     _fmt(check.pearson_r, ".2f"), _fmt(check.nmse, ".3f"))  # fmt: skip
            print(f"{profile.name:20} {method:8} " + " ".join(f"{c:>11}" for c in cells))
    for method, values in pearson.items():
        mean = sum(values) / len(values) if values else None
        print(f"mean Pearson r, {method}: {_fmt(mean, '.2f')} ({len(values)} of {len(profiles)} defined)")


def _fmt(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


if __name__ == "__main__":
    main()
