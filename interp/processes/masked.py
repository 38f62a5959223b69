"""Masked (absorbing-state) discrete diffusion, in the MDLM / LLaDA form.

At noise level t ∈ [0, 1] each eligible token is corrupted independently with probability
``p = (1 - eps) * t + eps``. A corrupted token becomes ``<mask>``, or, with probability
``uniform_frac``, a uniformly random content token (a uniform-state component, so the model learns
to revise visible tokens: DiffusionGemma's sampler renoises with random tokens). The loss is

    L = (1 / n_eligible) * Σ_{corrupted i} CE(x_i, logits_i) / p   [+ Σ_{clean i} CE when uniform_frac > 0]

averaged over the batch: the 1/p weighting makes it an unbiased ELBO-style estimate for the absorbing
process (MDLM eq. 10, LLaDA eq. 3). With ``uniform_frac == 0`` clean positions carry no loss (the
model is never asked about tokens it can see); with ``uniform_frac > 0`` a visible token may be a
random one, so clean positions are scored too (weight 1). Written here, never TransformerLens'
``return_type="loss"``, which is a next-token loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def noise_level_to_mask_prob(t: torch.Tensor, eps: float) -> torch.Tensor:
    return (1.0 - eps) * t + eps


@dataclass
class MaskedCorruption:
    """One corrupted batch. All tensors ``[B, L]`` except ``t`` and ``p`` (``[B]``)."""

    noisy: torch.Tensor  # long: the model input
    corrupted: torch.Tensor  # bool: positions that were masked or replaced
    eligible: torch.Tensor  # bool: positions that may be corrupted (the answer)
    t: torch.Tensor
    p: torch.Tensor


def corrupt(
    tokens: torch.Tensor,
    eligible: torch.Tensor,
    t: torch.Tensor,
    *,
    mask_id: int,
    content_ids: torch.Tensor,
    generator: torch.Generator,
    eps: float = 1e-3,
    uniform_frac: float = 0.0,
) -> MaskedCorruption:
    """Corrupt ``tokens [B, L]`` at noise levels ``t [B]`` (all randomness from ``generator``)."""
    p = noise_level_to_mask_prob(t, eps)
    u = torch.rand(tokens.shape, generator=generator)
    corrupted = (u < p.unsqueeze(1)) & eligible
    noisy = tokens.masked_fill(corrupted, mask_id)
    # Drawn even when unused, so the random stream does not depend on uniform_frac.
    as_random = torch.rand(tokens.shape, generator=generator) < uniform_frac
    random_tokens = content_ids[torch.randint(len(content_ids), tokens.shape, generator=generator)]
    if uniform_frac > 0:
        noisy = torch.where(corrupted & as_random, random_tokens, noisy)
    return MaskedCorruption(noisy=noisy, corrupted=corrupted, eligible=eligible, t=t, p=p)


def masked_diffusion_loss(
    logits: torch.Tensor, tokens: torch.Tensor, c: MaskedCorruption, *, uniform_frac: float = 0.0
) -> torch.Tensor:
    """Per-example loss ``[B]`` (see module docstring). ``logits [B, L, V]``, ``tokens [B, L]``."""
    ce = F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")  # [B, L]
    weight = c.corrupted.float() / c.p.unsqueeze(1)
    if uniform_frac > 0:
        weight = weight + (c.eligible & ~c.corrupted).float()
    n_eligible = c.eligible.sum(dim=1).clamp(min=1)
    return (ce * weight).sum(dim=1) / n_eligible
