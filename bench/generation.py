"""Generation speed on the tiny model: K adapters × 2 benchmarks in one process vs one process per slice.

The one-process way loads the base once and serves every adapter in mixed-adapter batches; the other way is what
the published scripts did: a new process (and model load) per (adapter, benchmark). Both write to a run store.
Prints wall times, their ratio, and generated tokens per second.

    .venv/bin/python bench/generation.py --data-dir ../shared/data [--variant demo] [--adapters 4] [--limit 24]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from valueharm.store import RunStore
from valueharm.tiny import build_tiny
from valueharm.training import TrainSettings, train_adapters, vim_jobs
from valueharm.values import profile_set

BENCHMARKS = ("hex-phi", "rtp")


def one_slice(base: Path, run: Path, data_dir: Path, names: list[str], adapters: Path, benchmark: str, limit: int,
             tokens: int) -> None:  # fmt: skip
    args = [sys.executable, "-m", "valueharm", "generate", "--base", str(base), "--benchmark", benchmark,
            "--method", "vim", "--limit", str(limit), "--samples", "1", "--max-new-tokens", str(tokens),
            "--run", str(run), "--data-dir", str(data_dir), "--quiet"]  # fmt: skip
    for name in names:
        args += ["--profile", name, "--adapter", f"{name}={adapters / name}"]
    subprocess.run(args, check=True, capture_output=True)


def one_process(base: Path, run: Path, data_dir: Path, names: list[str], adapters: Path, limit: int,
                tokens: int) -> None:  # fmt: skip
    """Every slice in this process: the base loaded once, all adapters served in mixed batches."""
    from valueharm.alignment.prompts import ModelSpec, PromptTemplates
    from valueharm.data.benchmarks import BENCHMARKS as REGISTRY
    from valueharm.generation.hf import HFBackend
    from valueharm.generation.run import generate_slice, sampling_params
    from valueharm.values import get_profile

    specs = [ModelSpec("vim", get_profile(name, data_dir), adapter_path=adapters / name) for name in names]
    backend = HFBackend(base, {spec.adapter: spec.adapter_path for spec in specs})
    templates = PromptTemplates.load()
    with RunStore(run / "results.sqlite") as store:
        for name in BENCHMARKS:
            benchmark = REGISTRY.get(name)
            params = sampling_params(benchmark, templates, max_new_tokens=tokens)
            generate_slice(store, backend, specs, benchmark, benchmark.load(data_dir, limit), base_model=str(base),
                           params=params, samples=1, templates=templates, progress=False)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--variant", default="demo")
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--limit", type=int, default=24, help="items per benchmark")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per item")
    parser.add_argument("--worker", nargs=3, metavar=("BASE", "RUN", "ADAPTERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        base, run, adapters = map(Path, args.worker)
        names = [p.name for p in profile_set("extremes", args.data_dir)[: args.adapters]]
        one_process(base, run, args.data_dir, names, adapters, args.limit, args.tokens)
        return

    base = build_tiny(args.variant, data_dir=args.data_dir, progress=False).path
    names = [p.name for p in profile_set("extremes", args.data_dir)[: args.adapters]]
    with tempfile.TemporaryDirectory() as tmp:
        adapters = Path(tmp) / "adapters"
        quick = TrainSettings(epochs=1, learning_rate=5e-3, batch_size=8)
        profiles = [p for p in profile_set("extremes", args.data_dir) if p.name in names]
        train_adapters(base, vim_jobs(profiles, args.data_dir, adapters, stage1=quick, stage2=quick, limit=8),
                       progress=False)  # fmt: skip

        started = time.perf_counter()
        subprocess.run(
            [sys.executable, __file__, "--data-dir", str(args.data_dir), "--adapters", str(args.adapters), "--limit",
             str(args.limit), "--tokens", str(args.tokens), "--worker", str(base), str(Path(tmp) / "one"),
             str(adapters)],
            check=True, capture_output=True,
        )  # fmt: skip
        one = time.perf_counter() - started

        started = time.perf_counter()
        for benchmark in BENCHMARKS:
            for name in names:
                one_slice(base, Path(tmp) / "many", args.data_dir, [name], adapters, benchmark, args.limit, args.tokens)
        many = time.perf_counter() - started

        with RunStore(Path(tmp) / "one" / "results.sqlite") as store:
            records = store.generations()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base))
    generated = sum(len(tokenizer(r.text, add_special_tokens=False)["input_ids"]) for r in records)
    slices = len(names) * len(BENCHMARKS)
    print(f"tiny {args.variant}: {len(names)} adapters × {len(BENCHMARKS)} benchmarks, {args.limit} items each, "
          f"{args.tokens} new tokens, {len(records)} generations")  # fmt: skip
    print(f"one process, mixed-adapter batches: {one:.1f} s ({generated / one:,.0f} generated tokens/s)")
    print(f"one process per (adapter, benchmark), {slices} processes: {many:.1f} s "
          f"({generated / many:,.0f} generated tokens/s)")  # fmt: skip
    print(f"ratio: {one / many:.2f}")


if __name__ == "__main__":
    main()
