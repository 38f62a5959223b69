"""CrossFlow (one step, noisy latent → pixels) against latent flow matching + the autoencoder's decoder (A) on
scikit-learn digits, per seed: one autoencoder, A, and CrossFlow with the frozen encoder in three variants (full;
without the adversarial term; without the perceptual term) and with the encoder trained jointly (started from
the same autoencoder's weights) (interp.methods.crossflow / latent_flow).

Prints, as measured, mean ± sd over seeds:
1. FD / FD above the real-vs-real floor / precision / recall / class accuracy (in the feature space of the shipped
   ``feature-net-digits``) of CrossFlow at NFE = 1 and of A at 1, 4 and 20 Euler steps, with NFE per sample;
2. wall time per sample of each (same batch, same process, one thread), as a ratio to CrossFlow's;
3. decoder mode: PSNR of G(z, 0, y) and of the autoencoder's decoder on held-out latents, and the FD of A's
   generated latents (20 steps) decoded both ways.

The perceptual loss uses a feature net trained with another seed (``--perceptual-seed``), not the shipped one the
FD is measured in, so that no variant is trained on the metric's own features.

Run: ``python benchmarks/crossflow.py [--seeds 0 1 2] [--steps 2000] [--n 1000] [--out benchmarks/results/crossflow.txt]``;
models are trained (or resumed, or loaded when finished) under ``--runs``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from tables import pm

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"CrossFlow": {}, "CrossFlow, no adversarial": {"adv_weight": 0.0},
            "CrossFlow, no perceptual": {"perceptual_weight": 0.0},
            "CrossFlow, joint encoder": {"encoder": "joint"}}  # fmt: skip
A_STEPS = (1, 4, 20)


def fit(method, out: Path, args, steps: int, lr: float, seed: int):
    """Train ``method`` to ``steps`` under ``out`` (resumed if begun, loaded if finished)."""
    from interp.checkpoints import load_checkpoint
    from interp.train import TrainConfig, seed_everything, train

    header = out / "config.json"
    if header.is_file() and json.loads(header.read_text())["meta"].get("step") == steps:
        return load_checkpoint(out), 0.0
    seed_everything(seed)
    started = time.perf_counter()
    cfg = TrainConfig(steps=steps, batch_size=args.batch_size, lr=lr, seed=seed, log_every=50, ckpt_every=500)
    train(method, out, cfg, progress=False, meta={"benchmark": "crossflow", "seed": seed})
    return load_checkpoint(out), time.perf_counter() - started


def generate(method, sampler, n: int, seed: int) -> torch.Tensor:
    """Final images only: CrossFlow's one call; for A the latent steps and one decode (its step records would
    decode x and x̂₀ at every step, which a user generating images does not pay)."""
    from interp.methods.crossflow import CrossFlow
    from interp.samplers.image import sample_images

    if isinstance(method, CrossFlow):
        return method.sample(n, sampler, seed)[1][-1].x
    labels = torch.arange(n) % method.cfg.n_classes if method.cfg.n_classes else None
    shape = (n, *method.latent_shape())
    steps = sample_images(method.model, method.process, sampler, shape, torch.Generator().manual_seed(seed), labels)
    with torch.no_grad():
        return method.decode(list(steps)[-1].x)


def per_sample_seconds(method, sampler, n: int, seed: int, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        generate(method, sampler, n, seed)
        best = min(best, time.perf_counter() - started)
    return best / n


def run_seed(seed: int, args, perceptual: Path) -> tuple[list[dict], dict]:
    from interp.analyses.crossflow import decoded_quality, decoder_psnr
    from interp.evaluation import evaluate_images
    from interp.methods.autoencoder import AutoencoderMethod, AutoencoderMethodConfig
    from interp.methods.crossflow import CrossFlow, CrossFlowConfig
    from interp.methods.crossflow import derive_config as crossflow_fields
    from interp.methods.latent_flow import LatentFlow, LatentFlowConfig, evaluations_per_sample
    from interp.methods.latent_flow import derive_config as latent_flow_fields

    runs = Path(args.runs) / f"seed{seed}"
    sizes = {"width": args.width, "depth": args.depth, "n_heads": 4}
    torch.manual_seed(seed)
    fit(AutoencoderMethod(AutoencoderMethodConfig()), runs / "ae", args, args.ae_steps, 2e-3, seed)
    torch.manual_seed(seed)
    a_cfg = LatentFlowConfig(**latent_flow_fields({"autoencoder": str(runs / "ae"), **sizes}))
    baseline, a_time = fit(LatentFlow(a_cfg), runs / "a", args, args.steps, 2e-3, seed)
    models = {}
    train_time = {"A": a_time}
    for name, change in VARIANTS.items():
        torch.manual_seed(seed)
        fields = crossflow_fields({"autoencoder": str(runs / "ae"), "feature_net": str(perceptual), **sizes})
        out = runs / name.replace(", ", "-").replace(" ", "_")
        models[name], train_time[name] = fit(CrossFlow(CrossFlowConfig(**{**fields, **change})), out, args,
                                             args.steps, args.lr, seed)  # fmt: skip
    samplers = {name: (m, None) for name, m in models.items()}
    samplers.update({f"A, {s} steps": (baseline, baseline.default_sampler(s)) for s in A_STEPS})
    rows = []
    for name, (method, sampler) in samplers.items():
        q = evaluate_images(method, args.n, sampler, seed)
        rows.append({"seed": seed, "model": name, "nfe": evaluations_per_sample(method, sampler, seed),
                     "s_per_sample": per_sample_seconds(method, sampler, args.time_batch, seed),
                     "train_s": train_time.get(name.split(",")[0] if name.startswith("A") else name, float("nan")),
                     **q.to_dict()})  # fmt: skip
    decoder = {"seed": seed, **decoder_psnr(models["CrossFlow"], baseline)}
    for way, q in decoded_quality(models["CrossFlow"], baseline, args.n, seed).items():
        decoder[f"fd_{way}"], decoder["fd_floor"] = q.fd, q.fd_floor
    return rows, decoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=2000, help="Training steps of A and of each CrossFlow.")
    parser.add_argument("--ae-steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3, help="CrossFlow's learning rate (A: 2e-3).")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--n", type=int, default=1000, help="Samples per model for FD / precision / recall.")
    parser.add_argument("--time-batch", type=int, default=256, help="Batch for the wall time per sample.")
    parser.add_argument("--perceptual-seed", type=int, default=1)
    parser.add_argument("--runs", default=str(ROOT / "benchmarks" / "runs" / "crossflow"))
    parser.add_argument("--out", default=None, help="Also write the printed tables here.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    perceptual = Path(args.runs) / f"perceptual-net-seed{args.perceptual_seed}"
    if not (perceptual / "config.json").is_file():
        subprocess.run([sys.executable, "-m", "interp.cli", "train", "feature-net", "--data", "digits", "--seed",
                        str(args.perceptual_seed), "--out", str(perceptual)], check=True, cwd=ROOT)  # fmt: skip
    rows, decoders = [], []
    for seed in args.seeds:
        r, d = run_seed(seed, args, perceptual)
        rows += r
        decoders.append(d)
    frame, dec = pd.DataFrame(rows), pd.DataFrame(decoders)
    frame["fd_above_floor"] = frame.fd - frame.fd_floor
    mine = frame[frame.model == "CrossFlow"].set_index("seed").s_per_sample
    frame["time_ratio"] = frame.s_per_sample / frame.seed.map(mine)
    lines = [f"# benchmarks/crossflow.py {' '.join(sys.argv[1:])}",
             f"# {platform.platform()}, torch {torch.__version__}, 1 thread; seeds {args.seeds}; {args.steps} steps "
             f"(autoencoder {args.ae_steps}), batch {args.batch_size}, width {args.width}, depth {args.depth}; "
             f"n = {args.n} samples per model", "", "## Sample quality (mean ± sd over seeds)"]  # fmt: skip
    table = []
    for model, g in frame.groupby("model", sort=False):
        table.append({"model": model, "NFE": int(g.nfe.iloc[0]), "FD": pm(g.fd, 2), "FD - floor": pm(g.fd_above_floor, 2),
                      "precision": pm(g.precision), "recall": pm(g.recall), "accuracy": pm(g.accuracy),
                      "s / sample": pm(g.s_per_sample * 1e3, 4) + " ms", "time / CrossFlow": pm(g.time_ratio, 2)})  # fmt: skip
    lines += [pd.DataFrame(table).to_string(index=False), "", "## Decoder mode (CrossFlow G(z, 0, y) vs the decoder)"]
    lines.append(pd.DataFrame([{"PSNR G (dB)": pm(dec.psnr_crossflow, 2), "PSNR decoder (dB)": pm(dec.psnr_decoder, 2),
                                "FD of A's latents, G": pm(dec.fd_crossflow, 2), "FD, decoder": pm(dec.fd_decoder, 2),
                                "floor": pm(dec.fd_floor, 2)}]).to_string(index=False))  # fmt: skip
    lines += ["", "## Per seed", frame.round(4).to_string(index=False), dec.round(4).to_string(index=False), "",
              f"# total {time.perf_counter() - started:.0f} s"]  # fmt: skip
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
