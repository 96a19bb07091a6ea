"""The report's analysis sections: value–harm correlations decided by the family test, the regressions per harm
category, the hypotheses, and the mitigation deltas with vanilla and aligned models side by side."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from valueharm.analysis.correlation import OVERALL, CorrelationCell, CorrelationResult
from valueharm.analysis.hypotheses import HypothesisResult, Verdict
from valueharm.analysis.mitigation import MitigationDelta
from valueharm.analysis.regression import RegressionResult
from valueharm.report import plots
from valueharm.report.markup import (
    Cell,
    Html,
    condition_rank,
    esc,
    fmt_num,
    html_empty,
    html_figure,
    html_note,
    html_section,
    html_table,
    model_order,
    num,
    p_cell,
    with_sub,
)
from valueharm.values import HIGHER_ORDER, VALUE_ABBREVIATIONS, VALUES

TOP_CELLS = 20
ALPHA = 0.05
MAX_ROWS_OPEN = 200  # a longer per-model table is folded


def _stars(q: float | None) -> str:
    return "" if q is None else "**" if q < 0.01 else "*" if q < ALPHA else ""


def _signed(value: float, q: float | None) -> Cell:
    significant = q is not None and q < ALPHA
    cls = "num pos" if value > 0 and significant else "num neg" if value < 0 and significant else "num"
    return Cell(esc(fmt_num(value) + _stars(q)), cls)


# ---------------------------------------------------------------------------------------------- correlations


def correlation_section(result: CorrelationResult | None, regressions: Sequence[RegressionResult]) -> Html:
    title = "Value–harm correlations"
    if result is None or not result.cells:
        return html_section("correlations", title, html_empty())
    sources = "; ".join(f"{b}: {s.metric} ({s.variant}, {s.scorer})" for b, s in result.sources.items())
    parts = [
        Html(f'<p class="finding">{esc(result.finding())}</p>'),
        html_note(
            f"Unit: one profile family ({result.n_models} models in {result.n_families} families: an extreme "
            "profile and its close ESS respondents, a reverse and its close one, or a family given in a profile "
            f"file). X: {result.x_source} value scores (higher-order groups: mean of their values). Y: "
            f"{sources or 'harm metric'}. Each cell is decided by the family-level permutation test: the "
            f"{result.family_method} correlation of the families' mean X and Y, with families permuted as wholes "
            "(near-copies stay together); the effective number of independent units is the number of families. "
            "Per-model Spearman and Pearson, which count every model as independent, are shown for comparison. "
            "q: Benjamini–Hochberg over the whole grid, per test."
        ),
        html_figure(
            plots.correlation_heatmap(result),
            "The family test's correlation of family means per value and benchmark category (grey: not tested)",
        ),
    ]
    coefficient = "ρ" if result.family_method == "spearman" else "r"
    headers = ["benchmark", "category", "value", "models", "families", f"family {coefficient}", "p", "q",
               "Spearman ρ", "p", "q", "Pearson r", "p", "q", "decided by"]  # fmt: skip
    decided = sorted((c for c in result.cells if c.decided), key=lambda c: (c.family_q, c.family_p))
    if decided:
        parts += [
            Html(f"<h3>Strongest associations (top {min(TOP_CELLS, len(decided))} by the family test's q)</h3>"),
            html_table(headers, [_cell_row(c) for c in decided[:TOP_CELLS]]),
        ]
    every = html_table([*headers, "note"], [[*_cell_row(c), c.note or c.family_note or ""] for c in result.cells])
    parts.append(Html(f"<details><summary>Every cell ({len(result.cells)}), in grid order</summary>{every}</details>"))
    if regressions:
        parts.append(_regression_part(regressions))
    return html_section("correlations", title, *parts)


def _cell_row(cell: CorrelationCell) -> list[object]:
    return [
        cell.benchmark,
        cell.category,
        cell.value,
        cell.n,
        cell.n_families,
        _signed(cell.family_coefficient, cell.family_q),
        p_cell(cell.family_p),
        p_cell(cell.family_q),
        _signed(cell.spearman_rho, cell.spearman_q),
        p_cell(cell.spearman_p),
        p_cell(cell.spearman_q),
        _signed(cell.pearson_r, cell.pearson_q),
        p_cell(cell.pearson_p),
        p_cell(cell.pearson_q),
        cell.decided_by,
    ]


def _regression_part(regressions: Sequence[RegressionResult]) -> Html:
    terms = [t for t in (*VALUES, *HIGHER_ORDER) if any(t in r.coefficients for r in regressions)]
    rows = []
    for r in regressions:
        cells: list[object] = []
        for term in terms:
            c = r.coefficients.get(term)
            if c is None or not r.identifiable:
                cells.append("" if c is None else "—")
                continue
            excludes_zero = c.ci_low > 0 or c.ci_high < 0
            cls = "num" + ((" pos" if c.estimate > 0 else " neg") if excludes_zero else "")
            cells.append(Cell(with_sub(fmt_num(c.estimate, 2), f"[{fmt_num(c.ci_low, 2)}, {fmt_num(c.ci_high, 2)}]"),
                              cls))  # fmt: skip
        note = "; ".join(r.notes)
        rows.append([r.benchmark, r.category, r.n, r.n_families, r.predictors, num(r.r_squared), *cells, note])
    level = f"{regressions[0].level:.0%}"
    headers = ["benchmark", "category", "models", "families", "predictors", "R²",
               *(VALUE_ABBREVIATIONS.get(t, t) for t in terms), "note"]  # fmt: skip
    return Html(
        "<h3>Multiple regression per harm category (standardised, family-clustered)</h3>"
        + html_note(
            "Harm on the ten target values by OLS, both standardised (SDs of harm per SD of the value), with "
            f"{level} intervals from family-clustered (CR2) standard errors, each on its Bell–McCaffrey degrees of "
            "freedom (at most families − 1; few when there are few families for many slopes). When the ten are "
            "collinear or too few families support ten slopes, the four higher-order dimensions are used instead, "
            "as the note says."
        )
        + html_table(headers, rows)
        + html_figure(plots.regression_chart(regressions), f"Standardised coefficients, {level} clustered intervals")
    )


# ------------------------------------------------------------------------------------------------ hypotheses


def hypotheses_section(hypotheses: Sequence[HypothesisResult]) -> Html:
    title = "Expected directions (hypotheses)"
    if not hypotheses:
        return html_section("hypotheses", title, html_empty())
    counts = {v: sum(r.verdict == v for r in hypotheses) for v in Verdict}
    method = hypotheses[0].method
    summary = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    test = "the family permutation test" if method == "family" else f"per-model {method}"
    rows = [
        [
            r.id,
            r.value,
            Cell(esc("↑ positive" if r.expected == "positive" else "↓ negative"), "nowrap"),
            r.benchmark,
            r.category,
            num(r.coefficient),
            p_cell(r.p),
            p_cell(r.q),
            r.n,
            r.n_families,
            r.method,
            Html(f'<span class="badge {r.verdict.value.replace(" ", "-")}">{esc(r.verdict.value)}</span>'),
            r.note or r.source,
        ]
        for r in hypotheses
    ]
    return html_section(
        "hypotheses",
        title,
        html_note(
            f"{summary}. Verdict from the grid's BH q-value of {test}; supported = significant in the expected "
            "direction, opposite = significant the other way."
        ),
        html_table(
            [
                "hypothesis",
                "value",
                "expected",
                "benchmark",
                "category",
                "coefficient",
                "p",
                "q",
                "models",
                "families",
                "test",
                "verdict",
                "source / note",
            ],
            rows,
        ),
    )


# ------------------------------------------------------------------------------------------------ mitigation


def mitigation_section(deltas: Sequence[MitigationDelta]) -> Html:
    title = "Mitigation"
    if not deltas:
        return html_section("mitigation", title, html_empty())
    ordered = sorted(deltas, key=lambda d: (model_order(d.model_key), d.benchmark, d.metric, d.category != OVERALL,
                                            d.category, condition_rank(d.condition)))  # fmt: skip
    rows = [
        [d.model_key, d.benchmark, d.category, d.metric, d.condition, num(d.baseline), num(d.mitigated), _delta(d),
         p_cell(d.p), p_cell(d.q), d.n_paired, d.n_unpaired]
        for d in ordered
    ]  # fmt: skip
    table = html_table(["model", "benchmark", "category", "metric", "condition", "input only", "mitigated",
                        "Δ [CI]", "p", "q", "paired items", "unpaired"], rows)  # fmt: skip
    if len(rows) > MAX_ROWS_OPEN:
        table = Html(f"<details><summary>every delta ({len(rows)} rows)</summary>{table}</details>")
    return html_section(
        "mitigation",
        title,
        html_note(
            "Each mitigated condition vs input only, on the items both scored: Δ = mitigated − input only "
            "(negative = less harm), 95 % paired bootstrap CI over items, paired t-test p, and q: Benjamini–"
            "Hochberg over every delta below (models × benchmarks × categories × conditions). The value condition "
            "sets aside, per category, the values expected to raise its harm and promotes those expected to lower "
            "it (the hypotheses table)."
        ),
        html_figure(plots.mitigation_chart(deltas), "Overall mitigation deltas"),
        Html("<h3>By category: the base model and the aligned models side by side</h3>"),
        _side_by_side(deltas),
        table,
    )


def _delta(d: MitigationDelta) -> Cell:
    significant = d.q is not None and d.q < ALPHA
    cls = "num" + ((" neg" if d.delta < 0 else " pos") if significant else "")
    ci = f" [{fmt_num(d.ci_low)}, {fmt_num(d.ci_high)}]" if d.ci_low is not None else ""
    return Cell(esc(f"{'+' if d.delta > 0 else ''}{fmt_num(d.delta)}{ci}"), cls)


def _side_by_side(deltas: Sequence[MitigationDelta]) -> Html:
    """Per (benchmark, metric, category, condition): vanilla's delta beside the aligned models' mean delta and how
    many of them change significantly (q < .05) down or up."""
    groups: dict[tuple[str, str, str, str], list[MitigationDelta]] = defaultdict(list)
    for d in deltas:
        groups[(d.benchmark, d.metric, d.category, d.condition)].append(d)
    rows = []
    for (benchmark, metric, category, condition), members in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] != OVERALL, kv[0][2], condition_rank(kv[0][3]))
    ):
        vanilla = next((d for d in members if d.model_key == "vanilla"), None)
        aligned = [d for d in members if d.model_key.split("/")[0] in {"vim", "icl"}]
        mean = sum(d.delta for d in aligned) / len(aligned) if aligned else None
        down = sum(d.q is not None and d.q < ALPHA and d.delta < 0 for d in aligned)
        up = sum(d.q is not None and d.q < ALPHA and d.delta > 0 for d in aligned)
        rows.append([
            benchmark, metric, category, condition,
            _delta(vanilla) if vanilla else "—", p_cell(vanilla.q if vanilla else None),
            Cell(esc(f"{'+' if mean and mean > 0 else ''}{fmt_num(mean)}"), "num"), len(aligned),
            Cell(esc(f"{down} ↓ / {up} ↑"), "num"),
        ])  # fmt: skip
    return html_table(["benchmark", "metric", "category", "condition", "vanilla Δ [CI]", "vanilla q",
                       "aligned: mean Δ", "aligned models", f"aligned with q < {ALPHA:g}"], rows)  # fmt: skip
