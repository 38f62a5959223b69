"""DiffusionGemma-paper phenomena on the shipped 3-digit addition diffusion LMs, per sampler:
decode order (rank correlation of commit step with answer-digit position), backtrack rate,
neighbour smearing early vs late against the distance >= 2 baseline (coincident pairs left out, with a bootstrap interval), and the answer-change
rate when drafts are undone vs a control. Numbers are printed as measured; a behaviour that does
not appear at our scale shows as ~0 / NaN here and is said so in the report.

Run: ``python benchmarks/dlm_phenomena.py [--n 200] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import platform

import torch

from interp.checkpoints import load_checkpoint
from interp.reports.dlm import dlm_sections


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    print(
        f"# DLM phenomena, n={args.n} held-out problems per sampler, seed {args.seed}, torch {torch.__version__}, "
        f"{platform.machine()}"
    )
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


def _rate(row: dict, which: str) -> str:
    """``0.000 [0.000, 0.215]`` from the intermediate-context summary, or ``-`` where not measured."""
    rate = row.get(f"change_rate_{which}")
    if rate is None or rate != rate:
        return "-"
    return f"{rate:.3f} [{row.get(f'change_rate_{which}_lo', float('nan')):.3f}, {row.get(f'change_rate_{which}_hi', float('nan')):.3f}]"


if __name__ == "__main__":
    main()
