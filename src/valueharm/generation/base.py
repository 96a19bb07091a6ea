"""The backend interface: requests in, continuations out, in batches; one registry of backends."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from valueharm.errors import ValueharmError
from valueharm.records import SamplingParams
from valueharm.registry import Registry

BASE_ADAPTER = None  # a request with no adapter runs on the base model


@dataclass(frozen=True)
class GenerationRequest:
    key: str  # the generation record's key: also the seed of its own random stream
    prompt: str
    params: SamplingParams
    adapter: str | None = BASE_ADAPTER  # the name the adapter was registered under with the backend


@dataclass(frozen=True)
class Completion:
    key: str
    text: str = ""
    error: str | None = None  # set when the request failed for good (after the backend's own retries)


class Backend(Protocol):
    """Serves one base model and any number of LoRA adapters on it."""

    name: str

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[list[Completion]]:
        """Completions in chunks as they finish, so the caller can store each chunk before the next starts."""
        ...

    def close(self) -> None: ...


BackendFactory = Callable[..., Backend]
BACKENDS: Registry[BackendFactory] = Registry("backend")


def apply_stop(text: str, stop: Sequence[str]) -> str:
    """Cut a continuation at its first stop string: applied after every backend so stop rules are identical."""
    cut = min((index for s in stop if (index := text.find(s)) >= 0), default=len(text))
    return text[:cut]


def request_seed(params: SamplingParams, key: str) -> int:
    """A request's own seed: the same output whatever batch, process or order it runs in."""
    import hashlib

    digest = hashlib.sha256(f"{params.seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def check_adapter_dir(name: str, path: Path, base: str) -> None:
    """A missing adapter, or one trained on another base, is a clear error before anything loads."""
    config = path / "adapter_config.json"
    if not config.is_file():
        raise ValueharmError(f"adapter {name!r}: no adapter_config.json in {path}")
    meta_path = path / "meta.json"
    trained_on = json.loads(meta_path.read_text())["base"] if meta_path.is_file() else None
    trained_on = trained_on or json.loads(config.read_text()).get("base_model_name_or_path")
    from valueharm import base_model

    if trained_on and base_model.identity(trained_on) != base:
        raise ValueharmError(f"adapter {name!r} ({path}) was trained on {trained_on}, not on {base}")
