"""Samplers of conditional flows that see their own alignment error (FlowBender, arXiv 2606.20404), and
the two baselines, from t = 1 (noise) to t = 0 on the flow z_t = (1 − t)x + tε, v = ε − x.

- ``flowbender``: per step, a look-ahead pass with zero feedback gives v₀ and x̂ = z − t v₀; the feedback
  f(x̂) (built by the method from the residual A(x̂) − y) goes in with a second pass, giving the refined
  v; then an Euler step z ← z + (s − t) v. 2N evaluations for N steps. The **prior-step shortcut**
  (``shortcut`` = f) skips the look-ahead on the last min(round(fN), N − 1) steps and reuses
  x̂ = z − t v of the previous step's refined velocity (after an Euler step that is exactly the previous
  step's estimate), so f = 1 costs N + 1 evaluations. **Feedback guidance** (``feedback_scale`` = s):
  v ← v₀ + s(v − v₀) on the steps that computed v₀ (not on shortcut steps, which have none).
- ``cond-euler``: the plain conditional Euler sampler (no feedback; the plain and align baselines).
- ``residual-guidance``: inference-time guidance (FlowChef-like): per step x̂ = z − t v, one gradient step
  on ½‖A(x̂) − y‖² with the step length of an exact line search of the linearised residual times
  ``guidance_step`` (1 = the minimum along the gradient), then z ← (1 − s)x̂' + s ε̂ with ε̂ = x̂ + v.
  One evaluation per step (the gradient goes through A only, not the network).

The samplers are generic over the data's shape: a method hands them ``velocity(z [B, ...], t [B],
feedback or None) -> v [B, ...]`` (None = zero feedback), ``feedback(x̂) -> [B, F, ...]`` and
``residual(x̂) -> A(x̂) − y`` (differentiable, e.g. through a straight-through surrogate of A).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import torch

from interp.config import Config, check
from interp.errors import DataError
from interp.registry import register_sampler, sampler_class, sampler_names
from interp.samplers.loop import run
from interp.steps import ImageStep, StepContext

Velocity = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
Feedback = Callable[[torch.Tensor], torch.Tensor]
Residual = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class FlowBenderSamplerConfig(Config):
    """``steps`` N; ``shortcut`` the fraction f of final steps that reuse the previous estimate
    (flowbender only); ``feedback_scale`` s of feedback guidance (flowbender only; 1 = off);
    ``guidance_step`` of inference-time guidance (residual-guidance only)."""

    name: str = "flowbender"
    steps: int = 20
    shortcut: float = 0.0
    feedback_scale: float = 1.0
    guidance_step: float = 0.5

    def validate(self) -> None:
        known = sampler_names(FlowBenderSamplerConfig)
        if self.name not in known:
            raise DataError(f"unknown conditional-flow sampler {self.name!r}; known: {', '.join(known)}")
        check(isinstance(self.steps, int) and self.steps >= 1, f"steps must be >= 1, got {self.steps!r}")
        check(0 <= self.shortcut <= 1, f"shortcut must be in [0, 1], got {self.shortcut!r}")
        check(0 <= self.feedback_scale <= 100, f"feedback_scale must be in [0, 100], got {self.feedback_scale!r}")
        check(0 <= self.guidance_step <= 10, f"guidance_step must be in [0, 10], got {self.guidance_step!r}")
        if self.name != "flowbender":
            check(self.shortcut == 0, f"shortcut applies to the flowbender sampler, not {self.name!r}")
            check(self.feedback_scale == 1, f"feedback_scale applies to the flowbender sampler, not {self.name!r}")

    def shortcut_steps(self) -> int:
        """How many final steps reuse the previous estimate: min(round(f N), N − 1)."""
        return min(round(self.shortcut * self.steps), self.steps - 1)

    def evaluations(self) -> int:
        """Model evaluations of a whole run: 2N − shortcut steps (flowbender), N otherwise."""
        return 2 * self.steps - self.shortcut_steps() if self.name == "flowbender" else self.steps


@dataclass
class FlowBenderStep(ImageStep):
    """:class:`~interp.steps.ImageStep` plus what the model saw of its own error: ``feedback`` the
    feedback input of the refined pass ``[B, F, ...]`` (zeros where it was patched out; None for the
    samplers without feedback), ``feedback_norm`` its L2 norm per sample ``[B]``, ``residual_norm`` the
    RMS of A(x̂) − y per sample ``[B]`` at the step's probe estimate x̂ (before the step), and
    ``shortcut`` whether the step reused the previous estimate instead of a look-ahead."""

    feedback: torch.Tensor | None = None
    feedback_norm: torch.Tensor | None = None
    residual_norm: torch.Tensor | None = None
    shortcut: bool = False

    def summary_scalars(self) -> dict[str, Any]:
        out = super().summary_scalars()
        if self.feedback_norm is not None:
            out["mean_feedback_norm"] = float(self.feedback_norm.mean())
        if self.residual_norm is not None:
            out["mean_residual_norm"] = float(self.residual_norm.mean())
        return out


def _rms(r: torch.Tensor) -> torch.Tensor:
    return r.detach().flatten(1).pow(2).mean(1).sqrt()


class ConditionalSampler:
    """Base: ``x`` starts as N(0, I) of ``shape`` (drawn from ``generator``); the grid runs from 1 to 0
    in ``cfg.steps`` equal steps. ``zero_feedback_at``: step indices whose feedback is replaced by
    zeros (the patching view)."""

    name: str
    config = FlowBenderSamplerConfig

    def __init__(
        self,
        velocity: Velocity,
        feedback: Feedback | None,
        residual: Residual,
        cfg: FlowBenderSamplerConfig,
        shape: tuple[int, ...],
        generator: torch.Generator,
        zero_feedback_at: Collection[int] = (),
    ):
        self.velocity, self.feedback, self.residual, self.cfg = velocity, feedback, residual, cfg
        self.shape, self.zero_feedback_at = shape, frozenset(zero_feedback_at)
        self.grid = torch.linspace(1.0, 0.0, cfg.steps + 1)
        self.x = torch.randn(shape, generator=generator)

    def schedule(self) -> list[tuple[float, float]]:
        return [(float(self.grid[i]), float(self.grid[i + 1])) for i in range(self.cfg.steps)]

    def v(self, z: torch.Tensor, t: float, feedback: torch.Tensor | None) -> torch.Tensor:
        return self.velocity(z, torch.full((z.shape[0],), t), feedback)


@register_sampler
class FlowBenderSampler(ConditionalSampler):
    name = "flowbender"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.feedback is None:
            raise DataError("the flowbender sampler needs a model with feedback inputs; use cond-euler")
        self.cached: torch.Tensor | None = None  # the previous step's refined velocity

    def step(self, ctx: StepContext) -> FlowBenderStep:
        t, z = ctx.t, self.x
        shortcut = self.cached is not None and ctx.index >= self.cfg.steps - self.cfg.shortcut_steps()
        if shortcut:
            v0, x_hat, evaluations = None, z - t * self.cached, 1
        else:
            v0 = self.v(z, t, None)
            x_hat, evaluations = z - t * v0, 2
        fb = self.feedback(x_hat)
        if ctx.index in self.zero_feedback_at:
            fb = torch.zeros_like(fb)
        v = self.v(z, t, fb)
        if v0 is not None and self.cfg.feedback_scale != 1:
            v = v0 + self.cfg.feedback_scale * (v - v0)
        self.cached = v
        self.x = z + (ctx.s - t) * v
        return FlowBenderStep(
            index=ctx.index,
            t=t,
            s=ctx.s,
            x=self.x.clone(),
            x0=z - t * v,
            evaluations=evaluations,
            feedback=fb,
            feedback_norm=fb.flatten(1).norm(dim=1),
            residual_norm=_rms(self.residual(x_hat)),
            shortcut=shortcut,
        )


@register_sampler
class ConditionalEulerSampler(ConditionalSampler):
    name = "cond-euler"

    def step(self, ctx: StepContext) -> FlowBenderStep:
        t, z = ctx.t, self.x
        v = self.v(z, t, None)
        x0 = z - t * v
        self.x = z + (ctx.s - t) * v
        return FlowBenderStep(
            index=ctx.index, t=t, s=ctx.s, x=self.x.clone(), x0=x0, residual_norm=_rms(self.residual(x0))
        )


def guided_estimate(x_hat: torch.Tensor, residual: Residual, step: float) -> torch.Tensor:
    """x̂ − α g with g = ∇ ½‖r(x̂)‖² per sample and α = ``step`` · ‖g‖² / ‖J g‖² (J the Jacobian of r):
    ``step`` = 1 minimises the linearised residual along −g (for SR×4 that is exact consistency)."""
    with torch.enable_grad():
        x = x_hat.detach().requires_grad_(True)
        r = residual(x)
        w = torch.zeros_like(r, requires_grad=True)
        (jtw,) = torch.autograd.grad(r, x, grad_outputs=w, create_graph=True)  # Jᵀw, linear in w
        g = torch.autograd.grad(r, x, grad_outputs=r.detach(), retain_graph=True)[0]  # Jᵀr = ∇ ½‖r‖²
        (jg,) = torch.autograd.grad((jtw * g).sum(), w)  # J g (the double-backward trick: no forward AD)
    dims = tuple(range(1, g.dim()))
    alpha = g.pow(2).sum(dims) / jg.pow(2).sum(tuple(range(1, jg.dim()))).clamp_min(1e-12)
    return x_hat - step * alpha.view(-1, *[1] * (g.dim() - 1)) * g


@register_sampler
class ResidualGuidanceSampler(ConditionalSampler):
    name = "residual-guidance"

    def step(self, ctx: StepContext) -> FlowBenderStep:
        t, s, z = ctx.t, ctx.s, self.x
        v = self.v(z, t, None)
        x_hat = z - t * v
        guided = guided_estimate(x_hat, self.residual, self.cfg.guidance_step)
        self.x = (1 - s) * guided + s * (x_hat + v)
        return FlowBenderStep(
            index=ctx.index, t=t, s=s, x=self.x.clone(), x0=guided, residual_norm=_rms(self.residual(x_hat))
        )


def sample_conditional(
    velocity: Velocity,
    feedback: Feedback | None,
    residual: Residual,
    cfg: FlowBenderSamplerConfig,
    shape: tuple[int, ...],
    generator: torch.Generator,
    zero_feedback_at: Collection[int] = (),
):
    """The lazy iterator of :class:`FlowBenderStep` s of sampler ``cfg.name`` over ``shape``."""
    cls = sampler_class(cfg.name, FlowBenderSamplerConfig)
    return run(cls(velocity, feedback, residual, cfg, shape, generator, zero_feedback_at))
