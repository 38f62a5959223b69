"""Step-wise samplers for continuous (image) processes, from t = 1 (noise) to t = 0, yielding one
:class:`~interp.samplers.base.ImageStep` per step.

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

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from interp.config import Config, check
from interp.errors import DataError
from interp.processes.continuous import T_MAX, ContinuousProcess
from interp.samplers.base import ImageStep

IMAGE_SAMPLERS = {"euler": "flow", "heun": "flow", "ddim": "ddpm", "ancestral": "ddpm"}


@dataclass
class ImageSamplerConfig(Config):
    name: str = "euler"
    steps: int = 50
    clip_x0: bool = True  # DDPM samplers: clip the clean-image estimate to [-1, 1] (as diffusers' clip_sample)
    t_start: float | None = None  # first noise level; None: 1 (flow), 1 - 1/max(steps, 50) (ddpm)

    def validate(self) -> None:
        if self.name not in IMAGE_SAMPLERS:
            raise DataError(f"unknown image sampler {self.name!r}; known: {', '.join(IMAGE_SAMPLERS)}")
        check(isinstance(self.steps, int) and self.steps >= 1, f"steps must be >= 1, got {self.steps!r}")
        check(self.t_start is None or 0 < self.t_start <= 1, f"t_start must be in (0, 1] or None, got {self.t_start!r}")

    def start(self, process: str) -> float:
        """The noise level of the first step for ``process``."""
        if self.t_start is not None:
            return min(self.t_start, T_MAX) if process == "ddpm" else self.t_start
        if process == "flow":
            return 1.0
        return min(T_MAX, 1 - 1 / max(self.steps, 50))


def sample_images(
    model: torch.nn.Module,
    process: ContinuousProcess,
    cfg: ImageSamplerConfig,
    shape: tuple[int, ...],
    generator: torch.Generator,
    labels: torch.Tensor | None = None,
    time_conditioning: bool = True,
) -> Iterator[ImageStep]:
    """Sample ``shape`` images; ``labels`` for class-conditional models."""
    if IMAGE_SAMPLERS[cfg.name] != process.kind:
        raise DataError(
            f"sampler {cfg.name!r} fits the {IMAGE_SAMPLERS[cfg.name]!r} process, but this checkpoint "
            f"was trained with {process.kind!r}; use one of "
            f"{[n for n, k in IMAGE_SAMPLERS.items() if k == process.kind]}"
        )
    grid = torch.linspace(cfg.start(process.kind), 0.0, cfg.steps + 1)
    x = torch.randn(shape, generator=generator)

    def predict(x_t: torch.Tensor, t: float) -> torch.Tensor:
        tt = torch.full((shape[0],), t)
        return model(x_t, tt if time_conditioning else None, labels)

    with torch.no_grad():
        for i in range(cfg.steps):
            t, s = float(grid[i]), float(grid[i + 1])
            tt = torch.full((shape[0],), t)
            pred = predict(x, t)
            x0, eps = process.x0_eps(pred, x, tt)
            if process.kind == "ddpm" and cfg.clip_x0:  # data lives in [-1, 1]; α_t ≈ 0 near t = 1
                x0 = x0.clamp(-1, 1)
                a_t, sig_t = process.alpha_sigma(tt[:1])
                eps = (x - a_t * x0) / sig_t.clamp_min(1e-4)
            evals = 1
            if cfg.name == "euler":
                x = x + (s - t) * pred
            elif cfg.name == "heun":
                x_e = x + (s - t) * pred
                if s > 0:
                    x = x + (s - t) * 0.5 * (pred + predict(x_e, s))
                    evals = 2
                else:
                    x = x_e
            else:
                a_s, sig_s = process.alpha_sigma(torch.tensor(s))
                if cfg.name == "ddim" or s == 0:
                    x = a_s * x0 + sig_s * eps
                else:
                    a_t, _ = process.alpha_sigma(torch.tensor(t))
                    abar_t, abar_s = a_t**2, a_s**2
                    beta = 1 - abar_t / abar_s
                    mean = (abar_s.sqrt() * beta / (1 - abar_t)) * x0 + (
                        (1 - beta).sqrt() * (1 - abar_s) / (1 - abar_t)
                    ) * x
                    var = (1 - abar_s) / (1 - abar_t) * beta
                    x = mean + var.clamp_min(0).sqrt() * torch.randn(shape, generator=generator)
            yield ImageStep(index=i, t=t, s=s, x=x.clone(), x0=x0, evaluations=evals)
