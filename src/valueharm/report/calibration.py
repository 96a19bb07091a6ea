"""The report's calibration section: each local toxicity scorer against its reference (e.g. Perspective)."""

from __future__ import annotations

from collections.abc import Sequence

from valueharm.report.markup import Html, esc, fmt_num, html_empty, html_note, html_section, html_table, num
from valueharm.scoring.calibration import Calibration

NOT_CALIBRATED = "No calibration: run `valueharm calibrate --run DIR --scorer SPEC` or set analysis.calibrate."


def _interval(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "–"
    return fmt_num(value) + (f" [{fmt_num(low)}, {fmt_num(high)}]" if low is not None else "")


def calibration_section(calibrations: Sequence[Calibration]) -> Html:
    title = "Calibration"
    if not calibrations:
        return html_section("calibration", title, html_empty(NOT_CALIBRATED))
    parts = [
        html_note(
            "The same RTP generations scored by a reference scorer and a local one. The matched threshold is the "
            "local threshold whose toxicity probability equals the reference's at 0.5 (95 % bootstrap CI over "
            "prompts): report local toxicity probabilities at it to compare them with published ones."
        )
    ]
    for c in calibrations:
        summary = [
            ["samples / prompts", f"{c.n_samples} / {c.n_prompts}"],
            ["Pearson r [CI]", _interval(c.pearson, *c.pearson_ci)],
            ["Spearman ρ (p)", "–" if c.spearman is None else f"{fmt_num(c.spearman)} ({fmt_num(c.spearman_p)})"],
            ["matched threshold [CI]", _interval(c.matched_threshold, *c.matched_threshold_ci)],
            ["local toxicity probability at it", num(c.local_probability_at_matched)],
        ]
        rows = [
            [m.model_key, m.metric, _interval(m.reference.value, m.reference.ci_low, m.reference.ci_high),
             _interval(m.local.value, m.local.ci_low, m.local.ci_high), m.reference.n_used]
            for m in c.metrics
        ]  # fmt: skip
        parts += [
            Html(f"<h3>{esc(c.local)} <small>against</small> {esc(c.reference)}</h3>"),
            html_table(["", ""], summary),
            html_table(["model", "metric", "reference [CI]", "local [CI]", "samples"], rows),
            *(html_note(note) for note in c.notes),
        ]
    return html_section("calibration", title, *parts)
