"""Check and fetch registered data files: checksums, resumable downloads, atomic writes."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import httpx
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from valueharm.data.registry import DATASETS, DataFile, Dataset
from valueharm.errors import ValueharmError
from valueharm.files import sha256_of

# Hashes seen on first download of files whose canonical hash is not pinned in the registry.
RECORD_FILE = ".valueharm-checksums.json"
CHUNK = 1 << 16


class FileStatus(StrEnum):
    OK = "ok"
    MISSING = "missing"
    CORRUPT = "corrupt"
    UNVERIFIED = "unverified"  # present, but no pinned or recorded hash to hold it to


@dataclass(frozen=True)
class FileCheck:
    dataset: str
    path: str
    status: FileStatus
    detail: str = ""


def _recorded(data_dir: Path) -> dict[str, str]:
    path = data_dir / RECORD_FILE
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError, ValueError):
        raise ValueharmError(f"{path}: unreadable checksum record; delete it and fetch again") from None


def _record(data_dir: Path, path: str, sha256: str) -> None:
    records = _recorded(data_dir)
    records[path] = sha256
    _atomic_write_text(data_dir / RECORD_FILE, json.dumps(records, indent=1, sort_keys=True))


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def expected_sha256(data_dir: Path, file: DataFile) -> str | None:
    """The pinned sha256, else the one recorded at first fetch (a file pinned by its git blob needs none)."""
    if file.sha256 or file.git_blob:
        return file.sha256
    return _recorded(data_dir).get(file.path)


def check_file(data_dir: Path, dataset: Dataset, file: DataFile) -> FileCheck:
    full = data_dir / file.path
    if not full.is_file():
        return FileCheck(dataset.name, file.path, FileStatus.MISSING)
    expected = expected_sha256(data_dir, file)
    problem = content_problem(full, file, expected)
    if problem:
        return FileCheck(dataset.name, file.path, FileStatus.CORRUPT, problem)
    rows = f", {file.rows:,} rows" if file.rows is not None else ""
    if expected is None and file.git_blob is None:
        detail = f"no pinned checksum; fetch to record one{rows}"
        return FileCheck(dataset.name, file.path, FileStatus.UNVERIFIED, detail)
    source = (
        "git blob pinned" if expected is None else "sha256 pinned" if file.sha256 else "sha256 recorded at first fetch"
    )
    return FileCheck(dataset.name, file.path, FileStatus.OK, source + rows)


def content_problem(path: Path, file: DataFile, expected_sha256: str | None) -> str | None:
    """Why the file's bytes are not the registered ones (checksum, then record count), or None."""
    if expected_sha256 is not None:
        actual = sha256_of(path)
        if actual != expected_sha256:
            return f"sha256 {actual[:12]}… ≠ {expected_sha256[:12]}…"
    elif file.git_blob is not None:
        actual = git_blob_of(path)
        if actual != file.git_blob:
            return f"git blob {actual[:12]}… ≠ {file.git_blob[:12]}…"
    if file.rows is not None:
        found = count_rows(path, Path(file.path).suffix)
        if found is None:
            return f"not readable as {Path(file.path).suffix} records, expected {file.rows:,}"
        if found != file.rows:
            return f"{found:,} rows, expected {file.rows:,}"
    return None


def git_blob_of(path: Path) -> str:
    """The id git gives the file's bytes: SHA-1 of "blob <size>\\0" + bytes."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def count_rows(path: Path, suffix: str) -> int | None:
    """Records in a CSV (after its header; quoted line breaks stay inside a record), JSONL or JSON list file, by the
    registered name's `suffix` (a download is a .part file); None when the file cannot be read as one."""
    try:
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8-sig") as handle:
                return max(0, sum(1 for _ in csv.reader(handle)) - 1)
        text = path.read_text(encoding="utf-8")
        if suffix == ".jsonl":
            return sum(1 for line in text.splitlines() if line.strip())
        records = json.loads(text)
        return len(records) if isinstance(records, list) else None
    except (UnicodeDecodeError, csv.Error, json.JSONDecodeError):
        return None


def selected(names: Iterable[str] = ()) -> list[Dataset]:
    """The named datasets (unknown names are an error listing the known ones), or all of them."""
    names = list(names)
    return [DATASETS.get(name) for name in names] if names else [d for _, d in DATASETS.items()]


