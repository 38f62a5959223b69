"""Token smearing: how a token's identity is spread over neighbouring positions early in denoising
and sharpens later.

At step t the smear matrix is ``S_t[i, j] = p_t(position i = final token of position j)`` over the
answer positions. Mass on the diagonal is the model already "knowing" the right token at the right
place; mass at distance d = |i - j| > 0 on a token the position does *not* end with is smearing.

The rule (coincident pairs excluded, compared with distance >= 2): a pair (i, j) whose final tokens
are the same (``final_i == final_j``; for spans, every token of both spans) is left out at every
distance d > 0, since there the belief in j's token is just the belief in i's own token (digits
recur: on the shipped addition model, about one neighbour pair in ten coincides, which was all of the
old "excess"). The neighbour mass is the mean over the remaining pairs at d = 1; the baseline is the
mean over the remaining pairs at d >= 2 (all farther pairs of the answer, in the same samples and
steps); smearing is the neighbour mass above it (``excess``). Its 95% interval is a percentile
bootstrap over samples (the rows of the batch), seeded, recomputing both pooled means on each
resample. ``sequence`` smearing does the same for spans of ``span`` tokens (probability of the whole
span, as a product of per-position probabilities).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
import torch

from interp.analyses.revisions import decided_after
from interp.hooks.trace import Trace
from interp.samplers.base import Step


def smear_matrices(probs: torch.Tensor, final: torch.Tensor) -> torch.Tensor:
    """``probs [S, B, A, V]``, ``final [B, A]`` → ``[S, B, A(i), A(j)]``."""
    S, B, A, _ = probs.shape
    idx = final.view(1, B, 1, A).expand(S, B, A, A)
    return probs.gather(-1, idx)


@dataclass
class SmearingResult:
    """Smearing over one run. ``by_distance [S, D+1]``: d = 0 the diagonal (every row), d >= 1 the mean
    over pairs whose final tokens differ; ``all_pairs [S, D+1]`` the same with coincident pairs kept
    (the old measure); ``baseline [S]``: non-coincident pairs at d >= 2; ``excess_ci [S, 2]``: the
    bootstrap interval on ``by_distance[:, 1] - baseline``; ``coincident [D+1]``: share of the pairs at
    each distance whose final tokens coincide (left out); ``entropy [S, B, A]``."""

    steps: list[int]
    by_distance: torch.Tensor  # [S, D+1]
    all_pairs: torch.Tensor  # [S, D+1]
    baseline: torch.Tensor  # [S]
    excess_ci: torch.Tensor  # [S, 2]
    coincident: torch.Tensor  # [D+1]
    entropy: torch.Tensor  # [S, B, A]
    span: int
    level: float = 0.95

    @property
    def excess(self) -> torch.Tensor:
        """``[S]``: neighbour (d = 1) mass above the d >= 2 baseline, coincident pairs excluded."""
        if self.by_distance.shape[1] < 2:
            return torch.full_like(self.baseline, float("nan"))
        return self.by_distance[:, 1] - self.baseline

    def frame(self) -> pd.DataFrame:
        """One row per (step, distance): mass (coincident pairs excluded for d > 0), baseline (d >= 2),
        excess, mass with coincident pairs kept, their share, mean entropy."""
        rows = []
        for si, step in enumerate(self.steps):
            for d in range(self.by_distance.shape[1]):
                rows.append(
                    {
                        "step": step,
                        "distance": d,
                        "mass": float(self.by_distance[si, d]),
                        "baseline": float(self.baseline[si]) if d > 0 else float("nan"),
                        "excess": float(self.by_distance[si, d] - self.baseline[si]) if d > 0 else float("nan"),
                        "mass_all_pairs": float(self.all_pairs[si, d]),
                        "coincident_share": float(self.coincident[d]),
                        "mean_entropy": float(self.entropy[si].mean()),
                    }
                )
        return pd.DataFrame(rows)

    def summary(self) -> dict[str, float]:
        """Neighbour (d = 1) excess over the d >= 2 baseline, coincident pairs excluded, at the first and
        the last step with its bootstrap interval (``_lo`` / ``_hi``); the diagonal (sharpening) at both ends."""
        out = {
            "diagonal_first": float(self.by_distance[0, 0]),
            "diagonal_last": float(self.by_distance[-1, 0]),
            "entropy_first": float(self.entropy[0].mean()),
            "entropy_last": float(self.entropy[-1].mean()),
        }
        if self.by_distance.shape[1] > 1:
            excess = self.excess
            for end, si in (("first", 0), ("last", -1)):
                out.update(
                    {
                        f"neighbour_excess_{end}": float(excess[si]),
                        f"neighbour_excess_{end}_lo": float(self.excess_ci[si, 0]),
                        f"neighbour_excess_{end}_hi": float(self.excess_ci[si, 1]),
                        f"neighbour_{end}": float(self.by_distance[si, 1]),
                        f"baseline_{end}": float(self.baseline[si]),
                    }
                )
            out["coincident_neighbours"] = float(self.coincident[1])
        return out

    def figure(self) -> go.Figure:
        fig = go.Figure()
        for d in range(self.by_distance.shape[1]):
            fig.add_trace(
                go.Scatter(x=self.steps, y=self.by_distance[:, d].tolist(), mode="lines+markers", name=f"distance {d}")
            )
        fig.add_trace(
            go.Scatter(
                x=self.steps,
                y=self.baseline.tolist(),
                mode="lines",
                line={"dash": "dot"},
                name="baseline: distance >= 2",
            )
        )
        fig.update_layout(
            xaxis_title="step",
            yaxis_title=f"p(final token of a position d away){' (spans)' if self.span > 1 else ''}",
            height=380,
        )
        return fig


def smearing(
    steps: Sequence[Step] | Trace,
    prompt_len: int,
    max_distance: int = 3,
    span: int = 1,
    only_undecided: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> SmearingResult:
    """Smearing over a run. With ``only_undecided`` (default) a position counts at a step only while
    it was still undecided going into that step (the belief about a decided token is trivial). The
    interval on the excess: ``n_boot`` bootstrap resamples of the samples, ``torch.Generator`` seeded
    with ``seed``, percentile interval at ``level``."""
    if isinstance(steps, Trace):
        steps = steps.records()
    probs = torch.stack([s.probs[:, prompt_len:] for s in steps])  # [S, B, A, V]
    final = steps[-1].tokens[:, prompt_len:]
    _, B, A, _ = probs.shape
    smear = span_smear(probs, final, span)
    if only_undecided:
        decided = decided_after(steps, prompt_len)
        undecided = ~torch.cat([torch.zeros(1, B, A, dtype=torch.bool), decided[:-1]], 0)  # going into each step
        rows = undecided[:, :, : smear.shape[2]]
        if span > 1:  # a span counts while any of its positions is undecided
            rows = torch.stack([undecided[:, :, k : k + smear.shape[2]] for k in range(span)]).any(0)
        smear = torch.where(rows.unsqueeze(-1), smear, torch.nan)
    n = smear.shape[-1]
    same = coincident_pairs(final, span)  # [B, n, n]
    dist = (torch.arange(n).view(-1, 1) - torch.arange(n).view(1, -1)).abs()
    kept = torch.where(same.unsqueeze(0) & (dist > 0), torch.nan, smear)
    all_pairs = _nanmass(smear, max_distance)
    by_distance = _nanmass(kept, max_distance)
    near_sum, near_n = _pair_sums(kept, dist == 1)
    far_sum, far_n = _pair_sums(kept, dist >= 2)
    baseline = (far_sum.sum(1) / far_n.sum(1)).float()  # NaN where there is no far pair
    ci = _bootstrap_excess(near_sum, near_n, far_sum, far_n, n_boot, seed, level)
    coincident = torch.stack(
        [
            same[:, dist == d].float().mean() if (dist == d).any() else torch.tensor(float("nan"))
            for d in range(max_distance + 1)
        ]
    )
    entropy = -(probs * probs.clamp_min(1e-30).log()).sum(-1)
    return SmearingResult(
        steps=[s.index for s in steps],
        by_distance=by_distance,
        all_pairs=all_pairs,
        baseline=baseline,
        excess_ci=ci,
        coincident=coincident,
        entropy=entropy,
        span=span,
        level=level,
    )


def coincident_pairs(final: torch.Tensor, span: int = 1) -> torch.Tensor:
    """``[B, n, n]`` (n = A - span + 1): the span starting at i ends with the same tokens as the one at j."""
    n = final.shape[1] - span + 1
    same = torch.ones(final.shape[0], n, n, dtype=torch.bool)
    for k in range(span):
        f = final[:, k : k + n]
        same &= f.unsqueeze(2) == f.unsqueeze(1)
    return same


def _pair_sums(smear: torch.Tensor, select: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and number of the non-NaN entries of ``smear [S, B, n, n]`` at the pairs ``select [n, n]``,
    per step and sample: two ``[S, B]`` float64 tensors."""
    vals = smear[..., select].double()
    ok = ~vals.isnan()
    return torch.where(ok, vals, 0.0).sum(-1), ok.sum(-1).double()


