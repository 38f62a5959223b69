"""Step-wise samplers for continuous (image) processes, from t = 1 (noise) to t = 0, yielding one
:class:`~interp.steps.ImageStep` per step.

- ``euler`` (flow): x_s = x_t + (s − t) v̂;
- ``heun`` (flow): Euler predictor, then the average of the two velocities (2 evaluations per step,
  1 on the last);
- ``ddim`` (ddpm, η = 0): x_s = α_s x̂₀ + σ_s ε̂;
- ``ancestral`` (ddpm): a draw from the DDPM posterior q(x_s | x_t, x̂₀).

Flow samplers start at t = 1. DDPM samplers start by default at t = 1 − 1/max(steps, 50): 0.98 for up
to 50 steps (as diffusers' "leading" spacing starts at timestep 980 of 1000 for 50 steps), closer to 1
for more. At t → 1 the cosine schedule's α_t goes to 0 and x̂₀ = (x_t − σ_t ε̂) / α_t multiplies any
error of ε̂ by 1/α_t (≈ 6,000 at t = 0.9999), which ruins unclipped DDIM for every model; a start that
fell with the step count (leading spacing gives 0.5 for 2 steps) would instead begin far from pure
noise. ``t_start`` overrides the start.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from interp.config import Config, check
from interp.errors import DataError
from interp.processes.continuous import T_MAX, ContinuousProcess
from interp.registry import register_sampler, sampler_class, sampler_names
from interp.samplers.loop import run
from interp.steps import ImageStep, StepContext

Predict = Callable[[torch.Tensor, float], torch.Tensor]  # (x_t [B, ...], t) -> the model's prediction


@dataclass
class ImageSamplerConfig(Config):
    name: str = "euler"
    steps: int = 50
    clip_x0: bool = True  # DDPM samplers: clip the clean-image estimate to [-1, 1] (as diffusers' clip_sample)
    t_start: float | None = None  # first noise level; None: 1 (flow), 1 - 1/max(steps, 50) (ddpm)

    def validate(self) -> None:
        known = sampler_names(ImageSamplerConfig)
        if self.name not in known:
            raise DataError(f"unknown image sampler {self.name!r}; known: {', '.join(known)}")
        check(isinstance(self.steps, int) and self.steps >= 1, f"steps must be >= 1, got {self.steps!r}")
        check(self.t_start is None or 0 < self.t_start <= 1, f"t_start must be in (0, 1] or None, got {self.t_start!r}")

    def start(self, process: str) -> float:
        """The noise level of the first step for ``process``."""
        if self.t_start is not None:
            return min(self.t_start, T_MAX) if process == "ddpm" else self.t_start
        if process == "flow":
            return 1.0
        return min(T_MAX, 1 - 1 / max(self.steps, 50))


def image_samplers(process: str) -> list[str]:
    """Names of the registered samplers that fit ``process`` (``flow`` / ``ddpm``), in registration order."""
    return [n for n in sampler_names(ImageSamplerConfig) if sampler_class(n).process == process]


class ContinuousSampler:
    """Base of the continuous samplers: ``x`` starts as N(0, I) of ``shape``; each step calls
    ``predict(x_t, t)``, turns the prediction into estimates x̂₀ and ε̂, and :meth:`advance` moves x to s."""

    name: str
    process: str
    config = ImageSamplerConfig

    def __init__(
        self,
        predict: Predict,
        process: ContinuousProcess,
        cfg: ImageSamplerConfig,
        shape: tuple[int, ...],
        generator: torch.Generator,
    ):
        if self.process != process.kind:
            raise DataError(
                f"sampler {cfg.name!r} fits the {self.process!r} process, but this checkpoint "
                f"was trained with {process.kind!r}; use one of {image_samplers(process.kind)}"
            )
        self.predict, self.proc, self.cfg, self.shape, self.generator = predict, process, cfg, shape, generator
        self.grid = torch.linspace(cfg.start(process.kind), 0.0, cfg.steps + 1)
        self.x = torch.randn(shape, generator=generator)

    def schedule(self) -> list[tuple[float, float]]:
        return [(float(self.grid[i]), float(self.grid[i + 1])) for i in range(self.cfg.steps)]

    def step(self, ctx: StepContext) -> ImageStep:
        t, x = ctx.t, self.x
        tt = torch.full((self.shape[0],), t)
        pred = self.predict(x, t)
        x0, eps = self.proc.x0_eps(pred, x, tt)
        if self.proc.kind == "ddpm" and self.cfg.clip_x0:  # data lives in [-1, 1]; α_t ≈ 0 near t = 1
            x0 = x0.clamp(-1, 1)
            a_t, sig_t = self.proc.alpha_sigma(tt[:1])
            eps = (x - a_t * x0) / sig_t.clamp_min(1e-4)
        self.x, evaluations = self.advance(ctx, pred, x0, eps)
        return ImageStep(index=ctx.index, t=t, s=ctx.s, x=self.x.clone(), x0=x0, evaluations=evaluations)

    def advance(
        self, ctx: StepContext, pred: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor
    ) -> tuple[torch.Tensor, int]:
        """The sample at ``ctx.s`` and the number of model evaluations the step made."""
        raise NotImplementedError


@register_sampler
class EulerSampler(ContinuousSampler):
    name, process = "euler", "flow"

    def advance(self, ctx, pred, x0, eps):
        return self.x + (ctx.s - ctx.t) * pred, 1


@register_sampler
class HeunSampler(ContinuousSampler):
    name, process = "heun", "flow"

    def advance(self, ctx, pred, x0, eps):
        t, s = ctx.t, ctx.s
        x_e = self.x + (s - t) * pred
        if s > 0:
            return self.x + (s - t) * 0.5 * (pred + self.predict(x_e, s)), 2
        return x_e, 1


@register_sampler
class DDIMSampler(ContinuousSampler):
    name, process = "ddim", "ddpm"

    def advance(self, ctx, pred, x0, eps):
        a_s, sig_s = self.proc.alpha_sigma(torch.tensor(ctx.s))
        return a_s * x0 + sig_s * eps, 1


@register_sampler
class AncestralSampler(ContinuousSampler):
    name, process = "ancestral", "ddpm"

    def advance(self, ctx, pred, x0, eps):
        t, s = ctx.t, ctx.s
        a_s, sig_s = self.proc.alpha_sigma(torch.tensor(s))
        if s == 0:
            return a_s * x0 + sig_s * eps, 1
        a_t, _ = self.proc.alpha_sigma(torch.tensor(t))
        abar_t, abar_s = a_t**2, a_s**2
        beta = 1 - abar_t / abar_s
        mean = (abar_s.sqrt() * beta / (1 - abar_t)) * x0 + ((1 - beta).sqrt() * (1 - abar_s) / (1 - abar_t)) * self.x
        var = (1 - abar_s) / (1 - abar_t) * beta
        return mean + var.clamp_min(0).sqrt() * torch.randn(self.shape, generator=self.generator), 1


def sample_images(
    model: torch.nn.Module,
    process: ContinuousProcess,
    cfg: ImageSamplerConfig,
    shape: tuple[int, ...],
    generator: torch.Generator,
    labels: torch.Tensor | None = None,
    time_conditioning: bool = True,
) -> Iterator[ImageStep]:
    """Sample ``shape`` images with ``model(x_t, t or None, labels)``; ``labels`` for class-conditional models."""

    def predict(x_t: torch.Tensor, t: float) -> torch.Tensor:
        return model(x_t, torch.full((shape[0],), t) if time_conditioning else None, labels)

    return run(sampler_class(cfg.name, ImageSamplerConfig)(predict, process, cfg, shape, generator))
