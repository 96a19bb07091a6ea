"""The end of a run: metrics, the value-alignment check, the value–harm analyses and the report, all from what the
store holds — so `valueharm report` can redo them for any run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from valueharm.experiment.plan import Experiment
from valueharm.settings import AlignmentCheckSettings, PvqCheckSettings


def finish(experiment: Experiment) -> Path:
    """Metrics, the value-alignment check, the analyses and the report, all from what the store holds."""
    from valueharm import base_model
    from valueharm.experiment.cost import plan_vs_actual
    from valueharm.metrics import compute_metrics
    from valueharm.report import ReportData, render_report
    from valueharm.scoring.echoes import echo_detector
    from valueharm.store import RunStore

    config = experiment.config
    metadata = {item.item_id: item.metadata for items in experiment.benchmark_items.values() for item in items}
    with RunStore(experiment.store_path) as store:
        compute_metrics(store, metadata, seed=config.metrics.seed, n_boot=config.metrics.n_boot,
                        published_bias_score=config.metrics.published_bias_score,
                        echoes=echo_detector(config.template_dir))  # fmt: skip
        rows = store.metrics()
        generations = store.generations()
        scores = store.scores()
        jobs = store.jobs()
        calibrations, calibration_notes = calibrate(experiment, store)
        used = plan_vs_actual(experiment, store)
    checks = alignment_checks(experiment, generations)
    correlation, regressions, hypotheses, notes = value_harm(experiment, rows, checks)
    data = ReportData(
        title=f"valueharm: {config.name}",
        experiment=config.name,
        summary={
            "base model": base_model.identity(experiment.base),
            "models": len([s for s in experiment.specs.values() if s.mitigation is None]),
            "benchmarks": ", ".join(experiment.benchmark_items),
            "generations": len(generations),
            "failed generations": sum(g.error is not None for g in generations),
            "scores": len(scores),
            "jobs done": sum(j["status"] == "done" for j in jobs),
            "jobs failed": sum(j["status"] == "failed" for j in jobs),
        },
        provenance=json.loads(experiment.manifest_path.read_text(encoding="utf-8"))
        | {"config": config.model_dump(mode="json", exclude={"progress"})},
        plan_vs_actual=used,
        metrics=rows,
        alignment=checks,
        alignment_reading=f"held-out survey: {_survey_reading(config.analysis.alignment_check)}; "
        f"PVQ-40: {_survey_reading(config.analysis.pvq)}",
        profiles=experiment.profiles,
        correlation=correlation,
        regressions=regressions,
        hypotheses=hypotheses,
        mitigation=mitigation(experiment, generations, scores),
        calibrations=calibrations,
        examples=_examples(generations),
        notes=[*experiment.notes, *notes, *calibration_notes],
    )
    return render_report(data, experiment.report_path)


def _survey_reading(check: AlignmentCheckSettings | PvqCheckSettings) -> str:
    answers = f"{check.samples} answer{'s' if check.samples > 1 else ''} per question"
    return f"{answers}, sampled at temperature {check.temperature:g}" if check.temperature > 0 else f"{answers}, greedy"


def alignment_checks(experiment: Experiment, generations: Sequence[Any]) -> list[Any]:
    """Per instrument (held-out survey, PVQ-40): each aligned model against its target; the untrained base against
    every target, as the reference."""
    from valueharm.analysis.value_check import check_models

    targets = {
        key: [spec.profile]
        for key, spec in experiment.specs.items()
        if spec.profile is not None and spec.mitigation is None
    }
    return check_models(generations, targets | {"vanilla": list(experiment.profiles.values())})


def value_harm(experiment: Experiment, rows: Sequence[dict[str, Any]], checks: Sequence[Any]) -> tuple[Any, ...]:
    """Correlations over the aligned models of one method (VIM if present: methods are not pooled), tested with
    the models' profile families as the independent units; the hypotheses; the regressions per harm category."""
    from valueharm.analysis.correlation import aligned_models, correlate, harm_metrics, harm_values
    from valueharm.analysis.hypotheses import evaluate
    from valueharm.analysis.regression import regress
    from valueharm.experiment.plan import SURVEY

    analysis = experiment.config.analysis
    notes: list[str] = []
    method = next((m for m in ("vim", "icl") if m in experiment.config.methods), None)
    if method is None:
        return None, [], [], ["value–harm analysis: no aligned models (methods vim or icl)"]
    specs = {key: s for key, s in experiment.specs.items() if s.method == method and s.mitigation is None}
    models = {key: s.profile for key, s in specs.items()}
    families = {key: s.profile.family for key, s in specs.items()}
    if analysis.scores_from == "measured":
        measured = {c.model_key: c.measured for c in checks if c.model_key in models and c.instrument == SURVEY}
        models = {key: measured[key] for key in models if key in measured}
    notes.append(
        f"value–harm correlations over the {len(models)} {method} models in {len(set(families.values()))} profile "
        f"families ({analysis.scores_from} scores)"
    )
    harms = harm_values(rows, harm_metrics(analysis.harm_metrics), models=set(models))
    aligned = aligned_models(models, harms, families)
    correlation = correlate(aligned, sources=harms.sources, x_source=analysis.scores_from, notes=harms.notes,
                            n_permutations=analysis.permutations, seed=analysis.seed)  # fmt: skip
    hypotheses = evaluate(experiment.hypotheses, correlation, alpha=analysis.alpha)
    regressions = [regress(aligned, *column) for column in correlation.columns()] if analysis.regression else []
    return correlation, regressions, hypotheses, notes


