"""The time-agnostic study on scikit-learn digits: a DiT and a U-Net, each trained with and without its
timestep input, for flow matching and DDPM-ε, over several seeds (interp.studies.time_agnostic).

Prints, as measured:
1. per-t denoising MSE ratio blind / conditioned (x̂₀ error, held-out images, same noise draws),
   averaged over three noise bands, mean ± sd over seeds;
2. sample quality per process and sampler: FD (feature-net space), precision, recall, classifier
   accuracy, the FD ratio blind / conditioned per seed (mean ± sd), and each model's FD above the
   real-vs-real floor (a ratio of these is unstable when the conditioned model is near the floor);
3. noise-level probes (R², relative error) from the input and from each block, conditioned vs blind;
4. the Gaussian ML estimate of σ against image size (8×8 digits, MNIST-5k at 16×16 and 28×28) vs 1/√(2d).

Models are trained (or resumed, or loaded when finished) under ``--runs`` with the shared trainer: at the
defaults 12 DiTs (width 64, depth 4, patch 2; ~3 min each on one CPU thread) and 12 U-Nets (width 32,
3 levels; ~4.5 min each). A second run with the same arguments only loads them; ``--architectures dit``
and ``--architectures unet`` in two shells train on two cores. ``--report`` also writes the HTML report.

Run: ``python benchmarks/time_agnostic.py [--architectures dit unet] [--seeds 0 1 2] [--steps 2000] [--n 1000]
[--report reports/time_agnostic.html]``.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from interp.analyses.noise_probes import dimension_sweep, probe_input, probe_layers
from interp.analyses.quality import load_feature_net
from interp.data.images import image_tensors
from interp.evaluation import feature_net_dir
from interp.methods import ImageDiffusionConfig
from interp.processes.continuous import ContinuousProcess
from interp.studies.time_agnostic import band_ratios, denoising_mse, quality_table, study_samplers, train_pair
from interp.train import TrainConfig

# model sizes of the study: each trains in a few CPU minutes on 8x8 digits
ARCHITECTURES = {"dit": {"width": 64, "depth": 4, "patch_size": 2}, "unet": {"width": 32, "depth": 3}}


def pm(series: pd.Series) -> str:
    return f"{series.mean():.3f} ± {series.std():.3f}" if len(series) > 1 else f"{series.mean():.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--architectures", nargs="+", default=["dit", "unet"], choices=list(ARCHITECTURES))
    ap.add_argument("--processes", nargs="+", default=["flow", "ddpm"])
    ap.add_argument("--steps", type=int, default=2000, help="training steps per model")
    ap.add_argument("--n", type=int, default=1000, help="samples per (model, sampler)")
    ap.add_argument("--sample-steps", type=int, default=50)
    ap.add_argument("--probe-n", type=int, default=1000)
    ap.add_argument("--runs", type=Path, default=Path("benchmarks/runs/time_agnostic"))
    ap.add_argument("--report", type=Path, default=None, help="also write this HTML report")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    progress = not args.no_progress
    start = time.perf_counter()
    sizes = "; ".join(f"{a}: {ARCHITECTURES[a]}" for a in args.architectures)
    print(
        f"# time-agnostic study on digits 8x8 ({sizes}), {args.steps} training steps, seeds {args.seeds}, "
        f"{args.n} samples x {args.sample_steps} steps per sampler; torch {torch.__version__}, {platform.machine()}, "
        f"{torch.get_num_threads()} threads"
    )

    net = load_feature_net(feature_net_dir("digits"))
    mse_frames, quality_frames, pairs = [], [], {}
    for arch in args.architectures:
        for process in args.processes:
            for seed in args.seeds:
                cfg = ImageDiffusionConfig(
                    data="digits", process=process, architecture=arch, n_classes=10, **ARCHITECTURES[arch]
                )
                tcfg = TrainConfig(steps=args.steps, batch_size=128, lr=2e-3, warmup=100, seed=seed)
                pair = train_pair(cfg, tcfg, args.runs / f"{arch}-digits-{process}-s{seed}", progress=progress)
                pairs[arch, process, seed] = pair
                held, labels = pair["cond"].data("heldout")
                reference = pair["cond"].reference_images(seed)
                keys = {"model": arch, "process": process, "seed": seed}
                for variant, method in pair.items():
                    mse_frames.append(denoising_mse(method, held, labels, seed=seed).assign(variant=variant, **keys))
                samplers = study_samplers(process, args.sample_steps)
                q = quality_table(pair, net, held, reference, args.n, seed, samplers, progress=progress)
                quality_frames.append(q.assign(**keys))
    mse = pd.concat(mse_frames, ignore_index=True)
    quality = pd.concat(quality_frames, ignore_index=True)

    print("\n## 1. Per-t denoising MSE of x̂₀, blind / conditioned (mean ± sd over seeds)")
    bands = band_ratios(mse)
    print(f"{'model':6s} {'process':8s} {'band':11s} {'mse ratio':>16s}")
    for r in bands.itertuples():
        print(f"{r.model:6s} {r.process:8s} {r.band:11s} {r.ratio:8.3f} ± {r.ratio_sd:.3f}")

    print("\n## 2. Sample quality (FD in feature-net space; floor = held-out vs as many training images)")
    print(
        f"{'model':6s} {'process':8s} {'sampler':15s} {'FD cond':>15s} {'FD blind':>15s} {'FD ratio':>15s} "
        f"{'FD-floor c/b':>13s} {'prec c/b':>11s} {'recall c/b':>11s} {'acc c/b':>11s}"
    )
    for (arch, process, sampler), g in quality.groupby(["model", "process", "sampler"], sort=False):
        c = g[g["variant"] == "cond"].set_index("seed")
        b = g[g["variant"] == "blind"].set_index("seed")
        ratio = b["fd"] / c["fd"]
        print(
            f"{arch:6s} {process:8s} {sampler:15s} {pm(c['fd']):>15s} {pm(b['fd']):>15s} {pm(ratio):>15s} "
            f"{(c['fd'] - c['fd_floor']).mean():6.2f}/{(b['fd'] - b['fd_floor']).mean():6.2f} "
            f"{c['precision'].mean():5.3f}/{b['precision'].mean():5.3f} "
            f"{c['recall'].mean():5.3f}/{b['recall'].mean():5.3f} {c['accuracy'].mean():5.3f}/{b['accuracy'].mean():5.3f}"
        )
    print(f"FD floor (mean over seeds): {quality['fd_floor'].mean():.3f}")

    seed = args.seeds[0]
    print(f"\n## 3. Noise-level probes, seed {seed} (R² / mean relative error of t̂, t in [0.05, 0.95])")
    probe_rows = []
    for process in args.processes:
        first = pairs[args.architectures[0], process, seed]["cond"]
        train, _ = first.data("train")
        held, _ = first.data("heldout")
        rows = [
            dict(r, model="-", variant="input") for r in probe_input(train, held, first.process, args.probe_n, seed)
        ]
        for arch in args.architectures:
            for variant, method in pairs[arch, process, seed].items():
                rows += [
                    dict(r, model=arch, variant=variant)
                    for r in probe_layers(method, train, held, method.layer_sites, args.probe_n, seed)
                ]
        for r in rows:
            print(
                f"{r['model']:5s} {process:5s} {r['variant']:6s} {r['source']:26s} {r['probe']:12s} "
                f"R² {r['r2']:.3f}  rel.err {r['rel_error']:.3f}"
            )
        probe_rows += [dict(r, process=process) for r in rows]
    probes = pd.DataFrame(probe_rows)

    print("\n## 4. Gaussian ML noise estimate vs image size (flow process, t in [0.5, 0.95])")
    mnist, _ = image_tensors("mnist5k")
    digits, _ = image_tensors("digits")
    sweep = dimension_sweep(
        {"digits 8x8": digits, "mnist 16x16": F.interpolate(mnist, size=16, mode="area"), "mnist 28x28": mnist},
        ContinuousProcess("flow"),
        n=1000,
    )
    sweep["ratio"] = sweep["sigma_rel_error"] / sweep["prediction_1/sqrt(2d)"]
    print(sweep.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    print(f"\nwall time {time.perf_counter() - start:.0f} s")

    if args.report:
        from interp.reports import write_report
        from interp.reports.time_agnostic import mse_section, probe_section, quality_section, sweep_section

        path = write_report(
            args.report,
            "Time-agnostic denoisers on digits: conditioned vs blind " + " / ".join(args.architectures),
            [mse_section(mse), quality_section(quality), probe_section(probes), sweep_section(sweep)],
            vars(args),
        )
        print(f"report written: {path}")


if __name__ == "__main__":
    main()
