"""Provenance helpers every layer uses: file hashes and installed package versions."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def sha256_of(path: Path) -> str:
    """The file's sha256, read in 1 MiB blocks (data files and model wheels are large)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """Installed version of each package named; one not installed is left out."""
    versions = {}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions
