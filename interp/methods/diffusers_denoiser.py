"""A diffusers ``UNet2DModel`` (or any model called as ``model(sample, timestep).sample``) seen as a
denoiser of one of our continuous processes, so that the noise probes, the per-t error curves and the
hooks work on it as on our own checkpoints."""

from __future__ import annotations

import torch
from torch import nn

from interp.config import check
from interp.processes.continuous import ContinuousProcess


class DiffusersDenoiser:
    """``predict(x_t, t)`` for a diffusers model trained on ``num_train_timesteps`` discrete steps.

    Our noise level t ∈ [0, 1] (cosine VP schedule for ``ddpm``) must reach the model as the timestep it
    was trained to see at that noise level. Pass the training scheduler's ``alphas_cumprod`` (e.g.
    ``DDPMScheduler(...).alphas_cumprod``) and t maps to the timestep whose ᾱ is closest to our α_t²;
    without it t maps linearly to ``round(t · (num_train_timesteps − 1))``, which is right only for a
    model trained with the same cosine schedule (a linear-β model at timestep 500 expects ᾱ ≈ 0.08, the
    cosine schedule has ᾱ = 0.5 at t = 0.5). With ``time_conditioning=False`` the model always sees
    timestep 0: a time-agnostic use of a conditioned model (useful as a control: its activations then
    carry the noise level only through the input).
    """

    def __init__(
        self,
        model: nn.Module,
        process: str = "ddpm",
        num_train_timesteps: int = 1000,
        time_conditioning: bool = True,
        alphas_cumprod: torch.Tensor | None = None,
    ):
        check(num_train_timesteps >= 1, f"num_train_timesteps must be >= 1, got {num_train_timesteps}")
        if alphas_cumprod is not None:
            alphas_cumprod = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
            check(
                alphas_cumprod.dim() == 1 and len(alphas_cumprod) == num_train_timesteps,
                f"alphas_cumprod must have num_train_timesteps = {num_train_timesteps} entries, "
                f"got shape {tuple(alphas_cumprod.shape)}",
            )
        self.model = model
        self.process = ContinuousProcess(process)
        self.num_train_timesteps = num_train_timesteps
        self.time_conditioning = time_conditioning
        self.alphas_cumprod = alphas_cumprod

    def timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """Discrete diffusers timesteps ``[B]`` for our noise levels ``t`` ``[B]``."""
        if not self.time_conditioning:
            return torch.zeros_like(t, dtype=torch.long)
        if self.alphas_cumprod is not None:
            alpha, _ = self.process.alpha_sigma(t.clamp(0, 1))
            return (self.alphas_cumprod[None, :] - alpha.double()[:, None] ** 2).abs().argmin(1)
        return (t.clamp(0, 1) * (self.num_train_timesteps - 1)).round().long()

    def predict(
        self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, model: nn.Module | None = None
    ) -> torch.Tensor:
        """The model's output at ``x_t`` ``[B, C, H, W]`` and noise level ``t`` ``[B]`` (``y`` is ignored)."""
        out = (model or self.model)(x_t, self.timesteps(t))
        return out.sample if hasattr(out, "sample") else out[0]
