"""A run from start to end: validate and resolve, plan, freeze the config, write the manifest, execute, finish.

Re-running the same command resumes: the job ledger and the store's keys say what is done.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import yaml

from valueharm.errors import ValueharmError
from valueharm.experiment.config import ExperimentConfig, load_config
from valueharm.experiment.cost import costed_plan, save_plan
from valueharm.experiment.finish import finish
from valueharm.experiment.local import Executor, LocalExecutor
from valueharm.experiment.plan import CONFIG_FILE, MANIFEST_FILE, Experiment, PlanSummary, plan, resolve

RUNTIME_ONLY = {"progress", "ray", "cost"}  # settings that may differ between the starts of one run


def freeze_config(config: ExperimentConfig, run_dir: Path) -> None:
    """Write the resolved config at the first start; later starts must bring the same one (progress aside)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    frozen = run_dir / CONFIG_FILE
    current = config.model_dump(mode="json", exclude=RUNTIME_ONLY)
    if frozen.is_file():
        before = yaml.safe_load(frozen.read_text(encoding="utf-8")) or {}
        changed = sorted(key for key in set(before) | set(current) if before.get(key) != current.get(key))
        if changed:
            raise ValueharmError(
                f"{frozen}: this run was started with a different config (changed: {', '.join(changed)}); "
                "use another --run directory, or restore the config"
            )
        return
    tmp = frozen.with_name(CONFIG_FILE + ".tmp")
    tmp.write_text(yaml.safe_dump(current, sort_keys=False, allow_unicode=True), encoding="utf-8")
    tmp.replace(frozen)


def write_manifest(experiment: Experiment) -> dict[str, Any]:
    """Provenance: versions, git commit, data checksums, seeds, hardware — rewritten at every start."""

    import torch

    from valueharm.data.fetch import check
    from valueharm.data.registry import DATASETS
    from valueharm.files import package_versions, sha256_of

    def _sha256(path: Path) -> str | None:
        return sha256_of(path) if path.is_file() else None

    versions = package_versions(
        ("valueharm", "torch", "transformers", "peft", "trl", "datasets", "accelerate", "vllm", "ray")
    )
    config = experiment.config
    manifest = {
        "experiment": config.name,
        "base_model": experiment.base,
        "versions": versions,
        "git_commit": _git_commit(),
        "data_dir": str(experiment.data_dir),
        "data": {c.path: c.status.value for c in check(experiment.data_dir) if c.status.value != "missing"},
        "benign_data": {  # which files each benign baseline trained on, e.g. dolly-no-safety rather than dolly
            name: {file.path: _sha256(experiment.data_dir / file.path) for file in DATASETS.get(name).files}
            for name in config.benign_datasets
        },
        "seeds": {
            "training": config.training.vim.seed,
            "generation": config.generation.seed,
            "metrics": config.metrics.seed,
        },
        "hardware": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        },
    }
    path = experiment.manifest_path
    tmp = path.with_name(MANIFEST_FILE + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    tmp.replace(path)
    return manifest


def _git_commit() -> str | None:
    """The commit of the valueharm source, when it runs from a git checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def run_experiment(
    config_path: str | Path,
    run_dir: str | Path | None = None,
    *,
    dry_run: bool = False,
    executor: Executor | None = None,
    progress: bool | None = None,
) -> Experiment | PlanSummary:
    """Validate, plan, and (unless `dry_run`) execute and finish the experiment; safe to re-run to resume."""
    config = load_config(config_path)
    if progress is not None:
        config = config.model_copy(update={"progress": progress})
    run_dir = Path(run_dir) if run_dir else Path("runs") / config.name
    experiment = resolve(config, run_dir, build_base=not dry_run)
    jobs = plan(experiment)
    if dry_run:
        return costed_plan(experiment, jobs)
    freeze_config(config, run_dir)
    write_manifest(experiment)
    save_plan(experiment, jobs)
    (executor or LocalExecutor()).run(experiment, jobs)
    finish(experiment)
    return experiment


def report_run(run_dir: str | Path) -> Path:
    """Recompute metrics and analyses of a run from its frozen config and store, and write its report again."""
    run_dir = Path(run_dir)
    frozen = run_dir / CONFIG_FILE
    if not frozen.is_file() or not (run_dir / "results.sqlite").is_file():
        raise ValueharmError(f"{run_dir}: not an experiment run (no {CONFIG_FILE} or results.sqlite)")
    experiment = resolve(load_config(frozen), run_dir)
    return finish(experiment)


def make_executor(name: str, address: str | None = None) -> Executor:
    """`local`, or `ray` (its code lives in valueharm.experiment.ray; ray is an optional extra)."""
    if name == "local":
        if address:
            raise ValueharmError("--address is for the ray executor")
        return LocalExecutor()
    if name == "ray":
        from valueharm.experiment.ray import RayExecutor

        return RayExecutor(address)
    raise ValueharmError(f"unknown executor {name!r}; known: local, ray")
