"""Calibrating a local toxicity scorer against a reference: the statistics on planted relations, and `valueharm
calibrate` against the fake Perspective server, stored in the run and shown in the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from perspective_fake import FakePerspectiveServer, RecordedRequest
from test_cli import run_cli

from valueharm.errors import ValueharmError
from valueharm.records import GenerationRecord, SamplingParams, ScoreRecord
from valueharm.report.html import ReportData, build_html
from valueharm.scoring.calibration import Calibration, calibrate, matched_threshold
from valueharm.store import RunStore

INSULTS = ("idiot", "stupid", "trash", "moron")


def generation(model: str, item: int, sample: int, text: str) -> GenerationRecord:
    return GenerationRecord(
        model_key=model, base_model="tiny", benchmark="rtp", item_id=str(item), category="all", sample=sample,
        prompt=f"prompt {item}", query=f"prompt {item}", params=SamplingParams(), text=text,
    )  # fmt: skip


def planted(n_prompts: int = 60, seed: int = 0) -> tuple[list[GenerationRecord], dict[str, float]]:
    """Generations of two models with reference toxicities spread over [0, 1]."""
    rng = np.random.default_rng(seed)
    records, values = [], {}
    for model in ("vanilla", "vim/Pow"):
        for item in range(n_prompts // 2):
            for sample in range(2):
                record = generation(model, item, sample, f"text {model} {item} {sample}")
                records.append(record)
                values[record.key] = float(rng.uniform(0, 1))
    return records, values


def scores(scorer: str, values: dict[str, float]) -> list[ScoreRecord]:
    return [ScoreRecord(key, scorer, value) for key, value in values.items()]


def test_a_monotone_local_scorer_agrees_and_its_matched_threshold_is_found():
    records, reference = planted()
    local = {key: value**2 for key, value in reference.items()}  # local ≥ 0.25 exactly when reference ≥ 0.5
    result = calibrate(records, scores("ref", reference), scores("loc", local), n_boot=200, seed=1)
    assert result.n_samples == len(records) and result.n_prompts == 60
    assert result.spearman == pytest.approx(1.0) and result.pearson > 0.9
    assert result.pearson_ci[0] < result.pearson < result.pearson_ci[1]
    maxima = {}
    for r in records:
        maxima[(r.model_key, r.item_id)] = max(maxima.get((r.model_key, r.item_id), 0.0), reference[r.key])
    flagged = np.array(list(maxima.values())) >= 0.5
    local_max = np.array(list(maxima.values())) ** 2
    assert local_max[~flagged].max() < result.matched_threshold < local_max[flagged].min()
    assert result.local_probability_at_matched == pytest.approx(flagged.mean())
    low, high = result.matched_threshold_ci
    assert low <= result.matched_threshold <= high and low > 0.1 and high < 0.45
    by = {(m.model_key, m.metric): m for m in result.metrics}
    assert set(by) == {(model, metric) for model in ("all", "vanilla", "vim/Pow")
                       for metric in ("expected_max_toxicity", "toxicity_probability")}  # fmt: skip
    pooled = by[("all", "toxicity_probability")]
    assert pooled.reference.value == pytest.approx(flagged.mean()) and pooled.local.value < pooled.reference.value
    assert Calibration.from_json(json.loads(json.dumps(result.to_json()))) == result


def test_an_unrelated_local_scorer_shows_no_agreement():
    records, reference = planted(n_prompts=200)
    _, noise = planted(n_prompts=200, seed=7)
    local = dict(zip(reference, noise.values(), strict=True))
    result = calibrate(records, scores("ref", reference), scores("loc", local), n_boot=0)
    assert abs(result.pearson) < 0.15 and result.spearman_p > 0.01
    assert result.matched_threshold_ci == (None, None)


def test_only_texts_both_scored_without_error_are_used():
    records, reference = planted()
    local = dict(reference)
    dropped = records[0].key
    failed = [
        ScoreRecord(k, "loc", v) if k != dropped else ScoreRecord(k, "loc", error="timeout") for k, v in local.items()
    ]
    result = calibrate(records, scores("ref", reference), failed, n_boot=0)
    assert result.n_samples == len(records) - 1 and result.spearman == pytest.approx(1.0)
    with pytest.raises(ValueharmError, match="no RTP generation has a score from both"):
        calibrate(records, scores("ref", {dropped: 0.5}), scores("loc", {records[1].key: 0.5}), n_boot=0)
    with pytest.raises(ValueharmError, match="from one scorer"):
        calibrate(records, scores("ref", reference) + scores("other", reference), failed, n_boot=0)


def test_matched_threshold_edges():
    assert matched_threshold(np.array([0.9, 0.1]), np.array([0.8, 0.2])) == pytest.approx(0.5)
    assert matched_threshold(np.array([0.1, 0.1]), np.array([0.8, 0.2])) == pytest.approx(0.9)  # flag none
    assert matched_threshold(np.array([0.9, 0.1]), np.array([0.4, 0.4])) is None  # a tie cannot be split


def insult_toxicity(request: RecordedRequest) -> float:
    """A reference that grows with the insults in the text: 0.05, 0.45, 0.85, …"""
    return min(0.99, 0.05 + 0.4 * sum((request.text or "").lower().count(word) for word in INSULTS))


def test_calibrate_command_against_the_fake_perspective(capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    texts = ["you stupid idiot", "what a lovely day", "stupid trash", "she went to the market", "moron",
             "thanks for your help", "you idiot", "the cat sat on the mat"]  # fmt: skip
    records = [generation(m, i, s, texts[(i + s + len(m)) % len(texts)]) for m in ("vanilla", "icl/Pow")
               for i in range(6) for s in range(2)]  # fmt: skip
    run = tmp_path / "run"
    run.mkdir()
    with RunStore(run / "results.sqlite") as store:
        store.add_generations(records)
    monkeypatch.setenv("PERSPECTIVE_API_KEY", "k")
    with FakePerspectiveServer(insult_toxicity, api_key="k") as fake:
        against = f"perspective:base_url={fake.url},qps=1000"
        args = ("calibrate", "--run", str(run), "--scorer", "toxicity-linear", "--against", against, "--n-boot", "50")
        code, out, err = run_cli(capsys, *args, "--json")
        assert code == 0, err
        requests = len(fake.requests)
        assert requests == 1 + len(records)  # the key check, then every text once
        code, again, _ = run_cli(capsys, *args)  # everything is scored already: no request made again
        assert code == 0 and len(fake.requests) == requests and "matched threshold" in again
    result = json.loads(out)
    assert result["n_samples"] == len(records) and result["pearson"] > 0.5
    assert result["reference"].startswith("perspective:toxicity@") and result["local"].startswith("toxicity-linear")
    with RunStore(run / "results.sqlite") as store:
        stored = [Calibration.from_json(payload) for payload in store.calibrations()]
    assert len(stored) == 1 and stored[0].local == result["local"]
    page = build_html(ReportData(calibrations=stored))
    assert 'id="calibration"' in page and "matched threshold" in page and result["local"] in page
    code, _, err = run_cli(capsys, "calibrate", "--run", str(run), "--scorer", "refusal")
    assert code == 2 and "calibration compares toxicity scorers" in err
    code, _, err = run_cli(capsys, "calibrate", "--run", str(tmp_path / "none"), "--scorer", "toxicity-linear")
    assert code == 2 and "no results.sqlite" in err
