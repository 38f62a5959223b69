"""Schedules over several representation spaces: each space k runs on its own clock t_k = φ_k(τ) of one
global time τ (LWD, arXiv 2606.19662; SFD as the hand-designed baseline).

Convention (ours, as everywhere in interp): τ = 1 is pure noise and τ = 0 data, and t_k is space k's noise
level; φ_k is increasing with φ_k(0) = 0 and φ_k(1) = 1. Sampling runs τ from 1 to 0; a space whose
clock reaches 0 earlier is clean first.

- :class:`Synchronous`: φ_k(τ) = τ for every space.
- :class:`SFD`: semantics ahead of texture by Δ. SFD writes, in its own time s = 1 − τ (s = 1 data),
  s_sem = min(1, (1 + Δ)s) and s_tex = max(0, (1 + Δ)s − Δ); in our noise levels that is
  t_sem = max(0, (1 + Δ)τ − Δ) (convex: clean once τ ≤ Δ / (1 + Δ)) and t_tex = min(1, (1 + Δ)τ)
  (concave: still pure noise while τ ≥ 1 / (1 + Δ)).
- :class:`LearnedSchedule`: per space the normalised integral of a positive, increasing, piecewise-constant
  density over ``bins`` equal bins of τ, the density built from softplus increments (so convex by
  construction), or its mirror 1 − φ(1 − τ) (concave). The family holds the synchronous schedule (equal
  increments → constant density) and, in the limit of a density that is ~0 then large, SFD's curves.

Every schedule gives ``clocks(τ) → t [..., K]`` and ``rates(τ) → dt/dτ [..., K]`` (for a corrected loss
weight and the kinetic-energy term of LWD); :func:`check_schedule` checks a schedule on a fine grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from interp.config import Config, check
from interp.errors import ConfigError

SHAPES = ("convex", "concave")


class Schedule(nn.Module):
    """Base: ``n_spaces`` clocks of one global time."""

    def __init__(self, n_spaces: int):
        super().__init__()
        check(isinstance(n_spaces, int) and n_spaces >= 1, f"n_spaces must be >= 1, got {n_spaces!r}")
        self.n_spaces = n_spaces

    def clocks(self, tau: torch.Tensor) -> torch.Tensor:
        """Noise level of each space ``[..., K]`` at global time ``tau`` ``[...]`` (in [0, 1])."""
        raise NotImplementedError

    def rates(self, tau: torch.Tensor) -> torch.Tensor:
        """dφ_k/dτ ``[..., K]`` at ``tau`` (one-sided where φ has a kink)."""
        raise NotImplementedError


class Synchronous(Schedule):
    def clocks(self, tau: torch.Tensor) -> torch.Tensor:
        return tau.unsqueeze(-1).expand(*tau.shape, self.n_spaces)

    def rates(self, tau: torch.Tensor) -> torch.Tensor:
        return torch.ones(*tau.shape, self.n_spaces, dtype=tau.dtype)


class SFD(Schedule):
    """SFD's two clocks: the spaces marked ``ahead`` (semantics) run ahead of the others (texture) by
    ``delta``. Default: two spaces, ``(texture, semantics)``."""

    def __init__(self, delta: float = 0.3, ahead: tuple[bool, ...] = (False, True)):
        super().__init__(len(ahead))
        check(0 <= delta < 1, f"delta must be in [0, 1), got {delta!r}")
        self.delta = float(delta)
        self.register_buffer("ahead", torch.tensor(list(ahead), dtype=torch.bool), persistent=False)

    def clocks(self, tau: torch.Tensor) -> torch.Tensor:
        d, u = self.delta, tau.unsqueeze(-1)
        return torch.where(self.ahead, ((1 + d) * u - d).clamp(min=0.0), ((1 + d) * u).clamp(max=1.0))

    def rates(self, tau: torch.Tensor) -> torch.Tensor:
        d, u = self.delta, tau.unsqueeze(-1)
        texture = torch.where((1 + d) * u < 1, 1 + d, 0.0)
        semantic = torch.where((1 + d) * u > d, 1 + d, 0.0)
        return torch.where(self.ahead, semantic, texture).to(tau.dtype)


@dataclass
class LearnedScheduleConfig(Config):
    """``shapes``: per space ``convex`` (φ(τ) ≤ τ: at every τ the space is less noisy than a synchronous one,
    so it is clean *first*, like SFD's semantics) or ``concave`` (φ(τ) ≥ τ: it stays noisy longer, like SFD's
    texture); ``bins``: pieces of the density; ``init_scale``: the softplus pre-activation of the initial
    increments (very negative: nearly synchronous)."""

    shapes: tuple[str, ...] = ("concave", "convex")
    bins: int = 16
    init_scale: float = -6.0

    def validate(self) -> None:
        if not isinstance(self.shapes, (tuple, list)) or not self.shapes:
            raise ConfigError(f"shapes must be a non-empty list of {list(SHAPES)}, got {self.shapes!r}")
        bad = [s for s in self.shapes if s not in SHAPES]
        check(not bad, f"shapes must each be one of {list(SHAPES)}, got {bad}")
        check(isinstance(self.bins, int) and 1 <= self.bins <= 1024, f"bins must be in 1..1024, got {self.bins!r}")


class LearnedSchedule(Schedule):
    """Monotone clocks, convex or concave by construction (see the module docstring). Parameters:
    ``base [K]`` (the first bin's density, through softplus) and ``increments [K, bins - 1]`` (softplus
    steps up of the density). Saved like any module (a checkpoint component)."""

    def __init__(self, cfg: LearnedScheduleConfig):
        super().__init__(len(cfg.shapes))
        self.cfg = cfg
        self.base = nn.Parameter(torch.zeros(self.n_spaces))
        self.increments = nn.Parameter(torch.full((self.n_spaces, cfg.bins - 1), float(cfg.init_scale)))
        self.register_buffer("mirror", torch.tensor([s == "concave" for s in cfg.shapes]), persistent=False)

    def densities(self) -> torch.Tensor:
        """``[K, bins]``: positive, non-decreasing per space, normalised to integrate to 1 over [0, 1]."""
        steps = F.softplus(self.increments)
        density = F.softplus(self.base).unsqueeze(1) + torch.cat(
            [torch.zeros(self.n_spaces, 1, dtype=steps.dtype), steps.cumsum(1)], 1
        )
        return density / density.mean(1, keepdim=True)

    def _convex(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """φ̃(u) and φ̃'(u) ``[..., K]`` of the convex curve for ``u`` ``[..., K]``."""
        bins = self.cfg.bins
        density = self.densities()  # [K, M]
        cumulative = torch.cat([torch.zeros(self.n_spaces, 1, dtype=density.dtype), density.cumsum(1) / bins], 1)
        scaled = u.clamp(0, 1) * bins
        index = scaled.floor().long().clamp(max=bins - 1)  # [..., K]
        k = torch.arange(self.n_spaces).expand_as(index)
        slope = density[k, index]
        value = cumulative[k, index] + (scaled - index) / bins * slope
        return value, slope

    def clocks(self, tau: torch.Tensor) -> torch.Tensor:
        u = tau.unsqueeze(-1).expand(*tau.shape, self.n_spaces)
        u = torch.where(self.mirror, 1 - u, u)
        value, _ = self._convex(u)
        return torch.where(self.mirror, 1 - value, value)

    def rates(self, tau: torch.Tensor) -> torch.Tensor:
        u = tau.unsqueeze(-1).expand(*tau.shape, self.n_spaces)
        _, slope = self._convex(torch.where(self.mirror, 1 - u, u))
        return slope


