"""The Ray executor on real local clusters (2 CPUs, no dashboard): same records as local, survives killed workers."""

from __future__ import annotations

import ast
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import yaml
from run_outcome import outcome

import valueharm.experiment
from valueharm.errors import ValueharmError
from valueharm.experiment import LocalExecutor, builtin_config, make_executor, run_experiment
from valueharm.experiment.config import RaySettings, validated
from valueharm.experiment.plan import GenerateJob
from valueharm.experiment.ray import RayExecutor, split_groups
from valueharm.store import RunStore

try:
    import ray
except ImportError:  # the optional extra (part of `dev`): the tests that need a cluster are skipped
    ray = None

needs_ray = pytest.mark.skipif(ray is None, reason="ray is not installed: pip install 'valueharm[ray]'")

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "valueharm"
SMALL = builtin_config("smoke") | {"name": "small-ray", "profiles": {"names": ["Pow", "Uni"]}, "progress": False}
SMALL["benchmarks"]["hex-phi"] = {"limit": 3, "max_new_tokens": 8, "scorers": ["refusal"]}


@pytest.fixture(scope="module")
def cluster() -> str:
    """A local cluster this test process starts (and so stops): its GCS address, for `--address`."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20, log_to_driver=False)
        yield ray.get_runtime_context().gcs_address
        ray.shutdown()


@pytest.fixture(scope="module")
def config(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "small.yaml"
    path.write_text(yaml.safe_dump({**SMALL, "data_dir": str(data_dir)}))
    return path


@pytest.fixture(scope="module")
def local_outcome(config: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    run = tmp_path_factory.mktemp("local") / "run"
    run_experiment(config, run, executor=LocalExecutor())
    return outcome(run)


def run_cli(config: Path, run: Path, *options: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "valueharm", "run", str(config), "--run", str(run), "--quiet", *options]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})


@needs_ray
def test_ray_run_equals_local_run(config: Path, local_outcome: tuple, tmp_path: Path, monkeypatch):
    """`--executor ray` with no address: a local cluster for the run, the same records and metrics as local."""
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    process = run_cli(config, tmp_path / "run", "--executor", "ray")
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err.decode()[-3000:]
    generations, scores, metrics, jobs = outcome(tmp_path / "run")
    assert generations and scores and metrics
    assert all(status == "done" for _, status in jobs)
    assert (generations, scores, metrics, jobs) == local_outcome
    assert len({key for key, *_ in generations}) == len(generations)
    assert not list((tmp_path / "run").glob(".ray-probe-*"))
    with RunStore(tmp_path / "run" / "results.sqlite") as store:
        times = store.stage_times()
    assert set(times) == {"train", "generate", "score"} and all(t["seconds"] > 0 for t in times.values())
    kinds = [job_id.split(":")[0] for job_id, _ in jobs]
    assert {stage: t["jobs"] for stage, t in times.items()} == {kind: kinds.count(kind) for kind in set(kinds)}


@needs_ray
def test_killed_workers_are_retried_to_the_clean_result(
    cluster: str, config: Path, local_outcome: tuple, tmp_path: Path
):
    """SIGKILL the worker training an adapter, then the one streaming a generation group: the run on an existing
    cluster (`--address`) still ends with exactly the clean records, and leaves that cluster running."""
    run = tmp_path / "run"
    killed: list[str] = []

    def killer() -> None:
        for task, ready in (("ray::train:", lambda: True), ("ray::generate:", lambda: generations_stored(run) >= 8)):
            while process.poll() is None:
                worker = next(((p, title) for p, title in ray_workers() if title.startswith(task)), None)
                if worker is not None and ready():
                    with contextlib.suppress(psutil.NoSuchProcess):
                        worker[0].send_signal(signal.SIGKILL)
                        killed.append(worker[1])
                        break
                threading.Event().wait(0.05)

    process = run_cli(config, run, "--executor", "ray", "--address", cluster)
    watcher = threading.Thread(target=killer, daemon=True)
    watcher.start()
    _, err = process.communicate(timeout=300)
    watcher.join(timeout=5)
    assert process.returncode == 0, err.decode()[-3000:]
    assert [name.split(":")[2] for name in killed] == ["train", "generate"], killed
    assert outcome(run) == local_outcome
    with sqlite3.connect(run / "results.sqlite") as db:
        attempts = [detail for (detail,) in db.execute("SELECT detail FROM jobs WHERE job_id LIKE 'generate:%'")]
    assert any('"attempts": 2' in detail for detail in attempts)
    assert ray.cluster_resources()["CPU"] == 2  # the cluster given by address is still up


@needs_ray
def test_a_killed_driver_resumes_to_the_clean_result(cluster: str, config: Path, local_outcome: tuple, tmp_path: Path):
    """SIGKILL the driver mid-generation: the cluster drops its tasks, and the same command resumes from the store."""
    run = tmp_path / "run"
    process = run_cli(config, run, "--executor", "ray", "--address", cluster)
    while generations_stored(run) < 16 and process.poll() is None:
        threading.Event().wait(0.05)
    process.kill()
    process.wait()
    assert 16 <= generations_stored(run) < len(local_outcome[0])
    resumed = run_cli(config, run, "--executor", "ray", "--address", cluster)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err.decode()[-3000:]
    assert outcome(run) == local_outcome


def ray_workers() -> list[tuple[psutil.Process, str]]:
    """The workers of the cluster this test process started (its descendants, not another test run's), by title."""
    workers = []
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, IndexError):
            title = process.cmdline()[0]
            if title.startswith("ray::"):
                workers.append((process, title))
    return workers


