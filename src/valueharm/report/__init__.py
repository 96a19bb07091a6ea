"""The experiment report: one self-contained HTML file with tables and embedded plots."""

from valueharm.report.html import ReportData, build_html, render_report

__all__ = ["ReportData", "build_html", "render_report"]
