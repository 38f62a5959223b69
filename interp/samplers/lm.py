"""Step-wise samplers for token models.

Masked-diffusion samplers (for :class:`~interp.methods.DiffusionLM`), all starting from an answer of
``<mask>`` tokens after a fixed prompt:

- ``mdlm``: MDLM ancestral sampling. From t to s each masked position is unmasked with probability
  (t - s) / t, its token drawn from the model; committed tokens never change.
- ``llada``: LLaDA-style confidence decoding with semi-autoregressive blocks: the answer is cut into
  blocks of ``block_length`` filled left to right; within the current block the most confident
  masked positions are committed, a fixed number per step.
- ``entropy``: entropy-bounded acceptance (DiffusionGemma-style). Every step predicts every answer
  position; positions are accepted in order of increasing entropy while the summed entropy stays
  within ``entropy_bound`` (and at least enough to finish on time); the rest are renoised, with
  uniformly random tokens (``renoise="uniform"``) or ``<mask>``. Accepted tokens are re-predicted
  every step, so tokens can be revised.

``ar``: autoregressive greedy / temperature sampling (for :class:`~interp.methods.AutoregressiveLM`),
one token per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from interp.config import Config, check, check_choice
from interp.errors import DataError
from interp.interpretable import mark_interpretable
from interp.registry import register_sampler, sampler_class, sampler_names
from interp.samplers.loop import run
from interp.steps import Step, StepContext


@dataclass
class SamplerConfig(Config):
    """Sampler settings. ``steps`` None = one per answer token. ``temperature`` 0 = argmax. ``block_length`` (llada) 0 = one block.
    ``entropy_bound`` in nats (entropy). ``renoise`` ``uniform`` | ``mask`` (entropy)."""

    name: str = "mdlm"
    steps: int | None = None
    temperature: float = 0.0
    block_length: int = 0
    entropy_bound: float = 1.0
    renoise: str = "uniform"

    def validate(self) -> None:
        known = sampler_names(SamplerConfig)
        if self.name not in known:
            raise DataError(f"unknown sampler {self.name!r}; known samplers: {', '.join(known)}")
        check(
            self.steps is None or (isinstance(self.steps, int) and self.steps >= 1),
            f"steps must be >= 1 (or unset: one per answer token), got {self.steps!r}",
        )
        check(self.temperature >= 0, f"temperature must be >= 0, got {self.temperature!r}")
        check(self.block_length >= 0, f"block_length must be >= 0, got {self.block_length!r}")
        check(self.entropy_bound >= 0, f"entropy_bound must be >= 0, got {self.entropy_bound!r}")
        check_choice("renoise", self.renoise, ("uniform", "mask"))


def _choose(probs: torch.Tensor, temperature: float, generator: torch.Generator) -> torch.Tensor:
    """Token per position from ``probs [..., V]``: argmax at temperature 0, else sampled."""
    if temperature == 0:
        return probs.argmax(-1)
    logits = probs.clamp_min(1e-30).log() / temperature
    flat = logits.reshape(-1, logits.shape[-1]).softmax(-1)
    return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * probs.clamp_min(1e-30).log()).sum(-1)


Edit = Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def sample_steps(
    method,
    prompt: torch.Tensor,
    cfg: SamplerConfig,
    generator: torch.Generator,
    answer_len: int | None = None,
    edit: Edit | None = None,
) -> Iterator[Step]:
    """Run sampler ``cfg.name`` on ``prompt [B, Lp]``, yielding one :class:`Step` per step.

    ``edit(step, tokens [B, L], decided [B, L]) -> (tokens, decided)`` (masked-diffusion samplers)
    changes the canvas after a step's update, before the next step sees it: a token set back to
    ``<mask>`` with ``decided`` False is undone. The random stream is untouched, so an edited run
    shares its seed with the plain one. Bad settings are refused here, before the first step."""
    cls = sampler_class(cfg.name, SamplerConfig)
    return run(cls(method, prompt, cfg, generator, answer_len=answer_len, edit=edit))


class TokenSampler:
    """Base of the token samplers: a prompt ``[B, P]`` followed by ``A`` answer positions to fill."""

    name: str
    config = SamplerConfig
    needs = "a masked-diffusion model"

    def __init__(
        self,
        method,
        prompt: torch.Tensor,
        cfg: SamplerConfig,
        generator: torch.Generator,
        answer_len: int | None = None,
        edit: Edit | None = None,
    ):
        if not self.accepts(method):
            kind = getattr(method, "kind", type(method).__name__)
            raise DataError(f"sampler {cfg.name!r} needs {self.needs}; this checkpoint is of kind {kind!r}")
        self.A = answer_len if answer_len is not None else method.answer_len_for(prompt.shape[1])
        if self.A < 1:
            raise DataError(f"nothing to generate: prompt of {prompt.shape[1]} tokens fills the context")
        self.method, self.cfg, self.generator, self.edit = method, cfg, generator, edit
        self.B, self.P = prompt.shape
        self.L = self.P + self.A
        self.S = cfg.steps or self.A

    @staticmethod
    def accepts(method) -> bool:
        return all(hasattr(method, a) for a in ("predict", "carry", "empty_carry", "mask_id", "content_ids"))


class MaskedSampler(TokenSampler):
    """Masked-diffusion samplers: every step predicts the canvas, :meth:`update` decides which tokens to
    accept, an optional ``edit`` changes the result, and the self-conditioning state is carried on."""

    def __init__(self, method, prompt, cfg, generator, answer_len=None, edit=None):
        super().__init__(method, prompt, cfg, generator, answer_len, edit)
        B, P, L = self.B, self.P, self.L
        self.tokens = torch.cat([prompt, torch.full((B, self.A), method.mask_id, dtype=torch.long)], dim=1)
        self.answer = torch.zeros(B, L, dtype=torch.bool)
        self.answer[:, P:] = True
        self.accepted = torch.zeros(B, L, dtype=torch.bool)  # positions holding a decided token
        self.carried = method.empty_carry(B, L)

    def schedule(self) -> list[tuple[float, float]]:
        return [(1 - i / self.S, 1 - (i + 1) / self.S) for i in range(self.S)]

    def update(self, ctx: StepContext, probs: torch.Tensor, proposal: torch.Tensor) -> None:
        """Set ``self.tokens`` / ``self.accepted`` from this step's ``probs [B, L, V]`` and ``proposal [B, L]``."""
        raise NotImplementedError

    def step(self, ctx: StepContext) -> Step:
        method, B = self.method, self.B
        logits = method.predict(self.tokens, torch.full((B,), ctx.t), self.carried)
        probs = logits.softmax(-1)
        proposal = _choose(probs, self.cfg.temperature, self.generator)
        before, was_accepted = self.tokens.clone(), self.accepted.clone()
        self.update(ctx, probs, proposal)
        if self.edit is not None:
            tokens, accepted = self.edit(ctx.index, self.tokens.clone(), self.accepted.clone())
            self.tokens, self.accepted = tokens, accepted & self.answer
        # the canvas passed on (tokens, and which are decided) is read by a human: opaque chains end here
        mark_interpretable(self.tokens)
        mark_interpretable(self.accepted)
        self.carried = method.carry(logits)
        tokens, accepted, answer = self.tokens, self.accepted, self.answer
        confidence = probs.gather(-1, tokens.clamp(max=probs.shape[-1] - 1).unsqueeze(-1)).squeeze(-1)
        return Step(
            index=ctx.index,
            t=ctx.t,
            s=ctx.s,
            tokens=tokens.clone(),
            probs=torch.where(answer.unsqueeze(-1), probs, 0.0),
            confidence=torch.where(answer, confidence, torch.ones_like(confidence)),
            committed=accepted & ~was_accepted,
            renoised=was_accepted & ~accepted,
            revised=was_accepted & accepted & (tokens != before),
            carried=self.carried,
        )


