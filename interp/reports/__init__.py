"""Figures and self-contained HTML reports."""

from interp.reports.html import Section, render, write_report

__all__ = ["Section", "render", "write_report"]