def _bootstrap_excess(
    near_sum: torch.Tensor,
    near_n: torch.Tensor,
    far_sum: torch.Tensor,
    far_n: torch.Tensor,
    n_boot: int,
    seed: int,
    level: float,
) -> torch.Tensor:
    """Percentile interval ``[S, 2]`` of pooled near mean − pooled far mean over ``n_boot`` resamples of
    the samples (with replacement). NaN where a resample has no pair of either kind too often to tell."""
    S, B = near_sum.shape
    if n_boot < 1 or B == 0:
        return torch.full((S, 2), float("nan"))
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(B, (n_boot, B), generator=gen)
    ones = torch.ones(n_boot, B, dtype=torch.float64)
    weights = torch.zeros(n_boot, B, dtype=torch.float64).scatter_add_(1, idx, ones)  # times each sample is drawn
    excess = (weights @ near_sum.T) / (weights @ near_n.T) - (weights @ far_sum.T) / (weights @ far_n.T)  # [R, S]
    alpha = (1 - level) / 2
    q = torch.tensor([alpha, 1 - alpha], dtype=torch.float64)
    return torch.nanquantile(excess, q, dim=0).T.float()


def span_smear(probs: torch.Tensor, final: torch.Tensor, span: int) -> torch.Tensor:
    """``[S, B, n, n]`` with n = A - span + 1: probability, at the span starting at i, of the final
    tokens of the span starting at j (product over the span's positions)."""
    if span == 1:
        return smear_matrices(probs, final)
    S, B, A, _ = probs.shape
    n = A - span + 1
    logp = probs.clamp_min(1e-30).log()
    total = torch.zeros(S, B, n, n)
    for k in range(span):
        target = final[:, k : k + n].view(1, B, 1, n).expand(S, B, n, n)
        total = total + logp[:, :, k : k + n].gather(-1, target)
    return total.exp()


