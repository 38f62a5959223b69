"""The diffusion-LM transparency report: revisions, smearing, intermediate context, logit lens."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from interp.analyses import answer_logit_lens
from interp.analyses.intermediate_context import MIN_SAMPLES, intermediate_context
from interp.analyses.revisions import revisions
from interp.analyses.runs import sample_task
from interp.analyses.smearing import smearing
from interp.reports.html import Section
from interp.samplers import SamplerConfig

SMEARING_THRESHOLD = 0.02  # neighbour excess over the distance >= 2 baseline that we call smearing


def default_samplers(answer_len: int) -> dict[str, SamplerConfig]:
    return {
        "mdlm": SamplerConfig(name="mdlm", steps=2 * answer_len),
        "llada (blocks of 2)": SamplerConfig(name="llada", steps=answer_len, block_length=2),
        "entropy (T=1)": SamplerConfig(name="entropy", steps=2 * answer_len, temperature=1.0),
        "entropy (T=1.5, bound 0.5)": SamplerConfig(
            name="entropy", steps=2 * answer_len, temperature=1.5, entropy_bound=0.5
        ),
    }


def _round(d: dict[str, Any]) -> dict[str, Any]:
    """Floats to 4 significant digits (not 4 decimals: a 1e-6 excess and its interval must not become 0)."""
    return {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in d.items()}


def dlm_sections(
    method, n: int = 100, seed: int = 0, samplers: dict[str, SamplerConfig] | None = None
) -> tuple[list[Section], dict[str, Any]]:
    """Report sections for a diffusion LM on ``n`` held-out prompts (problems of its task, or openings of
    held-out text, where exact match is not scored), and the numbers."""
    answer_len = method.answer_len_for(len(method.heldout(1, seed)[0][0]))
    samplers = samplers or default_samplers(answer_len)
    labels = method.tokenizer.tokens
    rev_rows, smear_rows, ic_rows = [], [], []
    timeline, smear_fig, runs = None, None, {}
    for name, cfg in samplers.items():
        run = sample_task(method, n, seed, cfg)
        runs[name] = run
        rev = revisions(run.steps, run.prompt_len)
        scored = {}
        if method.has_answers:
            gold = torch.tensor([method.tokenizer.encode(a) for _, a in run.problems])
            scored["exact_match"] = float((run.outputs == gold).all(1).float().mean())
        rev_rows.append({"sampler": name, "kind": cfg.name, **scored, **_round(rev.summary())})
        if timeline is None and name.startswith("entropy"):
            timeline = rev.figure(0, labels)
            timeline.update_layout(title=f"{name}: problem {run.problems[0][0]}")
        sm = smearing(run.steps, run.prompt_len)
        smear_rows.append({"sampler": name, **_round(sm.summary())})
        if smear_fig is None:
            smear_fig = sm.figure()
            smear_fig.update_layout(title=f"{name}: mass on the final token of a position d away")
        if name.startswith("entropy"):
            ic = intermediate_context(method, method.encode_prompts([p for p, _ in run.problems]), cfg, seed=seed)
            ic_rows.append({"sampler": name, **_round(ic.summary())})
    rev_frame, smear_frame, ic_frame = pd.DataFrame(rev_rows), pd.DataFrame(smear_rows), pd.DataFrame(ic_rows)

    sections = [
        Section(
            "Decode order and revisions",
            _revision_text(rev_frame),
            tables=[rev_frame],
            figures=[f for f in (timeline,) if f is not None],
            legend="spearman / kendall: rank correlation between the step a digit is first committed and its "
            "position (1 = left to right, -1 = right to left), averaged over the n_valid samples where it is "
            "defined (NaN when every digit of a sample is committed in the same step). backtrack: a position changes after a later position already holds a token. "
            "Timeline: answer canvas per step (columns), crosses mark revisions and renoisings.",
        ),
        smearing_section(smear_frame, smear_fig),
        intermediate_context_section(ic_frame, "masked"),
    ]
    first = next(iter(samplers.values()))
    lens_section, lens_numbers = logit_lens_section(method, runs[next(iter(samplers))], first, seed)
    sections.append(lens_section)
    numbers = {
        "revisions": rev_rows,
        "smearing": smear_rows,
        "intermediate_context": ic_rows,
        "logit_lens": lens_numbers,
        "samplers": {k: v.to_dict() for k, v in samplers.items()},
        "n": n,
        "seed": seed,
    }
    return sections, numbers


def _fmt(x: float) -> str:
    return "NaN" if x != x else f"{x:.3g}"


def _revision_text(frame: pd.DataFrame) -> str:
    parts = []
    for _, r in frame.iterrows():
        valid = f" over {r['n_valid']} of {r['n_samples']} samples" if r["n_valid"] != r["n_samples"] else ""
        parts.append(
            f"{r['sampler']}: rank correlation {r['mean_spearman']}{valid}, backtrack rate {r['backtrack_rate']}, "
            f"{r['revisions_per_sample']} revisions per sample"
        )
    revised = frame["revisions_per_sample"].sum() > 0
    mdlm = [r["sampler"] for _, r in frame.iterrows() if r.get("kind", r["sampler"]) == "mdlm"]
    note = (
        f"MDLM ({', '.join(mdlm)}) unmasks positions in a random order by construction, so its rank correlation "
        "is near 0 whatever the model computes: it is no evidence about the model's decode order. "
        if mdlm
        else ""
    )
    return (
        note
        + "; ".join(parts)
        + (". Revisions occur." if revised else ". No revisions were observed at this scale with these samplers.")
    )


def _smearing_text(frame: pd.DataFrame) -> str:
    parts, observed = [], []
    for _, r in frame.iterrows():
        ex, lo, hi = r["neighbour_excess_first"], r["neighbour_excess_first_lo"], r["neighbour_excess_first_hi"]
        includes_zero = not (lo > 0 or hi < 0)  # also when the interval is undefined (NaN)
        parts.append(
            f"{r['sampler']}: {_fmt(ex)} (95% interval {_fmt(lo)} to {_fmt(hi)}"
            + (", which includes 0" if includes_zero else "")
            + ")"
        )
        if ex > SMEARING_THRESHOLD and not includes_zero:
            observed.append(r["sampler"])
    head = (
        "Neighbour excess at the first step (probability of the final token of the position next door, above "
        "the same for positions 2 or more apart; pairs whose final tokens coincide are left out): " + "; ".join(parts)
    )
    if observed:
        verdict = f"Smearing above the baseline is observed with {', '.join(observed)}"
    else:
        verdict = (
            f"Smearing is not observed at this scale: no sampler's excess is above {SMEARING_THRESHOLD} with an "
            f"interval excluding 0, and the model already puts {_fmt(frame['diagonal_first'].min())} or more on "
            "the final token at the first step"
        )
    return head + ". " + verdict + "."


def smearing_section(frame: pd.DataFrame, figure, probability: str = "probability") -> Section:
    """The smearing section over one row per sampler of :meth:`SmearingResult.summary`, with its figure (or
    None); ``probability``: what is averaged (a sampler that draws from a transformed distribution names it)."""
    return Section(
        "Token smearing",
        _smearing_text(frame),
        tables=[frame],
        figures=[f for f in (figure,) if f is not None],
        legend=f"At each step, for positions still undecided: mean {probability} of the final token of the "
        "position d away (d = 0 is the right token in the right place), leaving out pairs of positions "
        "whose final tokens are the same (there the neighbour's token is the position's own). The dotted "
        "line is the same over positions 2 or more apart; smearing is neighbour (d = 1) mass above it, "
        "early, falling later; _lo / _hi: 95% bootstrap interval over samples.",
    )


def intermediate_context_section(frame: pd.DataFrame, undone: str) -> Section:
    """The draft-effect section over one row per sampler of :meth:`IntermediateContextResult.summary`;
    ``undone``: how a draft is undone (``"masked"``, ``"renoised with random tokens"``)."""
    return Section(
        "Intermediate context",
        _ic_text(frame),
        tables=[frame],
        legend="Drafts: decided tokens that differ from the final token at their position. The run is "
        f"repeated with the same seed and the drafts undone ({undone}) at the first step they appear; "
        "the control undoes, at the same step, the nearest decided non-draft token to each draft. Samples "
        "without enough non-draft tokens (control_short) are left out of both rates; _lo / _hi: 95% "
        f"Wilson intervals; no verdict below {MIN_SAMPLES} compared samples.",
    )


def _ic_text(frame: pd.DataFrame) -> str:
    if frame.empty or frame["with_drafts"].sum() == 0:
        return "No drafts appeared: intermediate-context reasoning cannot be measured on these runs."
    parts, effect, reverse, enough = [], [], [], []
    for _, r in frame.iterrows():
        n = int(r["n_compared"])
        if not r["with_drafts"]:
            parts.append(f"{r['sampler']}: no drafts in {r['n_samples']} samples")
            continue
        short = f", {r['control_short']} without a full control" if r["control_short"] else ""
        if n < MIN_SAMPLES:
            parts.append(
                f"{r['sampler']}: not enough drafts ({r['with_drafts']} of {r['n_samples']} samples had drafts{short}; "
                f"{n} samples compared, {MIN_SAMPLES} needed)"
            )
            continue
        enough.append(r["sampler"])
        parts.append(
            f"{r['sampler']}: {r['with_drafts']} of {r['n_samples']} samples had drafts{short}; over {n} samples, "
            f"undoing them changed the answer in {_fmt(r['change_rate_drafts'])} "
            f"[{_fmt(r['change_rate_drafts_lo'])}, {_fmt(r['change_rate_drafts_hi'])}], the matched control in "
            f"{_fmt(r['change_rate_control'])} [{_fmt(r['change_rate_control_lo'])}, {_fmt(r['change_rate_control_hi'])}]"
        )
        if r["change_rate_drafts_lo"] > r["change_rate_control_hi"]:
            effect.append(r["sampler"])
        elif r["change_rate_control_lo"] > r["change_rate_drafts_hi"]:
            reverse.append(r["sampler"])
    text = "; ".join(parts) + ". "
    if effect:
        return text + f"Drafts change answers more than the control (95% intervals separate) with {', '.join(effect)}."
    if reverse:
        return text + f"The control changes answers more than the drafts with {', '.join(reverse)}."
    if not enough:
        return text + f"Not enough drafts for a verdict (fewer than {MIN_SAMPLES} compared samples per sampler)."
    return text + "At this scale undoing drafts does not change answers more than the control (the intervals overlap)."


def logit_lens_section(method, run, cfg: SamplerConfig, seed: int) -> tuple[Section, dict[str, Any]]:
    ids = method.encode_prompts([p for p, _ in run.problems])
    lens, _, p = answer_logit_lens(method, ids, cfg, seed)
    fig = lens.heatmap(p)
    numbers = {
        "final_token_prob_by_layer_first_step": [round(float(x), 4) for x in p[0]],
        "final_token_prob_by_layer_last_step": [round(float(x), 4) for x in p[-1]],
    }
    text = (
        f"Mean probability of the final answer token read from each layer's residual stream with the model's "
        f"own unembedding: first step {numbers['final_token_prob_by_layer_first_step']}, last step "
        f"{numbers['final_token_prob_by_layer_last_step']} (layers 0..{len(lens.layers) - 1})."
    )
    return Section(
        "Logit lens across steps and layers",
        text,
        figures=[fig],
        legend="Rows: layers; columns: denoising steps; colour: probability of the token that ends at "
        "each answer position, averaged over answer positions and problems.",
    ), numbers
