"""The experiment report: one self-contained HTML file (inline CSS, plots as base64 PNG, no external references).

What the report says, section by section, from `ReportData`. Every piece of text that reaches the page — model
keys, categories, provenance, model outputs — goes through `markup.esc`; only markup built with `markup` is trusted
(the `Html` marker). Every section renders when its data is empty, saying it was not run, so a partial experiment
still gets a readable report.
"""

from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from valueharm import __version__
from valueharm.analysis.correlation import DEFAULT_HARM_METRICS, OVERALL, CorrelationResult, HarmMetric
from valueharm.analysis.hypotheses import HypothesisResult, Verdict
from valueharm.analysis.mitigation import MitigationDelta, split_model_key
from valueharm.analysis.regression import RegressionResult
from valueharm.analysis.value_check import PUBLISHED_PVQ_NMSE, PVQ_BENCHMARK, SURVEY_BENCHMARK, AlignmentCheck
from valueharm.metrics import published_label
from valueharm.report import plots
from valueharm.report.analysis_sections import correlation_section, hypotheses_section, mitigation_section
from valueharm.report.calibration import calibration_section
from valueharm.report.markup import (
    Cell,
    Html,
    benchmark_order,
    esc,
    fmt_num,
    fmt_p,
    html_empty,
    html_figure,
    html_note,
    html_section,
    html_table,
    model_order,
    num,
    with_sub,
)
from valueharm.scoring.calibration import Calibration
from valueharm.values import VALUE_ABBREVIATIONS, VALUES, ValueProfile

INSTRUMENT_NAMES = {SURVEY_BENCHMARK: "held-out survey", PVQ_BENCHMARK: "PVQ-40"}
SHARES = ("empty_share", "echo_share")  # degenerate-answer shares: shown after the metrics they qualify
MAX_TEXT = 800  # characters of a model output shown in the examples table


@dataclass
class ReportData:
    """Everything the report shows; the experiment runner assembles it, any field may be empty."""

    title: str = "valueharm report"
    experiment: str = ""  # the experiment's name
    created: str = ""  # when the results were produced (default: render time, UTC)
    summary: Mapping[str, Any] = field(default_factory=dict)  # run summary, e.g. models, jobs done/failed, duration
    provenance: Mapping[str, Any] = field(default_factory=dict)  # config, versions, git commit, checksums, seeds…
    plan_vs_actual: Sequence[Mapping[str, Any]] = ()  # per stage: the cost plan beside what the run used
    metrics: Sequence[Mapping[str, Any]] = ()  # rows of the store's `metrics` table
    alignment: Sequence[AlignmentCheck] = ()
    alignment_reading: str = ""  # how survey answers were read, e.g. "4 sampled answers per question (temperature 1)"
    profiles: Mapping[str, ValueProfile] = field(default_factory=dict)  # target profiles by name (alignment check)
    correlation: CorrelationResult | None = None
    regressions: Sequence[RegressionResult] = ()
    hypotheses: Sequence[HypothesisResult] = ()
    mitigation: Sequence[MitigationDelta] = ()
    calibrations: Sequence[Calibration] = ()  # local toxicity scorers against a reference (e.g. Perspective)
    examples: Sequence[Mapping[str, Any]] = ()  # sample outputs to read, e.g. {model_key, benchmark, query, text}
    notes: Sequence[str] = ()  # warnings for the reader
    harm_metrics: Mapping[str, HarmMetric] | None = None  # per-category plots; default: the correlation's metrics


# -------------------------------------------------------------------------------------------------- sections


def _summary(data: ReportData) -> Html:
    models = {row["model_key"] for row in data.metrics}
    benchmarks = {row["benchmark"] for row in data.metrics}
    cells = [c for c in data.correlation.cells if c.decided] if data.correlation else []
    cards = [
        (len(models), "models with metrics"),
        (len(benchmarks), "benchmarks"),
        (len(data.alignment), "alignment checks"),
        (f"{sum(c.family_q < 0.05 for c in cells)} / {len(cells)}", "correlations with family q < .05"),
        (
            f"{sum(r.verdict == Verdict.SUPPORTED for r in data.hypotheses)} / {len(data.hypotheses)}",
            "hypothesis cells supported",
        ),
        (len(data.mitigation), "mitigation deltas"),
    ]
    card_html = "".join(
        f'<div class="card"><b>{esc(value)}</b><span>{esc(label)}</span></div>' for value, label in cards
    )
    parts = [Html(f'<div class="cards">{card_html}</div>')]
    if data.correlation:
        parts.append(Html(f'<p class="finding">{esc(data.correlation.finding())}</p>'))
    if data.summary:
        parts.append(_key_values(data.summary))
    notes = _all_notes(data)
    if notes:
        items = "".join(f"<li>{esc(note)}</li>" for note in notes)
        parts += [Html("<h3>Notes and warnings</h3>"), Html(f'<ul class="notes">{items}</ul>')]
    return html_section("summary", "Summary", *parts)


