"""When does a FlowBender model use its own error? Zero the feedback input at chosen steps (the same
noise otherwise) and measure how far the final sample moves, and how its consistency residual changes.

A step whose patching moves the sample a lot is a step where the feedback steers generation; the
feedback's magnitude at that step (recorded by the sampler) says how much error there was to see.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
import torch

from interp.errors import DataError

Sample = Callable[[Collection[int]], list]  # zero_feedback_at -> the run's step records (FlowBenderStep)
Residual = Callable[[torch.Tensor], torch.Tensor]  # final samples [B, ...] -> A(x) − y [B, ...]


@dataclass
class FeedbackPatching:
    """``table``: one row per patched step set (``step``: the index, or ``"all"``), with ``t`` (the
    step's noise level), ``shift`` (mean L2 distance per sample between the patched and the unpatched
    final samples), ``residual`` (mean RMS residual of the patched samples; ``base_residual`` that of
    the unpatched ones) and ``feedback_norm`` (the mean feedback norm the unpatched run saw there)."""

    table: pd.DataFrame

    def frame(self) -> pd.DataFrame:
        return self.table

    def figure(self) -> go.Figure:
        per_step = self.table[self.table["step"] != "all"]
        fig = go.Figure()
        fig.add_trace(go.Bar(x=per_step["t"], y=per_step["shift"], name="sample shift (feedback zeroed)"))
        fig.add_trace(
            go.Scatter(
                x=per_step["t"], y=per_step["feedback_norm"], name="feedback norm", mode="lines+markers", yaxis="y2"
            )
        )
        fig.update_layout(
            xaxis_title="noise level t of the patched step (1 = noise)",
            xaxis_autorange="reversed",
            yaxis_title="mean L2 shift of the final sample",
            yaxis2={"title": "mean feedback norm", "overlaying": "y", "side": "right"},
            height=380,
        )
        return fig


def _rms(r: torch.Tensor) -> torch.Tensor:
    return r.flatten(1).pow(2).mean(1).sqrt()


def feedback_patching(sample: Sample, residual: Residual, steps: Iterable[int] | None = None) -> FeedbackPatching:
    """Run ``sample(())`` once, then ``sample({k})`` for each ``k`` in ``steps`` (default: every step)
    and ``sample(all steps)``; compare final samples (see :class:`FeedbackPatching`)."""
    base = sample(())
    if not base or getattr(base[0], "feedback", None) is None:
        raise DataError("feedback patching needs a run with feedback (the flowbender sampler)")
    n_steps = len(base)
    steps = list(range(n_steps)) if steps is None else list(steps)
    outside = [k for k in steps if not 0 <= k < n_steps]
    if outside:
        raise DataError(f"step(s) {outside} are outside the run, which has {n_steps} steps (0..{n_steps - 1})")
    x0 = base[-1].x
    base_residual = float(_rms(residual(x0)).mean())
    rows = []
    for patched in [*([k] for k in steps), list(range(n_steps))]:
        x = sample(set(patched))[-1].x
        single = len(patched) == 1
        record = base[patched[0]] if single else None
        rows.append(
            {
                "step": patched[0] if single else "all",
                "t": record.t if single else None,
                "shift": float((x - x0).flatten(1).norm(dim=1).mean()),
                "residual": float(_rms(residual(x)).mean()),
                "base_residual": base_residual,
                "feedback_norm": float(record.feedback_norm.mean()) if single else None,
            }
        )
    return FeedbackPatching(pd.DataFrame(rows))


def patch_method(method, y: torch.Tensor, sampler=None, seed: int = 0, steps: Iterable[int] | None = None):
    """:func:`feedback_patching` of a FlowBender method restoring observations ``y``."""
    return feedback_patching(
        lambda zero_at: method.sample(y, sampler, seed, zero_feedback_at=zero_at),
        lambda x: method.operator.residual(x.clamp(-1, 1), y),
        steps,
    )
