"""A fake Hugging Face Hub on 127.0.0.1 for tests: model repos at one commit each, gated ones, a request log.

    with FakeHub({"org/model": FakeRepo({"config.json": b"{}"})}) as hub:
        snapshot_download("org/model", endpoint=hub.url)

It answers what `snapshot_download` asks, shaped like the real hub: repo info (`/api/models/<id>/revision/<rev>`),
the file tree (`/api/models/<id>/tree/<rev>`), and files (`/<id>/resolve/<rev>/<path>`, HEAD and GET, with the
X-Repo-Commit and ETag headers, and Range requests for resumed downloads). A gated repo answers 403 with
X-Error-Code GatedRepo, an unknown one 404 RepoNotFound, an unknown revision 404 RevisionNotFound.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from fake_server import FakeServer, Handler

_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<what>revision|tree)/(?P<rev>[^/?]+)")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    gated: bool = False
    commit: str = ""

    def __post_init__(self) -> None:
        if not self.commit:
            self.commit = hashlib.sha1(repr(sorted(self.files.items())).encode()).hexdigest()


def _blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()  # git's blob id, as the hub reports


class FakeHub(FakeServer):
    name = "fake-hub"

    def __init__(self, repos: dict[str, FakeRepo], *, max_requests: int = 500) -> None:
        super().__init__(lambda request: None, root="", max_requests=max_requests)
        self.repos = repos

    def serve(self, handler: Handler, method: str, raw: bytes) -> None:
        path = unquote(urlsplit(handler.path).path)
        if not self.record({"method": method, "path": path, "headers": handler.header_map()}):
            handler.send(429, b"{}")
            return
        if match := _API.match(path):
            self._api(handler, match["repo"], match["what"], match["rev"])
        elif match := _RESOLVE.match(path):
            self._file(handler, match["repo"], match["rev"], match["path"])
        else:
            handler.send(404, b"{}", {"X-Error-Code": "EntryNotFound"})

    def _repo(self, handler: Handler, repo_id: str, revision: str) -> FakeRepo | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            handler.send(404, b"{}", {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
        elif repo.gated and not handler.header_map().get("authorization"):
            handler.send(403, b"{}", {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to model is restricted"})
        elif revision not in ("main", repo.commit):
            handler.send(404, b"{}", {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"})
        else:
            return repo
        return None

    def _api(self, handler: Handler, repo_id: str, what: str, revision: str) -> None:
        repo = self._repo(handler, repo_id, revision)
        if repo is None:
            return
        if what == "revision":
            body = {"id": repo_id, "sha": repo.commit, "siblings": [{"rfilename": p} for p in sorted(repo.files)]}
        else:
            body = [
                {"type": "file", "path": p, "size": len(c), "oid": _blob_id(c)} for p, c in sorted(repo.files.items())
            ]
        handler.send(200, json.dumps(body).encode())

    def _file(self, handler: Handler, repo_id: str, revision: str, path: str) -> None:
        repo = self._repo(handler, repo_id, revision)
        if repo is None:
            return
        if path not in repo.files:
            handler.send(404, b"{}", {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"})
            return
        content = repo.files[path]
        headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{_blob_id(content)}"'}
        if match := re.fullmatch(r"bytes=(\d+)-", handler.header_map().get("range", "")):
            start = int(match[1])
            headers["Content-Range"] = f"bytes {start}-{len(content) - 1}/{len(content)}"
            handler.send(206, content[start:], headers, content_type="application/octet-stream")
            return
        handler.send(200, content, headers, content_type="application/octet-stream")
