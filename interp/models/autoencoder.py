"""A small KL-regularised convolutional autoencoder (the latent space of CrossFlow and of latent flow
matching), built from HookPoints.

``encode(x [B, C, H, W]) -> (mean, logvar)`` each ``[B, Z, H / 2^L, W / 2^L]`` (``L`` = ``levels``
stride-2 convolutions); ``decode(z) -> x̂ [B, C, H, W]`` in [-1, 1] (tanh). Hook names: ``enc.{i}.hook_out``,
``hook_mean``, ``hook_logvar``, ``hook_latent`` (the sample fed to the decoder), ``dec.{i}.hook_out``,
``hook_recon``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from interp.config import Config, check, check_sizes

MAX_SIZES = {"image_size": 4096, "channels": 64, "width": 4096, "latent_channels": 256, "levels": 8}


@dataclass
class AutoencoderConfig(Config):
    """``width``: channels of the first level (doubled per level); ``latent_channels``: Z."""

    image_size: int = 8
    channels: int = 1
    width: int = 32
    latent_channels: int = 4
    levels: int = 2

    def validate(self) -> None:
        check_sizes(self, MAX_SIZES)
        check(
            self.image_size % 2**self.levels == 0,
            f"image_size {self.image_size} must be divisible by 2^levels = {2**self.levels}",
        )


class _Level(nn.Module):
    def __init__(self, c_in: int, c_out: int, down: bool):
        super().__init__()
        conv = nn.Conv2d if down else nn.ConvTranspose2d
        self.resample = conv(c_in, c_out, 4, stride=2, padding=1)
        self.mix = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.act = nn.SiLU()
        self.hook_out = HookPoint()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.act(self.resample(h))
        return self.hook_out(self.act(self.mix(h)) + h)


class Autoencoder(HookedRootModule):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        self.cfg = cfg
        widths = [cfg.width * 2**i for i in range(cfg.levels)]
        self.inp = nn.Conv2d(cfg.channels, cfg.width, 3, padding=1)
        self.enc = nn.ModuleList(_Level(a, b, True) for a, b in zip([cfg.width, *widths[:-1]], widths, strict=True))
        self.to_moments = nn.Conv2d(widths[-1], 2 * cfg.latent_channels, 1)
        self.from_latent = nn.Conv2d(cfg.latent_channels, widths[-1], 1)
        back = widths[::-1]
        self.dec = nn.ModuleList(_Level(a, b, False) for a, b in zip(back, [*back[1:], cfg.width], strict=True))
        self.out = nn.Conv2d(cfg.width, cfg.channels, 3, padding=1)
        self.hook_mean, self.hook_logvar = HookPoint(), HookPoint()
        self.hook_latent, self.hook_recon = HookPoint(), HookPoint()
        self.setup()

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.inp(x)
        for level in self.enc:
            h = level(h)
        mean, logvar = self.to_moments(h).chunk(2, dim=1)
        return self.hook_mean(mean), self.hook_logvar(logvar.clamp(-20, 10))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_latent(self.hook_latent(z))
        for level in self.dec:
            h = level(h)
        return self.hook_recon(torch.tanh(self.out(h)))

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruct ``x``: the decoder sees ``mean + σ·eps`` (``eps`` None: the mean)."""
        mean, logvar = self.encode(x)
        z = mean if eps is None else mean + (0.5 * logvar).exp() * eps
        return self.decode(z)

    def latent_shape(self) -> tuple[int, int, int]:
        side = self.cfg.image_size // 2**self.cfg.levels
        return (self.cfg.latent_channels, side, side)
