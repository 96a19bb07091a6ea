"""LoRA training speed of our trainer against the published code's way, on a real model (SmolLM2 by default).

1. Padding efficiency (non-pad tokens / processed tokens) over one epoch of a profile's full stage-1 and stage-2
   training data, batched three ways: length-grouped with dynamic padding (ours), shuffled with dynamic padding
   (`group_by_length: false`), and shuffled and padded to 128 as the published code did (`pad_to_multiple_of=128`:
   examples over 128 tokens pad to 256, where the published code cut them).
2. Side by side in one run, the same VIM adapters (N profiles × 2 stages, the same examples, settings and seed):
   ours — one base load for the whole sweep, length-grouped dynamic padding — against the published way — the base
   reloaded for every profile and stage, shuffled batches padded to 128 tokens. Printed per way: wall time (loads
   included), useful (non-pad) tokens per second of wall time, the useful / processed token share; then the ratio.

    .venv/bin/python bench/training.py --data-dir ../shared/data [--base smollm2-135m] [--profiles 2] [--limit 48]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from valueharm import base_model
from valueharm.alignment.vim_data import build_stage1, build_stage2
from valueharm.chat import chat_style
from valueharm.training import (
    AdapterJob,
    AdapterResult,
    TrainSettings,
    as_chat,
    build_trainer,
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


def tokens(results: list[AdapterResult]) -> tuple[int, int]:
    stages = [stage for result in results for stage in result.stages]
    return sum(s.useful_tokens for s in stages), sum(s.processed_tokens for s in stages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--base", default="smollm2-135m", help="any base name (registry, tiny:VARIANT, path)")
    parser.add_argument("--profile", default="Pow", help="the profile of the padding-efficiency measurement")
    parser.add_argument("--profiles", type=int, default=2, help="profiles trained both ways")
    parser.add_argument("--limit", type=int, default=48, help="examples per split and stage")
    args = parser.parse_args()

    base = base_model.resolve(args.base, data_dir=args.data_dir, progress=False)
    chat = chat_style("auto", base) is not None
    model, tokenizer = base_model.load(base, precision="fp32")  # for the padding measurement; the sweeps load their own
    print(f"base {base_model.identity(base)}, {'chat template' if chat else 'raw text'}, fp32, "
          f"{args.limit} examples per split and stage, 1 epoch, batch 8")  # fmt: skip

    profile = get_profile(args.profile, args.data_dir)
    modes = {
        "grouped": TrainSettings(batch_size=8, epochs=1, precision="fp32"),
        "shuffled": TrainSettings(batch_size=8, epochs=1, precision="fp32", group_by_length=False),
        "shuffled, padded to 128": TrainSettings(
            batch_size=8, epochs=1, precision="fp32", pad_to_multiple_of=128, group_by_length=False
        ),
    }
    print(f"padding efficiency, profile {profile.name}, all training examples:")
    with tempfile.TemporaryDirectory() as scratch:
        for stage, build in (("stage1", build_stage1), ("stage2", build_stage2)):
            examples = [e for e in build(profile, args.data_dir) if e.split == "train"]
            examples = [as_chat(e) for e in examples] if chat else examples
            kept, dropped = split_by_length(tokenizer, examples, modes["grouped"].max_length)
            shares = []
            for label, settings in modes.items():
                trainer = build_trainer(model, tokenizer, kept, [], settings, scratch, progress=False)
                useful, processed = padding_efficiency(trainer)
                shares.append(f"{label} {useful / processed:.3f}")
            print(f"  {stage} ({len(kept)} examples, {dropped} over-long dropped): {', '.join(shares)}")
        del model

    grouped = modes["grouped"]
    published = modes["shuffled, padded to 128"]
    profiles = profile_set("extremes", args.data_dir)[: args.profiles]
    with tempfile.TemporaryDirectory() as out:
        jobs = vim_jobs(profiles, args.data_dir, Path(out) / "ours", stage1=grouped, stage2=grouped,
                        limit=args.limit, valid_limit=0)  # fmt: skip
        started = time.perf_counter()
        ours_results = train_adapters(base, jobs, progress=False, chat=chat)
        ours_seconds = time.perf_counter() - started

        started = time.perf_counter()
        published_results = []
        for job in vim_jobs(profiles, args.data_dir, Path(out) / "published", stage1=published, stage2=published,
                            limit=args.limit, valid_limit=0):  # fmt: skip
            for name, train, valid, _ in job.stages:  # the base loaded anew for every profile and stage
                single = AdapterJob(f"{job.name}-{name}", job.path.parent / f"{job.name}-{name}",
                                    [(name, train, valid, published)], job.meta)  # fmt: skip
                published_results += train_adapters(base, [single], progress=False, chat=chat)
        published_seconds = time.perf_counter() - started

    rates = {}
    for label, results, seconds in (("ours", ours_results, ours_seconds),
                                    ("published way", published_results, published_seconds)):  # fmt: skip
        useful, processed = tokens(results)
        rates[label] = useful / seconds
        print(f"{label}: {len(profiles)} profiles × 2 stages in {seconds:.1f} s, useful tokens/s {rates[label]:,.0f}, "
              f"useful/processed {useful:,}/{processed:,} = {useful / processed:.3f}")  # fmt: skip
    print(f"ratio ours / published way (useful tokens/s): {rates['ours'] / rates['published way']:.2f}")


if __name__ == "__main__":
    main()
