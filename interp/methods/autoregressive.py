"""Autoregressive baseline: the same backbone, causal, next-token loss on the answer, same data."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from interp.methods.lm import LanguageModelMethod, LMConfig, lm_spec
from interp.models import TokenTransformer
from interp.registry import MethodSpec, register
from interp.samplers.lm import SamplerConfig


@dataclass
class ARConfig(LMConfig):
    """An autoregressive LM of the same shape as a :class:`~interp.methods.diffusion_lm.DLMConfig`."""


class AutoregressiveLM(LanguageModelMethod):
    cfg: ARConfig

    def __init__(self, cfg: ARConfig, model: TokenTransformer | None = None):
        super().__init__(cfg, model or TokenTransformer(cfg.transformer_config(causal=True)))

    def next_token_logits(self, prefix: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, V]`` of the token after ``prefix [B, P]``, special tokens suppressed."""
        return self.suppress_specials(self.model(prefix)[:, -1])

    def prepare(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        tokens = batch["input_ids"]
        L = tokens.shape[1]
        # position j predicts token j+1; score targets in the answer (all of them for free text)
        target_in_answer = torch.arange(1, L).unsqueeze(0) >= batch["prompt_len"].clamp(min=1).unsqueeze(1)
        return {"tokens": tokens, "scored": target_in_answer}

    def loss(self, model: torch.nn.Module, prepared: dict[str, torch.Tensor]) -> torch.Tensor:
        tokens, scored = prepared["tokens"], prepared["scored"]
        logits = model(tokens[:, :-1])
        ce = F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="none")
        return (ce * scored).sum(1) / scored.sum(1).clamp(min=1)


register(
    MethodSpec(
        **lm_spec(
            kind="ar",
            method=AutoregressiveLM,
            config=ARConfig,
            summary="Train the autoregressive baseline (same backbone, causal).",
            sampler_config=SamplerConfig,
            samplers=("ar",),
            default_sampler=lambda method: SamplerConfig(name="ar"),
        )
    )
)
