"""Training speed on the tiny model: padding efficiency, useful tokens/s, and one process vs one per profile.

1. Padding efficiency (non-pad tokens / processed tokens) over one epoch of the full stage-1 and stage-2 training
   data of a profile, batched three ways: length-grouped with dynamic padding (our default), shuffled with dynamic
   padding (`group_by_length: false`, the published order, `preset: published`), and shuffled and padded to 128
   as the published code did (`pad_to_multiple_of=128`: examples over 128 tokens pad to 256, where it cut them).
2. Useful (non-pad) tokens per second over a fixed number of optimizer steps, each way, same data, same run.
3. Wall time of training N profiles in one process (base loaded once) vs N separate `valueharm train vim` processes.

    .venv/bin/python bench/training.py --data-dir ../shared/data [--variant demo] [--profiles 4]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from valueharm.alignment.vim_data import build_stage1, build_stage2
from valueharm.tiny import build_tiny
from valueharm.training import (
    TrainSettings,
    build_trainer,
    fit_stage,
    load_base,
    split_by_length,
    train_adapters,
    vim_jobs,
)
from valueharm.values import get_profile, profile_set


def padding_efficiency(trainer: Any) -> tuple[int, int]:
    useful = processed = 0
    for batch in trainer.get_train_dataloader():
        useful += int(batch["attention_mask"].sum())
        processed += batch["attention_mask"].numel()
    return useful, processed


def tokens_per_second(base: Path, examples: list, settings: TrainSettings) -> float:
    """Useful tokens per second of a fresh adapter trained for `settings.max_steps` steps."""
    from peft import LoraConfig, get_peft_model

    model, tokenizer = load_base(base)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"]))
    result = fit_stage(model, tokenizer, examples, [], settings, name="bench", progress=False)
    return result.useful_tokens / result.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--variant", default="demo")
    parser.add_argument("--profile", default="Pow")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps for the tokens/s comparison")
    parser.add_argument("--profiles", type=int, default=4, help="profiles for the one-process comparison (0: skip)")
    parser.add_argument("--limit", type=int, default=48, help="examples per split and stage in the sweep")
    args = parser.parse_args()

    base = build_tiny(args.variant, data_dir=args.data_dir, progress=False).path
    profile = get_profile(args.profile, args.data_dir)
    _, tokenizer = load_base(base)
    modes = {
        "grouped": TrainSettings(batch_size=8, epochs=1),
        "shuffled": TrainSettings(batch_size=8, epochs=1, group_by_length=False),
        "shuffled, padded to 128": TrainSettings(batch_size=8, epochs=1, pad_to_multiple_of=128, group_by_length=False),
    }
    stages = {
        "stage1": [e for e in build_stage1(profile, args.data_dir) if e.split == "train"],
        "stage2": [e for e in build_stage2(profile, args.data_dir) if e.split == "train"],
    }
    print(f"tiny {args.variant} model, profile {profile.name}")
    with tempfile.TemporaryDirectory() as scratch:
        model, _ = load_base(base)
        for stage, examples in stages.items():
            kept, dropped = split_by_length(tokenizer, examples, modes["grouped"].max_length)
            print(f"  {stage}: {len(kept)} examples ({dropped} over-long dropped)")
            for label, settings in modes.items():
                useful, processed = padding_efficiency(build_trainer(model, tokenizer, kept, [], settings, scratch,
                                                                     progress=False))  # fmt: skip
                rate = tokens_per_second(base, kept, settings.model_copy(update={"max_steps": args.steps}))
                print(f"    {label}: padding efficiency {useful / processed:.3f}, "
                      f"useful tokens/s over {args.steps} steps {rate:,.0f}")  # fmt: skip
    if args.profiles == 0:
        return

    names = [p.name for p in profile_set("extremes", args.data_dir)[: args.profiles]]
    quick = TrainSettings(epochs=1, batch_size=8)
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        profiles = [get_profile(name, args.data_dir) for name in names]
        jobs = vim_jobs(profiles, args.data_dir, Path(out) / "one", stage1=quick, stage2=quick, limit=args.limit)
        train_adapters(base, jobs, progress=False)
        one_process = time.perf_counter() - started
        started = time.perf_counter()
        for name in names:
            subprocess.run(
                [sys.executable, "-m", "valueharm", "train", "vim", "--base", str(base), "--out", f"{out}/many",
                 "--profile", name, "--epochs", "1", "--limit", str(args.limit), "--data-dir", str(args.data_dir),
                 "--quiet"],
                check=True, capture_output=True,
            )  # fmt: skip
        separate = time.perf_counter() - started
    print(
        f"{len(names)} profiles ({args.limit} examples per split and stage, 1 epoch): one process"
        f" {one_process:.1f} s, {len(names)} processes {separate:.1f} s, ratio {one_process / separate:.2f}"
    )


if __name__ == "__main__":
    main()