def _all_notes(data: ReportData) -> list[str]:
    notes = list(data.notes)
    if data.correlation:
        notes += [f"correlation: {n}" for n in data.correlation.notes]
    notes += [f"alignment check {c.model_key}: {n}" for c in data.alignment for n in c.notes]
    return list(dict.fromkeys(notes))


def _key_values(mapping: Mapping[str, Any]) -> Html:
    """A generic key/value table; nested mappings become nested tables, lists are joined."""
    rows = "".join(f"<tr><th>{esc(key)}</th><td>{_kv_value(value)}</td></tr>" for key, value in mapping.items())
    return Html(f'<div class="scroll kv"><table class="kv"><tbody>{rows}</tbody></table></div>')


def _kv_value(value: Any) -> Html:
    if isinstance(value, Mapping):
        return _key_values(value) if value else esc("(none)")
    if isinstance(value, list | tuple | set | frozenset):
        items = list(value)
        if any(isinstance(item, Mapping) for item in items):
            return Html("".join(_kv_value(item) for item in items))
        return esc(", ".join(map(str, items)) if items else "(none)")
    return esc(value)


def _provenance(data: ReportData) -> Html:
    """Short entries shown; long ones (the config, data checksums) folded so the results stay near the top."""
    if not data.provenance:
        return html_section("provenance", "Provenance", html_empty("No provenance recorded."))
    rows = []
    for key, value in data.provenance.items():
        cell = _kv_value(value)
        if isinstance(value, Mapping) and len(value) > 4:
            cell = Html(f"<details><summary>{len(value)} entries</summary>{cell}</details>")
        rows.append(f"<tr><th>{esc(key)}</th><td>{cell}</td></tr>")
    used = []
    if data.plan_vs_actual:
        headers = list(data.plan_vs_actual[0])
        table = [[row[h] if isinstance(row[h], str) else num(row[h]) for h in headers] for row in data.plan_vs_actual]
        note = "The cost plan made at the run's first start beside what the run used, over all its starts."
        used = [html_note(note), html_table(headers, table)]
    return html_section(
        "provenance",
        "Provenance",
        *used,
        Html(f'<div class="scroll kv"><table class="kv"><tbody>{"".join(rows)}</tbody></table></div>'),
    )


def _estimate(row: Mapping[str, Any]) -> Html:
    value, low, high = row.get("value"), row.get("ci_low"), row.get("ci_high")
    text = fmt_num(value)
    if value is not None and low is not None and high is not None:
        text += f" [{fmt_num(low)}, {fmt_num(high)}]"
    return with_sub(text, f"n={row.get('n_used', 0)}, failed {row.get('n_failed', 0)}")


def _metric_columns(rows: Sequence[Mapping[str, Any]], primary: str | None) -> list[tuple[str, str, str]]:
    """(metric, variant, scorer): the benchmark's harm metric first, then the others, the shares last."""
    columns = {(r["metric"], r["variant"], r["scorer"]) for r in rows}

    def key(column: tuple[str, str, str]) -> tuple[int, str, str, int]:
        metric, variant, scorer = column
        group = 2 if metric in SHARES else 0 if metric == primary else 1
        return group, metric if group != 2 else str(SHARES.index(metric)), scorer, variant != "all"

    return sorted(columns, key=key)


