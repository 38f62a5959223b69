"""Continuous-data processes: flow matching (velocity) and DDPM (ε-prediction, cosine VP schedule).

Both use t ∈ [0, 1] (t = 1 noise, t = 0 data) and ``x_t = α_t x + σ_t ε``:

- ``flow``: α_t = 1 − t, σ_t = t; the model predicts the velocity v = ε − x (dx_t/dt);
- ``ddpm``: ᾱ_t = cos²(π/2 · (t + s)/(1 + s)) with s = 0.008, α_t = √ᾱ_t, σ_t = √(1 − ᾱ_t); the model
  predicts ε.

The loss is the per-example mean squared error against that target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from interp.config import check_choice

PROCESSES = ("flow", "ddpm")
T_MAX = 0.9999  # DDPM's α_t reaches 0 at t = 1; sampling starts just below


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


@dataclass(frozen=True)
class ContinuousProcess:
    kind: str = "flow"
    cosine_s: float = 0.008

    def __post_init__(self) -> None:
        check_choice("process", self.kind, PROCESSES)

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "flow":
            return 1 - t, t
        abar = (
            torch.cos(math.pi / 2 * (t + self.cosine_s) / (1 + self.cosine_s)) ** 2
            / math.cos(math.pi / 2 * self.cosine_s / (1 + self.cosine_s)) ** 2
        )
        abar = abar.clamp(0.0, 1.0)
        return abar.sqrt(), (1 - abar).sqrt()

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        a, s = self.alpha_sigma(t)
        return 2 * (a.clamp_min(1e-12).log() - s.clamp_min(1e-12).log())

    def noise(self, x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        a, s = self.alpha_sigma(t)
        return _bcast(a, x) * x + _bcast(s, x) * eps

    def target(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return eps - x if self.kind == "flow" else eps

    def x0_eps(self, pred: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data and noise estimates from the model's prediction at ``x_t``."""
        a, s = (_bcast(v, x_t) for v in self.alpha_sigma(t))
        if self.kind == "flow":  # x_t = x + t v  with  v = ε − x
            x0 = x_t - s * pred
            return x0, x0 + pred
        return (x_t - s * pred) / a.clamp_min(1e-4), pred

    def loss(self, pred: torch.Tensor, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return ((pred - self.target(x, eps)) ** 2).flatten(1).mean(1)
