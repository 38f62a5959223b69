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
from interp.samplers.base import Step

SAMPLERS = ("mdlm", "llada", "entropy", "ar")


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
        if self.name not in SAMPLERS:
            raise DataError(f"unknown sampler {self.name!r}; known samplers: {', '.join(SAMPLERS)}")
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
    shares its seed with the plain one."""
    answer_len = answer_len if answer_len is not None else method.answer_len_for(prompt.shape[1])
    if answer_len < 1:
        raise DataError(f"nothing to generate: prompt of {prompt.shape[1]} tokens fills the context")
    kind = getattr(method, "kind", None)
    if (cfg.name == "ar") != (kind == "ar"):
        wants = "an autoregressive ('ar')" if cfg.name == "ar" else "a diffusion ('dlm')"
        raise DataError(f"sampler {cfg.name!r} needs {wants} checkpoint; this one is {kind!r}")
    steps = cfg.steps or answer_len
    with torch.no_grad():
        if cfg.name == "ar":
            yield from _ar(method, prompt, answer_len, cfg, generator)
        else:
            yield from _masked(method, prompt, answer_len, steps, cfg, generator, edit)


def _masked(method, prompt, A, S, cfg: SamplerConfig, generator, edit: Edit | None = None) -> Iterator[Step]:
    B, P = prompt.shape
    L = P + A
    mask_id = method.mask_id
    tokens = torch.cat([prompt, torch.full((B, A), mask_id, dtype=torch.long)], dim=1)
    answer = torch.zeros(B, L, dtype=torch.bool)
    answer[:, P:] = True
    accepted = torch.zeros(B, L, dtype=torch.bool)  # positions holding a decided token
    carried = method.empty_carry(B, L)
    block = cfg.block_length or A
    n_blocks = math.ceil(A / block)
    if cfg.name == "llada" and S < n_blocks:
        raise DataError(f"llada with {n_blocks} blocks needs at least {n_blocks} steps, got {S}")
    for i in range(S):
        t, s = 1 - i / S, 1 - (i + 1) / S
        logits = method.predict(tokens, torch.full((B,), t), carried)
        probs = logits.softmax(-1)
        proposal = _choose(probs, cfg.temperature, generator)
        before = tokens.clone()
        was_accepted = accepted.clone()
        if cfg.name == "mdlm":
            unmask = (torch.rand(B, L, generator=generator) < (t - s) / t) & ~accepted & answer
            accepted |= unmask
            tokens = torch.where(unmask, proposal, tokens)
        elif cfg.name == "llada":
            b, steps_in_block, first = _block_schedule(i, S, n_blocks)
            lo, hi = P + b * block, min(P + (b + 1) * block, L)
            remaining = (~accepted[:, lo:hi]).sum(1)
            k = torch.ceil(remaining.float() / (steps_in_block - first)).long()
            conf = probs.gather(-1, proposal.unsqueeze(-1)).squeeze(-1)[:, lo:hi].masked_fill(accepted[:, lo:hi], -1.0)
            order = conf.argsort(dim=1, descending=True)
            ranks = torch.empty_like(order).scatter_(1, order, torch.arange(hi - lo).expand(B, -1))
            unmask = torch.zeros(B, L, dtype=torch.bool)
            unmask[:, lo:hi] = (ranks < k.unsqueeze(1)) & ~accepted[:, lo:hi]
            accepted |= unmask
            tokens = torch.where(unmask, proposal, tokens)
        else:
            ent = _entropy(probs).masked_fill(~answer, float("inf"))
            order = ent.argsort(dim=1)
            sorted_ent = ent.gather(1, order)
            within = (sorted_ent.cumsum(1) <= cfg.entropy_bound) & sorted_ent.isfinite()
            minimum = math.ceil(A * (i + 1) / S)
            n_accept = torch.maximum(within.sum(1), torch.full((B,), minimum))
            ranks = torch.empty_like(order).scatter_(1, order, torch.arange(L).expand(B, -1))
            accepted = (ranks < n_accept.unsqueeze(1)) & answer
            noise = (
                method.content_ids[torch.randint(len(method.content_ids), (B, L), generator=generator)]
                if cfg.renoise == "uniform"
                else torch.full((B, L), mask_id, dtype=torch.long)
            )
            tokens = torch.where(accepted, proposal, torch.where(answer, noise, tokens))
        if edit is not None:
            tokens, accepted = edit(i, tokens.clone(), accepted.clone())
            accepted = accepted & answer
        carried = method.carry(logits)
        committed = accepted & ~was_accepted
        renoised = was_accepted & ~accepted
        revised = was_accepted & accepted & (tokens != before)
        confidence = probs.gather(-1, tokens.clamp(max=probs.shape[-1] - 1).unsqueeze(-1)).squeeze(-1)
        confidence = torch.where(answer, confidence, torch.ones_like(confidence))
        yield Step(
            index=i,
            t=t,
            s=s,
            tokens=tokens.clone(),
            probs=torch.where(answer.unsqueeze(-1), probs, 0.0),
            confidence=confidence,
            committed=committed,
            renoised=renoised,
            revised=revised,
            carried=carried,
        )


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


def _ar(method, prompt, A, cfg: SamplerConfig, generator) -> Iterator[Step]:
    B, P = prompt.shape
    L = P + A
    V = method.model.cfg.vocab_size
    tokens = torch.cat([prompt, torch.full((B, A), method.tokenizer.mask_id, dtype=torch.long)], dim=1)
    for i in range(A):
        pos = P + i
        logits = method.model(tokens[:, :pos])[:, -1]
        logits[:, : method.tokenizer.mask_id + 2] = float("-inf")  # never emit pad / mask / sep
        probs = logits.softmax(-1)
        tok = _choose(probs, cfg.temperature, generator)
        tokens[:, pos] = tok
        full = torch.zeros(B, L, V)
        full[:, pos] = probs
        committed = torch.zeros(B, L, dtype=torch.bool)
        committed[:, pos] = True
        confidence = torch.ones(B, L)
        confidence[:, pos] = probs.gather(-1, tok.unsqueeze(-1)).squeeze(-1)
        none = torch.zeros(B, L, dtype=torch.bool)
        yield Step(
            index=i,
            t=1 - i / A,
            s=1 - (i + 1) / A,
            tokens=tokens.clone(),
            probs=full,
            confidence=confidence,
            committed=committed,
            renoised=none,
            revised=none.clone(),
        )
