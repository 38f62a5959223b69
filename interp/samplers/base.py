"""The record every step-wise sampler yields, and the loop that drives one to completion."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Step:
    """State of a sampling run after one denoising step.

    ``index`` counts from 0 (the first step, from all masks / pure noise); ``t`` is the noise level
    at the start of the step and ``s`` at its end (t=1 noise, t=0 data). Token tensors are
    ``[B, L]`` over the whole sequence (prompt included); ``probs`` is the model's predicted
    distribution ``[B, L, V]`` at this step (zero where it made no prediction); ``confidence``
    ``[B, L]`` the probability of the token now at each position under that distribution.
    ``committed`` marks positions that received a token this step, ``renoised`` positions whose
    token was thrown back to noise, ``revised`` positions whose token changed from one real token
    to another. ``carried`` is the self-conditioning state passed into the next step (or None).
    """

    index: int
    t: float
    s: float
    tokens: torch.Tensor
    probs: torch.Tensor
    confidence: torch.Tensor
    committed: torch.Tensor
    renoised: torch.Tensor
    revised: torch.Tensor
    carried: Any = None

    def to_row(self) -> dict[str, Any]:
        """Scalar summary (for tables and progress)."""
        return {
            "step": self.index,
            "t": self.t,
            "s": self.s,
            "n_committed": int(self.committed.sum()),
            "n_renoised": int(self.renoised.sum()),
            "n_revised": int(self.revised.sum()),
            "mean_confidence": float(self.confidence.mean()),
        }

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors recorded per step by a trace."""
        return {
            "tokens": self.tokens,
            "confidence": self.confidence,
            "committed": self.committed,
            "renoised": self.renoised,
            "revised": self.revised,
        }


@dataclass
class ImageStep:
    """State of an image sampling run after one step: ``x`` the sample ``[B, C, H, W]`` at noise level
    ``s``, ``x0`` the model's current estimate of the clean image, ``evaluations`` model calls made."""

    index: int
    t: float
    s: float
    x: torch.Tensor
    x0: torch.Tensor
    evaluations: int = 1

    def to_row(self) -> dict[str, Any]:
        return {
            "step": self.index,
            "t": self.t,
            "s": self.s,
            "evaluations": self.evaluations,
            "x_std": float(self.x.std()),
            "x0_std": float(self.x0.std()),
        }

    def state(self) -> dict[str, torch.Tensor]:
        return {"x": self.x, "x0": self.x0}


def run_to_end(steps: Iterator[Step]) -> tuple[torch.Tensor, list[Step]]:
    """Exhaust a sampler; return the final tokens ``[B, L]`` and every Step."""
    record = list(steps)
    if not record:
        raise RuntimeError("sampler yielded no steps")
    return record[-1].tokens, record
