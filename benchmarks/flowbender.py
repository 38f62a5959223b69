"""FlowBender on scikit-learn digits (8×8) and the 2-D toy, over several seeds.

Per operator (SR×4, JPEG q10) and seed, three DiTs (width 64, depth 4, patch 2) are trained with the
shared trainer on the same batches: FlowBender (zero-order feedback, dropout 0.1), the plain conditional
baseline (no feedback) and the align baseline (no feedback, + 0.5·MSE residual at σ ≤ 0.2). All 180
held-out images are restored from their observations with 20 Euler steps by: FlowBender, FlowBender with
the prior-step shortcut at f = 1, each baseline, and the plain model with inference-time residual
guidance. Printed, as measured: PSNR, consistency residual RMS(A(x̂) − y), FD / floor / precision /
recall (feature-net space), evaluations per sample (counted by the samplers); FlowBender's residual
change and FD change against each baseline (the paper's target: residual −25% or better at FD no worse
than +5%); the shortcut's retention of the residual gain over the plain baseline,
(plain − shortcut)/(plain − FlowBender), at its evaluations; and the toy (correct-arc rate, distance to the
spiral, |residual| per method).

Models are trained (or resumed, or loaded when finished) under ``--runs``. Run:
``python benchmarks/flowbender.py [--operators sr4 jpeg10] [--seeds 0 1 2] [--steps 2000] [--out
benchmarks/results/flowbender.txt]``; ``--toy-only`` runs the toy part alone (~20 s per seed).
"""

from __future__ import annotations

import argparse
import io
import platform
import time
from contextlib import redirect_stdout
from pathlib import Path

import pandas as pd
import torch

from interp.analyses.conditional_quality import feature_net_for, restoration_quality
from interp.methods.flowbender import FlowBender, FlowBenderConfig, derive_config
from interp.samplers.flowbender import FlowBenderSamplerConfig
from interp.studies.flowbender_toy import ToyConfig, run_toy
from interp.train import TrainConfig, train

MODEL = {"width": 64, "depth": 4, "patch_size": 2}
VARIANTS = {  # name → config fields
    "flowbender": {"feedback": "zero", "baseline": "plain"},
    "plain": {"feedback": "none", "baseline": "plain"},
    "align": {"feedback": "none", "baseline": "align"},
}


def pm(series: pd.Series) -> str:
    return f"{series.mean():.4g} ± {series.std():.2g}" if len(series) > 1 else f"{series.mean():.4g}"


def trained(operator: str, variant: str, seed: int, args) -> FlowBender:
    fields = derive_config({"data": "digits", "operator": operator, **MODEL, **VARIANTS[variant]})
    torch.manual_seed(seed)
    method = FlowBender(FlowBenderConfig(**fields))
    cfg = TrainConfig(steps=args.steps, batch_size=128, lr=2e-3, seed=seed, ckpt_every=500, log_every=100)
    train(method, args.runs / f"{operator}-{variant}-s{seed}", cfg, progress=False)
    return method


def image_rows(operator: str, seed: int, args) -> list[dict]:
    models = {v: trained(operator, v, seed, args) for v in VARIANTS}
    images = models["plain"].data("heldout")[0]
    net = feature_net_for(models["plain"])
    steps = args.sample_steps
    runs = {
        "flowbender": (models["flowbender"], FlowBenderSamplerConfig(name="flowbender", steps=steps)),
        "flowbender shortcut": (
            models["flowbender"],
            FlowBenderSamplerConfig(name="flowbender", steps=steps, shortcut=1.0),
        ),
        "plain": (models["plain"], FlowBenderSamplerConfig(name="cond-euler", steps=steps)),
        "align": (models["align"], FlowBenderSamplerConfig(name="cond-euler", steps=steps)),
        "guidance": (
            models["plain"],
            FlowBenderSamplerConfig(name="residual-guidance", steps=steps, guidance_step=args.guidance_step),
        ),
    }
    rows = []
    for name, (method, cfg) in runs.items():
        scores, _ = restoration_quality(method, images, cfg, seed, net)
        rows.append({"operator": operator, "seed": seed, "method": name, **scores.to_dict()})
    return rows


