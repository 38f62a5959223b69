"""CrossFlow's two networks (:mod:`interp.methods.crossflow` trains them): the pixel generator G(z_t, t, y),
a DiT over the latent grid whose tokens are read out to pixel patches, and the class-projection discriminator
D(x, y) of its hinge GAN term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from interp.config import Config, check, check_sizes
from interp.models.image import MAX_SIZES, Conditioning, DiTBlock, ImageModelConfig
from interp.models.transformer import TransformerConfig


@dataclass
class GeneratorConfig(Config):
    """G's shape: latents ``[latent_channels, latent_size, latent_size]`` to images ``[channels, image_size,
    image_size]``; a DiT of ``depth`` blocks of ``width``."""

    latent_channels: int = 4
    latent_size: int = 2
    image_size: int = 8
    channels: int = 1
    n_classes: int = 0
    width: int = 64
    depth: int = 4
    n_heads: int = 4

    def validate(self) -> None:
        bounds = {k: v for k, v in MAX_SIZES.items() if k != "patch_size"}
        check_sizes(self, {"latent_channels": 256, "latent_size": 4096, **bounds})
        check(self.image_size % self.latent_size == 0,
              f"image_size {self.image_size} is not a multiple of the latent side {self.latent_size}")  # fmt: skip
        check(self.width % self.n_heads == 0, f"width {self.width} is not divisible by n_heads {self.n_heads}")
        check(0 <= self.n_classes <= 10**6, f"n_classes must be in 0..1000000, got {self.n_classes!r}")


class PixelGenerator(HookedRootModule):
    """G(z_t ``[B, Z, h, w]``, t ``[B]``, y ``[B]`` or None) → image ``[B, C, H, W]``. Tokens are the h·w
    latent positions (``hook_embed`` ``[B, h·w, D]``), through adaLN-Zero DiT blocks conditioned on (t, y);
    each token is read out to its ``r × r`` pixel patch (r = H / h; ``hook_patches`` ``[B, h·w, r·r·C]``)."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        d, n = cfg.width, cfg.latent_size**2
        self.ratio = cfg.image_size // cfg.latent_size
        self.embed = nn.Linear(cfg.latent_channels, d)
        self.pos = nn.Parameter(torch.randn(1, n, d) * 0.02)
        cond_cfg = ImageModelConfig(n_classes=cfg.n_classes, width=d, n_heads=cfg.n_heads, time_conditioning=True)
        self.cond = Conditioning(cond_cfg, d)
        tcfg = TransformerConfig(vocab_size=1, n_ctx=n, d_model=d, n_layers=cfg.depth, n_heads=cfg.n_heads, d_mlp=4 * d)
        self.blocks = nn.ModuleList([DiTBlock(tcfg) for _ in range(cfg.depth)])
        self.ln_final = nn.LayerNorm(d, elementwise_affine=False)
        self.ada_final = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, self.ratio**2 * cfg.channels)
        for layer in (self.ada_final, self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.hook_embed, self.hook_patches, self.hook_image = HookPoint(), HookPoint(), HookPoint()
        self.setup()

    def readout(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The final layer: residual stream ``h [B, N, D]`` under conditioning ``c [B, D]`` → patches ``[B, N, r·r·C]``."""
        shift, scale = self.ada_final(F.silu(c)).unsqueeze(1).chunk(2, dim=-1)
        return self.out(self.ln_final(h) * (1 + scale) + shift)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """``[B, h·w, r·r·C]`` → ``[B, C, H, W]``."""
        B, r, s, C = patches.shape[0], self.ratio, self.cfg.latent_size, self.cfg.channels
        return patches.reshape(B, s, s, r, r, C).permute(0, 5, 1, 3, 2, 4).reshape(B, C, s * r, s * r)

    def forward(self, z: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        B = z.shape[0]
        h = self.hook_embed(self.embed(z.flatten(2).transpose(1, 2)) + self.pos)
        c = self.cond(B, t, y)
        for block in self.blocks:
            h = block(h, c)
        return self.hook_image(self.unpatchify(self.hook_patches(self.readout(h, c))))


class _DiscBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)
        self.mix = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.hook_out = HookPoint()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.conv(h), 0.2)
        return self.hook_out(F.leaky_relu(self.mix(h), 0.2) + h)


class Discriminator(HookedRootModule):
    """D(x ``[B, C, H, W]``, y ``[B]`` or None) → logit ``[B]``: stride-2 conv blocks (up to 3, until the
    side is ≤ 2), spatial mean (``hook_features`` ``[B, F]``), a linear head plus the projection ⟨e(y), f⟩."""

    def __init__(self, channels: int, image_size: int, width: int, n_classes: int = 0):
        super().__init__()
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        blocks, c, size = [], width, image_size
        while size > 2 and len(blocks) < 3:
            blocks.append(_DiscBlock(c, min(2 * c, 4 * width)))
            c, size = min(2 * c, 4 * width), size // 2
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(c, 1)
        self.n_classes = n_classes
        if n_classes:
            self.class_embed = nn.Embedding(n_classes, c)
        self.hook_features, self.hook_logit = HookPoint(), HookPoint()
        self.setup()

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = F.leaky_relu(self.inp(x), 0.2)
        for block in self.blocks:
            h = block(h)
        f = self.hook_features(h.mean((2, 3)))
        logit = self.head(f).squeeze(1)
        if self.n_classes and y is not None:
            logit = logit + (self.class_embed(y) * f).sum(1)
        return self.hook_logit(logit)
