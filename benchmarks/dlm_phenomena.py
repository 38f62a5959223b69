"""DiffusionGemma-paper phenomena, per sampler: decode order (rank correlation of commit step with answer
position), backtrack rate, neighbour smearing early vs late against the distance >= 2 baseline (coincident
pairs left out, with a bootstrap interval), and the answer-change rate when drafts are undone vs a matched
control (Wilson intervals).

``--part dlm``: the shipped 3-digit addition diffusion LMs (``dlm-addition3-*``) with our samplers.
``--part dgemma``: the shipped small DiffusionGemmas (``dgemma-addition3``, ``dgemma-shakespeare``: the
transformers architecture trained here) with DiffusionGemma's own sampler at its default entropy bound and
at a four times tighter one (:mod:`interp.reports.diffusion_gemma`): also the order inside each canvas (with
a bootstrap interval), entropy / acceptance per denoising step, and the token bottleneck on the carried
self-conditioning logits (exact match on held-out addition; on text the share of outputs it changes and the
share of generated words that are words of the corpus).
Numbers are printed as measured; a behaviour that does not appear at our scale shows as ~0 / NaN.

Run: ``python benchmarks/dlm_phenomena.py [--n 200] [--seed 0] [--part dlm dgemma]``.
"""

from __future__ import annotations

import argparse
import platform

import pandas as pd
import torch

from interp.checkpoints import load_checkpoint
from interp.reports.dlm import dlm_sections


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--part", nargs="+", choices=("dlm", "dgemma"), default=["dlm", "dgemma"])
    args = ap.parse_args()
    torch.set_num_threads(2)
    print(
        f"# DLM phenomena, n={args.n} held-out problems per sampler, seed {args.seed}, torch {torch.__version__}, "
        f"{platform.machine()}"
    )
    if "dgemma" in args.part:
        for name in ("dgemma-addition3", "dgemma-shakespeare"):
            dgemma_part(name, args.n, args.seed)
    if "dlm" not in args.part:
        return
    for mode in ("continuous", "topk", "none"):
        _, numbers = dlm_sections(load_checkpoint(f"checkpoints/dlm-addition3-{mode}"), n=args.n, seed=args.seed)
        print(f"\n## dlm-addition3-{mode}")
        print(
            f"{'sampler':28s} {'exact':>6s} {'spearman':>9s} {'n_valid':>7s} {'backtrk':>8s} {'revis/s':>8s} "
            f"{'excess_early [95% CI]':>32s} {'coinc':>6s} {'drafts':>7s} {'chg_draft [95% CI]':>22s} "
            f"{'chg_ctrl [95% CI]':>22s}"
        )
        ic = {r["sampler"]: r for r in numbers["intermediate_context"]}
        for rev, sm in zip(numbers["revisions"], numbers["smearing"], strict=True):
            d = ic.get(rev["sampler"], {})
            excess = (
                f"{sm['neighbour_excess_first']:.2e} [{sm['neighbour_excess_first_lo']:.1e}, "
                f"{sm['neighbour_excess_first_hi']:.1e}]"
            )
            print(
                f"{rev['sampler']:28s} {rev['exact_match']:6.3f} {rev['mean_spearman']:9.3f} {rev['n_valid']:7d} "
                f"{rev['backtrack_rate']:8.3f} {rev['revisions_per_sample']:8.3f} {excess:>32s} "
                f"{sm['coincident_neighbours']:6.3f} {d.get('with_drafts', float('nan')):7} "
                f"{_rate(d, 'drafts'):>22s} {_rate(d, 'control'):>22s}"
            )
        print(
            f"logit lens, p(final token) by layer at the first step: {numbers['logit_lens']['final_token_prob_by_layer_first_step']}"
        )


def dgemma_part(name: str, n: int, seed: int) -> None:
    from interp.reports.diffusion_gemma import diffusion_gemma_sections

    method = load_checkpoint(f"checkpoints/{name}")
    _, numbers = diffusion_gemma_sections(method, n=n, seed=seed)
    prompt_note = "held-out problems" if method.has_answers else "openings of held-out text"
    print(f"\n## {name} ({n} {prompt_note}; answer {method.answer_len_for(len(method.heldout(1, seed)[0][0]))} "
          f"tokens in canvases of {method.canvas_length})")  # fmt: skip
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        rev = pd.DataFrame(numbers["revisions"])
        cols = [c for c in ("sampler", "exact_match", "mean_spearman", "n_valid", "spearman_in_block",
                            "spearman_in_block_lo", "spearman_in_block_hi", "n_blocks", "backtrack_rate",
                            "revisions_per_sample") if c in rev]  # fmt: skip
        print("\n### decode order and revisions\n" + rev[cols].to_string(index=False))
        sm = pd.DataFrame(numbers["smearing"])
        cols = ["sampler", "neighbour_first", "baseline_first", "neighbour_excess_first", "neighbour_excess_first_lo",
                "neighbour_excess_first_hi", "neighbour_excess_last", "neighbour_excess_last_lo",
                "neighbour_excess_last_hi", "coincident_neighbours"]  # fmt: skip
        print(
            "\n### smearing (mass on the neighbour's final token above the d >= 2 baseline)\n"
            + sm[cols].to_string(index=False)
        )
        ic = pd.DataFrame(numbers["intermediate_context"])
        cols = ["sampler", "n_samples", "with_drafts", "n_compared", "drafts_per_sample", "change_rate_drafts",
                "change_rate_drafts_lo", "change_rate_drafts_hi", "change_rate_control", "change_rate_control_lo",
                "change_rate_control_hi", "tokens_changed_drafts", "tokens_changed_control"]  # fmt: skip
        print("\n### drafts undone (renoised) vs matched control\n" + ic[cols].to_string(index=False))
        print(
            "\n### per denoising step of a canvas (first sampler)\n"
            + pd.DataFrame(numbers["steps"]).to_string(index=False)
        )
        print(
            "\n### token bottleneck on the carried logits\n"
            + pd.DataFrame(numbers["bottleneck"]).to_string(index=False)
        )
        lens = numbers["logit_lens"]
        print(
            "\nlogit lens, p(final token of the step's canvas) by layer: first step "
            f"{lens['final_token_prob_by_layer_first_step']}, last step {lens['final_token_prob_by_layer_last_step']}"
        )
        if numbers["known_words_heldout"] is not None:
            print(
                f"known_words of the held-out continuations of the same openings: {numbers['known_words_heldout']:.4f}"
            )


def _rate(row: dict, which: str) -> str:
    """``0.000 [0.000, 0.215]`` from the intermediate-context summary, or ``-`` where not measured."""
    rate = row.get(f"change_rate_{which}")
    if rate is None or rate != rate:
        return "-"
    return f"{rate:.3f} [{row.get(f'change_rate_{which}_lo', float('nan')):.3f}, {row.get(f'change_rate_{which}_hi', float('nan')):.3f}]"


if __name__ == "__main__":
    main()