def summarise(table: pd.DataFrame) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        cols = ["psnr", "residual", "fd", "fd_floor", "precision", "recall", "evaluations"]
        stats = table.groupby(["operator", "method"], sort=False)[cols].agg(pm)
        print("Restoration, mean ± sd over seeds (180 held-out digits):")
        print(stats.to_string())
        print()
        print("FlowBender against each baseline, per seed then mean ± sd (target: residual ≤ −25%, FD ≤ +5%):")
        rows, retention = [], []
        for (op, seed), g in table.groupby(["operator", "seed"], sort=False):
            m = g.set_index("method")
            fb, short = m.loc["flowbender"], m.loc["flowbender shortcut"]
            for base in ("plain", "align", "guidance"):
                b = m.loc[base]
                rows.append(
                    {
                        "operator": op,
                        "baseline": base,
                        "seed": seed,
                        "residual_change_%": 100 * (fb.residual / b.residual - 1),
                        "fd_change_%": 100 * (fb.fd / b.fd - 1),
                        "psnr_change_db": fb.psnr - b.psnr,
                        "shortcut_residual_change_%": 100 * (short.residual / b.residual - 1),
                    }
                )
            gain = m.loc["plain"].residual - fb.residual
            retention.append(
                {
                    "operator": op,
                    "seed": seed,
                    "retention_of_residual_gain": (m.loc["plain"].residual - short.residual) / gain
                    if gain
                    else float("nan"),
                    "evaluations_shortcut_over_flowbender": short.evaluations / fb.evaluations,
                }
            )
        deltas = pd.DataFrame(rows)
        value_cols = [c for c in deltas.columns if c not in ("operator", "baseline", "seed")]
        print(deltas.groupby(["operator", "baseline"], sort=False)[value_cols].agg(pm).to_string())
        print()
        print("Prior-step shortcut (f = 1): share of FlowBender's residual gain over plain kept (target ≥ 0.8):")
        kept = pd.DataFrame(retention)
        print(kept.groupby("operator", sort=False)[list(kept.columns[2:])].agg(pm).to_string())
    return out.getvalue()


def toy_summary(seeds: list[int]) -> str:
    frame = pd.concat([run_toy(ToyConfig(), seed=s).frame() for s in seeds], ignore_index=True)
    stats = frame.groupby("method", sort=False)[["correct_arc", "spiral_distance", "residual", "evaluations"]].agg(pm)
    return f"Toy (ToyConfig() defaults, seeds {seeds}), mean ± sd:\n{stats.to_string()}\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--operators", nargs="+", default=["sr4", "jpeg10"])
    ap.add_argument("--steps", type=int, default=2000, help="training steps per model")
    ap.add_argument("--sample-steps", type=int, default=20)
    ap.add_argument("--guidance-step", type=float, default=0.5)
    ap.add_argument("--runs", type=Path, default=Path("benchmarks/runs/flowbender"))
    ap.add_argument("--toy-only", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="also write the printed results here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    parts = [f"# benchmarks/flowbender.py {vars(args)}\n# {platform.platform()}, torch {torch.__version__}\n"]
    parts.append(toy_summary(args.seeds))
    print(parts[-1], flush=True)
    if not args.toy_only:
        rows = []
        for op in args.operators:
            for seed in args.seeds:
                rows += image_rows(op, seed, args)
                print(f"  {op} seed {seed} done at {time.perf_counter() - start:.0f} s", flush=True)
        parts.append(summarise(pd.DataFrame(rows)))
        print(parts[-1])
    parts.append(f"total {time.perf_counter() - start:.0f} s\n")
    print(parts[-1])
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(parts))


if __name__ == "__main__":
    main()