def generations_stored(run: Path) -> int:
    try:
        with sqlite3.connect(run / "results.sqlite") as db:
            return db.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
    except sqlite3.Error:
        return 0


@needs_ray
def test_a_failing_job_fails_alone_and_the_run_says_so(cluster: str, data_dir: Path, tmp_path: Path):
    """An error raised in a task (not a dead worker) is not retried: its job and the jobs that need it are marked
    failed, everything else is stored — the other model of the same generation group too — and the run ends with
    the task's own error message."""
    config = {
        **SMALL,
        "data_dir": str(data_dir),
        "profiles": {"names": ["Pow"]},
        "methods": ["vanilla", "vim"],
        "training": {"vim": {"epochs": 1, "limit": 4, "max_length": 8}},  # no example fits: training fails
        "benchmarks": {"rtp": {"limit": 2, "samples": 1, "max_new_tokens": 4, "scorers": ["toxicity-linear"]}},
        "mitigation": {},
        "analysis": {"alignment_check": {"enabled": False}},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueharmError, match=r"2 job\(s\) failed.*train:vim/Pow: .*no training examples fit"):
        run_experiment(path, tmp_path / "run", executor=RayExecutor(settings={"generate": {"groups": 1}}))
    _, scores, _, jobs = outcome(tmp_path / "run")
    assert dict(jobs) == {
        "train:vim/Pow": "failed",
        "generate:vim/Pow:rtp": "failed",
        "generate:vanilla:rtp": "done",
        "score:rtp:toxicity-linear": "done",
    }
    assert len(scores) == 2  # the vanilla generations, scored
    with sqlite3.connect(tmp_path / "run" / "results.sqlite") as db:
        (detail,) = db.execute("SELECT detail FROM jobs WHERE job_id = 'generate:vim/Pow:rtp'").fetchone()
    assert "needs train:vim/Pow, which failed" in detail


