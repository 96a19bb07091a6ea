"""The model registry: the checkpoints the study uses, by role, each at a pinned hub revision.

A registry name (`regard`, `llama-2-7b`) stands wherever a model is asked for — a scorer's `model=` option, a
config's `base_model` — and always means the same files: the name's snapshot in the Hugging Face cache, fetched
once with `valueharm models fetch NAME` (resumable; gated checkpoints need a token and an accepted licence). An
entry whose revision is not pinned here is pinned on its first fetch: the commit it got is recorded in the cache
and used from then on, so every later run on that machine loads the same files.

Nothing loads from the hub behind the user's back: a name not yet fetched is an error that says what to run.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from valueharm import paths
from valueharm.errors import ValueharmError
from valueharm.registry import Registry

ROLES: tuple[str, ...] = ("base", "chat base", "regard", "toxicity", "guard")
REVISIONS_FILE = "model-revisions.json"  # revisions pinned on first fetch, for entries without one here
_COMMIT = re.compile(r"[0-9a-f]{40}")
_WEIGHTS = ("*.json", "*.safetensors", "tokenizer.model")  # not the consolidated .pth copies some repos carry too


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

    @property
    def page(self) -> str:
        return f"https://huggingface.co/{self.hub_id}"


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
    """The entry's commit: pinned here, else the one recorded at its first fetch, else None (never fetched)."""
    return entry.revision or _recorded_revisions().get(entry.hub_id)


# ------------------------------------------------------------------------------------------------ lookup


@dataclass(frozen=True)
class LocalModel:
    """A registry entry's files on this machine."""

    entry: ModelEntry
    path: Path
    commit: str

    @property
    def identity(self) -> str:
        """How records name it: the same on every machine, unlike the cache path."""
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
    return [_fetch_one(entry, endpoint) for entry in entries]


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
        return Checkpoint(str(local.path), local.entry.hub_id, local.commit)
    return Checkpoint(model, model.rstrip("/"))
