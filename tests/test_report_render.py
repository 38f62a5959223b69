"""The report opened in headless Chromium: every figure renders, the console shows no error, and
token text that looks like HTML stays text."""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings

import plotly.graph_objects as go
import pytest

from interp.reports import Section, write_report
from tests.conftest import ROOT, run_cli


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = (
            "!!! headless Chromium not found: report rendering NOT tested (make test installs Debian's chromium) !!!"
        )
        warnings.warn(message, stacklevel=2)
        pytest.skip(message)
    return path


def render(html_path, tmp_path) -> tuple[str, str]:
    """DOM after scripts ran, and the browser's log."""
    proc = subprocess.run(
        [
            _chromium(),
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=15000",
            "--dump-dom",
            html_path.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, proc.stderr


def _console_errors(log: str) -> list[str]:
    return [line for line in log.splitlines() if "CONSOLE" in line and re.search(r"error|uncaught", line, re.I)]


def test_dlm_report_renders_every_figure(tmp_path):
    out = tmp_path / "report.html"
    run_cli(
        "report",
        "-c",
        str(ROOT / "checkpoints" / "dlm-addition3-continuous"),
        "--n",
        "16",
        "--out",
        str(out),
        check=True,
    )
    dom, log = render(out, tmp_path)
    figures = len(re.findall(r'class="plotly-graph-div', out.read_text()))
    rendered = len(re.findall(r'class="[^"]*js-plotly-plot', dom))
    assert figures == 3 and rendered == figures, (figures, rendered)  # timeline, smearing, logit lens
    assert not _console_errors(log), _console_errors(log)
    for title in ("Decode order and revisions", "Token smearing", "Intermediate context", "Logit lens"):
        assert title in dom


def test_token_text_stays_text_in_the_browser(tmp_path):
    evil = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"
    path = write_report(
        tmp_path / "evil.html", "safe title", [Section(evil, text=evil, figures=[go.Figure(go.Bar(x=[evil], y=[1]))])]
    )
    dom, log = render(path, tmp_path)
    assert "<title>safe title</title>" in dom, "no injected script ran"
    assert "&lt;script&gt;" in dom and not _console_errors(log)
