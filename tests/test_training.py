"""LoRA training on the tiny test model: real trainer, real adapters, no mocks of the learning itself."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from valueharm import base_model, tiny
from valueharm.alignment.vim_data import build_stage2
from valueharm.errors import ValueharmError
from valueharm.training import (
    AdapterJob,
    TrainSettings,
    adapter_is_complete,
    build_trainer,
    split_by_length,
    train_adapters,
    vim_jobs,
)
from valueharm.values import get_profile

QUICK = TrainSettings(learning_rate=5e-3, epochs=2, batch_size=8, seed=0)


def weights_digest(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def test_adapters_carry_their_provenance(tiny_adapters: dict[str, Path], tiny_model_dir: Path):
    meta = json.loads((tiny_adapters["vim/Pow"] / "meta.json").read_text())
    assert meta["profile"]["scores"]["Power"] == 6 and meta["kind"] == "vim"
    assert meta["base"] == tiny.build_identity(tiny_model_dir)  # the build, wherever its cache is
    assert [stage["name"] for stage in meta["stages"]] == ["stage1", "stage2"]
    for stage in meta["stages"]:
        losses = {e["epoch"]: e["valid_loss"] for e in stage["epochs"]}
        assert stage["best_epoch"] == min(losses, key=lambda epoch: (losses[epoch], epoch))
        assert stage["n_train"] > 0 and stage["settings"]["learning_rate"] == 5e-3
    assert len(meta["data_sha256"]) == 64 and meta["lora"]["r"] == 8
    benign = json.loads((tiny_adapters["benign/grammar"] / "meta.json").read_text())
    assert benign["kind"] == "benign" and benign["stages"][0]["best_epoch"] == 2  # no validation: the last epoch


def test_sweep_loads_base_once_and_leaves_it_untouched(tiny_model_dir: Path, data_dir: Path, tmp_path: Path):
    model, tokenizer = base_model.load(tiny_model_dir)
    before = weights_digest(model)
    profiles = [get_profile(name, data_dir) for name in ("Hed", "Tra")]
    jobs = vim_jobs(profiles, data_dir, tmp_path, stage1=QUICK, stage2=QUICK, limit=16)
    results = train_adapters(tiny_model_dir, jobs, loaded=(model, tokenizer), progress=False)
    assert weights_digest(model) == before
    assert [r.name for r in results] == ["Hed", "Tra"] and all(adapter_is_complete(r.path) for r in results)
    a, b = (Path(r.path, "adapter_model.safetensors").read_bytes() for r in results)
    assert a != b
    # Re-running the sweep finds both complete and trains nothing.
    again = train_adapters(tiny_model_dir, vim_jobs(profiles, data_dir, tmp_path, limit=16), progress=False)
    assert all(r.skipped for r in again)


def test_completion_tokens_are_never_truncated(tiny_model_dir: Path, data_dir: Path, tmp_path: Path):
    model, tokenizer = base_model.load(tiny_model_dir)
    examples = [e for e in build_stage2(get_profile("Ach", data_dir), data_dir) if e.split == "train"]
    longest = max(examples, key=lambda e: len(tokenizer(e.prompt + e.completion)["input_ids"]))
    trainer = build_trainer(model, tokenizer, [longest], [], QUICK, str(tmp_path), progress=False)
    row = trainer.train_dataset[0]
    labelled = [label for label in row["labels"] if label != -100]
    answer = tokenizer.decode(labelled, skip_special_tokens=True)
    assert answer.strip() == longest.completion.strip()
    assert answer.rstrip(". ").endswith(str(longest.score))


def test_over_long_examples_are_dropped_and_counted(tiny_model_dir: Path, data_dir: Path):
    _, tokenizer = base_model.load(tiny_model_dir)
    examples = build_stage2(get_profile("Pow", data_dir), data_dir)[:50]
    lengths = sorted(len(tokenizer(e.prompt + e.completion)["input_ids"]) + 1 for e in examples)
    cut = lengths[25]
    kept, dropped = split_by_length(tokenizer, examples, cut)
    assert dropped == sum(length > cut for length in lengths) and len(kept) + dropped == 50


def test_unwritable_output_dir(tiny_model_dir: Path, data_dir: Path, tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    jobs = vim_jobs([get_profile("Pow", data_dir)], data_dir, blocker / "adapters", limit=8)
    with pytest.raises(ValueharmError, match="is not writable"):
        train_adapters(tiny_model_dir, jobs, progress=False)


def test_a_failed_save_leaves_nothing_that_looks_complete(
    tiny_model_dir: Path, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from peft import PeftModel

    def crash(self, *args, **kwargs):
        Path(args[0], "adapter_model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(PeftModel, "save_pretrained", crash)
    jobs = vim_jobs([get_profile("Pow", data_dir)], data_dir, tmp_path, stage1=QUICK, stage2=QUICK, limit=8)
    with pytest.raises(KeyboardInterrupt):
        train_adapters(tiny_model_dir, jobs, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_settings_validation():
    with pytest.raises(ValidationError, match="epochs"):
        TrainSettings(epochs=0)
    with pytest.raises(ValidationError, match="epochz"):
        TrainSettings(epochz=3)


def test_meta_records_every_setting_under_its_published_name(tiny_adapters: dict[str, Path]):
    meta = json.loads((tiny_adapters["vim/Pow"] / "meta.json").read_text())
    assert list(meta["stages"][0]["settings"]) == [
        "learning_rate", "epochs", "batch_size", "gradient_accumulation", "max_length", "weight_decay",
        "group_by_length", "seed", "precision", "pad_to_multiple_of", "lr_scheduler", "warmup_ratio", "eval_batch_size",
        "max_steps",
    ]  # fmt: skip
    assert meta["lora"] == {"r": 8, "alpha": 32, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]}
    assert (meta["threshold"], meta["data_seed"]) == (3.0, 42)


def test_empty_job_training_data(tiny_model_dir: Path, tmp_path: Path):
    job = AdapterJob("empty", tmp_path / "empty", [("stage1", [], [], QUICK)])
    with pytest.raises(ValueharmError, match="no training examples"):
        train_adapters(tiny_model_dir, [job], progress=False)


def test_valid_limit_caps_the_validation_splits_alone(data_dir: Path, tmp_path: Path):
    from valueharm.values import get_profile

    (job,) = vim_jobs([get_profile("Pow", data_dir)], data_dir, tmp_path, limit=20, valid_limit=10)
    for name, train, valid, _ in job.stages:
        assert (len(train), len(valid)) == (20, 10), name
    assert job.meta["valid_limit"] == 10
    (uncapped,) = vim_jobs([get_profile("Pow", data_dir)], data_dir, tmp_path / "b", limit=20)
    assert [len(valid) for _, _, valid, _ in uncapped.stages] == [20, 20]  # unset: as many as `limit`
    stage2 = dict((name, valid) for name, _, valid, _ in job.stages)["stage2"]
    assert len({e.value for e in stage2}) == 10  # still balanced over the ten values


# Trains one adapter in a fresh process; with "build-first", first builds a tiny base in the same process (which leaves
# its allocator in another state), as a first run on an empty cache does.
_TRAIN_ONE = """
import sys
from pathlib import Path
from valueharm.training import TrainSettings, train_adapters, vim_jobs
from valueharm.values import get_profile

base, data, out, history = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
if history == "build-first":
    from valueharm.tiny import build_tiny
    build_tiny("test", data_dir=data, out=out.parent / "rebuilt", progress=False)
settings = TrainSettings(learning_rate=5e-3, epochs=1, batch_size=8, seed=0)
jobs = vim_jobs([get_profile("Hed", data)], data, out, stage1=settings, stage2=settings, limit=16)
train_adapters(base, jobs, progress=False)
"""


def test_seeded_training_does_not_depend_on_the_process_history(tiny_model_dir: Path, data_dir: Path, tmp_path: Path):
    """A resumed run, or one that first built its base, must train the same adapter as a fresh process."""
    import subprocess
    import sys

    weights = []
    for history in ("fresh", "build-first"):
        out = tmp_path / history
        subprocess.run(
            [sys.executable, "-c", _TRAIN_ONE, str(tiny_model_dir), str(data_dir), str(out), history], check=True
        )
        weights.append((out / "Hed" / "adapter_model.safetensors").read_bytes())
    assert weights[0] == weights[1]
