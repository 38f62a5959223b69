"""Cost of recording a whole sampling trajectory, and memory under a RAM budget.

Same model, input and seed, timed interleaved in one process (noisy machine: ratios matter):
``plain`` sampling; ``interp`` trace capturing every block output at every step;
``nnsight`` ``tracer.iter`` capturing the same; ``run_with_cache`` called once per step (LM only).
Workloads: a diffusion LM (d_model 256, 6 layers, 8 x 64 tokens, 64 MDLM steps) and a randomly
initialised diffusers ``UNet2DModel`` (32 x 32, channels (32, 64, 64), attention in the two deeper
levels, batch 4, 50 DDPM steps); an SD3-style joint-attention ``SD3Transformer2DModel`` (6 blocks of width
128, 32 x 32 latent in 2 x 2 patches = 256 image tokens beside 77 text tokens, batch 2 with classifier-free
guidance, 28 flow-matching Euler steps) in a hand-written loop, and the same transformer inside diffusers'
``StableDiffusion3Pipeline`` (prompt embeddings given, latents out) under ``attach(pipe)``, one trace step
per ``scheduler.step``. Every block output is recorded (for the joint blocks both streams). Targets:
interp ≤ 1.10 x plain (LM, U-Net), ≤ 1.05 x plain (SD3 transformer and pipeline).

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

LM_STEPS, UNET_STEPS, SD3_STEPS = 64, 50, 28


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


def build_sd3():
    """A randomly initialised SD3-style transformer, its pipeline (no text encoders: embeddings are given; a
    one-level VAE that is never run), and the prompt embeddings ``[2, 77, 128]`` / pooled ``[2, 64]``."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=32, patch_size=2, in_channels=16, out_channels=16, num_layers=6, attention_head_dim=32,
        num_attention_heads=4, joint_attention_dim=128, caption_projection_dim=128, pooled_projection_dim=64,
        pos_embed_max_size=32,
    ).eval()  # fmt: skip
    vae = AutoencoderKL(latent_channels=16, block_out_channels=(8,), norm_num_groups=4)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=None,
        tokenizer=None, text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(0)
    prompt, pooled = torch.randn(2, 77, 128, generator=g), torch.randn(2, 64, generator=g)
    return transformer, pipe, prompt, pooled


def sd3_run(transformer, prompt, pooled):
    """The hand-written loop: CFG doubles the batch (unconditional rows: zero embeddings), scale 5."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    text = torch.cat([torch.zeros_like(prompt), prompt])
    pooled2 = torch.cat([torch.zeros_like(pooled), pooled])

    def run():
        sched = FlowMatchEulerDiscreteScheduler()
        sched.set_timesteps(SD3_STEPS)
        x = torch.randn(2, 16, 32, 32, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            for t in sched.timesteps:
                v = transformer(
                    hidden_states=torch.cat([x, x]), encoder_hidden_states=text, pooled_projections=pooled2,
                    timestep=t.expand(4), return_dict=False,
                )[0]  # fmt: skip
                uncond, cond = v.chunk(2)
                x = sched.step(uncond + 5.0 * (cond - uncond), t, x).prev_sample
                yield {"t": float(t)}

    return run


def sd3_pipe_call(pipe, prompt, pooled):
    return lambda: pipe(
        prompt_embeds=prompt, pooled_prompt_embeds=pooled, negative_prompt_embeds=torch.zeros_like(prompt),
        negative_pooled_prompt_embeds=torch.zeros_like(pooled), height=32, width=32, num_inference_steps=SD3_STEPS,
        guidance_scale=5.0, output_type="latent", generator=torch.Generator().manual_seed(0),
    )  # fmt: skip


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
    transformer, pipe, prompt, pooled = build_sd3()
    sinst = attach(transformer)
    streams = ["blocks.*.hook_resid_post", "blocks.*.hook_context_post"]  # both streams of every joint block
    title = f"SD3Transformer2DModel 6 x 128, 256 image + 77 text tokens, batch 2 x CFG, {SD3_STEPS} steps"
    compare(
        title,
        {
            "plain": lambda: list(sd3_run(transformer, prompt, pooled)()),
            "interp trace": lambda: sinst.trace(sd3_run(transformer, prompt, pooled), capture=streams),
            "nnsight iter": lambda: nnsight_trace(
                sinst, sd3_run(transformer, prompt, pooled), "transformer_blocks.*", n_steps=SD3_STEPS
            ),
        },
        args.reps,
    )
    sinst.detach()
    pinst = attach(pipe)
    call = sd3_pipe_call(pipe, prompt, pooled)
    compare(
        f"StableDiffusion3Pipeline around it, attach(pipe), {SD3_STEPS} steps",
        {"plain": call, "interp trace": lambda: pinst.trace(call, capture=streams)},
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