@register_sampler
class MDLMSampler(MaskedSampler):
    """From t to s each masked position is unmasked with probability (t − s) / t; committed tokens stay."""

    name = "mdlm"

    def update(self, ctx, probs, proposal):
        t, s = ctx.t, ctx.s
        unmask = (torch.rand(self.B, self.L, generator=self.generator) < (t - s) / t) & ~self.accepted & self.answer
        self.accepted |= unmask
        self.tokens = torch.where(unmask, proposal, self.tokens)


@register_sampler
class LLaDASampler(MaskedSampler):
    """Blocks of ``block_length`` filled left to right; in the current block the most confident masked
    positions are committed, a fixed number per step."""

    name = "llada"

    def __init__(self, method, prompt, cfg, generator, answer_len=None, edit=None):
        super().__init__(method, prompt, cfg, generator, answer_len, edit)
        self.block = cfg.block_length or self.A
        self.n_blocks = math.ceil(self.A / self.block)
        if self.S < self.n_blocks:
            raise DataError(f"llada with {self.n_blocks} blocks needs at least {self.n_blocks} steps, got {self.S}")

    def update(self, ctx, probs, proposal):
        B, P, L, accepted = self.B, self.P, self.L, self.accepted
        b, steps_in_block, first = _block_schedule(ctx.index, self.S, self.n_blocks)
        lo, hi = P + b * self.block, min(P + (b + 1) * self.block, L)
        remaining = (~accepted[:, lo:hi]).sum(1)
        k = torch.ceil(remaining.float() / (steps_in_block - first)).long()
        conf = probs.gather(-1, proposal.unsqueeze(-1)).squeeze(-1)[:, lo:hi].masked_fill(accepted[:, lo:hi], -1.0)
        order = conf.argsort(dim=1, descending=True)
        ranks = torch.empty_like(order).scatter_(1, order, torch.arange(hi - lo).expand(B, -1))
        unmask = torch.zeros(B, L, dtype=torch.bool)
        unmask[:, lo:hi] = (ranks < k.unsqueeze(1)) & ~accepted[:, lo:hi]
        self.accepted = accepted | unmask
        self.tokens = torch.where(unmask, proposal, self.tokens)