def _nanmass(smear: torch.Tensor, max_distance: int) -> torch.Tensor:
    """Mean over (sample, i, j) with |i - j| = d, ignoring NaN, for d = 0..max_distance → ``[S, D+1]``."""
    n = smear.shape[-1]
    dist = (torch.arange(n).view(-1, 1) - torch.arange(n).view(1, -1)).abs()
    cols = [
        torch.nanmean(smear[..., dist == d].flatten(1), dim=1)
        if (dist == d).any()
        else torch.full(smear.shape[:1], float("nan"))
        for d in range(max_distance + 1)
    ]
    return torch.stack(cols, -1)


def smearing_by_layer(
    lens_probs: torch.Tensor, steps: Sequence[Step], prompt_len: int, max_distance: int = 2, only_undecided: bool = True
) -> pd.DataFrame:
    """Smearing read through the logit lens: ``lens_probs [S, layers, B, L, V]`` (from
    :func:`interp.analyses.logit_lens`) in place of the model's output. One row per (layer, step,
    distance) with the mass (coincident pairs excluded), the distance >= 2 baseline and the excess."""
    rows = []
    for layer in range(lens_probs.shape[1]):
        layered = [
            Step(
                index=s.index,
                t=s.t,
                s=s.s,
                tokens=s.tokens,
                probs=lens_probs[i, layer],
                confidence=s.confidence,
                committed=s.committed,
                renoised=s.renoised,
                revised=s.revised,
            )
            for i, s in enumerate(steps)
        ]
        result = smearing(layered, prompt_len, max_distance=max_distance, only_undecided=only_undecided)
        frame = result.frame()
        frame.insert(0, "layer", layer)
        rows.append(frame)
    return pd.concat(rows, ignore_index=True)
