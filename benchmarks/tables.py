"""What the benchmarks share for printing their tables (imported as ``tables``: a benchmark runs as
``python benchmarks/NAME.py``, with this folder first on the path)."""

from __future__ import annotations

import pandas as pd


def pm(series: pd.Series, digits: int = 3) -> str:
    """``mean ± sd`` of ``series`` (NaN left out) with ``digits`` decimals; the mean alone for one value, ``-``
    for none."""
    series = series.dropna()
    if not len(series):
        return "-"
    return (
        f"{series.mean():.{digits}f} ± {series.std():.{digits}f}" if len(series) > 1 else f"{series.mean():.{digits}f}"
    )
