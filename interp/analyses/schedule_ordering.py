"""The order in which a multi-space model (LWD) denoises its representations, from a checkpoint alone.

Two views of the same question, *what is decided when*:

- the **schedule**: each space's clock φ_k(τ) on a grid of the global time τ (1 = noise), the τ at which
  each space reaches given noise levels (sampling runs τ downwards, so a larger τ is *earlier*), the
  order in which the spaces become clean, monotonicity / convexity checks, and, for a learned schedule,
  how the curves moved during the probe (the ``phi/...`` rows of the checkpoint's ``metrics.jsonl``);
- the **commitments**: sample ``n`` images, and at every step classify each space's clean estimate (the
  semantic read-out, or the frozen classifier on the pixel / coarse picture); ``agreement`` is the share
  of samples whose estimate already shows the class of the final image, ``accuracy`` the share that
  shows the requested label (class-conditional models). A space has committed from the step on which
  its agreement stays at or above ``decided_at`` (0.9) × its final agreement.

:func:`schedule_ordering` returns a :class:`ScheduleOrdering` with ``frame()`` (the curves),
``summary()`` (JSON) and ``figure()`` (plotly).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from interp.errors import DataError
from interp.processes.schedules import check_schedule, crossing_times
from interp.protocols import ScheduledDenoiser

LEVELS = (0.9, 0.5, 0.1)


@dataclass
class ScheduleOrdering:
    """``curves``: tau, space, t, rate; ``crossings``: space, level, tau; ``commitments``: step, tau,
    space, clock, agreement, accuracy; ``probe``: step, tau, space, t (learned schedules)."""

    names: list[str]
    schedule: str
    curves: pd.DataFrame
    crossings: pd.DataFrame
    commitments: pd.DataFrame
    probe: pd.DataFrame
    checks: dict[str, list]
    decided_at: float = 0.9
    meta: dict[str, Any] = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        return self.curves

    def order(self, level: float = 0.5) -> list[str]:
        """Spaces by the τ at which they reach noise level ``level``: the first to get there first."""
        rows = self.crossings[self.crossings.level == level].sort_values("tau", ascending=False)
        return list(rows.space)

    def decided(self) -> dict[str, float | None]:
        """Per space the global time τ (start of the step) from which on its agreement stays at or above
        ``decided_at`` × its agreement at the last step (the semantic read-out is not a perfect
        classifier, so its final agreement is the ceiling); None if no step qualifies."""
        out: dict[str, float | None] = {}
        for name in self.names:
            rows = self.commitments[self.commitments.space == name].sort_values("step")
            bar = self.decided_at * float(rows.agreement.iloc[-1])
            below = [i for i, a in enumerate(rows.agreement) if a < bar]
            first = below[-1] + 1 if below else 0
            out[name] = float(rows.tau.iloc[first]) if first < len(rows) else None
        return out

    def final_agreement(self) -> dict[str, float]:
        """Per space the share of samples whose last estimate shows the final image's class."""
        last = self.commitments[self.commitments.step == self.commitments.step.max()]
        return {r.space: float(r.agreement) for r in last.itertuples()}

    def summary(self) -> dict[str, Any]:
        crossings = {
            name: {
                str(r.level): round(float(r.tau), 4) for r in self.crossings[self.crossings.space == name].itertuples()
            }
            for name in self.names
        }
        grid = self.curves[self.curves.tau.round(6).isin([0.0, 0.25, 0.5, 0.75, 1.0])]
        return {
            "schedule": self.schedule,
            "spaces": self.names,
            "order": self.order(),
            "clean_first": self.order(min(LEVELS))[0],
            "crossing_tau": crossings,
            "curves": {
                name: {f"{r.tau:.2f}": round(float(r.t), 4) for r in grid[grid.space == name].itertuples()}
                for name in self.names
            },
            "checks": self.checks,
            "decided_tau": self.decided(),
            "final_agreement": self.final_agreement(),
            "decided_at": self.decided_at,
            "probe_updates": int(self.probe.step.nunique()) if len(self.probe) else 0,
            **self.meta,
        }

    def figure(self):
        """φ_k(τ) curves (τ axis reversed: sampling runs left to right) and the per-step agreement."""
        from plotly.subplots import make_subplots

        fig = make_subplots(rows=1, cols=2, subplot_titles=("clocks φ_k(τ)", "estimate shows the final class"))
        for name in self.names:
            c = self.curves[self.curves.space == name]
            fig.add_scatter(x=c.tau, y=c.t, name=f"φ {name}", row=1, col=1)
            m = self.commitments[self.commitments.space == name]
            fig.add_scatter(x=m.tau, y=m.agreement, name=f"agreement {name}", row=1, col=2)
        fig.update_xaxes(autorange="reversed", title_text="global time τ (1 = noise)")
        fig.update_yaxes(title_text="noise level t_k", row=1, col=1)
        fig.update_yaxes(title_text="share of samples", range=[0, 1.02], row=1, col=2)
        return fig


