"""Samplers over several representation spaces on their own clocks (LWD): the global time τ runs from
1 (noise) to 0 on ``steps`` equal steps, and space k moves by φ_k(τ_{i+1}) − φ_k(τ_i) along its own
predicted velocity, so a space whose clock is flat over a step does not move in it (SFD's window).

- ``tau-euler``: x_k ← x_k + Δφ_k v_k (one evaluation per step);
- ``tau-heun``: the Euler predictor, then the average of the two velocities (two evaluations per step,
  one on the last).

Each step yields a :class:`SpacesStep`: ``x`` / ``x0`` are the picture of the state and of the clean
estimate (the pixel space's image), ``states`` / ``estimates`` hold every space's tokens by name and
``clocks`` every space's noise level at the end of the step, so a trace records all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from interp.config import Config, check
from interp.errors import DataError
from interp.registry import register_sampler, sampler_names
from interp.steps import ImageStep, StepContext

# (states [[B, N_k, d_k]], noise levels t [B, K]) -> velocities [[B, N_k, d_k]]
SpacesPredict = Callable[[list[torch.Tensor], torch.Tensor], list[torch.Tensor]]


@dataclass
class SpacesSamplerConfig(Config):
    name: str = "tau-euler"
    steps: int = 50

    def validate(self) -> None:
        known = sampler_names(SpacesSamplerConfig)
        if self.name not in known:
            raise DataError(f"unknown sampler {self.name!r} for multi-space models; known: {', '.join(known)}")
        check(isinstance(self.steps, int) and 1 <= self.steps <= 100_000, f"steps must be >= 1, got {self.steps!r}")


@dataclass
class SpacesStep(ImageStep):
    """An :class:`~interp.steps.ImageStep` (``t``/``s``: global time τ) with every space's state and
    clean estimate ``{name: [B, N_k, d_k]}`` and the spaces' noise levels ``clocks [K]`` after the step."""

    states: dict[str, torch.Tensor] = field(default_factory=dict)
    estimates: dict[str, torch.Tensor] = field(default_factory=dict)
    clocks: torch.Tensor | None = None

    def summary_scalars(self) -> dict[str, Any]:
        row = super().summary_scalars()
        if self.clocks is not None:
            row.update({f"clock/{name}": float(c) for name, c in zip(self.states, self.clocks, strict=False)})
        return row


class SpacesSampler:
    """Base: ``states`` start as N(0, I) of ``shapes`` ``[(N_k, d_k)]``; ``clocks(τ [S]) → [S, K]`` is the
    schedule; ``picture(states) → [B, C, H, W]`` the image of a state."""

    name: str
    config = SpacesSamplerConfig

    def __init__(
        self,
        predict: SpacesPredict,
        clocks: Callable[[torch.Tensor], torch.Tensor],
        cfg: SpacesSamplerConfig,
        names: list[str],
        shapes: list[tuple[int, int]],
        batch: int,
        generator: torch.Generator,
        picture: Callable[[list[torch.Tensor]], torch.Tensor],
    ):
        self.predict, self.cfg, self.names, self.picture = predict, cfg, names, picture
        self.taus = torch.linspace(1.0, 0.0, cfg.steps + 1)
        with torch.no_grad():
            self.levels = clocks(self.taus)  # [steps + 1, K]
        self.states = [torch.randn(batch, n, d, generator=generator) for n, d in shapes]
        self.batch = batch

    def schedule(self) -> list[tuple[float, float]]:
        return [(float(self.taus[i]), float(self.taus[i + 1])) for i in range(self.cfg.steps)]

    def velocity(self, states: list[torch.Tensor], levels: torch.Tensor) -> list[torch.Tensor]:
        return self.predict(states, levels.expand(self.batch, -1))

    def step(self, ctx: StepContext) -> SpacesStep:
        t, s = self.levels[ctx.index], self.levels[ctx.index + 1]
        v = self.velocity(self.states, t)
        estimates = [x - float(t_k) * v_k for x, t_k, v_k in zip(self.states, t, v, strict=True)]
        self.states, evaluations = self.advance(ctx, t, s, v)
        return SpacesStep(
            index=ctx.index,
            t=ctx.t,
            s=ctx.s,
            x=self.picture(self.states),
            x0=self.picture(estimates),
            evaluations=evaluations,
            states={n: x.clone() for n, x in zip(self.names, self.states, strict=True)},
            estimates=dict(zip(self.names, estimates, strict=True)),
            clocks=s.clone(),
        )

    def advance(
        self, ctx: StepContext, t: torch.Tensor, s: torch.Tensor, v: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], int]:
        raise NotImplementedError

    def euler(self, t: torch.Tensor, s: torch.Tensor, v: list[torch.Tensor]) -> list[torch.Tensor]:
        return [x + float(s_k - t_k) * v_k for x, t_k, s_k, v_k in zip(self.states, t, s, v, strict=True)]


@register_sampler
class TauEuler(SpacesSampler):
    name = "tau-euler"

    def advance(self, ctx, t, s, v):
        return self.euler(t, s, v), 1


@register_sampler
class TauHeun(SpacesSampler):
    name = "tau-heun"

    def advance(self, ctx, t, s, v):
        predicted = self.euler(t, s, v)
        if ctx.s <= 0:
            return predicted, 1
        v2 = self.velocity(predicted, s)
        mean = [(a + b) / 2 for a, b in zip(v, v2, strict=True)]
        return self.euler(t, s, mean), 2
