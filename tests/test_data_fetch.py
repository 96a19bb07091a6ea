"""`data check` and `data fetch` against a real HTTP server on 127.0.0.1 serving the public data files."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from valueharm.data.fetch import RECORD_FILE, FileStatus, check, fetch, git_blob_of
from valueharm.data.registry import DATASETS, DataFile, Dataset, require_file
from valueharm.errors import DataMissingError, UnknownNameError, ValueharmError


class FileServer:
    """Serves a directory with byte ranges; `faults[path]` injects a fault for the next requests of that path.

    Faults: "corrupt" (right length, flipped bytes), "truncate" (sends half, then closes), "404".
    Each entry is a list consumed one request at a time, so "truncate then fine" is `["truncate"]`.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.faults: dict[str, list[str]] = {}
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.lstrip("/")
                server.requests.append((path, self.headers.get("Range")))
                file = server.root / path
                fault = server.faults.get(path, []).pop(0) if server.faults.get(path) else None
                if fault == "404" or not file.is_file():
                    self.send_error(404)
                    return
                body = file.read_bytes()
                start = 0
                if (spec := self.headers.get("Range")) and spec.startswith("bytes="):
                    start = int(spec[6:].split("-")[0])
                if fault == "corrupt":
                    body = bytes(b ^ 0xFF for b in body[:64]) + body[64:]
                chunk = body[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(chunk)))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                if fault == "truncate":
                    self.wfile.write(chunk[: len(chunk) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(chunk)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture()
def server(data_dir: Path) -> Iterator[FileServer]:
    file_server = FileServer(data_dir)
    thread = threading.Thread(target=file_server.httpd.serve_forever, daemon=True)
    thread.start()
    yield file_server
    file_server.httpd.shutdown()
    file_server.httpd.server_close()


def test_check_reports_every_registered_file(data_dir: Path):
    results = check(data_dir)
    registered = [file.path for _, dataset in DATASETS.items() for file in dataset.files]
    assert [r.path for r in results] == registered
    by_status = {r.path: r.status for r in results}
    assert by_status["valueEval_10.csv"] is FileStatus.OK
    assert by_status["holistic_bias/v1.1/descriptors.json"] is FileStatus.OK
    assert by_status["alpaca_data.json"] is FileStatus.MISSING


def test_check_detects_corruption(data_dir: Path, tmp_path: Path):
    (tmp_path / "hex-phi.csv").write_bytes((data_dir / "hex-phi.csv").read_bytes().replace(b"a", b"b", 1))
    (result,) = check(tmp_path, ["hex-phi"])
    assert result.status is FileStatus.CORRUPT


def test_fetch_downloads_and_verifies(server: FileServer, tmp_path: Path, data_dir: Path):
    results = fetch(tmp_path, ["hex-phi", "holistic-bias"], mirror=server.url, progress=False)
    assert all(r.status is FileStatus.OK for r in results)
    assert (tmp_path / "hex-phi.csv").read_bytes() == (data_dir / "hex-phi.csv").read_bytes()
    assert not list(tmp_path.rglob("*.part"))
    # A second fetch finds everything in place and makes no request.
    before = len(server.requests)
    fetch(tmp_path, ["hex-phi"], mirror=server.url, progress=False)
    assert len(server.requests) == before


def test_fetch_resumes_a_truncated_transfer(server: FileServer, tmp_path: Path, data_dir: Path):
    server.faults["valueEval_10.csv"] = ["truncate"]
    (result,) = [r for r in fetch(tmp_path, ["valueeval"], mirror=server.url, progress=False) if "valueEval" in r.path]
    assert result.status is FileStatus.OK
    ranges = [rng for path, rng in server.requests if path == "valueEval_10.csv"]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    assert (tmp_path / "valueEval_10.csv").read_bytes() == (data_dir / "valueEval_10.csv").read_bytes()


def test_fetch_retries_a_corrupted_response(server: FileServer, tmp_path: Path):
    server.faults["hex-phi.csv"] = ["corrupt"]
    (result,) = fetch(tmp_path, ["hex-phi"], mirror=server.url, progress=False)
    assert result.status is FileStatus.OK
    assert [p for p, _ in server.requests].count("hex-phi.csv") == 2


def test_fetch_gives_up_on_persistent_corruption_and_writes_nothing(server: FileServer, tmp_path: Path):
    server.faults["hex-phi.csv"] = ["corrupt"] * 10
    with pytest.raises(ValueharmError, match=r"hex-phi\.csv.*does not match \(sha256 .*≠ 50908bee"):
        fetch(tmp_path, ["hex-phi"], mirror=server.url, progress=False, attempts=3)
    assert not (tmp_path / "hex-phi.csv").exists()
    assert not list(tmp_path.glob("*.part"))


def test_fetch_http_error_names_file_and_url(server: FileServer, tmp_path: Path):
    server.faults["harmful_behaviors.csv"] = ["404"]
    with pytest.raises(ValueharmError, match=r"harmful_behaviors\.csv from http://127\.0\.0\.1:\d+/.*HTTP 404"):
        fetch(tmp_path, ["advbench"], mirror=server.url, progress=False)
    assert not (tmp_path / "harmful_behaviors.csv").exists()


def test_fetch_falls_back_to_the_next_url(server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    dataset = Dataset(
        "two-sources",
        "test",
        (DataFile("hex-phi.csv", (f"{server.url}/gone.csv", f"{server.url}/hex-phi.csv"), None),),
        "-",
        "-",
        "csv",
    )
    monkeypatch.setitem(DATASETS._items, "two-sources", dataset)
    (result,) = fetch(tmp_path, ["two-sources"], progress=False)
    assert result.status is FileStatus.OK  # unpinned: the hash seen is recorded and then held to
    assert "hex-phi.csv" in (tmp_path / RECORD_FILE).read_text()
    (tmp_path / "hex-phi.csv").write_text("tampered")
    (after,) = check(tmp_path, ["two-sources"])
    assert after.status is FileStatus.CORRUPT


def test_unknown_dataset(tmp_path: Path):
    with pytest.raises(UnknownNameError, match="unknown dataset 'hexphi'; did you mean: hex-phi"):
        fetch(tmp_path, ["hexphi"], progress=False)


def test_require_file_names_the_dataset_to_fetch(tmp_path: Path):
    with pytest.raises(DataMissingError, match=r"'hex-phi.csv' not found .*valueharm data fetch hex-phi"):
        require_file(tmp_path, "hex-phi.csv")


def test_git_blob_pins_a_file_without_a_known_sha256(server: FileServer, tmp_path: Path, monkeypatch):
    import subprocess

    blob = subprocess.run(["git", "hash-object", str(server.root / "hex-phi.csv")], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip
    assert git_blob_of(server.root / "hex-phi.csv") == blob  # the id git itself gives the bytes
    good = DataFile("hex-phi.csv", (f"{server.url}/hex-phi.csv",), None, git_blob=blob)
    monkeypatch.setitem(DATASETS._items, "pinned", Dataset("pinned", "test", (good,), "-", "-", "csv"))
    server.faults["hex-phi.csv"] = ["corrupt"]  # a bad first response is caught, though no sha256 is known yet
    (result,) = fetch(tmp_path, ["pinned"], progress=False)
    assert (result.status, result.detail) == (FileStatus.OK, "git blob pinned")
    wrong = DataFile("hex-phi.csv", good.urls, None, git_blob="0" * 40)
    monkeypatch.setitem(DATASETS._items, "pinned", Dataset("pinned", "test", (wrong,), "-", "-", "csv"))
    (after,) = check(tmp_path, ["pinned"])
    assert after.status is FileStatus.CORRUPT and "git blob" in after.detail


def test_row_counts_are_checked(server: FileServer, tmp_path: Path, monkeypatch):
    served = tmp_path / "served"  # the data files, and one CSV whose quoted field holds a line break
    served.mkdir()
    (served / "rows.csv").write_text('id,text\n1,"two\nlines"\n2,plain\n', encoding="utf-8")
    server.root = served

    def declare(rows: int) -> None:
        file = DataFile("rows.csv", (f"{server.url}/rows.csv",), None, rows=rows)
        monkeypatch.setitem(DATASETS._items, "counted", Dataset("counted", "test", (file,), "-", "-", "csv"))

    declare(3)  # the wrong count: refused before its hash is recorded
    with pytest.raises(ValueharmError, match=r"rows\.csv.*does not match \(2 rows, expected 3\)"):
        fetch(tmp_path / "data", ["counted"], progress=False, attempts=1)
    assert not (tmp_path / "data" / "rows.csv").exists()
    declare(2)
    (fetched,) = fetch(tmp_path / "data", ["counted"], progress=False)
    assert (fetched.status, fetched.detail) == (FileStatus.OK, "sha256 recorded at first fetch, 2 rows")
    (tmp_path / "data" / RECORD_FILE).unlink()  # a file copied in by hand: its count is still checked
    (checked,) = check(tmp_path / "data", ["counted"])
    assert (checked.status, checked.detail) == (
        FileStatus.UNVERIFIED,
        "no pinned checksum; fetch to record one, 2 rows",
    )
    declare(5)
    (short,) = check(tmp_path / "data", ["counted"])
    assert (short.status, short.detail) == (FileStatus.CORRUPT, "2 rows, expected 5")


def test_samsum_and_both_dollies_are_registered():
    samsum = DATASETS.get("samsum").files[0]
    assert samsum.rows == 14_732
    no_safety = DATASETS.get("dolly-no-safety").files[0]
    assert no_safety.git_blob and "LLM-Tuning-Safety/LLMs-Finetuning-Safety" in no_safety.urls[0]
    assert no_safety.urls[0].endswith("/llama2/ft_datasets/dolly_dataset/databricks-dolly-15k-no-safety.jsonl")
    assert DATASETS.get("dolly").files[0].path == "databricks-dolly-15k.jsonl"  # the full set stays by name
