"""Wall time of the small experiment on the tiny model: local executor vs Ray with 1 and 2 workers.

Each configuration runs in a fresh process (imports included, nothing cached but the tiny model): the local
executor, then a local Ray cluster of 1 CPU (one worker at a time) and of 2 CPUs (two workers). Reported: the
cluster's start, the run itself (plan → train → generate → score → metrics → report), the total, and the Ray
executor's overhead over local execution. Every run must store the same records; the script checks that.

Every process runs torch on one thread (OMP_NUM_THREADS=1), as Ray gives a 1-CPU task: the figures then compare
executors, not thread counts — on a busy 2-core machine a 2-thread local run spins in OpenMP and takes ~5× longer.

    .venv/bin/python bench/ray.py --data-dir ../shared/data [--profiles 3] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

PROFILES = ["Pow", "Uni", "Hed", "Ach", "Ben", "Con", "Sec", "Tra"]
MODES = {"local": None, "ray, 1 worker": 1, "ray, 2 workers": 2}


def small_config(data_dir: Path, profiles: int) -> dict:
    """The built-in smoke experiment: vanilla, VIM and ICL models, RTP and HEx-PHI, mitigation."""
    from valueharm.experiment import builtin_config

    return builtin_config("smoke") | {
        "name": "bench-ray",
        "data_dir": str(data_dir.resolve()),
        "profiles": {"names": PROFILES[:profiles]},
        "progress": False,
    }


def run_one(config: Path, run: Path, workers: int | None) -> dict[str, float]:
    """One configuration, in this (fresh) process: seconds to start the cluster and to run the experiment."""
    from valueharm.experiment import LocalExecutor, run_experiment

    started = time.perf_counter()
    executor = LocalExecutor()
    if workers:
        import ray

        from valueharm.experiment.ray import RayExecutor

        ray.init(num_cpus=workers, include_dashboard=False, object_store_memory=256 * 2**20,
                 logging_level=logging.WARNING, log_to_driver=False)  # fmt: skip
        executor = RayExecutor()  # uses the connection above
    cluster = time.perf_counter() - started
    run_experiment(config, run, executor=executor)
    return {"cluster": cluster, "run": time.perf_counter() - started - cluster}


def records(run: Path) -> tuple:
    with sqlite3.connect(run / "results.sqlite") as db:
        return (
            sorted(db.execute("SELECT key, text FROM generations WHERE error IS NULL")),
            sorted(db.execute("SELECT key, scorer, value FROM scores")),
            sorted(db.execute("SELECT model_key, benchmark, category, metric, variant, value FROM metrics")),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--profiles", type=int, default=3, choices=range(1, len(PROFILES) + 1))
    parser.add_argument("--repeat", type=int, default=1, help="runs of each mode; the best is reported")
    parser.add_argument("--one", nargs=3, metavar=("CONFIG", "RUN", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # the child process of one configuration
        config, run, workers = args.one
        print(json.dumps(run_one(Path(config), Path(run), int(workers) or None)))
        return

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["OMP_NUM_THREADS"] = "1"
    with tempfile.TemporaryDirectory(prefix="valueharm-bench-ray-") as tmp:
        config = Path(tmp) / "small.yaml"
        config.write_text(yaml.safe_dump(small_config(args.data_dir, args.profiles)))
        build = ["tiny", "build", "--variant", "test", "--data-dir", str(args.data_dir)]
        subprocess.run([sys.executable, "-m", "valueharm", *build], check=True, capture_output=True)
        times: dict[str, dict[str, float]] = {}
        results = {}
        for repeat in range(args.repeat):  # interleaved, so a busy spell of the machine hits every mode alike
            for mode, workers in MODES.items():
                run = Path(tmp) / f"{mode.replace(' ', '').replace(',', '-')}-{repeat}"
                # -P: this file is named ray.py; its folder on sys.path would shadow the ray package in the child
                child = [
                    sys.executable,
                    "-P",
                    __file__,
                    "--data-dir",
                    str(args.data_dir),
                    "--one",
                    str(config),
                    str(run),
                ]
                started = time.perf_counter()
                done = subprocess.run([*child, str(workers or 0)], capture_output=True, text=True)
                if done.returncode:
                    sys.exit(f"{mode} failed:\n{done.stderr[-3000:]}")
                took = json.loads(done.stdout.strip().splitlines()[-1]) | {"total": time.perf_counter() - started}
                if mode not in times or took["total"] < times[mode]["total"]:
                    times[mode] = took
                results[(mode, repeat)] = records(run)

    generations, scores, _ = results[("local", 0)]
    print(f"small experiment: {args.profiles} VIM profiles, {len(generations)} generations, {len(scores)} scores; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'executor':<16}{'cluster start':>15}{'run':>10}{'total':>10}   "
          f"(seconds, best of {args.repeat}; total includes imports)")  # fmt: skip
    for mode, t in times.items():
        print(f"{mode:<16}{t['cluster']:>15.1f}{t['run']:>10.1f}{t['total']:>10.1f}")
    local = times["local"]
    for mode in ("ray, 1 worker", "ray, 2 workers"):
        t = times[mode]
        print(f"overhead of {mode} over local: {t['total'] - local['total']:+.1f} s in total "
              f"({t['cluster']:.1f} s cluster start, {t['run'] - local['run']:+.1f} s in the run)")  # fmt: skip
    print(f"speed-up of the run, 1 → 2 workers: {times['ray, 1 worker']['run'] / times['ray, 2 workers']['run']:.2f}×")
    same = all(result == results[("local", 0)] for result in results.values())
    print(f"records, scores and metrics identical across executors: {'yes' if same else 'NO'}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