def corrected_weight(schedule: Schedule, tau: torch.Tensor, clip: float = 10.0) -> torch.Tensor:
    """LWD's schedule correction ``[B, K]`` for global times ``tau [B]`` drawn uniformly: φ_k'(τ) / p(τ) with
    p = 1, clipped at ``clip``. Under it the expected loss of a space whose error depends on its own noise
    level only, E_τ[φ_k'(τ) L_k(φ_k(τ))] = ∫ L_k(t) dt, is the same for every schedule: moving the schedule
    cannot buy a lower loss by spending time where a space is easy, only by ordering the spaces so that
    one helps another."""
    return schedule.rates(tau).clamp(max=clip)


def kinetic_energy(rates: torch.Tensor, x: list[torch.Tensor], eps: list[torch.Tensor]) -> torch.Tensor:
    """Σ_k φ_k'(τ)² · mean ‖x_k − ε_k‖² ``[B]``: the squared speed of the straight path in τ, given
    ``rates [B, K]`` and per space data ``x_k`` and noise ``ε_k`` ``[B, ...]``."""
    speed = torch.stack([(e - d).pow(2).flatten(1).mean(1) for d, e in zip(x, eps, strict=True)], 1)
    return (rates.pow(2) * speed).sum(1)


def check_schedule(schedule: Schedule, points: int = 2001, tol: float = 1e-6) -> dict[str, list]:
    """Check ``schedule`` on a grid of ``points`` values of τ: endpoints φ(0) = 0 and φ(1) = 1, monotone,
    and per space whether it is convex / concave (second differences). Returns lists per space; raises
    :class:`~interp.errors.ConfigError` naming the space if a clock is not monotone or misses an endpoint."""
    tau = torch.linspace(0, 1, points, dtype=torch.float64)
    with torch.no_grad():
        t = schedule.clocks(tau.to(torch.float32)).double()  # [points, K]
    diffs = t.diff(dim=0)
    second = diffs.diff(dim=0)
    out: dict[str, list] = {"start": [], "end": [], "monotone": [], "convex": [], "concave": []}
    for k in range(t.shape[1]):
        out["start"].append(float(t[0, k]))
        out["end"].append(float(t[-1, k]))
        out["monotone"].append(bool((diffs[:, k] >= -tol).all()))
        out["convex"].append(bool((second[:, k] >= -tol).all()))
        out["concave"].append(bool((second[:, k] <= tol).all()))
        if not out["monotone"][k] or abs(out["start"][k]) > 1e-4 or abs(out["end"][k] - 1) > 1e-4:
            raise ConfigError(
                f"schedule space {k}: clock must rise monotonically from 0 to 1, got φ(0) = {out['start'][k]:.4g}, "
                f"φ(1) = {out['end'][k]:.4g}, monotone {out['monotone'][k]}"
            )
    return out


def crossing_times(schedule: Schedule, levels: tuple[float, ...] = (0.9, 0.5, 0.1), points: int = 2001):
    """For each space and noise level ℓ, the largest τ (first, as sampling runs τ from 1 down) at which the
    space's noise level is at most ℓ: ``{level: [τ per space]}``."""
    tau = torch.linspace(0, 1, points)
    with torch.no_grad():
        t = schedule.clocks(tau)
    out = {}
    for level in levels:
        below = t <= level + 1e-9
        out[level] = [float(tau[below[:, k]].max()) if below[:, k].any() else math.nan for k in range(t.shape[1])]
    return out
