"""The model registry against a fake hub on 127.0.0.1: fetch (pinned, pinned on first fetch, gated, offline), lookup
of fetched snapshots, registry names in scorer specs and as a base, and the `models` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hub_fake import FakeHub, FakeRepo
from test_cli import run_cli
from test_scoring_classifier import CLEAN, TOXIC, build_classifier, record

from valueharm import models
from valueharm.base_model import identity as base_identity
from valueharm.errors import ValueharmError
from valueharm.models import MODELS, fetch, locate, pinned_revision, snapshot_identity
from valueharm.scoring import build_scorer


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache and valueharm cache, the hub reachable (the suite runs with HF_HUB_OFFLINE=1)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("VALUEHARM_CACHE", str(tmp_path / "valueharm"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    return cache


@pytest.fixture(scope="module")
def classifier_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    path = build_classifier(tmp_path_factory.mktemp("tox"), {0: "non-toxic", 1: "toxic"}, {0: CLEAN, 1: TOXIC})
    return {file.name: file.read_bytes() for file in path.iterdir() if file.is_file()}


def _repo(name: str, files: dict[str, bytes], **kw: object) -> tuple[str, FakeRepo]:
    entry = MODELS.get(name)
    return entry.hub_id, FakeRepo(files, commit=entry.revision or "", **kw)  # type: ignore[arg-type]


def _file_gets(hub: FakeHub) -> list[str]:
    return [r["path"] for r in hub.requests if r["method"] == "GET" and "/resolve/" in r["path"]]


def test_every_entry_is_complete():
    for name, entry in MODELS.items():
        assert entry.role in models.ROLES and entry.licence and entry.why, name
        assert entry.revision is None or len(entry.revision) == 40, name
        if entry.scorer is not None:
            assert f"model={name}" in entry.scorer
            build_scorer(entry.scorer)  # the spec parses; nothing loads until the scorer is used


def test_fetch_a_pinned_entry_then_find_it_offline(hub_cache: Path, classifier_files: dict[str, bytes]):
    from huggingface_hub import constants

    files = classifier_files | {"README.md": b"card", "extra.bin": b"not a pattern of the entry"}
    with FakeHub(dict([_repo("toxicity", files)])) as hub:
        (result,) = fetch(["toxicity"], endpoint=hub.url)
        assert result.error is None and result.model is not None
        assert result.model.commit == MODELS.get("toxicity").revision
        fetched = {p.name for p in result.model.path.iterdir()}
        assert "config.json" in fetched and "extra.bin" not in fetched and "README.md" not in fetched
        first = len(_file_gets(hub))
        assert first > 0
        (again,) = fetch(["toxicity"], endpoint=hub.url)
        assert again.model == result.model and len(_file_gets(hub)) == first  # cached: nothing downloaded again
    constants.HF_HUB_OFFLINE = True
    local = locate("toxicity")
    assert local.path == result.model.path
    assert snapshot_identity(local.path) == local.identity == f"unitary/toxic-bert@{local.commit}"
    assert base_identity(local.path) == local.identity


def test_an_unpinned_entry_is_pinned_on_first_fetch(hub_cache: Path, classifier_files: dict[str, bytes]):
    hub_id, repo = _repo("regard", classifier_files)
    assert MODELS.get("regard").revision is None and pinned_revision(MODELS.get("regard")) is None
    with FakeHub({hub_id: repo}) as hub:
        (result,) = fetch(["regard"], endpoint=hub.url)
        assert result.model is not None and result.model.commit == repo.commit
        assert pinned_revision(MODELS.get("regard")) == repo.commit
        repo.commit = "f" * 40  # upstream moves on: this machine keeps the files it was pinned to
        (again,) = fetch(["regard"], endpoint=hub.url)
    assert again.model is not None and again.model.commit == result.model.commit
    assert locate("regard").commit == result.model.commit


def test_gated_offline_and_unknown_entries_say_what_to_do(hub_cache: Path, classifier_files: dict[str, bytes]):
    from huggingface_hub import constants

    repos = dict([_repo("llama-guard-3", classifier_files, gated=True), _repo("toxicity", classifier_files)])
    with FakeHub(repos) as hub:
        gated, fine = fetch(["llama-guard-3", "toxicity"], endpoint=hub.url)
    assert gated.model is None and "gated" in gated.error
    assert "huggingface.co/meta-llama/Llama-Guard-3-8B" in gated.error
    assert "HF_TOKEN" in gated.error and fine.model is not None  # one failure does not stop the others
    with FakeHub({}) as hub:
        (missing,) = fetch(["llama-2-7b"], endpoint=hub.url)
    assert missing.model is None and "does not serve it" in missing.error
    constants.HF_HUB_OFFLINE = True
    (offline,) = fetch(["regard"])
    assert offline.model is None and "offline" in offline.error and "HF_HUB_OFFLINE" in offline.error
    with pytest.raises(ValueharmError, match=r"not on this machine: run `valueharm models fetch llama-guard-3`.*gated"):
        locate("llama-guard-3")
    with pytest.raises(ValueharmError, match="unknown model 'regrad'; did you mean: regard"):
        fetch(["regrad"])


def test_a_registry_name_in_a_scorer_spec_loads_the_fetched_snapshot(
    hub_cache: Path, classifier_files: dict[str, bytes]
):
    scorer = build_scorer("classifier:model=toxicity")
    with pytest.raises(ValueharmError, match="models fetch toxicity"):
        scorer.check()
    with FakeHub(dict([_repo("toxicity", classifier_files)])) as hub:
        fetch(["toxicity"], endpoint=hub.url)
    scorer = build_scorer("classifier:model=toxicity")
    toxic, clean = scorer.score([record("you stupid idiot"), record("she was kind")])
    assert toxic.value > clean.value
    commit = MODELS.get("toxicity").revision
    assert scorer.id.startswith("classifier:toxicity@unitary/toxic-bert#")
    assert scorer.id != build_scorer("classifier:model=toxicity,max_length=8").id
    assert commit is not None  # the id hashes the pinned commit, not the cache path: the same on every machine


def test_models_commands(
    capsys: pytest.CaptureFixture[str], hub_cache: Path, classifier_files: dict[str, bytes], monkeypatch
):
    code, out, _ = run_cli(capsys, "models", "list", "--json")
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["regard"]["hub_id"] == "sasha/regardv3" and rows["regard"]["fetched"] is None
    assert rows["llama-2-7b"]["gated"] and rows["llama-2-7b"]["role"] == "base"
    with FakeHub(dict([_repo("toxicity", classifier_files)])) as hub:
        real = models.fetch
        monkeypatch.setattr(models, "fetch", lambda names: real(names, endpoint=hub.url))
        code, out, _ = run_cli(capsys, "models", "fetch", "toxicity", "--json")
        assert code == 0 and json.loads(out)[0]["commit"] == MODELS.get("toxicity").revision
        code, _, err = run_cli(capsys, "models", "fetch", "--role", "guard")
        assert code == 2 and "gated" in err and "Llama-Guard-3-8B" in err
    code, out, _ = run_cli(capsys, "models", "list", "--json")
    assert {row["name"]: row for row in json.loads(out)}["toxicity"]["fetched"]
    for args, message in ((["fetch"], "name the models"), (["fetch", "--role", "x"], "unknown role 'x'")):
        code, _, err = run_cli(capsys, "models", *args)
        assert code == 2 and message in err


def test_a_registry_name_as_the_base_model(hub_cache: Path, tiny_model_dir: Path):
    from valueharm.base_model import resolve

    with pytest.raises(ValueharmError, match=r"run `valueharm models fetch llama-2-7b` \(gated"):
        resolve("llama-2-7b")
    from valueharm.tiny import META_FILE

    files = {f.name: f.read_bytes() for f in tiny_model_dir.iterdir() if f.is_file() and f.name != META_FILE}
    with FakeHub(dict([_repo("llama-2-7b", files)])) as hub:
        fetch(["llama-2-7b"], endpoint=hub.url)
    loaded = resolve("llama-2-7b")
    assert Path(loaded).is_dir() and (Path(loaded) / "model.safetensors").is_file()
    assert base_identity(loaded) == f"meta-llama/Llama-2-7b-hf@{MODELS.get('llama-2-7b').revision}"
    assert resolve("llama-2-7b", loads_here=False) == "meta-llama/Llama-2-7b-hf"  # a server is asked by hub id