def probe_history(checkpoint: str | Path | None, names: list[str]) -> pd.DataFrame:
    """The ``phi/<space>@<τ>`` rows the trainer logged after each schedule update (empty if none)."""
    rows = []
    path = Path(checkpoint) / "metrics.jsonl" if checkpoint is not None else None
    if path is not None and path.is_file():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("phase") != "schedule":
                continue
            for key, value in record.items():
                if key.startswith("phi/"):
                    name, _, tau = key[4:].partition("@")
                    rows.append({"step": record["step"], "space": name, "tau": float(tau), "t": value})
    return pd.DataFrame(rows, columns=["step", "space", "tau", "t"])


def schedule_ordering(
    method: Any,
    n: int = 200,
    sampler: Any = None,
    seed: int = 0,
    points: int = 201,
    levels: tuple[float, ...] = LEVELS,
    decided_at: float = 0.9,
) -> ScheduleOrdering:
    """See the module docstring. ``method``: a loaded LWD checkpoint (anything with the
    :class:`~interp.protocols.ScheduledDenoiser` members)."""
    if not isinstance(method, ScheduledDenoiser):
        raise DataError(f"schedule-ordering needs a multi-space (LWD) model; got {type(method).__name__}")
    if n < 1:
        raise DataError(f"n must be >= 1, got {n}")
    schedule, names = method.schedule, list(method.names)
    checks = check_schedule(schedule)
    tau = torch.linspace(0, 1, points)
    with torch.no_grad():
        t, rates = schedule.clocks(tau), schedule.rates(tau)
    curves = pd.DataFrame(
        [
            {"tau": float(tau[i]), "space": name, "t": float(t[i, k]), "rate": float(rates[i, k])}
            for i in range(points)
            for k, name in enumerate(names)
        ]
    )
    crossing = crossing_times(schedule, levels)
    crossings = pd.DataFrame(
        [{"space": name, "level": level, "tau": crossing[level][k]} for level in levels for k, name in enumerate(names)]
    )
    labels, record = method.sample(n, sampler, seed)
    final = method.spaces.classify(names.index("pixels") if "pixels" in names else 0, _final_tokens(method, record))
    rows = []
    for step in record:
        for k, name in enumerate(names):
            shown = method.spaces.classify(k, step.estimates[name])
            row = {"step": step.index, "tau": step.t, "space": name, "clock": float(step.clocks[k]),
                   "agreement": float((shown == final).float().mean())}  # fmt: skip
            row["accuracy"] = float((shown == labels).float().mean()) if labels is not None else math.nan
            rows.append(row)
    return ScheduleOrdering(
        names=names,
        schedule=method.cfg.schedule,
        curves=curves,
        crossings=crossings,
        commitments=pd.DataFrame(rows),
        probe=probe_history(getattr(method, "checkpoint_path", None), names),
        checks=checks,
        decided_at=decided_at,
        meta={"n": n, "seed": seed, "steps": len(record)},
    )


def _final_tokens(method: Any, record: list) -> torch.Tensor:
    names = list(method.names)
    key = "pixels" if "pixels" in names else names[0]
    return record[-1].states[key]
