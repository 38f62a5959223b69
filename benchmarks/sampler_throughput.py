"""Sampling throughput (answer tokens per second) of every sampler on the shipped checkpoints.

Batch of held-out 3-digit addition prompts; steps = one per answer token (4) and 16. Run:
``python benchmarks/sampler_throughput.py [--batch 256] [--reps 3] [--checkpoints checkpoints]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from interp.checkpoints import load_checkpoint
from interp.data import problems
from interp.samplers import SamplerConfig, run_to_end, sample_steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    runs = [("dlm-addition3-continuous", s, n) for s in ("mdlm", "llada", "entropy") for n in (None, 16)]
    runs += [("dlm-addition3-topk", "mdlm", None), ("dlm-addition3-none", "mdlm", None), ("ar-addition3", "ar", None)]
    print(
        f"# sampler throughput: batch {args.batch}, {args.threads} threads, torch {torch.__version__}, median of {args.reps}"
    )
    print(f"{'checkpoint':28s} {'sampler':8s} {'steps':>5s} {'tokens/s':>10s} {'ms/step':>8s}")
    for name, sampler, steps in runs:
        method = load_checkpoint(args.checkpoints / name)
        prompts = [p for p, _ in problems(method.cfg.task_config, "heldout", args.batch, 0)]
        ids = method.encode_prompts(prompts)
        cfg = SamplerConfig(name=sampler, steps=steps, block_length=2 if sampler == "llada" else 0)
        times = []
        for rep in range(args.reps + 1):
            start = time.perf_counter()
            _, record = run_to_end(sample_steps(method, ids, cfg, torch.Generator().manual_seed(rep)))
            if rep:  # first run is warm-up
                times.append(time.perf_counter() - start)
        t = statistics.median(times)
        answer_tokens = args.batch * method.cfg.task_config.answer_len
        print(f"{name:28s} {sampler:8s} {len(record):5d} {answer_tokens / t:10.0f} {1000 * t / len(record):8.2f}")


if __name__ == "__main__":
    main()
