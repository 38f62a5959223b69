"""DiffusionGemma-style diffusion language model: masked diffusion with self-conditioning.

Self-conditioning modes (the only continuous state carried between denoising steps):

- ``none``: nothing is carried; each step sees only the token canvas.
- ``continuous``: ``softmax(previous logits) · W_E`` through a small MLP, added to the embeddings.
- ``topk``: the token bottleneck: only the top-``selfcond_k`` (token, probability) pairs per
  position are carried (interpretable: a short list of tokens with probabilities).
- ``topp``: the smallest set of (token, probability) pairs with mass ≥ ``selfcond_p``.

Training is two-pass, as in self-conditioning practice: with probability ``selfcond_train_prob`` per
example a first pass (no gradient) produces the carried state for the second; otherwise the state
is zero, as at the first sampling step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from interp.config import check, check_choice
from interp.interpretable import mark_interpretable
from interp.methods.lm import LanguageModelMethod, LMConfig, lm_spec
from interp.models import SelfCondInput, TokenTransformer
from interp.processes import MaskedCorruption, corrupt, masked_diffusion_loss
from interp.registry import MethodSpec, register
from interp.samplers.lm import SamplerConfig

SELFCOND_MODES = ("none", "continuous", "topk", "topp")


@dataclass
class DLMConfig(LMConfig):
    """A diffusion LM. See the module docstring for ``selfcond``; ``eps`` is the minimum masking
    probability; ``uniform_frac`` the share of corrupted tokens replaced by random tokens rather than
    ``<mask>`` (needed for samplers that renoise with random tokens)."""

    selfcond: str = field(default="continuous", metadata={"help": " | ".join(SELFCOND_MODES)})
    selfcond_k: int = 3
    selfcond_p: float = 0.9
    selfcond_train_prob: float = 0.5
    time_conditioning: bool = False
    eps: float = 1e-3
    uniform_frac: float = field(
        default=0.1, metadata={"help": "Share of corrupted tokens made random instead of <mask>."}
    )

    def validate(self) -> None:
        super().validate()
        check_choice("selfcond", self.selfcond, SELFCOND_MODES)
        check(
            isinstance(self.selfcond_k, int) and self.selfcond_k >= 1,
            f"selfcond_k must be >= 1, got {self.selfcond_k!r}",
        )
        check(0 < self.selfcond_p <= 1, f"selfcond_p must be in (0, 1], got {self.selfcond_p!r}")
        check(
            0 <= self.selfcond_train_prob <= 1,
            f"selfcond_train_prob must be in [0, 1], got {self.selfcond_train_prob!r}",
        )
        check(0 <= self.eps < 1, f"eps must be in [0, 1), got {self.eps!r}")
        check(0 <= self.uniform_frac <= 1, f"uniform_frac must be in [0, 1], got {self.uniform_frac!r}")


class DiffusionLM(LanguageModelMethod):
    cfg: DLMConfig

    def __init__(self, cfg: DLMConfig, model: TokenTransformer | None = None):
        if model is None:
            model = TokenTransformer(
                cfg.transformer_config(time_conditioning=cfg.time_conditioning, selfcond=cfg.selfcond != "none")
            )
        super().__init__(cfg, model)
        self.content_ids = self.tokenizer.content_ids()

    # --- the carried state -------------------------------------------------------------------
    def carry(self, logits: torch.Tensor) -> SelfCondInput | None:
        """The self-conditioning state built from one step's logits ``[B, L, V]``."""
        mode = self.cfg.selfcond
        if mode == "none":
            return None
        probs = self._content_probs(logits)
        if mode == "continuous":
            return SelfCondInput(probs=probs)
        if mode == "topk":
            values, indices = probs.topk(min(self.cfg.selfcond_k, probs.shape[-1]), dim=-1)
            return SelfCondInput(indices=indices, values=mark_interpretable(values))
        sorted_p, indices = probs.sort(dim=-1, descending=True)
        mass_before = sorted_p.cumsum(-1) - sorted_p
        values = torch.where(mass_before < self.cfg.selfcond_p, sorted_p, torch.zeros_like(sorted_p))
        return SelfCondInput(indices=indices, values=mark_interpretable(values))

    def empty_carry(self, batch: int, length: int) -> SelfCondInput | None:
        """The state at the first step (zero: nothing carried yet)."""
        if self.cfg.selfcond == "none":
            return None
        if self.cfg.selfcond == "continuous":
            return SelfCondInput(probs=torch.zeros(batch, length, self.model.cfg.vocab_size))
        k = self.cfg.selfcond_k if self.cfg.selfcond == "topk" else self.model.cfg.vocab_size
        k = min(k, self.model.cfg.vocab_size)
        return SelfCondInput(
            indices=torch.zeros(batch, length, k, dtype=torch.long), values=torch.zeros(batch, length, k)
        )

    def _content_probs(self, logits: torch.Tensor) -> torch.Tensor:
        return self.suppress_specials(logits).softmax(-1)

    def predict(
        self, canvas: torch.Tensor, t: torch.Tensor, carried: SelfCondInput | None, model: torch.nn.Module | None = None
    ) -> torch.Tensor:
        """Logits ``[B, L, V]`` for the canvas at noise level ``t [B]``, special tokens suppressed."""
        model = model or self.model
        return self.suppress_specials(model(canvas, t=t if self.cfg.time_conditioning else None, selfcond=carried))

    # --- training ------------------------------------------------------------------------------
    def prepare(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        tokens = batch["input_ids"]
        B, L = tokens.shape
        eligible = torch.arange(L).unsqueeze(0) >= batch["prompt_len"].unsqueeze(1)
        t = torch.rand(B, generator=generator)
        c = corrupt(
            tokens,
            eligible,
            t,
            mask_id=self.mask_id,
            content_ids=self.content_ids,
            generator=generator,
            eps=self.cfg.eps,
            uniform_frac=self.cfg.uniform_frac,
        )
        use_selfcond = torch.rand(B, generator=generator) < self.cfg.selfcond_train_prob
        return {
            "tokens": tokens,
            "noisy": c.noisy,
            "corrupted": c.corrupted,
            "eligible": eligible,
            "t": t,
            "p": c.p,
            "use_selfcond": use_selfcond,
        }

    def loss(self, model: torch.nn.Module, prepared: dict[str, torch.Tensor]) -> torch.Tensor:
        p = prepared
        c = MaskedCorruption(noisy=p["noisy"], corrupted=p["corrupted"], eligible=p["eligible"], t=p["t"], p=p["p"])
        B, L = c.noisy.shape
        carried = self.empty_carry(B, L)
        if carried is not None and bool(p["use_selfcond"].any()):
            with torch.no_grad():
                first = self.carry(self.predict(c.noisy, c.t, carried, model))
            assert first is not None
            carried = _where_examples(p["use_selfcond"], first, carried)
        logits = model(c.noisy, t=c.t if self.cfg.time_conditioning else None, selfcond=carried)
        return masked_diffusion_loss(logits, p["tokens"], c, uniform_frac=self.cfg.uniform_frac)


def _where_examples(keep: torch.Tensor, a: SelfCondInput, b: SelfCondInput) -> SelfCondInput:
    """Per example: ``a`` where ``keep [B]`` else ``b``."""

    def pick(x: torch.Tensor | None, y: torch.Tensor | None) -> torch.Tensor | None:
        if x is None or y is None:
            return None
        return torch.where(keep.view(-1, *([1] * (x.dim() - 1))), x, y)

    return SelfCondInput(
        probs=pick(a.probs, b.probs), indices=pick(a.indices, b.indices), values=pick(a.values, b.values)
    )


register(
    MethodSpec(
        **lm_spec(
            kind="dlm",
            method=DiffusionLM,
            config=DLMConfig,
            summary="Train a masked-diffusion LM (DiffusionGemma-style self-conditioning).",
            sampler_config=SamplerConfig,
            samplers=("mdlm", "llada", "entropy"),
            default_sampler=lambda method: SamplerConfig(name="mdlm"),
            report="interp.reports.methods:dlm_report",
        )
    )
)
