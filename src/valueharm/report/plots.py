"""Report figures as PNG bytes: matplotlib's Agg canvas only (no pyplot state, no display, no fonts fetched).

Every function returns None when it has nothing to draw, so the report can say so instead of showing an empty
axis. Figures are sized by their content within fixed bounds and drawn at a modest resolution to keep the
self-contained HTML small.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap
from matplotlib.figure import Figure

from valueharm.analysis.correlation import CorrelationResult
from valueharm.analysis.mitigation import MitigationDelta
from valueharm.analysis.regression import RegressionResult
from valueharm.analysis.value_check import AlignmentCheck
from valueharm.values import HIGHER_ORDER, SCORE_MAX, SCORE_MIN, VALUE_ABBREVIATIONS, VALUES, ValueProfile

DPI = 90
MAX_WIDTH = 15.0  # inches
MAX_BARS_MODELS = 10  # more models than this: a heatmap instead of grouped bars
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def short_label(text: str, width: int = 22, lines: int = 2) -> str:
    """Category names such as `misinformation_regarding_ethics,laws_and_safety` as at most two short lines."""
    words = text.replace("_", " ").replace(",", ", ")
    return textwrap.fill(textwrap.shorten(words, width * lines, placeholder="…"), width)


def category_chart(
    values: Mapping[str, Mapping[str, tuple[float, float | None, float | None]]], title: str, ylabel: str
) -> bytes | None:
    """Per-category harm: model → category → (value, ci_low, ci_high). Grouped bars with CI whiskers for a few
    models; a models × categories heatmap when bars would be unreadable."""
    models = list(values)
    categories = sorted({c for per in values.values() for c in per})
    if not models or not categories:
        return None
    if len(models) > MAX_BARS_MODELS:
        return _category_heatmap(values, models, categories, title)
    width = min(MAX_WIDTH, 2.5 + len(categories) * (0.22 * len(models) + 0.35))
    figure = Figure(figsize=(width, 4.6))
    axis = figure.add_subplot()
    bar = 0.8 / len(models)
    for index, model in enumerate(models):
        present = [(position, values[model][c]) for position, c in enumerate(categories) if c in values[model]]
        xs = [position - 0.4 + bar * (index + 0.5) for position, _ in present]
        heights = [estimate[0] for _, estimate in present]
        axis.bar(xs, heights, bar, yerr=_whiskers([e for _, e in present]), capsize=2, label=model,
                 color=PALETTE[index % len(PALETTE)], error_kw={"elinewidth": 0.8, "ecolor": "#333"})  # fmt: skip
    axis.set_xticks(range(len(categories)), [short_label(c) for c in categories], rotation=35, ha="right", fontsize=8)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, title="model")
    return _png(figure)


def _whiskers(estimates: Sequence[tuple[float, float | None, float | None]]) -> np.ndarray:
    """Error-bar lengths below and above each value; none where the CI is unknown."""
    below = [value - low if low is not None else 0.0 for value, low, _ in estimates]
    above = [high - value if high is not None else 0.0 for value, _, high in estimates]
    return np.array([below, above]).reshape(2, len(estimates))


def _category_heatmap(
    values: Mapping[str, Mapping[str, tuple[float, float | None, float | None]]],
    models: list[str],
    categories: list[str],
    title: str,
) -> bytes:
    grid = np.array([[values[m][c][0] if c in values[m] else np.nan for c in categories] for m in models])
    figure = Figure(figsize=(min(MAX_WIDTH, 3 + 0.45 * len(categories)), min(40.0, 1.8 + 0.2 * len(models))))
    axis = figure.add_subplot()
    image = axis.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap=_with_bad("viridis"))
    axis.set_xticks(range(len(categories)), [short_label(c) for c in categories], rotation=40, ha="right", fontsize=7)
    axis.set_yticks(range(len(models)), models, fontsize=6 if len(models) > 40 else 8)
    axis.set_title(f"{title} (one row per model)")
    figure.colorbar(image, ax=axis, fraction=0.03)
    return _png(figure)


def _with_bad(name: str) -> Colormap:
    return colormaps[name].with_extremes(bad="#dddddd")  # not tested / no data: grey


def correlation_heatmap(result: CorrelationResult) -> bytes | None:
    """Dimensions × (benchmark, category): the deciding family test's coefficient (correlation of family means),
    * q < .05, ** q < .01; grey = not tested."""
    columns = result.columns()
    dimensions = list(dict.fromkeys(c.value for c in result.cells))
    if not columns or not dimensions:
        return None
    lookup = {(c.benchmark, c.category, c.value): c for c in result.cells}
    grid = np.full((len(dimensions), len(columns)), np.nan)
    marks = [["" for _ in columns] for _ in dimensions]
    for row, value in enumerate(dimensions):
        for col, (benchmark, category) in enumerate(columns):
            cell = lookup.get((benchmark, category, value))
            if cell is None or not cell.decided:
                continue
            grid[row, col] = cell.family_coefficient
            marks[row][col] = "**" if cell.family_q < 0.01 else "*" if cell.family_q < 0.05 else ""
    figure = Figure(figsize=(min(MAX_WIDTH, 3.5 + 0.42 * len(columns)), 1.8 + 0.34 * len(dimensions)))
    axis = figure.add_subplot()
    image = axis.imshow(np.ma.masked_invalid(grid), cmap=_with_bad("RdBu_r"), vmin=-1, vmax=1, aspect="auto")
    for row in range(len(dimensions)):
        for col in range(len(columns)):
            if marks[row][col]:
                dark = abs(grid[row, col]) > 0.6
                axis.text(col, row, marks[row][col], ha="center", va="center", fontsize=9, weight="bold",
                          color="white" if dark else "black")  # fmt: skip
    labels = [f"{b} · {short_label(c, 26, 1)}" if c != "all" else f"{b} · overall" for b, c in columns]
    axis.set_xticks(range(len(columns)), labels, rotation=55, ha="right", fontsize=7)
    axis.set_yticks(range(len(dimensions)), dimensions, fontsize=8)
    if any(d in HIGHER_ORDER for d in dimensions) and any(d in VALUES for d in dimensions):
        axis.axhline(sum(d in VALUES for d in dimensions) - 0.5, color="black", linewidth=1)
    name = f"family {'Spearman ρ' if result.family_method == 'spearman' else 'Pearson r'}"
    axis.set_title(f"{name} of value ({result.x_source} score) with harm over {result.n_families} families "
                   f"({result.n_models} models); * q < .05, ** q < .01 (BH)", fontsize=10)  # fmt: skip
    figure.colorbar(image, ax=axis, fraction=0.025, label=name)
    return _png(figure)


def regression_chart(regressions: Sequence[RegressionResult]) -> bytes | None:
    """A coefficient plot: one panel per predictor, each (benchmark, category) a standardised coefficient with its
    clustered interval; filled where the interval excludes 0."""
    fitted = [r for r in regressions if r.identifiable]
    terms = list(dict.fromkeys(t for r in fitted for t in r.coefficients))
    if not terms:
        return None
    labels = [f"{r.benchmark} · {short_label(r.category, 26, 1) if r.category != 'all' else 'overall'}" for r in fitted]
    bounds = [v for r in fitted for c in r.coefficients.values() for v in (c.ci_low, c.ci_high) if math.isfinite(v)]
    limits = (min(bounds, default=-1.0), max(bounds, default=1.0))
    pad = 0.05 * (limits[1] - limits[0] or 1.0)
    columns = min(5, len(terms))
    rows = math.ceil(len(terms) / columns)
    height = min(40.0, 1.2 + rows * (0.8 + 0.2 * len(fitted)))
    figure = Figure(figsize=(min(MAX_WIDTH, 2.6 + 2.4 * columns), height))
    for number, term in enumerate(terms):
        axis = figure.add_subplot(rows, columns, number + 1)
        for position, r in enumerate(fitted):
            c = r.coefficients.get(term)
            if c is None:
                continue
            clear = c.ci_low > 0 or c.ci_high < 0
            color = PALETTE[3] if clear and c.estimate > 0 else PALETTE[2] if clear else "#777"
            whisker = [[c.estimate - c.ci_low], [c.ci_high - c.estimate]]
            face = color if clear else "white"
            axis.errorbar(c.estimate, position, xerr=whisker, fmt="o", color=color, markersize=4, markerfacecolor=face,
                          elinewidth=1)  # fmt: skip
        axis.axvline(0, color="black", linewidth=0.8)
        axis.set_xlim(min(limits[0], 0) - pad, max(limits[1], 0) + pad)  # one scale: panels compare
        axis.set_ylim(len(fitted) - 0.5, -0.5)
        axis.set_yticks(range(len(fitted)), labels if number % columns == 0 else [], fontsize=7)
        axis.set_title(VALUE_ABBREVIATIONS.get(term, term), fontsize=9)
        axis.tick_params(axis="x", labelsize=7)
        axis.grid(axis="x", alpha=0.3)
    figure.suptitle("Standardised coefficient (SD of harm per SD of value), family-clustered interval", fontsize=10)
    figure.tight_layout()
    return _png(figure)


def alignment_scatter(checks: Sequence[AlignmentCheck], profiles: Mapping[str, ValueProfile]) -> bytes | None:
    """Target vs measured score for every (model, value): points on the diagonal mean the model holds its
    profile."""
    points: dict[str, list[tuple[float, float]]] = {v: [] for v in VALUES}
    for check in checks:
        profile = profiles.get(check.target)
        if profile is None:
            continue
        for value in VALUES:
            measured = check.measured.scores.get(value)
            if measured is not None:
                points[value].append((profile.scores[value], measured))
    if not any(points.values()):
        return None
    rng = np.random.default_rng(0)  # jitter only separates overlapping points; it never moves data meaningfully
    figure = Figure(figsize=(7.2, 5.6))
    axis = figure.add_subplot()
    for index, (value, pairs) in enumerate(points.items()):
        if pairs:
            xs = np.array([p[0] for p in pairs]) + rng.uniform(-0.08, 0.08, len(pairs))
            ys = np.array([p[1] for p in pairs])
            axis.scatter(xs, ys, s=18, alpha=0.75, label=VALUE_ABBREVIATIONS[value], color=PALETTE[index])
    axis.plot([SCORE_MIN, SCORE_MAX], [SCORE_MIN, SCORE_MAX], color="#888", linestyle="--", linewidth=1)
    axis.set_xlim(SCORE_MIN - 0.3, SCORE_MAX + 0.3)
    axis.set_ylim(SCORE_MIN - 0.3, SCORE_MAX + 0.3)
    axis.set_xlabel("target score")
    axis.set_ylabel("measured score (mean survey answer)")
    axis.set_title(f"Value-alignment check: target vs measured ({len(checks)} models)", fontsize=10)
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, title="value")
    axis.grid(alpha=0.3)
    return _png(figure)


def mitigation_chart(deltas: Sequence[MitigationDelta]) -> bytes | None:
    """Overall delta per model and condition with CI whiskers, one panel per (benchmark, metric)."""
    overall = [d for d in deltas if d.category == "all" and not math.isnan(d.delta)]
    panels = list(dict.fromkeys((d.benchmark, d.metric) for d in overall))
    if not panels:
        return None
    models = list(dict.fromkeys(d.model_key for d in overall))
    conditions = list(dict.fromkeys(d.condition for d in overall))
    width = min(MAX_WIDTH, max(7.0, 3 + len(models) * (0.3 * len(conditions) + 0.4)))
    figure = Figure(figsize=(width, 3.2 * len(panels) + 0.6))
    bar = 0.8 / len(conditions)
    for number, (benchmark, metric) in enumerate(panels, start=1):
        axis = figure.add_subplot(len(panels), 1, number)
        for index, condition in enumerate(conditions):
            chosen = [d for d in overall if (d.benchmark, d.metric, d.condition) == (benchmark, metric, condition)]
            xs = [models.index(d.model_key) - 0.4 + bar * (index + 0.5) for d in chosen]
            errors = _whiskers([(d.delta, d.ci_low, d.ci_high) for d in chosen])
            axis.bar(xs, [d.delta for d in chosen], bar, yerr=errors, capsize=2, label=condition,
                     color=PALETTE[index % len(PALETTE)], error_kw={"elinewidth": 0.8})  # fmt: skip
        axis.axhline(0, color="black", linewidth=0.8)
        rotated = len(models) > 4
        axis.set_xticks(range(len(models)), models, rotation=30 if rotated else 0, ha="right" if rotated else "center",
                        fontsize=8)  # fmt: skip
        axis.set_ylabel(f"Δ {metric}", fontsize=8)
        axis.set_title(f"{benchmark}: mitigated − input only (negative = less harm)", fontsize=10)
        axis.grid(axis="y", alpha=0.3)
        axis.legend(
            fontsize=8, title="condition", title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False
        )
    figure.tight_layout()
    return _png(figure)
