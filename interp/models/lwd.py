"""A DiT over several representation spaces, each a token group with its own noise level (LWD).

Input: one token tensor per space ``[B, N_k, d_k]`` and the spaces' noise levels ``t [B, K]``; output: a
velocity per space, shaped like its input. Each space has its own input projection, positions and
(zero-initialised) output projection; all tokens attend to each other in shared adaLN-Zero blocks
(:class:`~interp.models.image.DiTBlock`). The conditioning vector is the concatenation of one clock
embedding per space, each about ``width / K`` wide (SFD's "two half-width time embedders", generalised),
plus an optional class embedding.

Hook names: ``hook_embed`` ``[B, N, D]`` (all tokens, spaces in order), ``hook_clock_embed`` ``[B, D]``,
``blocks.{i}.hook_resid_post`` ... (as the image DiT), ``spaces.{k}.hook_pred`` ``[B, N_k, d_k]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from interp.config import Config, check, check_sizes
from interp.models.image import DiTBlock
from interp.models.transformer import TransformerConfig, timestep_features

MAX_SIZES = {"width": 2**16, "depth": 256, "n_heads": 4096}


@dataclass
class MultiSpaceDiTConfig(Config):
    """``shapes``: ``"N1xd1,N2xd2,..."`` (tokens × token dim per space, as a string so that a saved config
    reads back unchanged)."""

    shapes: str = "16x4,1x8"
    width: int = 64
    depth: int = 4
    n_heads: int = 4
    n_classes: int = 0

    def validate(self) -> None:
        check_sizes(self, MAX_SIZES)
        sizes = self.space_shapes()
        check(self.width % self.n_heads == 0, f"width {self.width} is not divisible by n_heads {self.n_heads}")
        check(self.width >= 2 * len(sizes), f"width {self.width} is too small for {len(sizes)} clock embeddings")
        check(0 <= self.n_classes <= 10**6, f"n_classes must be in 0..1000000, got {self.n_classes!r}")

    def space_shapes(self) -> list[tuple[int, int]]:
        try:
            sizes = [tuple(int(v) for v in part.split("x")) for part in self.shapes.split(",")]
        except ValueError:
            sizes = []
        ok = bool(sizes) and all(len(s) == 2 and 1 <= s[0] <= 2**16 and 1 <= s[1] <= 2**16 for s in sizes)
        check(ok, f"shapes must be like '16x4,1x8' (tokens x dim per space), got {self.shapes!r}")
        return sizes  # type: ignore[return-value]


class _SpaceIO(nn.Module):
    def __init__(self, tokens: int, dim: int, width: int):
        super().__init__()
        self.inp = nn.Linear(dim, width)
        self.pos = nn.Parameter(torch.randn(1, tokens, width) * 0.02)
        self.out = nn.Linear(width, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.hook_pred = HookPoint()


class MultiSpaceDiT(HookedRootModule):
    def __init__(self, cfg: MultiSpaceDiTConfig):
        super().__init__()
        self.cfg = cfg
        shapes = cfg.space_shapes()
        d, k = cfg.width, len(shapes)
        self.sizes = [n for n, _ in shapes]
        tcfg = TransformerConfig(
            vocab_size=1, n_ctx=sum(self.sizes), d_model=d, n_layers=cfg.depth, n_heads=cfg.n_heads, d_mlp=4 * d
        )
        self.spaces = nn.ModuleList([_SpaceIO(n, dim, d) for n, dim in shapes])
        self.hook_embed = HookPoint()
        self.clock_widths = [d // k + (1 if i < d % k else 0) for i in range(k)]  # sums to d
        self.clock_mlps = nn.ModuleList(
            [nn.Sequential(nn.Linear(w, w), nn.SiLU(), nn.Linear(w, w)) for w in self.clock_widths]
        )
        self.hook_clock_embed = HookPoint()
        if cfg.n_classes:
            self.class_embed = nn.Embedding(cfg.n_classes + 1, d)  # label n_classes: "no class"
        self.blocks = nn.ModuleList([DiTBlock(tcfg) for _ in range(cfg.depth)])
        self.ln_final = nn.LayerNorm(d, elementwise_affine=False)
        self.ada_final = nn.Linear(d, 2 * d)
        nn.init.zeros_(self.ada_final.weight)
        nn.init.zeros_(self.ada_final.bias)
        self.setup()

    def forward(self, states: list[torch.Tensor], t: torch.Tensor, y: torch.Tensor | None = None) -> list[torch.Tensor]:
        """``states``: ``[B, N_k, d_k]`` per space; ``t``: ``[B, K]`` noise levels; ``y``: ``[B]`` labels
        (class-conditional models; None = "no class"). Returns a velocity per space."""
        B = states[0].shape[0]
        h = self.hook_embed(torch.cat([io.inp(x) + io.pos for io, x in zip(self.spaces, states, strict=True)], 1))
        c = self.hook_clock_embed(
            torch.cat(
                [
                    mlp(timestep_features(t[:, k], w))
                    for k, (mlp, w) in enumerate(zip(self.clock_mlps, self.clock_widths, strict=True))
                ],
                -1,
            )
        )
        if self.cfg.n_classes:
            y = torch.full((B,), self.cfg.n_classes, dtype=torch.long) if y is None else y
            c = c + self.class_embed(y)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.ada_final(F.silu(c)).unsqueeze(1).chunk(2, dim=-1)
        h = self.ln_final(h) * (1 + scale) + shift
        return [io.hook_pred(io.out(part)) for io, part in zip(self.spaces, h.split(self.sizes, 1), strict=True)]