def mitigation(experiment: Experiment, generations: Sequence[Any], scores: Sequence[Any]) -> list[Any]:
    """Deltas of every mitigation condition vs input only, per benchmark, scorer and metric it feeds."""
    from valueharm.analysis.mitigation import mitigation_deltas, with_q
    from valueharm.scoring.base import FEEDS, build_scorer

    config = experiment.config
    if not config.mitigation.conditions:
        return []
    deltas = []
    for benchmark in config.mitigation.benchmarks or list(config.benchmarks):
        for spec in config.benchmarks[benchmark].scorers:
            scorer = build_scorer(spec, data_dir=experiment.data_dir)
            for metric in FEEDS.get((benchmark, scorer.kind), ()):
                deltas += mitigation_deltas(
                    generations, scores, benchmark=benchmark, scorer=scorer.id, metric=metric,
                    models=config.mitigation.models or None, n_boot=config.metrics.n_boot, seed=config.metrics.seed,
                )  # fmt: skip
    return with_q(deltas)


def calibrate(experiment: Experiment, store: Any) -> tuple[list[Any], list[str]]:
    """The config's calibration pairs, recomputed from the store; then every calibration the store holds (those
    made with `valueharm calibrate` included)."""
    from valueharm.errors import ValueharmError
    from valueharm.scoring.base import build_scorer
    from valueharm.scoring.calibration import Calibration, calibrate_run

    metrics, notes = experiment.config.metrics, []
    for pair in experiment.config.analysis.calibrate:
        reference, local = (build_scorer(s, data_dir=experiment.data_dir).id for s in (pair.reference, pair.local))
        try:
            calibrate_run(store, reference, local, n_boot=metrics.n_boot, seed=metrics.seed)
        except ValueharmError as error:  # e.g. the reference failed on every text: the rest of the report stands
            notes.append(str(error))
    return [Calibration.from_json(payload) for payload in store.calibrations()], notes


def _examples(generations: Sequence[Any], per_model: int = 2) -> list[dict[str, str]]:
    """A few outputs per (model, benchmark) to read next to the numbers."""
    taken: dict[tuple[str, str], int] = {}
    examples = []
    for g in generations:
        if g.error is None and taken.get((g.model_key, g.benchmark), 0) < per_model:
            taken[(g.model_key, g.benchmark)] = taken.get((g.model_key, g.benchmark), 0) + 1
            examples.append({"model_key": g.model_key, "benchmark": g.benchmark, "query": g.query, "text": g.text})
    return examples
