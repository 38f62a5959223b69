"""The HTML report is self-contained (plotly.js inline, no CDN) and escapes every text."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from interp.reports import Section, write_report


def test_report_is_offline_and_escaped(tmp_path):
    evil = "<script>alert('x')</script>"
    section = Section(
        evil,
        text=f"token {evil}",
        tables=[pd.DataFrame({"token": [evil], "p": [0.5]})],
        figures=[go.Figure(go.Bar(x=["a"], y=[1]))],
        legend=evil,
    )
    path = write_report(tmp_path / "r.html", f"title {evil}", [section], {"label": evil})
    text = path.read_text()
    assert evil not in text.split("<body>", 1)[1], "raw <script> from data must not reach the page"
    assert "&lt;script&gt;" in text
    import re

    assert not re.search(r"<script[^>]*\bsrc=", text), "no external scripts"
    page_without_library = text.replace(__import__("plotly.offline").offline.get_plotlyjs(), "")
    assert "http://" not in page_without_library and "https://" not in page_without_library.replace(
        "https://plot.ly", ""
    )
    assert "Plotly.newPlot" in text
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp file left"