def check(data_dir: Path, names: Iterable[str] = ()) -> list[FileCheck]:
    """Status of every file of the named datasets (all by default) in the data directory."""
    return [check_file(data_dir, dataset, file) for dataset in selected(names) for file in dataset.files]


def fetch(
    data_dir: Path,
    names: Iterable[str] = (),
    *,
    mirror: str | None = None,
    force: bool = False,
    progress: bool = True,
    timeout: float = 60.0,
    attempts: int = 4,
) -> list[FileCheck]:
    """Download the named datasets' files that are missing or corrupt; each file is verified, then moved in place.

    Each file's URLs are tried in order; `mirror` replaces them by `<mirror>/<path>` (a data directory served
    over HTTP, or an institutional mirror). An interrupted download resumes from its `.part` file.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    results = []
    with (
        httpx.Client(timeout=timeout, follow_redirects=True) as client,
        Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            disable=not progress,
            transient=True,
        ) as bar,
    ):
        for dataset in selected(names):
            for file in dataset.files:
                status = check_file(data_dir, dataset, file)
                if status.status is FileStatus.OK and not force:
                    results.append(status)
                    continue
                urls = [f"{mirror.rstrip('/')}/{file.path}"] if mirror else list(file.urls)
                _download_first(client, urls, data_dir, file, bar, attempts)
                results.append(check_file(data_dir, dataset, file))
    return results


def _download_first(
    client: httpx.Client, urls: list[str], data_dir: Path, file: DataFile, bar: Progress, attempts: int
) -> None:
    """The first URL that yields the right bytes wins; the error names every URL tried when none does."""
    problems = []
    for url in urls:
        try:
            _download(client, url, data_dir, file, bar, attempts)
            return
        except ValueharmError as error:
            problems.append(str(error))
    raise ValueharmError("; ".join(problems))


def _download(client: httpx.Client, url: str, data_dir: Path, file: DataFile, bar: Progress, attempts: int) -> None:
    """Bounded attempts: a cut-off transfer resumes from its part file; a bad checksum starts over."""
    target = data_dir / file.path
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    expected = expected_sha256(data_dir, file)
    task = bar.add_task(file.path, total=file.size)
    problem = ""
    for _ in range(attempts):
        try:
            complete = _stream_into(client, url, part, bar, task)
        except httpx.HTTPStatusError as err:
            part.unlink(missing_ok=True)
            raise ValueharmError(f"fetching {file.path} from {url}: HTTP {err.response.status_code}") from None
        except httpx.TransportError as err:
            problem = f"{type(err).__name__}: {err}"
            continue
        if not complete:
            problem = "the connection closed before the whole file arrived"
            continue
        mismatch = content_problem(part, file, expected)
        if mismatch is None:
            os.replace(part, target)
            if file.sha256 is None and file.git_blob is None:
                _record(data_dir, file.path, sha256_of(target))
            return
        part.unlink()
        problem = f"the download does not match ({mismatch})"
    kept = f"; the partial download in {part} resumes next time" if part.exists() else ""
    raise ValueharmError(f"fetching {file.path} from {url}: gave up after {attempts} attempts, {problem}{kept}")


def _stream_into(client: httpx.Client, url: str, part: Path, bar: Progress, task: object) -> bool:
    """Append the rest of `url` to `part`; True when the response ended where its headers said it would."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    headers["Accept-Encoding"] = "identity"  # byte ranges and checksums refer to the file's own bytes
    with client.stream("GET", url, headers=headers) as response:
        if response.status_code == 416:  # the part file already holds everything
            return True
        response.raise_for_status()
        if offset and response.status_code != 206:  # server ignored the range: start over
            offset = 0
        length = response.headers.get("content-length")
        expected_end = offset + int(length) if length is not None else None
        bar.update(task, completed=offset)  # type: ignore[arg-type]
        with part.open("ab" if offset else "wb") as handle:
            try:
                for block in response.iter_raw(CHUNK):
                    handle.write(block)
                    bar.advance(task, len(block))  # type: ignore[arg-type]
            except httpx.TransportError:
                return False
    return expected_end is None or part.stat().st_size == expected_end
