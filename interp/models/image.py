"""Image denoisers built from HookPoints: a DiT (patch tokens, adaLN-Zero) and a small U-Net.

Both take ``(x [B, C, H, W], t [B] or None, y [B] or None)`` and return a tensor shaped like ``x``.
``time_conditioning=False`` removes the timestep input entirely (the time-agnostic denoiser);
``n_classes > 0`` adds class conditioning (label ``n_classes`` is the "no class" token used for
classifier-free dropout). Hook names: ``hook_embed``, ``hook_time_embed``, ``blocks.{i}.hook_resid_post``,
``blocks.{i}.attn.hook_pattern`` (DiT); ``down.{i}.hook_out``, ``mid.hook_out``, ``up.{i}.hook_out`` (U-Net).

Optional extra inputs (FlowBender): ``cond_channels`` / ``feedback_channels`` > 0 add a condition image
``cond [B, cond_channels, H, W]`` and a feedback image ``feedback [B, feedback_channels, H, W]``, each
through its own bias-free projection initialised to zero (so a fresh model ignores them, and a zero
input adds exactly nothing), summed into the input embedding; hooks ``extra.hook_cond_embed`` and
``extra.hook_feedback_embed``. With both at 0 (the default) the model, its parameters and its outputs
are exactly those of a model built before these inputs existed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformer_lens import ActivationCache, HookedRootModule
from transformer_lens.hook_points import HookPoint

from interp.config import Config, check, check_choice, check_sizes
from interp.models.transformer import MLP, Attention, TransformerConfig, timestep_features

ARCHITECTURES = ("dit", "unet")


# upper bounds that keep a hand-edited config from building a model no machine holds
MAX_SIZES = {"image_size": 4096, "channels": 64, "width": 2**16, "depth": 256, "n_heads": 4096, "patch_size": 4096}


@dataclass
class ImageModelConfig(Config):
    """Shape of an image denoiser. ``width``: DiT d_model / U-Net base channels; ``depth``: DiT blocks /
    U-Net levels."""

    architecture: str = "dit"
    image_size: int = 8
    channels: int = 1
    time_conditioning: bool = True
    n_classes: int = 0
    width: int = 64
    depth: int = 4
    n_heads: int = 4
    patch_size: int = 2
    cond_channels: int = 0
    feedback_channels: int = 0

    def validate(self) -> None:
        check_choice("architecture", self.architecture, ARCHITECTURES)  # (sizes: see MAX_SIZES)
        check_sizes(self, MAX_SIZES)
        for name in ("cond_channels", "feedback_channels"):
            value = getattr(self, name)
            check(0 <= value <= MAX_SIZES["channels"], f"{name} must be in 0..{MAX_SIZES['channels']}, got {value!r}")
        check(0 <= self.n_classes <= 10**6, f"n_classes must be in 0..1000000, got {self.n_classes!r}")
        if self.architecture == "dit":
            check(
                self.image_size % self.patch_size == 0,
                f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}",
            )
            check(self.width % self.n_heads == 0, f"width {self.width} is not divisible by n_heads {self.n_heads}")
        else:
            check(
                self.image_size % 2 ** (self.depth - 1) == 0,
                f"U-Net with depth {self.depth} needs image_size divisible by {2 ** (self.depth - 1)}",
            )


class Conditioning(nn.Module):
    """Embedding of (t, y) → ``[B, D]``; a learned constant when there is neither."""

    def __init__(self, cfg: ImageModelConfig, dim: int):
        super().__init__()
        self.cfg = cfg
        self.dim = dim
        self.base = nn.Parameter(torch.zeros(dim))
        if cfg.time_conditioning:
            self.time_mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
            self.hook_time_embed = HookPoint()  # [B, D]
        if cfg.n_classes:
            self.class_embed = nn.Embedding(cfg.n_classes + 1, dim)

    def forward(self, batch: int, t: torch.Tensor | None, y: torch.Tensor | None) -> torch.Tensor:
        c = self.base.expand(batch, -1)
        if self.cfg.time_conditioning:
            if t is None:
                raise ValueError("this model is time-conditioned: pass t")
            c = c + self.hook_time_embed(self.time_mlp(timestep_features(t, self.dim)))
        if self.cfg.n_classes:
            y = torch.full((batch,), self.cfg.n_classes, dtype=torch.long) if y is None else y
            c = c + self.class_embed(y)
        return c


class _ExtraInputs(nn.Module):
    """The zero-initialised, bias-free projections of the optional condition and feedback images (see
    the module docstring). ``make(k)`` builds the projection of ``k`` channels into the embedding."""

    def __init__(self, cfg: ImageModelConfig, make):
        super().__init__()
        self.names = [n for n in ("cond", "feedback") if getattr(cfg, f"{n}_channels")]
        for name in self.names:
            proj = make(getattr(cfg, f"{name}_channels"))
            nn.init.zeros_(proj.weight)
            setattr(self, f"{name}_proj", proj)
            setattr(self, f"hook_{name}_embed", HookPoint())

    def forward(self, cond: torch.Tensor | None, feedback: torch.Tensor | None) -> torch.Tensor | None:
        """The summed projections (the projection's layout, e.g. ``[B, D, h, w]``), or None when no
        extra input is given; an input the model has no channels for is an error."""
        out = None
        for name, value in (("cond", cond), ("feedback", feedback)):
            if value is None:
                continue
            if name not in self.names:
                raise ValueError(f"this model has no {name} input channels (its {name}_channels is 0)")
            term = getattr(self, f"hook_{name}_embed")(getattr(self, f"{name}_proj")(value))
            out = term if out is None else out + term
        return out


class DiTBlock(nn.Module):
    def __init__(self, tcfg: TransformerConfig):
        super().__init__()
        d = tcfg.d_model
        self.ln1 = nn.LayerNorm(d, elementwise_affine=False)
        self.ln2 = nn.LayerNorm(d, elementwise_affine=False)
        self.attn = Attention(tcfg)
        self.mlp = MLP(tcfg)
        self.ada = nn.Linear(d, 6 * d)  # adaLN-Zero: shift, scale, gate for attention and MLP
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)
        self.hook_resid_pre = HookPoint()
        self.hook_attn_out = HookPoint()
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        s1, k1, g1, s2, k2, g2 = self.ada(F.silu(c)).unsqueeze(1).chunk(6, dim=-1)
        x = self.hook_resid_pre(x)
        x = x + g1 * self.hook_attn_out(self.attn(self.ln1(x) * (1 + k1) + s1))
        x = x + g2 * self.hook_mlp_out(self.mlp(self.ln2(x) * (1 + k2) + s2))
        return self.hook_resid_post(x)


class DiT(HookedRootModule):
    """Diffusion transformer over ``patch_size``² patches with adaLN-Zero conditioning."""

    def __init__(self, cfg: ImageModelConfig):
        super().__init__()
        self.cfg = cfg
        p, d = cfg.patch_size, cfg.width
        self.n_patches = (cfg.image_size // p) ** 2
        tcfg = TransformerConfig(
            vocab_size=1, n_ctx=self.n_patches, d_model=d, n_layers=cfg.depth, n_heads=cfg.n_heads, d_mlp=4 * d
        )
        self.patchify = nn.Conv2d(cfg.channels, d, p, stride=p)
        self.pos = nn.Parameter(torch.randn(1, self.n_patches, d) * 0.02)
        if cfg.cond_channels or cfg.feedback_channels:
            self.extra = _ExtraInputs(cfg, lambda k: nn.Conv2d(k, d, p, stride=p, bias=False))
        self.hook_embed = HookPoint()  # [B, N, D]
        self.cond = Conditioning(cfg, d)
        self.blocks = nn.ModuleList([DiTBlock(tcfg) for _ in range(cfg.depth)])
        self.ln_final = nn.LayerNorm(d, elementwise_affine=False)
        self.ada_final = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, p * p * cfg.channels)
        for layer in (self.ada_final, self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.setup()

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
        feedback: torch.Tensor | None = None,
    ) -> torch.Tensor:
        B, C, H, W = x.shape
        p = self.cfg.patch_size
        h = self.patchify(x)
        extra = _extra(self, cond, feedback)
        h = h if extra is None else h + extra
        h = self.hook_embed(h.flatten(2).transpose(1, 2) + self.pos)
        c = self.cond(B, t, y)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.ada_final(F.silu(c)).unsqueeze(1).chunk(2, dim=-1)
        h = self.out(self.ln_final(h) * (1 + scale) + shift)  # [B, N, p*p*C]
        h = h.view(B, H // p, W // p, p, p, C).permute(0, 5, 1, 3, 2, 4)
        return h.reshape(B, C, H, W)

    def run_with_cache(self, *args, **kwargs):  # type: ignore[override]
        out, cache = super().run_with_cache(*args, **kwargs)
        return out, ActivationCache(cache, self)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, cond_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(8, c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.cond = nn.Linear(cond_dim, c_out)
        self.norm2 = nn.GroupNorm(min(8, c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.cond(c)[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class UNet(HookedRootModule):
    """U-Net with ``depth`` resolution levels (channels width·(1, 2, 2, ...)), one ResBlock per level."""

    def __init__(self, cfg: ImageModelConfig):
        super().__init__()
        self.cfg = cfg
        chans = [cfg.width * (1 if i == 0 else 2) for i in range(cfg.depth)]
        self.cond = Conditioning(cfg, cfg.width)
        self.conv_in = nn.Conv2d(cfg.channels, chans[0], 3, padding=1)
        if cfg.cond_channels or cfg.feedback_channels:
            self.extra = _ExtraInputs(cfg, lambda k: nn.Conv2d(k, chans[0], 3, padding=1, bias=False))
        self.hook_embed = HookPoint()
        self.down = nn.ModuleList()
        prev = chans[0]
        for c in chans:
            self.down.append(nn.ModuleDict({"res": ResBlock(prev, c, cfg.width), "hook_out": HookPoint()}))
            prev = c
        self.mid = nn.ModuleDict({"res": ResBlock(prev, prev, cfg.width), "hook_out": HookPoint()})
        self.up = nn.ModuleList()
        for c in reversed(chans):
            self.up.append(nn.ModuleDict({"res": ResBlock(prev + c, c, cfg.width), "hook_out": HookPoint()}))
            prev = c
        self.norm_out = nn.GroupNorm(min(8, prev), prev)
        self.conv_out = nn.Conv2d(prev, cfg.channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.setup()

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
        feedback: torch.Tensor | None = None,
    ) -> torch.Tensor:
        c = self.cond(x.shape[0], t, y)
        h = self.conv_in(x)
        extra = _extra(self, cond, feedback)
        h = self.hook_embed(h if extra is None else h + extra)
        skips = []
        for i, level in enumerate(self.down):
            h = level["hook_out"](level["res"](h, c))
            skips.append(h)
            if i < len(self.down) - 1:
                h = F.avg_pool2d(h, 2)
        h = self.mid["hook_out"](self.mid["res"](h, c))
        for i, level in enumerate(self.up):
            skip = skips[-1 - i]
            if h.shape[-1] != skip.shape[-1]:
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = level["hook_out"](level["res"](torch.cat([h, skip], 1), c))
        return self.conv_out(F.silu(self.norm_out(h)))

    def run_with_cache(self, *args, **kwargs):  # type: ignore[override]
        out, cache = super().run_with_cache(*args, **kwargs)
        return out, ActivationCache(cache, self)


def _extra(model: nn.Module, cond: torch.Tensor | None, feedback: torch.Tensor | None) -> torch.Tensor | None:
    """The extra inputs' embedding of ``model`` (None without extra inputs)."""
    if cond is None and feedback is None:
        return None
    if not hasattr(model, "extra"):
        raise ValueError("this model has no condition or feedback input channels")
    return model.extra(cond, feedback)


def build_image_model(cfg: ImageModelConfig) -> nn.Module:
    return DiT(cfg) if cfg.architecture == "dit" else UNet(cfg)
