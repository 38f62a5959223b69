"""Token smearing: how a token's identity is spread over neighbouring positions early in denoising
and sharpens later.

At step t the smear matrix is ``S_t[i, j] = p_t(position i = final token of position j)`` over the
answer positions. Mass on the diagonal is the model already "knowing" the right token at the right
place; mass at distance d = |i - j| > 0 is smearing. The shuffled-position baseline is the mean
belief in the final token of a random *other* position (all off-diagonal pairs), so chance matches
of repeated tokens (digits recur) are not mistaken for smearing: smearing is neighbour mass above it. ``sequence`` smearing does the same for spans
of ``span`` tokens (probability of the whole span, as a product of per-position probabilities).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
import torch

from interp.analyses.revisions import decided_after
from interp.samplers.base import Step


def smear_matrices(probs: torch.Tensor, final: torch.Tensor) -> torch.Tensor:
    """``probs [S, B, A, V]``, ``final [B, A]`` → ``[S, B, A(i), A(j)]``."""
    S, B, A, _ = probs.shape
    idx = final.view(1, B, 1, A).expand(S, B, A, A)
    return probs.gather(-1, idx)


@dataclass
class SmearingResult:
    steps: list[int]
    by_distance: torch.Tensor  # [S, D+1]
    baseline: torch.Tensor  # [S, D+1] shuffled-position baseline
    entropy: torch.Tensor  # [S, B, A]
    span: int

    def frame(self) -> pd.DataFrame:
        rows = []
        for si, step in enumerate(self.steps):
            for d in range(self.by_distance.shape[1]):
                rows.append(
                    {
                        "step": step,
                        "distance": d,
                        "mass": float(self.by_distance[si, d]),
                        "shuffled": float(self.baseline[si, d]),
                        "excess": float(self.by_distance[si, d] - self.baseline[si, d]),
                        "mean_entropy": float(self.entropy[si].mean()),
                    }
                )
        return pd.DataFrame(rows)

    def summary(self) -> dict[str, float]:
        """Neighbour (d = 1) excess over the shuffled baseline at the first and last step, and the
        diagonal (sharpening) at both ends."""
        excess = self.by_distance[:, 1] - self.baseline[:, 1] if self.by_distance.shape[1] > 1 else None
        out = {
            "diagonal_first": float(self.by_distance[0, 0]),
            "diagonal_last": float(self.by_distance[-1, 0]),
            "entropy_first": float(self.entropy[0].mean()),
            "entropy_last": float(self.entropy[-1].mean()),
        }
        if excess is not None:
            out.update(
                neighbour_excess_first=float(excess[0]),
                neighbour_excess_last=float(excess[-1]),
                neighbour_first=float(self.by_distance[0, 1]),
                shuffled_first=float(self.baseline[0, 1]),
                neighbour_last=float(self.by_distance[-1, 1]),
                shuffled_last=float(self.baseline[-1, 1]),
            )
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
                y=self.baseline[:, 1].tolist(),
                mode="lines",
                line={"dash": "dot"},
                name="shuffled-position baseline",
            )
        )
        fig.update_layout(
            xaxis_title="step",
            yaxis_title=f"p(final token of a position d away){' (spans)' if self.span > 1 else ''}",
            height=380,
        )
        return fig


def smearing(
    steps: Sequence[Step], prompt_len: int, max_distance: int = 3, span: int = 1, only_undecided: bool = True
) -> SmearingResult:
    """Smearing over a run. With ``only_undecided`` (default) a position counts at a step only while
    it was still undecided going into that step (the belief about a decided token is trivial)."""
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
    by_distance = _nanmass(smear, max_distance)
    n = smear.shape[-1]
    off_diagonal = ~torch.eye(n, dtype=torch.bool)
    # baseline: the same belief about the final token of a *random other* position, whatever its distance
    baseline = torch.nanmean(smear[..., off_diagonal].flatten(1), dim=1).unsqueeze(-1).expand_as(by_distance).clone()
    baseline[:, 0] = float("nan")
    entropy = -(probs * probs.clamp_min(1e-30).log()).sum(-1)
    return SmearingResult(
        steps=[s.index for s in steps], by_distance=by_distance, baseline=baseline, entropy=entropy, span=span
    )


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
    distance) with the mass, the shuffled-position baseline and the excess."""
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
