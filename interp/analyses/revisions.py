"""Non-chronological decoding and revisions: which positions are decided when, and which change later.

Input: the :class:`~interp.samplers.Step` records of a sampling run (or a trace's sampler state).
Per sample and answer position: the step it was first committed, how often it was revised (one
real token replaced by another) and renoised (thrown back to noise). Per sample: the rank
correlation (Spearman, Kendall tau-b) between commit step and position — 1 is strictly left to
right, -1 right to left, NaN when every committed position shares one step — and the number of
*backtracks*: a position changing after a later position already holds a token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
import torch

from interp.hooks.trace import Trace
from interp.samplers.base import Step


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share their mean rank), 1-D."""
    order = x.argsort(stable=True)
    ranks = torch.empty(len(x), dtype=torch.float64)
    ranks[order] = torch.arange(1, len(x) + 1, dtype=torch.float64)
    for value in x.unique():
        tied = x == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    rx, ry = _ranks(x.double()), _ranks(y.double())
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = (rx.norm() * ry.norm()).item()
    return float((rx @ ry).item() / denom) if denom > 0 else float("nan")


def kendall_tau_b(x: torch.Tensor, y: torch.Tensor) -> float:
    dx = torch.sign(x.double().unsqueeze(0) - x.double().unsqueeze(1))
    dy = torch.sign(y.double().unsqueeze(0) - y.double().unsqueeze(1))
    upper = torch.triu(torch.ones_like(dx, dtype=torch.bool), 1)
    concord = (dx * dy)[upper].sum()
    nx, ny = (dx[upper] != 0).sum(), (dy[upper] != 0).sum()
    denom = (nx * ny).double().sqrt()
    return float(concord / denom) if denom > 0 else float("nan")


@dataclass
class RevisionResult:
    """Per-position and per-sample revision statistics of one sampling run."""

    first_commit: torch.Tensor  # [B, A] step of first commit (-1: never)
    revisions: torch.Tensor  # [B, A]
    renoisings: torch.Tensor  # [B, A]
    backtracks: torch.Tensor  # [B]
    spearman: list[float]
    kendall: list[float]
    tokens: torch.Tensor  # [S, B, A] canvas of the answer after each step
    changed: torch.Tensor  # [S, B, A] revised or renoised at that step

    def frame(self) -> pd.DataFrame:
        """Tidy per (sample, position)."""
        B, A = self.first_commit.shape
        rows = [
            {
                "sample": b,
                "position": p,
                "first_commit": int(self.first_commit[b, p]),
                "revisions": int(self.revisions[b, p]),
                "renoisings": int(self.renoisings[b, p]),
            }
            for b in range(B)
            for p in range(A)
        ]
        return pd.DataFrame(rows)

    def order_within(self, block: int, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
        """Decode order inside blocks of ``block`` answer positions (a DiffusionGemma canvas, whose blocks are
        written one after the other, which alone pulls the whole-answer correlation towards 1): Spearman
        between commit step and position per (sample, block) where defined, their mean, and a 95% bootstrap
        interval over those pairs (0 = no order; 1 = left to right)."""
        values = []
        B, A = self.first_commit.shape
        for b in range(B):
            for start in range(0, A, block):
                steps = self.first_commit[b, start : start + block]
                seen = steps >= 0
                if int(seen.sum()) > 1:
                    rho = spearman(steps[seen], torch.arange(len(steps))[seen])
                    if rho == rho:
                        values.append(rho)
        if not values:
            return {"spearman_in_block": float("nan"), "spearman_in_block_lo": float("nan"),
                    "spearman_in_block_hi": float("nan"), "n_blocks": 0}  # fmt: skip
        x = torch.tensor(values, dtype=torch.float64)
        gen = torch.Generator().manual_seed(seed)
        means = x[torch.randint(len(x), (n_boot, len(x)), generator=gen)].mean(1)
        lo, hi = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
        return {"spearman_in_block": float(x.mean()), "spearman_in_block_lo": lo, "spearman_in_block_hi": hi,
                "n_blocks": len(values)}  # fmt: skip

    def samples(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "sample": range(len(self.spearman)),
                "spearman": self.spearman,
                "kendall": self.kendall,
                "backtracks": self.backtracks.tolist(),
            }
        )

    def summary(self) -> dict[str, float]:
        """Means over samples. The rank correlations are undefined (NaN) for a sample whose committed
        positions all share one commit step (ties only, e.g. MDLM with few steps) or that has fewer than
        two committed positions: ``mean_spearman`` / ``mean_kendall`` average the ``n_valid`` samples
        where they are defined (NaN if none), the other means are over all ``n_samples``."""
        s = self.samples()
        return {
            "mean_spearman": float(s["spearman"].mean()),
            "mean_kendall": float(s["kendall"].mean()),
            "n_valid": int(s["spearman"].notna().sum()),
            "backtrack_rate": float((self.backtracks > 0).float().mean()),
            "backtracks_per_sample": float(self.backtracks.float().mean()),
            "revisions_per_sample": float(self.revisions.sum(1).float().mean()),
            "n_samples": len(self.spearman),
        }

    def figure(self, sample: int = 0, labels: Sequence[str] | None = None) -> go.Figure:
        """Timeline, steps × answer positions, coloured by token; revisions / renoisings marked ×."""
        toks = self.tokens[:, sample]
        text = [[labels[int(t)] if labels is not None else str(int(t)) for t in row] for row in toks]
        fig = go.Figure(
            go.Heatmap(
                z=toks.T.numpy(),
                text=[list(r) for r in zip(*text, strict=True)],
                texttemplate="%{text}",
                colorscale="Turbo",
                showscale=False,
                hovertemplate="step %{x}, position %{y}: %{text}<extra></extra>",
            )
        )
        steps, positions = torch.nonzero(self.changed[:, sample], as_tuple=True)
        fig.add_trace(
            go.Scatter(
                x=steps.tolist(),
                y=positions.tolist(),
                mode="markers",
                name="revised / renoised",
                marker={"symbol": "x", "size": 10, "color": "white", "line": {"width": 1}},
            )
        )
        fig.update_layout(xaxis_title="step", yaxis_title="answer position", height=320)
        return fig


