"""Wall-time overhead of the shared trainer (accelerate, logging, LR schedule, progress plumbing)
against a bare PyTorch loop doing the same optimisation on the same model and data.

Both loops use the method's own ``prepare``/``loss``, AdamW, the same LR schedule and gradient
clipping; the bare loop has no accelerate, no logging, no checkpoints. Interleaved repetitions,
median ratio. Run: ``python benchmarks/trainer_overhead.py [--steps 200] [--reps 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from interp.methods import DiffusionLM, DLMConfig
from interp.train import TrainConfig, _param_groups, step_generator, train


def bare_loop(method: DiffusionLM, cfg: TrainConfig) -> float:
    data = method.collate(method.train_dataset(cfg.seed)[:])
    n = len(data["input_ids"])
    groups, _ = _param_groups(method.model, cfg.weight_decay)
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99))
    method.model.train()
    start = time.perf_counter()
    for step in range(cfg.steps):
        gen = step_generator(cfg.seed, step)
        idx = torch.randint(n, (cfg.batch_size,), generator=gen)
        prepared = method.prepare({k: v[idx] for k, v in data.items()}, gen)
        for g in opt.param_groups:
            g["lr"] = cfg.lr_at(step)
        loss = method.loss(method.model, prepared).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(method.model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def ours(method: DiffusionLM, cfg: TrainConfig) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        method.collate(method.train_dataset(cfg.seed)[:])  # same data build cost excluded from both
        start = time.perf_counter()
        result = train(method, f"{tmp}/ck", cfg, progress=False)
        elapsed = time.perf_counter() - start
        # the final checkpoint write is part of ours; report it separately
        return elapsed, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(steps=args.steps, batch_size=128, ckpt_every=0, log_every=25, seed=0)
    model_cfg = DLMConfig(selfcond="continuous", train_size=20_000)
    bare_t, ours_t = [], []
    for _ in range(args.reps):
        torch.manual_seed(0)
        bare_t.append(bare_loop(DiffusionLM(model_cfg), cfg))
        torch.manual_seed(0)
        ours_t.append(ours(DiffusionLM(model_cfg), cfg)[0])
    b, o = statistics.median(bare_t), statistics.median(ours_t)
    print(
        f"# trainer overhead: DLM d_model {model_cfg.d_model}, {model_cfg.n_layers} layers, continuous selfcond, "
        f"batch {cfg.batch_size}, {cfg.steps} steps, {args.threads} threads, torch {torch.__version__}, median of {args.reps}"
    )
    print(f"bare PyTorch loop   {b:7.2f} s  ({cfg.steps / b:6.1f} steps/s)")
    print(
        f"interp.train        {o:7.2f} s  ({cfg.steps / o:6.1f} steps/s; includes accelerate set-up and one checkpoint write)"
    )
    print(f"overhead            {100 * (o / b - 1):+6.1f} %   (target <= 5 %)")


if __name__ == "__main__":
    main()
