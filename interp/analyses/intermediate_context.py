"""Intermediate-context reasoning: draft tokens that never reach the output but change it.

A *draft* is a decided token (committed or accepted) at some step that differs from the final token
at its position. Its causal effect: re-run the same sampler with the same seed and, at the first
step where a sample holds drafts, undo them (``mask``: back to ``<mask>`` and undecided;
``resample``: replaced by random tokens), then see whether the final answer changes. The control
undoes the same number of decided *non-draft* tokens of that sample at that step.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from interp.analyses.revisions import decided_after
from interp.config import check_choice
from interp.samplers import SamplerConfig, sample_steps


@dataclass
class IntermediateContextResult:
    n_samples: int
    with_drafts: int
    drafts_per_sample: float
    change_rate_drafts: float  # among samples with drafts: final answer changed when drafts were undone
    change_rate_control: float  # same, undoing as many non-draft decided tokens
    tokens_changed_drafts: float  # mean answer tokens changed (samples with drafts)
    tokens_changed_control: float
    control_short: int  # samples with fewer non-draft decided tokens than drafts (control undid fewer)
    mode: str

    def summary(self) -> dict[str, float]:
        return dict(self.__dict__)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([self.summary()])


def intermediate_context(
    method,
    prompt: torch.Tensor,
    sampler: SamplerConfig,
    seed: int = 0,
    mode: str = "mask",
    control_seed: int = 0,
    answer_len: int | None = None,
) -> IntermediateContextResult:
    check_choice("mode", mode, ("mask", "resample"))
    P = prompt.shape[1]

    def run(edit=None):
        return list(sample_steps(method, prompt, sampler, torch.Generator().manual_seed(seed), answer_len, edit))

    steps = run()
    final = steps[-1].tokens[:, P:]
    tokens = torch.stack([s.tokens[:, P:] for s in steps])
    decided = decided_after(steps, P)
    drafts = decided & (tokens != final.unsqueeze(0))  # [S, B, A]
    _, B, A = drafts.shape
    has = drafts.any(2)  # [S, B]
    first = torch.where(has.any(0), has.float().argmax(0), torch.full((B,), -1))  # first step with drafts
    draft_mask = torch.zeros(B, A, dtype=torch.bool)
    control_mask = torch.zeros(B, A, dtype=torch.bool)
    gen = torch.Generator().manual_seed(control_seed)
    short = 0
    for b in range(B):
        t = int(first[b])
        if t < 0:
            continue
        draft_mask[b] = drafts[t, b]
        candidates = torch.nonzero(decided[t, b] & ~drafts[t, b]).flatten()
        k = int(draft_mask[b].sum())
        short += int(len(candidates) < k)
        pick = candidates[torch.randperm(len(candidates), generator=gen)[:k]]
        control_mask[b, pick] = True
    noise_gen = torch.Generator().manual_seed(control_seed + 1)

    def editor(mask: torch.Tensor):
        def edit(i, toks, dec):
            rows = first == i
            where = torch.zeros_like(dec)
            where[:, P:] = mask & rows.unsqueeze(1)
            if mode == "mask":
                toks = toks.masked_fill(where, method.mask_id)
                dec = dec & ~where
            else:
                noise = method.content_ids[torch.randint(len(method.content_ids), toks.shape, generator=noise_gen)]
                toks = torch.where(where, noise, toks)
            return toks, dec

        return edit

    with_drafts = first >= 0
    n = int(with_drafts.sum())

    def effect(mask):
        if n == 0:
            return float("nan"), float("nan")
        edited = run(editor(mask))[-1].tokens[:, P:]
        diff = (edited != final)[with_drafts]
        return float(diff.any(1).float().mean()), float(diff.sum(1).float().mean())

    rate_d, tok_d = effect(draft_mask)
    rate_c, tok_c = effect(control_mask)
    return IntermediateContextResult(
        n_samples=B,
        with_drafts=n,
        drafts_per_sample=float(draft_mask.sum() / max(1, n)),
        change_rate_drafts=rate_d,
        change_rate_control=rate_c,
        tokens_changed_drafts=tok_d,
        tokens_changed_control=tok_c,
        control_short=short,
        mode=mode,
    )