def _metrics_section(data: ReportData) -> Html:
    overall = [r for r in data.metrics if r["category"] == OVERALL]
    if not overall:
        return html_section("metrics", "Benchmark metrics", html_empty())
    parts = [
        html_note(
            'Overall value [95 % bootstrap CI], with the items used and failed. "excl. degenerate" leaves '
            "out empty answers and echoes of a training format; their shares are the last columns. Where the "
            'published variants were computed too, "published" marks the published code\'s input or score, "ours" '
            "valueharm's (REPRODUCE.md: where the published numbers appear)."
        )
    ]
    by_benchmark: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in overall:
        by_benchmark[row["benchmark"]].append(row)
    harm = _harm_metrics(data)
    for benchmark in benchmark_order(by_benchmark):
        rows = by_benchmark[benchmark]
        primary = harm[benchmark].metric if benchmark in harm else None
        columns = _metric_columns(rows, primary)
        scorers_per_metric: dict[str, set[str]] = defaultdict(set)
        for metric, _, scorer in columns:
            scorers_per_metric[metric].add(scorer)
        labels = {(metric, scorer): published_label(metric, scorer) for metric, _, scorer in columns}
        compared = any(label not in ("", "ours") for label in labels.values())  # label only where both are shown
        headers: list[object] = ["model"]
        for metric, variant, scorer in columns:
            detail = ["excl. degenerate"] if variant == "excluding_degenerate" else []
            detail += [labels[(metric, scorer)]] if compared and labels[(metric, scorer)] else []
            detail += [scorer] if len(scorers_per_metric[metric]) > 1 else []
            headers.append(with_sub(metric, " · ".join(detail)) if detail else metric)
        lookup = {(r["model_key"], r["metric"], r["variant"], r["scorer"]): r for r in rows}
        table_rows = [
            [model, *(Cell(_estimate(lookup[(model, *c)]), "num") if (model, *c) in lookup else "" for c in columns)]
            for model in sorted({r["model_key"] for r in rows}, key=model_order)
        ]
        scorers = sorted({scorer for metric, _, scorer in columns if metric not in SHARES})
        parts += [Html(f"<h3>{esc(benchmark)}</h3>"), html_table(headers, table_rows)]
        if scorers:
            parts.append(html_note(f"Scorer(s): {', '.join(scorers)}"))
    return html_section("metrics", "Benchmark metrics", *parts)


def _harm_metrics(data: ReportData) -> Mapping[str, HarmMetric]:
    if data.harm_metrics is not None:
        return data.harm_metrics
    if data.correlation is not None and data.correlation.sources:
        return {**DEFAULT_HARM_METRICS, **data.correlation.sources}
    return DEFAULT_HARM_METRICS


def _categories_section(data: ReportData) -> Html:
    harm = _harm_metrics(data)
    parts = []
    by_benchmark: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in data.metrics:
        if row["category"] != OVERALL and row["metric"] not in SHARES and row["value"] is not None:
            by_benchmark[row["benchmark"]].append(row)
    for benchmark in benchmark_order(by_benchmark):
        rows = by_benchmark[benchmark]
        if len({r["category"] for r in rows}) < 2:
            continue  # one category is the overall number, already in the main table
        choice = harm.get(benchmark)
        chosen = [r for r in rows if choice and (r["metric"], r["variant"]) == (choice.metric, choice.variant)]
        if not chosen:  # the harm metric was not computed here: show what was
            choice = HarmMetric(min(r["metric"] for r in rows))
            chosen = [r for r in rows if (r["metric"], r["variant"]) == (choice.metric, choice.variant)]
        scorer = choice.scorer or min((r["scorer"] for r in chosen), default=None)
        values: dict[str, dict[str, tuple[float, float | None, float | None]]] = defaultdict(dict)
        for row in sorted(chosen, key=lambda r: model_order(r["model_key"])):
            if row["scorer"] == scorer and split_model_key(row["model_key"])[1] == "none":
                values[row["model_key"]][row["category"]] = (row["value"], row["ci_low"], row["ci_high"])
        png = plots.category_chart(values, f"{benchmark}: {choice.metric} by category", choice.metric)
        caption = f"{benchmark} — {choice.metric} ({choice.variant}, scorer {scorer})"
        if len(values) <= plots.MAX_BARS_MODELS:
            caption += "; whiskers: 95 % bootstrap CI"
        parts += [Html(f"<h3>{esc(benchmark)}</h3>"), html_figure(png, caption)]
    return html_section("categories", "Harm by category", *(parts or [html_empty()]))


