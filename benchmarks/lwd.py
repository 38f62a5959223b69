"""LWD on scikit-learn digits: synchronous, SFD(0.3) and learned schedules over (pixels, semantic), each
trained over several seeds at the full and at half the training budget, plus the learned schedule without
its correction term (interp.methods.lwd, interp.analyses.schedule_ordering).

Prints, as measured:
1. sample quality per schedule and budget: FD in feature-net space, FD above the real-vs-real floor,
   precision, recall (unconditional models) and classifier accuracy (class-conditional models), mean ± sd;
2. the learned schedules: φ_k at τ = 0.25 / 0.5 / 0.75, numerical monotonicity / convexity checks on a grid
   of 2001 points, the probe's share of training time (measured seconds of the schedule updates over all
   training seconds), with and without the correction term;
3. what is decided when: per schedule the global time τ at which each space's clean estimate first shows
   the final sample's class for 90% of 200 samples (schedule-ordering analysis).

Models are trained (or resumed, or loaded when finished) under ``--runs``; ``--jobs 2`` trains two at a
time, one thread each. Run: ``python benchmarks/lwd.py [--seeds 0 1 2] [--steps 2000] [--n 1000] [--jobs 2]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import torch
from tables import pm

SCHEDULES = ("sync", "sfd", "learned")


def run_one(job: dict) -> dict:
    """Train (or load) one model and measure it; runs in a worker process with one thread."""
    torch.set_num_threads(1)
    from interp.analyses.schedule_ordering import schedule_ordering
    from interp.checkpoints import load_checkpoint
    from interp.evaluation import evaluate_images
    from interp.methods.lwd import LWD, LWDConfig, derive_config
    from interp.processes.schedules import check_schedule
    from interp.samplers.spaces import SpacesSamplerConfig
    from interp.train import TrainConfig, seed_everything, train

    out = Path(job["out"])
    config = derive_config({"schedule": job["schedule"], "correction": job["correction"],
                            "class_conditional": job["conditional"]})  # fmt: skip
    started = time.perf_counter()
    header = out / "config.json"
    if not (header.is_file() and json.loads(header.read_text())["meta"].get("step") == job["steps"]):
        seed_everything(job["seed"])
        method = LWD(LWDConfig(**config))
        cfg = TrainConfig(steps=job["steps"], batch_size=128, lr=2e-3, seed=job["seed"], ckpt_every=500)
        train(method, out, cfg, progress=False, meta={"benchmark": "lwd"})
    train_s = time.perf_counter() - started
    method = load_checkpoint(out)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in metrics if "loss" in r][-1]
    sampler = SpacesSamplerConfig(name="tau-euler", steps=job["sample_steps"])
    q = evaluate_images(method, job["n"], sampler, job["seed"])
    order = schedule_ordering(method, n=200, sampler=sampler, seed=job["seed"])
    checks = check_schedule(method.schedule)
    with torch.no_grad():
        phi = method.schedule.clocks(torch.tensor([0.25, 0.5, 0.75]))
    row = {k: v for k, v in job.items() if k not in ("out",)}
    row.update(
        fd=q.fd, floor=q.fd_floor, precision=q.precision, recall=q.recall, accuracy=q.accuracy,
        probe_time=last.get("time/schedule", 0.0), model_time=last.get("time/model", 0.0), train_s=train_s,
        monotone=all(checks["monotone"]), convex=checks["convex"], concave=checks["concave"],
    )  # fmt: skip
    for k, name in enumerate(method.names):
        for i, tau in enumerate((0.25, 0.5, 0.75)):
            row[f"phi_{name}@{tau}"] = float(phi[i, k])
        row[f"decided_{name}"] = order.decided()[name]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=2000, help="the full training budget (half: steps // 2)")
    ap.add_argument("--n", type=int, default=1000, help="samples per model for FD / precision / recall")
    ap.add_argument("--sample-steps", type=int, default=50)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--runs", type=Path, default=Path("benchmarks/runs/lwd"))
    args = ap.parse_args()

    jobs = []
    for seed in args.seeds:
        for schedule in SCHEDULES:
            for steps, budget in ((args.steps, "full"), (args.steps // 2, "half")):
                jobs.append({"schedule": schedule, "correction": True, "conditional": False, "budget": budget,
                             "steps": steps, "seed": seed})  # fmt: skip
            jobs.append({"schedule": schedule, "correction": True, "conditional": True, "budget": "full",
                         "steps": args.steps, "seed": seed})  # fmt: skip
        jobs.append({"schedule": "learned", "correction": False, "conditional": False, "budget": "full",
                     "steps": args.steps, "seed": seed})  # fmt: skip
    for job in jobs:
        name = f"{job['schedule']}{'' if job['correction'] else '-nocorr'}{'-cond' if job['conditional'] else ''}"
        job.update(
            n=args.n, sample_steps=args.sample_steps, out=str(args.runs / f"{name}-{job['steps']}-s{job['seed']}")
        )

    print("$ OMP_NUM_THREADS=1 python benchmarks/lwd.py " + " ".join(sys.argv[1:]))
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# LWD on digits 8x8 (pixels 16x4 + semantic 1x8 tokens, DiT width 64 depth 4), {len(jobs)} models, "
          f"seeds {args.seeds}, full budget {args.steps} steps (half {args.steps // 2}), batch 128, {args.n} samples x "
          f"{args.sample_steps} tau-euler steps per model")  # fmt: skip
    print(f"# machine: {platform.platform()}; torch {torch.__version__}; {args.jobs} jobs x 1 thread; "
          f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; git {head}")  # fmt: skip
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(run_one, jobs))
    df = pd.DataFrame(rows)
    df["fd_above_floor"] = df.fd - df.floor
    df["variant"] = df.schedule + df.correction.map({True: "", False: " (no correction)"})

    print("\n## 1. Sample quality (mean ± sd over seeds)")
    print(f"{'variant':26s} {'cond':5s} {'budget':6s} {'FD':>16s} {'FD - floor':>16s} {'precision':>16s} "
          f"{'recall':>16s} {'accuracy':>16s}")  # fmt: skip
    for (variant, cond, budget), g in df.groupby(["variant", "conditional", "budget"], sort=False):
        print(f"{variant:26s} {cond!s:5s} {budget:6s} {pm(g.fd, 2):>16s} {pm(g.fd_above_floor, 2):>16s} "
              f"{pm(g.precision):>16s} {pm(g.recall):>16s} {pm(g.accuracy):>16s}")  # fmt: skip

    print("\n## 2. Learned schedules (per seed): φ at τ = 0.25 / 0.5 / 0.75, checks on 2001 points, probe time share")
    for r in df[df.schedule == "learned"].to_dict("records"):
        phis = "  ".join(name + " " + "/".join(f"{r[f'phi_{name}@{tau}']:.3f}" for tau in (0.25, 0.5, 0.75))
                         for name in ("pixels", "semantic"))  # fmt: skip
        total = r["probe_time"] + r["model_time"]
        print(f"{r['variant']:26s} cond={r['conditional']!s:5s} {r['budget']:4s} seed {r['seed']}: {phis}; "
              f"monotone {r['monotone']}, convex {r['convex']}, concave {r['concave']}; probe {r['probe_time']:.2f} s "
              f"of {total:.1f} s = {100 * r['probe_time'] / total:.2f}%")  # fmt: skip

    print(
        "\n## 3. What is decided when: τ from which each space's estimate shows the final class (≥ 90 % of its final agreement, 200 samples)"
    )
    for (variant, cond, budget), g in df.groupby(["variant", "conditional", "budget"], sort=False):
        print(f"{variant:26s} {cond!s:5s} {budget:6s} pixels {pm(g.decided_pixels)}  semantic {pm(g.decided_semantic)}")
    print(f"\n# total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
