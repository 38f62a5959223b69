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
            f"{'sampler':28s} {'exact':>6s} {'spearman':>9s} {'backtrk':>8s} {'revis/s':>8s} {'nb_early':>9s} "
            f"{'shuf_early':>10s} {'nb_late':>8s} {'shuf_late':>9s} {'drafts':>7s} {'chg_draft':>9s} {'chg_ctrl':>9s}"
        )
        ic = {r["sampler"]: r for r in numbers["intermediate_context"]}
        for rev, sm in zip(numbers["revisions"], numbers["smearing"], strict=True):
            d = ic.get(rev["sampler"], {})
            print(
                f"{rev['sampler']:28s} {rev['exact_match']:6.3f} {rev['mean_spearman']:9.3f} {rev['backtrack_rate']:8.3f} "
                f"{rev['revisions_per_sample']:8.3f} {sm['neighbour_first']:9.4f} {sm['baseline_first']:10.4f} "
                f"{sm['neighbour_last']:8.4f} {sm['baseline_last']:9.4f} {d.get('with_drafts', float('nan')):7} "
                f"{d.get('change_rate_drafts', float('nan')):9.3f} {d.get('change_rate_control', float('nan')):9.3f}"
            )
        print(
            f"logit lens, p(final token) by layer at the first step: {numbers['logit_lens']['final_token_prob_by_layer_first_step']}"
        )


if __name__ == "__main__":
    main()