def _alignment_section(data: ReportData) -> Html:
    title = "Value-alignment check"
    if not data.alignment:
        return html_section("alignment", title, html_empty())
    headers = [
        "model",
        "instrument",
        "target",
        "values measured",
        "NMSE",
        "Pearson r",
        "answer rate",
        "digit match",
        *(VALUE_ABBREVIATIONS[v] for v in VALUES),
    ]
    rows = []
    for check in data.alignment:
        profile = data.profiles.get(check.target)
        per_value = []
        for value in VALUES:
            measured = check.measured.scores.get(value)
            target = profile.scores[value] if profile else None
            per_value.append(Cell(with_sub(fmt_num(measured, 2), f"target {fmt_num(target, 1)}"), "num"))
        r_text = "—"
        if check.pearson_r is not None:
            r_text = with_sub(fmt_num(check.pearson_r), f"p={fmt_p(check.pearson_p)}")
        rows.append(
            [
                INSTRUMENT_NAMES.get(check.instrument, check.instrument),
                check.model_key,
                check.target,
                check.values_measured,
                num(check.nmse),
                Cell(esc(r_text), "num"),
                num(check.answer_rate),
                num(check.digit_match_rate),
                *per_value,
            ]
        )
    reading = f" ({data.alignment_reading})" if data.alignment_reading else ""
    return html_section(
        "alignment",
        title,
        html_note(
            f"Each model answers 1–6 questionnaires{reading}: held-out survey questions on arguments no adapter was "
            "trained on, and the 40-item Portrait Values Questionnaire (PVQ-40, items averaged per value with its "
            "coding key) where its file is present. Per value: measured mean answer (target below). NMSE on "
            "(s − 1)/5: 0 = identical, 1 = opposite extremes; the published PVQ-40 NMSE, averaged over models, is "
            "shown beside ours. The untrained base (vanilla) is compared with every target as the reference."
        ),
        html_table(
            ["instrument", "models", "checks", "mean Pearson r", "mean NMSE", "published NMSE"],
            _alignment_means(data.alignment),
        ),
        html_table(headers, rows),
        html_figure(plots.alignment_scatter(data.alignment, data.profiles), "Target vs measured value scores"),
    )


def _alignment_means(checks: Sequence[AlignmentCheck]) -> list[list[Any]]:
    """One row per instrument and method (the model key's part before "/"): mean Pearson r and NMSE over its
    checks, with the published PVQ-40 NMSE for comparison."""
    by_method: dict[tuple[str, str], list[AlignmentCheck]] = {}
    for check in checks:
        by_method.setdefault((check.instrument, check.model_key.split("/")[0]), []).append(check)

    def mean(values: Sequence[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return sum(known) / len(known) if known else None

    rows = []
    for (instrument, method), group in by_method.items():
        defined = [c.pearson_r for c in group if c.pearson_r is not None]
        r_text = with_sub(fmt_num(mean(defined)), f"{len(defined)} of {len(group)} defined")
        published = PUBLISHED_PVQ_NMSE.get(method) if instrument == PVQ_BENCHMARK else None
        rows.append([INSTRUMENT_NAMES.get(instrument, instrument), method, len(group), Cell(esc(r_text), "num"),
                     num(mean([c.nmse for c in group])), num(published, 4)])  # fmt: skip
    return rows


def _examples_section(data: ReportData) -> Html:
    title = "Example outputs"
    if not data.examples:
        return html_section("examples", title, html_empty("No examples included."))
    columns = list(dict.fromkeys(key for example in data.examples for key in example))
    rows = [[_example_cell(example.get(column)) for column in columns] for example in data.examples]
    return html_section("examples", title, html_table(columns, rows))


def _example_cell(value: Any) -> object:
    if isinstance(value, str) and (len(value) > 60 or "\n" in value):
        shown = value if len(value) <= MAX_TEXT else value[:MAX_TEXT] + " …"
        return Cell(esc(shown), "text")
    return value


_SECTIONS = (
    ("summary", "Summary", _summary),
    ("provenance", "Provenance", _provenance),
    ("metrics", "Metrics", _metrics_section),
    ("categories", "By category", _categories_section),
    ("correlations", "Correlations", lambda data: correlation_section(data.correlation, data.regressions)),
    ("hypotheses", "Hypotheses", lambda data: hypotheses_section(data.hypotheses)),
    ("alignment", "Alignment check", _alignment_section),
    ("mitigation", "Mitigation", lambda data: mitigation_section(data.mitigation)),
    ("calibration", "Calibration", lambda data: calibration_section(data.calibrations)),
    ("examples", "Examples", _examples_section),
)


def build_html(data: ReportData) -> str:
    """The whole page as a string (pure: no files, no network)."""
    template = Template(resources.files("valueharm.report").joinpath("template.html").read_text(encoding="utf-8"))
    created = data.created or datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    meta = " · ".join(p for p in (f"experiment {data.experiment}" if data.experiment else "", created) if p)
    nav = "".join(f'<a href="#{anchor}">{esc(label)}</a>' for anchor, label, _ in _SECTIONS)
    body = "\n".join(render(data) for _, _, render in _SECTIONS)
    return template.substitute(title=esc(data.title), meta=esc(meta), nav=nav, body=body, version=esc(__version__))


def render_report(data: ReportData, path: str | Path) -> Path:
    """Write the report to `path` atomically (a temporary file renamed into place): never half a page."""
    path = Path(path)
    page = build_html(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(page)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; a report is meant to be shared
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