@needs_ray
def test_adapters_go_to_the_shared_dir(cluster: str, data_dir: Path, tmp_path: Path):
    config = {
        **SMALL,
        "data_dir": str(data_dir),
        "profiles": {"names": ["Pow"]},
        "methods": ["vim"],
        "training": {"vim": {"epochs": 1, "learning_rate": 5e-3, "limit": 4}},
        "benchmarks": {"rtp": {"limit": 1, "samples": 1, "max_new_tokens": 4}},
        "mitigation": {},
        "analysis": {"alignment_check": {"enabled": False}},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    run_experiment(path, tmp_path / "run", executor=RayExecutor(settings={"shared_dir": tmp_path / "shared"}))
    assert (tmp_path / "shared" / "adapters" / "vim" / "Pow" / "meta.json").is_file()
    assert not (tmp_path / "run" / "adapters").exists()
    generations, _, _, jobs = outcome(tmp_path / "run")
    assert len(generations) == 1 and all(status == "done" for _, status in jobs)


def test_without_ray_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delitem(sys.modules, "valueharm.experiment.ray")  # imported afresh below, and restored after
    monkeypatch.delattr(valueharm.experiment, "ray")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    with pytest.raises(ValueharmError, match=r"pip install 'valueharm\[ray\]'"):
        make_executor("ray")


@needs_ray
def test_ray_client_addresses_are_refused_with_the_alternative():
    with pytest.raises(ValueharmError, match=r"Ray Client is not supported.*--address auto"):
        make_executor("ray", "ray://head:10001")


def test_only_the_ray_executor_imports_ray():
    importers = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            if any(name == "ray" or name.startswith("ray.") for name in names):
                importers.add(path.relative_to(PACKAGE).as_posix())
    assert importers == {"experiment/ray.py"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"trian": {}}, r"^ray\.trian: unknown key; known: generate, local, max_retries"),
        ({"train": {"gpus": 1}}, r"^ray\.train\.gpus: unknown key; known: memory, num_cpus, num_gpus$"),
        ({"score": {"memory": "lots"}}, r"^ray\.score\.memory: expected bytes"),
        ({"max_retries": -1}, r"^ray\.max_retries: Input should be greater than or equal to 0, got -1$"),
        ({"generate": {"groups": 0}}, r"^ray\.generate\.groups: Input should be greater than or equal to 1, got 0$"),
        ({"generate": {"groups": 1.5}}, r"^ray\.generate\.groups: Input should be a valid integer.*, got 1\.5$"),
        ({"train": {"num_cpus": "two"}}, r"^ray\.train\.num_cpus: Input should be a valid number"),
    ],
)
def test_settings_errors_name_the_key(settings: dict, message: str):
    with pytest.raises(ValueharmError, match=message):
        validated(RaySettings, settings, "ray")


@needs_ray
def test_settings_given_to_the_executor_are_validated_as_the_configs():
    with pytest.raises(ValueharmError, match=r"^ray\.trian: unknown key"):
        RayExecutor(settings={"trian": {"num_cpus": 1}})


def test_settings_from_a_plain_dict():
    settings = validated(
        RaySettings, {"train": {"num_gpus": 1, "memory": "16GiB"}, "score": {"tasks": 4}, "shared_dir": "/shared/runs"}
    )
    assert settings.train.num_gpus == 1 and settings.train.memory == 16 * 2**30
    assert settings.score.tasks == 4 and settings.score.num_gpus == 0 and settings.generate.num_gpus is None
    assert settings.shared_dir == Path("/shared/runs") and settings.max_retries == 2


def test_generation_groups_keep_each_adapter_in_one_group_and_balance_records():
    names = {"vanilla": "vanilla", "vim/Pow": "vim/Pow", "vim/Pow+mitigation:safety": "vim/Pow", "vim/Uni": "vim/Uni"}
    experiment = SimpleNamespace(specs={key: SimpleNamespace(name=name) for key, name in names.items()})
    jobs = [
        GenerateJob(key, bench) for bench in ("rtp", "hex-phi") for key in names if "+" not in key or bench != "rtp"
    ]
    keys = {job.id: ["k"] * (10 if job.benchmark == "rtp" else 5) for job in jobs}
    groups = split_groups(experiment, jobs, keys, 2)
    assert sorted(len(group) for group in groups) == [3, 4]
    by_name = {names[job.model_key]: index for index, group in enumerate(groups) for job in group}
    assert all(by_name[names[job.model_key]] == index for index, group in enumerate(groups) for job in group)
    assert len(split_groups(experiment, jobs, keys, 10)) == 3  # never more groups than adapters/models


def test_the_configs_ray_section_is_validated(tmp_path: Path, data_dir: Path):
    config = {**SMALL, "data_dir": str(data_dir), "methods": ["vanilla"], "mitigation": {}, "ray": {"max_retries": -1}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueharmError, match=r"exp\.yaml: ray\.max_retries: Input should be greater than or equal"):
        run_experiment(path, tmp_path / "run", executor=LocalExecutor())  # every executor: the config is invalid
    assert not (tmp_path / "run").exists()
