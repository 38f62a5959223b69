"""Intermediate-context reasoning: draft tokens that never reach the output but change it.

A *draft* is a decided token (committed or accepted) at some step that differs from the final token
at its position (the token the position holds for the next step: :meth:`~interp.steps.Step.held_tokens`;
for DiffusionGemma the accepted sampled token, not the argmax draft its records show). Its causal effect: re-run the same sampler with the same seed and, at the first
step where a sample holds drafts, undo them (``mask``: back to ``<mask>`` and undecided;
``resample``: replaced by random tokens, the default for a model with no mask token, such as
DiffusionGemma, whose own sampler renoises that way: ``method.undo_mode``), then see whether the final
answer changes.

The control is matched in step and position: at the same step, in the same sample, as many decided
*non-draft* tokens are undone, each draft (in position order) taking the nearest still-unused
decided non-draft position (ties broken by a coin seeded with ``control_seed``). A sample whose step
has fewer decided non-draft tokens than drafts has no full control (``control_short``): it is left
out of both rates, so both are over the same ``n_compared`` samples. Each rate comes with a Wilson
score interval at ``LEVEL``; the report calls an effect only when the two intervals do not overlap
and only from ``MIN_SAMPLES`` compared samples on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

import pandas as pd
import torch

from interp.analyses.revisions import decided_after
from interp.config import check_choice
from interp.samplers import SamplerConfig, sample_steps

MIN_SAMPLES = 20  # compared samples (drafts and a full matched control) below which no verdict is given
LEVEL = 0.95  # confidence level of the Wilson intervals


def wilson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials (NaN, NaN when n = 0)."""
    if n == 0:
        return float("nan"), float("nan")
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class IntermediateContextResult:
    """Drafts undone vs a step- and position-matched control. Rates are over the ``n_compared``
    samples that had drafts and a full control; ``_lo`` / ``_hi``: Wilson intervals at ``level``."""

    n_samples: int
    with_drafts: int  # samples holding drafts at some step
    control_short: int  # of those, samples with fewer decided non-draft tokens than drafts: left out
    n_compared: int  # with_drafts - control_short: what both rates are over
    drafts_per_sample: float  # mean drafts undone per compared sample
    change_rate_drafts: float  # final answer changed when the drafts were undone
    change_rate_drafts_lo: float
    change_rate_drafts_hi: float
    change_rate_control: float  # same, undoing the matched non-draft tokens
    change_rate_control_lo: float
    change_rate_control_hi: float
    tokens_changed_drafts: float  # mean answer tokens changed
    tokens_changed_control: float
    control_distance: float  # mean |control position - draft position|
    mode: str
    level: float = LEVEL
    samples: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)

    def summary(self) -> dict[str, float]:
        return {k: v for k, v in self.__dict__.items() if k != "samples"}

    def frame(self) -> pd.DataFrame:
        """One row per sample with drafts: the step, draft and control positions, whether it was compared,
        and whether each edit changed the final answer."""
        return self.samples


def match_control(
    drafts: torch.Tensor, candidates: torch.Tensor, generator: torch.Generator
) -> tuple[list[int], list[int]] | None:
    """Draft positions and, per draft (in position order), the nearest unused candidate position;
    ``drafts``, ``candidates``: ``[A]`` bool. None when there are fewer candidates than drafts."""
    d_pos = torch.nonzero(drafts).flatten().tolist()
    free = torch.nonzero(candidates).flatten().tolist()
    if len(free) < len(d_pos):
        return None
    picks = []
    for d in d_pos:
        best = min(abs(c - d) for c in free)
        ties = [c for c in free if abs(c - d) == best]
        c = ties[int(torch.randint(len(ties), (1,), generator=generator))] if len(ties) > 1 else ties[0]
        free.remove(c)
        picks.append(c)
    return d_pos, picks


