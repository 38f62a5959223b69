"""Self-contained HTML reports: plotly.js embedded once (works offline), every text escaped,
written atomically."""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.offline

from interp.io import atomic_write_text, check_file_output

GENERATOR = "interp"


def is_report(path: Path) -> bool:
    """Whether the file at ``path`` is a report interp wrote (its head names interp as the generator)."""
    with open(path, "rb") as fh:
        return f"<meta name='generator' content='{GENERATOR}'>".encode() in fh.read(4096)


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}.legend{color:#555;font-size:.92em}pre{background:#f7f7f7;padding:.6em;overflow-x:auto}
"""


@dataclass
class Section:
    """One part of a report: a title, explanatory text (plain, escaped), tables and figures."""

    title: str
    text: str = ""
    tables: list[pd.DataFrame] = field(default_factory=list)
    figures: list[go.Figure] = field(default_factory=list)
    legend: str = ""


def render(title: str, sections: list[Section], run_config: dict[str, Any] | None = None) -> str:
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><meta name='generator' content='{GENERATOR}'>",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>",
        f"<script type='text/javascript'>{plotly.offline.get_plotlyjs()}</script>",
        f"</head><body><h1>{html.escape(title)}</h1>",
    ]
    for section in sections:
        parts.append(f"<section><h2>{html.escape(section.title)}</h2>")
        if section.text:
            parts += [f"<p>{html.escape(p)}</p>" for p in section.text.split("\n\n")]
        for table in section.tables:
            parts.append(table.to_html(index=False, escape=True, float_format=lambda x: f"{x:.4g}"))
        for fig in section.figures:
            parts.append(fig.to_html(full_html=False, include_plotlyjs=False))
        if section.legend:
            parts.append(f"<p class='legend'>{html.escape(section.legend)}</p>")
        parts.append("</section>")
    if run_config is not None:
        parts.append("<section><h2>Run configuration</h2><pre>")
        parts.append(html.escape(json.dumps(run_config, indent=2, sort_keys=True, default=str)))
        parts.append("</pre></section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(
    path: str | os.PathLike[str], title: str, sections: list[Section], run_config: dict[str, Any] | None = None
) -> Path:
    """Render and write atomically; returns the path. An existing file is replaced only if it is a report
    interp wrote."""
    path = check_file_output(path, is_report, "an HTML report")
    atomic_write_text(path, render(title, sections, run_config))
    return path
