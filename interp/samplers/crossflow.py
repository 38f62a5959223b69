"""Samplers of the latent-space image methods (:mod:`interp.methods.latent_flow`, :mod:`interp.methods.crossflow`).

- ``one-step`` (CrossFlow): one function evaluation, ``x = G(ε, t = 1, y)`` from latent noise ``ε`` straight
  to pixels. It yields one :class:`~interp.steps.ImageStep` (index 0, t = 1 → s = 0, ``evaluations`` 1).
  Its config accepts only ``steps = 1``: CrossFlow is a one-step generator, it has no trajectory to
  integrate, so ``--steps 20`` is refused with a line that says so.
- :func:`decoded_steps` turns the steps of a latent sampler (Euler / Heun over latents, :mod:`interp.samplers.image`)
  into :class:`LatentImageStep` s whose ``x`` / ``x0`` are the decoded images and ``z`` / ``z0`` the latents.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from interp.config import Config
from interp.errors import ConfigError, DataError
from interp.registry import register_sampler, sampler_names
from interp.samplers.loop import run
from interp.steps import ImageStep, StepContext


@dataclass
class OneStepSamplerConfig(Config):
    name: str = "one-step"
    steps: int = 1

    def validate(self) -> None:
        known = sampler_names(OneStepSamplerConfig)
        if self.name not in known:
            raise DataError(f"unknown sampler {self.name!r} for one-step generators; known: {', '.join(known)}")
        if self.steps != 1:
            raise ConfigError(
                f"--steps {self.steps}: CrossFlow is a one-step generator (G(ε, 1, y) maps latent noise straight to "
                "pixels, NFE = 1; it learns no velocity to integrate), so steps must be 1; for a multi-step "
                "baseline sample a latent-flow checkpoint"
            )


@register_sampler
class OneStepSampler:
    """``generate(eps [B, Z, h, w]) -> images [B, C, H, W]`` called once on ``eps`` ~ N(0, I) of ``shape``."""

    name = "one-step"
    config = OneStepSamplerConfig

    def __init__(
        self,
        generate: Callable[[torch.Tensor], torch.Tensor],
        cfg: OneStepSamplerConfig,
        shape: tuple[int, ...],
        generator: torch.Generator,
    ):
        self.generate, self.cfg = generate, cfg
        self.eps = torch.randn(shape, generator=generator)

    def schedule(self) -> list[tuple[float, float]]:
        return [(1.0, 0.0)]

    def step(self, ctx: StepContext) -> ImageStep:
        x = self.generate(self.eps)
        return ImageStep(index=ctx.index, t=ctx.t, s=ctx.s, x=x, x0=x, evaluations=1)


def one_step(
    generate: Callable[[torch.Tensor], torch.Tensor],
    cfg: OneStepSamplerConfig,
    shape: tuple[int, ...],
    generator: torch.Generator,
) -> Iterator[ImageStep]:
    """The one step of ``generate`` from noise of latent ``shape`` through the shared loop."""
    return run(OneStepSampler(generate, cfg, shape, generator))


@dataclass
class LatentImageStep(ImageStep):
    """A latent sampler's step with pictures: ``z`` the latent ``[B, Z, h, w]`` at noise level ``s``, ``z0``
    the model's clean-latent estimate; ``x`` / ``x0`` their decodings ``[B, C, H, W]``."""

    z: torch.Tensor | None = None
    z0: torch.Tensor | None = None


def decoded_steps(
    steps: Iterator[ImageStep], decode: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[LatentImageStep]:
    """``steps`` over latents with ``x`` and ``x0`` decoded by ``decode(z) -> images`` (no gradients)."""
    for step in steps:
        with torch.no_grad():
            yield LatentImageStep(
                index=step.index,
                t=step.t,
                s=step.s,
                x=decode(step.x),
                x0=decode(step.x0),
                evaluations=step.evaluations,
                z=step.x,
                z0=step.x0,
            )
