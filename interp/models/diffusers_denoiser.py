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

    Our t ∈ [0, 1] maps to the timestep ``round(t · (num_train_timesteps − 1))``. With
    ``time_conditioning=False`` the model always sees timestep 0: a time-agnostic use of a conditioned
    model (useful as a control: its activations then carry the noise level only through the input).
    """

    kind = "diffusers"

    def __init__(
        self,
        model: nn.Module,
        process: str = "ddpm",
        num_train_timesteps: int = 1000,
        time_conditioning: bool = True,
    ):
        check(num_train_timesteps >= 1, f"num_train_timesteps must be >= 1, got {num_train_timesteps}")
        self.model = model
        self.process = ContinuousProcess(process)
        self.num_train_timesteps = num_train_timesteps
        self.time_conditioning = time_conditioning

    def timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """Discrete diffusers timesteps ``[B]`` for our noise levels ``t`` ``[B]``."""
        if not self.time_conditioning:
            return torch.zeros_like(t, dtype=torch.long)
        return (t.clamp(0, 1) * (self.num_train_timesteps - 1)).round().long()

    def predict(
        self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, model: nn.Module | None = None
    ) -> torch.Tensor:
        """The model's output at ``x_t`` ``[B, C, H, W]`` and noise level ``t`` ``[B]`` (``y`` is ignored)."""
        out = (model or self.model)(x_t, self.timesteps(t))
        return out.sample if hasattr(out, "sample") else out[0]
