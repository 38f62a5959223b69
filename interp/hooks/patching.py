"""Activation patching between two trajectories at a grid of (hook, step)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from interp.hooks.attach import Instrumented
from interp.hooks.interventions import Intervention

Metric = Callable[[list[Any]], float]


def patch_grid(
    inst: Instrumented,
    clean_run: Callable[[], Iterable[Any]],
    corrupt_run: Callable[[], Iterable[Any]],
    names: str | Sequence[str],
    steps: Sequence[int],
    metric: Metric,
    positions: slice | Sequence[int] | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Patch the clean activation of each (hook, step) into the corrupted run; one row per cell.

    ``clean_run`` / ``corrupt_run`` return a fresh step iterator each call (same seed each time);
    ``metric`` maps the list of yielded steps to a number. Columns: ``name``, ``step``, ``metric``,
    ``effect`` (metric − corrupted metric) and ``normalised`` (effect / (clean − corrupted), NaN when
    the two runs score the same).
    """
    resolved = inst.resolve(names)
    clean = inst.trace(clean_run, capture=resolved, steps=steps, positions=positions)
    clean_metric = metric(inst.run(clean_run))
    corrupt_metric = metric(inst.run(corrupt_run))
    gap = clean_metric - corrupt_metric
    rows = []
    cells = [(n, s) for n in resolved for s in steps]
    for name, step in tqdm(cells, disable=not progress, desc="patch", unit="cell"):
        iv = Intervention(name, "replace", clean[name, step], steps=[step], positions=positions)
        value = metric(inst.run(corrupt_run, [iv]))
        effect = value - corrupt_metric
        rows.append(
            {
                "name": name,
                "step": step,
                "metric": value,
                "effect": effect,
                "normalised": effect / gap if abs(gap) > 1e-12 else math.nan,
            }
        )
    clean.close()
    frame = pd.DataFrame(rows)
    frame.attrs.update(clean_metric=clean_metric, corrupt_metric=corrupt_metric)
    return frame


def final_logprob(target: torch.Tensor, positions: slice | Sequence[int]) -> Metric:
    """Mean log-probability, at the last step, of ``target`` tokens ``[B, n]`` at ``positions``."""

    def metric(record: list[Any]) -> float:
        probs = record[-1].probs[:, positions]
        return float(probs.gather(-1, target.unsqueeze(-1)).clamp_min(1e-12).log().mean())

    return metric


def final_match(target: torch.Tensor, positions: slice | Sequence[int]) -> Metric:
    """Share of examples whose final tokens at ``positions`` equal ``target`` ``[B, n]``."""

    def metric(record: list[Any]) -> float:
        return float((record[-1].tokens[:, positions] == target).all(-1).float().mean())

    return metric
