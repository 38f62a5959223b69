"""Token transformer speaking TransformerLens' hook API: the backbone of the diffusion LM and the
autoregressive baseline.

A lean :class:`transformer_lens.HookedRootModule` with :class:`HookPoint` s at TransformerLens names
(``hook_embed``, ``blocks.{i}.hook_resid_post``, ``blocks.{i}.attn.hook_pattern`` ...), so
``run_with_hooks``, ``run_with_cache`` (returning an :class:`ActivationCache`) and ``hooks()`` work
as on any TransformerLens model. We chose it over ``TransformerBridge.boot_native`` by measurement
(``benchmarks/backbone_speed.py``): the bridge's per-call overhead is far larger than HookPoints'.

Shapes: ``B`` batch, ``L`` positions, ``D`` d_model, ``H`` heads, ``Dh`` d_head, ``V`` vocab.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformer_lens import ActivationCache, HookedRootModule
from transformer_lens.hook_points import HookPoint

from interp.config import Config, check, check_sizes

# upper bounds that keep a hand-edited config from building a model no machine holds
MAX_SIZES = {"vocab_size": 2**24, "n_ctx": 2**24, "d_model": 2**20, "n_layers": 1024, "n_heads": 4096, "d_mlp": 2**22}


@dataclass
class TransformerConfig(Config):
    """Shape of the backbone. ``causal`` = autoregressive mask; ``time_conditioning`` adds an
    embedding of the noise level t to every position; ``selfcond`` adds the self-conditioning
    projection (previous-step token distribution · W_E through a small MLP)."""

    vocab_size: int
    n_ctx: int
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_mlp: int = 512
    causal: bool = False
    time_conditioning: bool = False
    selfcond: bool = False

    def validate(self) -> None:
        check_sizes(self, MAX_SIZES)
        check(
            self.d_model % self.n_heads == 0, f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
        )

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


@dataclass
class SelfCondInput:
    """The state carried from the previous denoising step into the next one.

    Either ``probs`` (dense, ``[B, L, V]``: the ``continuous`` mode) or the sparse bottleneck
    ``indices`` (long ``[B, L, k]``) with ``values`` (``[B, L, k]`` probabilities): the ``topk`` /
    ``topp`` modes, whose carried state is a list of (token, probability) pairs per position.
    """

    probs: torch.Tensor | None = None
    indices: torch.Tensor | None = None
    values: torch.Tensor | None = None

    def embed(self, W_E: torch.Tensor) -> torch.Tensor:
        """Expected embedding under the carried distribution, ``[B, L, D]``."""
        if self.probs is not None:
            return self.probs @ W_E
        assert self.indices is not None and self.values is not None
        return torch.einsum("blk,blkd->bld", self.values, W_E[self.indices])


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.hook_q = HookPoint()  # [B, L, H, Dh]
        self.hook_k = HookPoint()  # [B, L, H, Dh]
        self.hook_v = HookPoint()  # [B, L, H, Dh]
        self.hook_attn_scores = HookPoint()  # [B, H, Lq, Lk]
        self.hook_pattern = HookPoint()  # [B, H, Lq, Lk]
        self.hook_z = HookPoint()  # [B, L, H, Dh]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        H, Dh = self.cfg.n_heads, self.cfg.d_head
        q, k, v = self.qkv(x).view(B, L, 3, H, Dh).unbind(2)
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(Dh)
        if self.cfg.causal:
            scores = scores.masked_fill(_causal_mask(L, x.device), float("-inf"))
        scores = self.hook_attn_scores(scores)
        pattern = self.hook_pattern(scores.softmax(dim=-1))
        z = self.hook_z(torch.einsum("bhqk,bkhd->bqhd", pattern, v))
        return self.out(z.reshape(B, L, H * Dh))


def _causal_mask(L: int, device: torch.device) -> torch.Tensor:
    return torch.ones(L, L, dtype=torch.bool, device=device).triu(1)


class MLP(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.fc_in = nn.Linear(cfg.d_model, cfg.d_mlp)
        self.fc_out = nn.Linear(cfg.d_mlp, cfg.d_model)
        self.hook_pre = HookPoint()  # [B, L, d_mlp]
        self.hook_post = HookPoint()  # [B, L, d_mlp]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.hook_post(F.gelu(self.hook_pre(self.fc_in(x)))))


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)
        self.hook_resid_pre = HookPoint()  # [B, L, D]
        self.hook_attn_out = HookPoint()  # [B, L, D]
        self.hook_resid_mid = HookPoint()  # [B, L, D]
        self.hook_mlp_out = HookPoint()  # [B, L, D]
        self.hook_resid_post = HookPoint()  # [B, L, D]

    def forward(self, resid: torch.Tensor) -> torch.Tensor:
        resid = self.hook_resid_pre(resid)
        resid = self.hook_resid_mid(resid + self.hook_attn_out(self.attn(self.ln1(resid))))
        return self.hook_resid_post(resid + self.hook_mlp_out(self.mlp(self.ln2(resid))))


class TokenTransformer(HookedRootModule):
    """Pre-LayerNorm transformer over token ids, bidirectional unless ``cfg.causal``.

    ``forward(tokens [B, L], t=None [B], selfcond=None) -> logits [B, L, V]``.
    """

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.W_E = nn.Parameter(torch.empty(cfg.vocab_size, cfg.d_model))
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model))
        self.hook_embed = HookPoint()  # [B, L, D]
        self.hook_pos_embed = HookPoint()  # [1, L, D]
        if cfg.time_conditioning:
            self.time_mlp = nn.Sequential(
                nn.Linear(cfg.d_model, cfg.d_model), nn.GELU(), nn.Linear(cfg.d_model, cfg.d_model)
            )
            self.hook_time_embed = HookPoint()  # [B, 1, D]
        if cfg.selfcond:
            self.selfcond_mlp = nn.Sequential(
                nn.Linear(cfg.d_model, cfg.d_model), nn.GELU(), nn.Linear(cfg.d_model, cfg.d_model)
            )
            self.hook_selfcond = HookPoint()  # [B, L, D]
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.ln_final = nn.LayerNorm(cfg.d_model)
        self.hook_ln_final = HookPoint()  # [B, L, D] (normalised residual, the logit-lens input)
        self.unembed = nn.Linear(cfg.d_model, cfg.vocab_size)
        self.reset_parameters()
        self.setup()

    def reset_parameters(self) -> None:
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
        for m in self.modules():
            if isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.cfg.selfcond:  # start as "no self-conditioning"
            nn.init.zeros_(self.selfcond_mlp[2].weight)

    def forward(
        self,
        tokens: torch.Tensor,
        t: torch.Tensor | None = None,
        selfcond: SelfCondInput | None = None,
    ) -> torch.Tensor:
        _B, L = tokens.shape
        if L > self.cfg.n_ctx:
            raise ValueError(f"sequence length {L} exceeds the model context n_ctx={self.cfg.n_ctx}")
        resid = self.hook_embed(self.W_E[tokens]) + self.hook_pos_embed(self.W_pos[:L].unsqueeze(0))
        if self.cfg.time_conditioning:
            if t is None:
                raise ValueError("this model is time-conditioned: pass t (shape [B])")
            resid = resid + self.hook_time_embed(self.time_mlp(timestep_features(t, self.cfg.d_model)).unsqueeze(1))
        if self.cfg.selfcond and selfcond is not None:
            resid = resid + self.hook_selfcond(self.selfcond_mlp(selfcond.embed(self.W_E)))
        for block in self.blocks:
            resid = block(resid)
        return self.unembed(self.hook_ln_final(self.ln_final(resid)))

    def run_with_cache(self, *args, **kwargs) -> tuple[torch.Tensor, ActivationCache]:  # type: ignore[override]
        """Like TransformerLens: returns ``(logits, ActivationCache)``."""
        out, cache = super().run_with_cache(*args, **kwargs)
        return out, ActivationCache(cache, self)


def timestep_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of t ∈ [0, 1], ``[B] -> [B, dim]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = 1000.0 * t.float().unsqueeze(-1) * freqs
    feats = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return F.pad(feats, (0, dim - feats.shape[-1]))