@register_sampler
class EntropyBoundSampler(MaskedSampler):
    """Accept positions in order of increasing entropy while the summed entropy stays within
    ``entropy_bound`` (and at least enough to finish on time); renoise the rest."""

    name = "entropy"

    def update(self, ctx, probs, proposal):
        B, L, answer, method, cfg = self.B, self.L, self.answer, self.method, self.cfg
        ent = _entropy(probs).masked_fill(~answer, float("inf"))
        order = ent.argsort(dim=1)
        sorted_ent = ent.gather(1, order)
        within = (sorted_ent.cumsum(1) <= cfg.entropy_bound) & sorted_ent.isfinite()
        minimum = math.ceil(self.A * (ctx.index + 1) / self.S)
        n_accept = torch.maximum(within.sum(1), torch.full((B,), minimum))
        ranks = torch.empty_like(order).scatter_(1, order, torch.arange(L).expand(B, -1))
        self.accepted = (ranks < n_accept.unsqueeze(1)) & answer
        noise = (
            method.content_ids[torch.randint(len(method.content_ids), (B, L), generator=self.generator)]
            if cfg.renoise == "uniform"
            else torch.full((B, L), method.mask_id, dtype=torch.long)
        )
        self.tokens = torch.where(self.accepted, proposal, torch.where(answer, noise, self.tokens))


def _block_schedule(i: int, S: int, n_blocks: int) -> tuple[int, int, int]:
    """For step ``i`` of ``S`` over ``n_blocks`` blocks: (block, steps given to it, its first local step)."""
    base, extra = divmod(S, n_blocks)
    counts = [base + (1 if b < extra else 0) for b in range(n_blocks)]
    start = 0
    for b, c in enumerate(counts):
        if i < start + c:
            return b, c, i - start
        start += c
    raise AssertionError("step beyond schedule")


@register_sampler
class AutoregressiveSampler(TokenSampler):
    """One token per step, left to right (greedy at temperature 0)."""

    name = "ar"
    needs = "an autoregressive model"

    def __init__(self, method, prompt, cfg, generator, answer_len=None, edit=None):
        super().__init__(method, prompt, cfg, generator, answer_len, edit)
        self.tokens = torch.cat([prompt, torch.full((self.B, self.A), method.mask_id, dtype=torch.long)], dim=1)

    @staticmethod
    def accepts(method) -> bool:
        return hasattr(method, "next_token_logits")

    def schedule(self) -> list[tuple[float, float]]:
        return [(1 - i / self.A, 1 - (i + 1) / self.A) for i in range(self.A)]

    def step(self, ctx: StepContext) -> Step:
        B, L, pos = self.B, self.L, self.P + ctx.index
        probs = self.method.next_token_logits(self.tokens[:, :pos]).softmax(-1)
        tok = _choose(probs, self.cfg.temperature, self.generator)
        self.tokens[:, pos] = tok
        full = torch.zeros(B, L, probs.shape[-1])
        full[:, pos] = probs
        committed = torch.zeros(B, L, dtype=torch.bool)
        committed[:, pos] = True
        confidence = torch.ones(B, L)
        confidence[:, pos] = probs.gather(-1, tok.unsqueeze(-1)).squeeze(-1)
        none = torch.zeros(B, L, dtype=torch.bool)
        return Step(
            index=ctx.index,
            t=ctx.t,
            s=ctx.s,
            tokens=self.tokens.clone(),
            probs=full,
            confidence=confidence,
            committed=committed,
            renoised=none,
            revised=none.clone(),
        )
