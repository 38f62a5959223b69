"""The DiffusionGemma report: what its own sampler does step by step, for a transformers DiffusionGemma folder
(``hf_diffusion_gemma``) and for one trained here (``dgemma``). The decode-order, smearing, draft-effect and
logit-lens sections are the diffusion-LM report's (:mod:`interp.reports.dlm`: the same analyses over the
sampler's ``GemmaStep`` records, the same texts; drafts are undone by renoising them, each step's lens is read
against the canvas it denoises); beside them, what only this sampler has: entropy and acceptance per denoising
step, and the token bottleneck on the carried self-conditioning logits (exact match where the task has answers,
otherwise how many outputs it changes and, on Shakespeare, how word-like they stay)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from interp.analyses.intermediate_context import intermediate_context
from interp.analyses.revisions import revisions
from interp.analyses.runs import sample_task
from interp.analyses.smearing import smearing
from interp.data.text import known_word_share
from interp.reports.dlm import (
    _revision_text,
    _round,
    intermediate_context_section,
    logit_lens_section,
    smearing_section,
)
from interp.reports.html import Section
from interp.samplers import DiffusionGemmaSampler, SamplerConfig, run

BOTTLENECKS = {"continuous (none)": ("none", 0, 0.0), "top-1": ("topk", 1, 0.0), "top-3": ("topk", 3, 0.0),
               "top-p 0.9": ("topp", 0, 0.9)}  # fmt: skip


def default_samplers(method) -> dict[str, SamplerConfig]:
    """The method's own settings, and the same with a four times tighter entropy bound (fewer tokens accepted
    per step: more renoising, more room to revise)."""
    base = method.spec.default_sampler(method)
    tight = base.replace(entropy_bound=base.entropy_bound / 4)
    return {f"bound {base.entropy_bound:g}": base, f"bound {tight.entropy_bound:g}": tight}


def _gold(method, rows) -> torch.Tensor | None:
    if not getattr(method, "has_answers", False):
        return None
    return torch.tensor([method.tokenizer.encode(a) for _, a in rows])


def _step_table(steps) -> pd.DataFrame:
    """Per denoising step of a canvas (over canvases, samples and positions): mean entropy of what is sampled,
    share of positions accepted, tokens committed / renoised / revised per sample."""
    rows = []
    for st in steps:
        rows.append(
            {
                "canvas_step": st.canvas_step,
                "temperature": st.temperature,
                "entropy": float(st.entropy.mean()),
                "accepted": float(st.accepted.float().mean()),
                "committed": float(st.committed.sum(1).float().mean()),
                "renoised": float(st.renoised.sum(1).float().mean()),
                "revised": float(st.revised.sum(1).float().mean()),
            }
        )
    frame = pd.DataFrame(rows)
    return frame.groupby("canvas_step", as_index=False).mean().round(4)


def _is_shakespeare(method) -> bool:
    return getattr(getattr(method, "cfg", None), "task", None) == "shakespeare"


def _bottleneck_rows(method, prompts: torch.Tensor, cfg: SamplerConfig, seed: int, gold) -> list[dict[str, Any]]:
    """Each bottleneck on the same prompts and seed: exact match (with answers), the share of outputs that
    differ from the continuous carry's and, on Shakespeare, the share of generated words that are words of the
    corpus (:func:`~interp.data.text.known_word_share`)."""
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig

    A = method.answer_len_for(prompts.shape[1])
    steps = cfg.steps or method.default_steps()
    outputs, rows = {}, []
    for name, (mode, k, p) in BOTTLENECKS.items():
        sampler = DiffusionGemmaSampler(
            method.model,
            prompts,
            seed=seed,
            max_new_tokens=A,
            max_denoising_steps=steps,
            sampler_config=EntropyBoundSamplerConfig(entropy_bound=float(cfg.entropy_bound)),
            bottleneck=mode,
            k=k or 8,
            p=p or 0.9,
            keep_probs=False,
        )
        for _ in run(sampler):
            pass
        out = sampler.sequences[:, prompts.shape[1] : prompts.shape[1] + A]
        outputs[name] = out
        row: dict[str, Any] = {"carry": name}
        if gold is not None:
            row["exact_match"] = float((out == gold).all(1).float().mean())
        row["outputs_changed"] = float((out != outputs["continuous (none)"]).any(1).float().mean())
        row["tokens_changed"] = float((out != outputs["continuous (none)"]).float().mean())
        if _is_shakespeare(method):
            row["known_words"] = known_word_share([method.tokenizer.decode(o) for o in out.tolist()])
        rows.append(row)
    return rows


def diffusion_gemma_sections(
    method, n: int = 32, seed: int = 0, samplers: dict[str, SamplerConfig] | None = None
) -> tuple[list[Section], dict[str, Any]]:
    """Report sections for a DiffusionGemma on ``n`` held-out prompts (problems of its task, scored; or openings
    of held-out text / fixed prompts, not scored), and the numbers."""
    samplers = samplers or default_samplers(method)
    labels = method.tokenizer.tokens
    rev_rows, smear_rows, ic_rows = [], [], []
    timeline = smear_fig = None
    first_run = None
    for name, cfg in samplers.items():
        r = sample_task(method, n, seed, cfg)
        first_run = first_run or r
        gold = _gold(method, r.problems)
        rev = revisions(r.steps, r.prompt_len)
        scored = {"exact_match": float((r.outputs == gold).all(1).float().mean())} if gold is not None else {}
        in_canvas = rev.order_within(method.canvas_length, seed=seed)
        rev_rows.append({"sampler": name, "kind": cfg.name, **scored, **_round({**rev.summary(), **in_canvas})})
        if timeline is None:
            timeline = rev.figure(0, labels)
            timeline.update_layout(title=f"{name}: prompt {r.problems[0][0]!r}")
        sm = smearing(r.steps, r.prompt_len)
        smear_rows.append({"sampler": name, **_round(sm.summary())})
        ic = intermediate_context(method, method.encode_prompts([p for p, _ in r.problems]), cfg, seed=seed)
        ic_rows.append({"sampler": name, **_round(ic.summary())})
        if smear_fig is None:
            smear_fig = sm.figure()
            smear_fig.update_layout(title=f"{name}: mass on the final token of a position d away")
    assert first_run is not None
    rev_frame, smear_frame = pd.DataFrame(rev_rows), pd.DataFrame(smear_rows)
    step_frame = _step_table(first_run.steps)
    first_cfg = next(iter(samplers.values()))
    ids = method.encode_prompts([p for p, _ in first_run.problems])
    bottleneck = _bottleneck_rows(method, ids, first_cfg, seed, _gold(method, first_run.problems))
    bottleneck_frame = pd.DataFrame(bottleneck)

    reference = known_word_share([a for _, a in first_run.problems]) if _is_shakespeare(method) else None
    canvases = -(-method.answer_len_for(ids.shape[1]) // method.canvas_length)
    order_note = (
        f"The answer is written in {canvases} canvases of {method.canvas_length}, one after the other (block "
        "diffusion): the rank correlation over the whole answer is pulled towards 1 by that order, whatever the "
        "order inside a canvas; spearman_in_block is the order inside each canvas. "
        if canvases > 1
        else ""
    )
    if "exact_match" in bottleneck_frame:
        em = ", ".join(f"{r['carry']} {r['exact_match']:.3g}" for r in bottleneck)
        bn_text = f"Held-out exact match by what is carried between steps: {em}."
    else:
        changed = ", ".join(f"{r['carry']} {r['outputs_changed']:.3g}" for r in bottleneck[1:])
        bn_text = (
            "These prompts have no answer key, so nothing is scored; share of outputs that differ from the "
            f"continuous carry's (same prompts, same seed): {changed}."
        )
        if reference is not None:
            words = ", ".join(f"{r['carry']} {r['known_words']:.3g}" for r in bottleneck)
            bn_text += (
                f" Share of generated words that are words of the corpus: {words} (the held-out continuations "
                f"of the same openings: {reference:.3g})."
            )
    sections = [
        Section(
            "Decode order and revisions",
            order_note + _revision_text(rev_frame),
            tables=[rev_frame],
            figures=[f for f in (timeline,) if f is not None],
            legend="DiffusionGemma's own sampler (entropy-bounded acceptance, the rest renoised with random "
            "tokens). spearman / kendall: rank correlation between the step a position is first accepted and its "
            "position (spearman_in_block: inside each canvas, mean over (sample, canvas) with its 95% bootstrap "
            "interval _lo / _hi); backtrack: a position changes after a later one already holds a token; revisions: an "
            "accepted position accepted again with another token, or renoised. exact_match only where the task "
            "has answers. Timeline: the draft (argmax canvas) per step.",
        ),
        smearing_section(
            smear_frame, smear_fig, "probability (under the temperature-scaled distribution sampled from)"
        ),
        intermediate_context_section(pd.DataFrame(ic_rows), "renoised with random tokens, as the sampler renoises"),
        Section(
            "Entropy and acceptance per denoising step",
            f"{first_run.sampler.name} ({next(iter(samplers))}): mean entropy falls from "
            f"{step_frame['entropy'].iloc[0]:.3g} at a canvas's first step to {step_frame['entropy'].iloc[-1]:.3g} "
            f"at its last; the share of positions accepted goes from {step_frame['accepted'].iloc[0]:.3g} to "
            f"{step_frame['accepted'].iloc[-1]:.3g}.",
            tables=[step_frame],
            legend="Per step of a canvas, averaged over canvases, samples and positions: entropy (nats) of the "
            "temperature-scaled distribution, share accepted, and per sample the positions newly accepted "
            "(committed), dropped (renoised) and accepted again with another token (revised).",
        ),
        Section(
            "Token bottleneck",
            bn_text,
            tables=[bottleneck_frame],
            legend="The carried self-conditioning logits replaced by their top-k / top-p, renormalised (the "
            "only continuous state passed between steps is then a readable list of tokens with probabilities). "
            "outputs_changed / tokens_changed: share of outputs / tokens unlike the continuous carry's; "
            "known_words (Shakespeare): share of inner generated words found in the corpus.",
        ),
    ]
    lens_section, lens_numbers = logit_lens_section(method, first_run, first_cfg, seed)
    sections.append(lens_section)
    numbers = {
        "logit_lens": lens_numbers,
        "revisions": rev_rows,
        "smearing": smear_rows,
        "intermediate_context": ic_rows,
        "steps": step_frame.to_dict("records"),
        "bottleneck": bottleneck,
        "known_words_heldout": reference,
        "samplers": {k: v.to_dict() for k, v in samplers.items()},
        "n": n,
        "seed": seed,
    }
    return sections, numbers
