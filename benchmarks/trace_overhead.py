"""Cost of recording a whole sampling trajectory, and memory under a RAM budget.

Same model, input and seed, timed interleaved in one process (noisy machine: ratios matter):
``plain`` sampling; ``interp`` trace capturing every block output at every step;
``nnsight`` ``tracer.iter`` capturing the same; ``run_with_cache`` called once per step (LM only).
Workloads: a diffusion LM (d_model 256, 6 layers, 8 x 64 tokens, 64 MDLM steps) and a randomly
initialised diffusers ``UNet2DModel`` (32 x 32, channels (32, 64, 64), attention in the two deeper
levels, batch 4, 50 DDPM steps). Target: interp ≤ 1.10 x plain.

Memory: in a fresh process, a trace of every block output with a RAM budget smaller than the
trace; peak RSS growth over the process's peak before tracing, against budget + model size.

Run: ``python benchmarks/trace_overhead.py [--reps 3] [--skip-memory]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time

import torch

from interp.hooks import attach
from interp.hooks.nnsight_backend import nnsight_trace

LM_STEPS, UNET_STEPS = 64, 50


def build_lm():
    from interp.methods import DiffusionLM, DLMConfig

    torch.manual_seed(0)
    cfg = DLMConfig(task="shakespeare", seq_len=64, d_model=256, n_layers=6, n_heads=8, d_mlp=1024, selfcond="none")
    lm = DiffusionLM(cfg)
    lm.model.eval()
    prompts = ["To be, o", "Now is t", "Friends,", "All the ", "O Romeo,", "Shall I ", "The quali", "Once mor"]
    ids = lm.encode_prompts([p[:8] for p in prompts])
    return lm, ids


def lm_run(lm, ids):
    from interp.samplers import SamplerConfig, sample_steps

    return lambda: sample_steps(lm, ids, SamplerConfig(name="mdlm", steps=LM_STEPS), torch.Generator().manual_seed(0))


def lm_run_with_cache(lm, ids):
    """The sampler with each step's forward replaced by TransformerLens ``run_with_cache``."""
    from interp.methods import DiffusionLM

    caches = []

    class Cached:
        def __getattr__(self, name):
            return getattr(lm, name)

        def predict(self, canvas, t, carried, model=None):
            logits, cache = lm.model.run_with_cache(canvas, names_filter=lambda n: n.endswith("hook_resid_post"))
            caches.append(cache)
            return DiffusionLM.suppress_specials(logits)

    proxy = Cached()
    from interp.samplers import SamplerConfig, sample_steps

    return lambda: sample_steps(
        proxy, ids, SamplerConfig(name="mdlm", steps=LM_STEPS), torch.Generator().manual_seed(0)
    )


def build_unet():
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=32,
        in_channels=1,
        out_channels=1,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=2,
        norm_num_groups=8,
        attention_head_dim=16,
    ).eval()


def unet_run(unet):
    from diffusers import DDPMScheduler

    def run():
        sched = DDPMScheduler(num_train_timesteps=1000)
        sched.set_timesteps(UNET_STEPS)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(4, 1, 32, 32, generator=g)
        with torch.no_grad():
            for t in sched.timesteps:
                eps = unet(x, t, return_dict=False)[0]
                x = sched.step(eps, t, x, generator=g).prev_sample
                yield {"t": int(t)}

    return run


def timed(fn) -> float:
    gc.collect()  # traces and caches of the previous candidate must not be alive (or cyclic garbage) now
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(title: str, candidates: dict, reps: int) -> None:
    for fn in candidates.values():
        timed(fn)  # warm-up
    times = {k: [] for k in candidates}
    for _ in range(reps):
        for name, fn in candidates.items():
            times[name].append(timed(fn))
    base = statistics.median(times["plain"])
    print(f"\n## {title} (median of {reps})")
    for name, ts in times.items():
        print(f"{name:16s} {statistics.median(ts):8.3f} s   x{statistics.median(ts) / base:5.2f}")


def _status_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process, in MB (Linux)."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":")) / 1024


def memory_probe(budget_mb: float) -> dict:
    """Runs in a fresh process (see main). The peak is reset after a plain sampling run (Linux
    ``clear_refs`` 5), so the growth is the trace's own, not hidden under an earlier peak (imports, the
    model build), as the process-lifetime ``ru_maxrss`` was."""
    lm, ids = build_lm()
    list(lm_run(lm, ids)())  # warm up: the allocator's pools of a plain sampling run
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset VmHWM to the current RSS
    before = _status_mb("VmRSS")
    budget = int(budget_mb * 2**20) if budget_mb >= 0 else None  # negative: no budget (the control)
    trace = attach(lm).trace(lm_run(lm, ids), capture="blocks.*.hook_resid_post", ram_budget=budget)
    after = _status_mb("VmHWM")
    size = sum(trace[n, s].numel() * 4 for n in trace.names for s in trace.step_indices(n)) / 2**20
    model_mb = sum(p.numel() * 4 for p in lm.model.parameters()) / 2**20
    trace.close()
    return {"trace_mb": size, "budget_mb": budget_mb, "model_mb": model_mb, "rss_growth_mb": after - before}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--memory-probe", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_probe is not None:
        print(json.dumps(memory_probe(args.memory_probe)))
        return
    print(f"# trace overhead, torch {torch.__version__}, {args.threads} threads")
    lm, ids = build_lm()
    inst = attach(lm)
    blocks = [f"blocks.{i}.hook_resid_post" for i in range(lm.model.cfg.n_layers)]
    with torch.no_grad():
        compare(
            f"diffusion LM d256 x 6 layers, batch 8 x 64, {LM_STEPS} steps",
            {
                "plain": lambda: list(lm_run(lm, ids)()),
                "interp trace": lambda: inst.trace(lm_run(lm, ids), capture=blocks),
                "nnsight iter": lambda: nnsight_trace(inst, lm_run(lm, ids), blocks, n_steps=LM_STEPS),
                "run_with_cache": lambda: list(lm_run_with_cache(lm, ids)()),
            },
            args.reps,
        )
    unet = build_unet()
    uinst = attach(unet)
    order = ["down_blocks.*", "mid_block", "up_blocks.*"]  # * within one segment: the blocks, not their modules
    unet_blocks = [n for p in order for n in uinst.resolve(p)]
    compare(
        f"diffusers UNet2DModel 32x32 (32,64,64), batch 4, {UNET_STEPS} steps",
        {
            "plain": lambda: list(unet_run(unet)()),
            "interp trace": lambda: uinst.trace(unet_run(unet), capture=unet_blocks),
            "nnsight iter": lambda: nnsight_trace(uinst, unet_run(unet), unet_blocks, n_steps=UNET_STEPS),
        },
        args.reps,
    )
    if not args.skip_memory:
        print("\n## memory (fresh process each; growth of peak RSS over the peak of a plain sampling run)")
        for budget in (16.0, -1.0):
            cmd = [sys.executable, __file__, "--memory-probe", str(budget), "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            m = json.loads(out.stdout.strip().splitlines()[-1])
            label = f"RAM budget {budget:.0f} MB" if budget >= 0 else "no budget (control)"
            target = (
                f"target <= budget + model = {budget + m['model_mb']:.1f} MB" if budget >= 0 else "expect ~ trace size"
            )
            print(
                f"trace of {m['trace_mb']:.1f} MB, {label}, model {m['model_mb']:.1f} MB: "
                f"peak RSS growth {m['rss_growth_mb']:.1f} MB ({target})"
            )


if __name__ == "__main__":
    main()