def intermediate_context(
    method,
    prompt: torch.Tensor,
    sampler: SamplerConfig,
    seed: int = 0,
    mode: str | None = None,
    control_seed: int = 0,
    answer_len: int | None = None,
    level: float = LEVEL,
) -> IntermediateContextResult:
    """Run ``sampler`` on ``prompt [B, Lp]``, then twice more with the same seed: drafts undone, and the
    matched control undone, at each sample's first step with drafts."""
    mode = mode or getattr(method, "undo_mode", "mask")
    check_choice("mode", mode, ("mask", "resample"))
    P = prompt.shape[1]

    def run(edit=None):
        return list(sample_steps(method, prompt, sampler, torch.Generator().manual_seed(seed), answer_len, edit))

    steps = run()
    final = steps[-1].tokens[:, P:]
    tokens = torch.stack([s.held_tokens()[:, P:] for s in steps])  # DiffusionGemma: accepted, not argmax
    decided = decided_after(steps, P)
    drafts = decided & (tokens != final.unsqueeze(0))  # [S, B, A]
    _, B, A = drafts.shape
    has = drafts.any(2)  # [S, B]
    first = torch.where(has.any(0), has.float().argmax(0), torch.full((B,), -1))  # first step with drafts
    draft_mask = torch.zeros(B, A, dtype=torch.bool)
    control_mask = torch.zeros(B, A, dtype=torch.bool)
    gen = torch.Generator().manual_seed(control_seed)
    rows = []
    for b in range(B):
        t = int(first[b])
        if t < 0:
            continue
        matched = match_control(drafts[t, b], decided[t, b] & ~drafts[t, b], gen)
        rows.append(
            {
                "sample": b,
                "step": t,
                "drafts": torch.nonzero(drafts[t, b]).flatten().tolist(),
                "control": matched[1] if matched else [],
                "compared": matched is not None,
            }
        )
        if matched is not None:
            draft_mask[b, matched[0]] = True
            control_mask[b, matched[1]] = True
    compared = torch.tensor([False] * B)
    for r in rows:
        compared[r["sample"]] = r["compared"]
    noise_gen = torch.Generator().manual_seed(control_seed + 1)

    def editor(mask: torch.Tensor):
        def edit(i, toks, dec):
            where = torch.zeros_like(dec)
            where[:, P:] = mask & (first == i).unsqueeze(1)
            if mode == "mask":
                toks = toks.masked_fill(where, method.mask_id)
                dec = dec & ~where
            else:
                noise = method.content_ids[torch.randint(len(method.content_ids), toks.shape, generator=noise_gen)]
                toks = torch.where(where, noise, toks)
            return toks, dec

        return edit

    n = int(compared.sum())

    def effect(mask):
        if n == 0:
            return torch.zeros(B, dtype=torch.bool), torch.zeros(B, dtype=torch.long)
        edited = run(editor(mask))[-1].tokens[:, P:]
        diff = edited != final
        return diff.any(1), diff.sum(1)

    changed_d, tok_d = effect(draft_mask)
    changed_c, tok_c = effect(control_mask)
    for r in rows:
        r["changed_drafts"] = bool(changed_d[r["sample"]]) if r["compared"] else None
        r["changed_control"] = bool(changed_c[r["sample"]]) if r["compared"] else None
    k_d, k_c = int(changed_d[compared].sum()), int(changed_c[compared].sum())
    mean = lambda x: float(x[compared].float().mean()) if n else float("nan")  # noqa: E731
    distances = [abs(c - d) for r in rows if r["compared"] for d, c in zip(r["drafts"], r["control"], strict=True)]
    lo_d, hi_d = wilson(k_d, n, level)
    lo_c, hi_c = wilson(k_c, n, level)
    return IntermediateContextResult(
        n_samples=B,
        with_drafts=len(rows),
        control_short=len(rows) - n,
        n_compared=n,
        drafts_per_sample=float(draft_mask.sum() / max(1, n)),
        change_rate_drafts=k_d / n if n else float("nan"),
        change_rate_drafts_lo=lo_d,
        change_rate_drafts_hi=hi_d,
        change_rate_control=k_c / n if n else float("nan"),
        change_rate_control_lo=lo_c,
        change_rate_control_hi=hi_c,
        tokens_changed_drafts=mean(tok_d),
        tokens_changed_control=mean(tok_c),
        control_distance=sum(distances) / len(distances) if distances else float("nan"),
        mode=mode,
        level=level,
        samples=pd.DataFrame(
            rows, columns=["sample", "step", "drafts", "control", "compared", "changed_drafts", "changed_control"]
        ),
    )