def decided_after(steps: Sequence[Step], prompt_len: int) -> torch.Tensor:
    """``[S, B, A]``: answer positions holding a decided token after each step (committed at some
    point and not renoised since)."""
    state = torch.zeros_like(steps[0].committed[:, prompt_len:])
    out = []
    for s in steps:
        state = (state | s.committed[:, prompt_len:]) & ~s.renoised[:, prompt_len:]
        out.append(state)
    return torch.stack(out)


def revisions(steps: Sequence[Step] | Trace, prompt_len: int) -> RevisionResult:
    """Revision statistics of one run (``steps`` from ``sample_steps``, or a :class:`Trace` of it) over the
    answer positions."""
    if isinstance(steps, Trace):
        steps = steps.records()
    tokens = torch.stack([s.tokens[:, prompt_len:] for s in steps])  # [S, B, A]
    committed = torch.stack([s.committed[:, prompt_len:] for s in steps])
    revised = torch.stack([s.revised[:, prompt_len:] for s in steps])
    renoised = torch.stack([s.renoised[:, prompt_len:] for s in steps])
    S, B, A = tokens.shape
    step_idx = torch.arange(S).view(S, 1, 1).expand(S, B, A)
    first = torch.where(committed, step_idx, torch.full_like(step_idx, S)).min(0).values
    first = torch.where(first == S, torch.full_like(first, -1), first)
    changed = revised | renoised
    # holding[t, b, q]: position q holds a decided token at the start of step t
    holding = torch.cat([torch.zeros(1, B, A, dtype=torch.bool), decided_after(steps, prompt_len)[:-1]], 0)
    later_holds = holding.flip(-1).cumsum(-1).flip(-1) - holding.long()  # number of positions q > p holding
    backtracks = (changed & (later_holds > 0)).sum((0, 2))
    pos = torch.arange(A)
    sp, kd = [], []
    for b in range(B):
        ok = first[b] >= 0
        sp.append(spearman(first[b][ok], pos[ok]))
        kd.append(kendall_tau_b(first[b][ok], pos[ok]))
    return RevisionResult(
        first_commit=first,
        revisions=revised.sum(0),
        renoisings=renoised.sum(0),
        backtracks=backtracks,
        spearman=sp,
        kendall=kd,
        tokens=tokens,
        changed=changed,
    )
