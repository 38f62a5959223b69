"""Opaque serial depth of DiffusionGemma generation against autoregressive Gemma 4, at the published sizes,
counted on meta tensors (no weights, no memory): ``interp.analyses.serial_depth.diffusion_gemma_depth``
(encoder over the prompt into the KV cache, then S denoising steps of the decoder over one canvas, each as
``DiffusionGemmaSampler`` runs it, with the continuous self-conditioning carry or the top-k bottleneck) over
``ar_generation_depth`` (Gemma 4's text model generating the same number of tokens with a KV cache).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/diffusiongemma_depth.py [--steps 8 16 32 64] [--tiny]

Each configuration runs in a fresh process, so its time and peak RSS are its own.

The configurations are *reconstructed*, not read from the hub (this machine has no network): no
config.json of google/gemma-4-26B-A4B-it or google/diffusiongemma-26B-A4B-it is installed. What is known
from transformers 5.x itself: DiffusionGemma's checkpoint name (26B-A4B), its canvas of 256 tokens
(``DiffusionGemmaConfig.canvas_length``), 48 denoising steps, entropy bound 0.1 and the temperature schedule
0.8 → 0.4 (its generation config defaults), the text config's vocabulary (262,144), head size 256, 512 on
full-attention layers, the 5:1 sliding/full pattern, and that its encoder and decoder each have the text
config's layers. Everything marked ASSUMED below is our recollection of the Gemma 4 26B-A4B model card; depth
grows with the layer count linearly and with widths only logarithmically (⌈log₂ n⌉ per matmul, softmax,
norm), so a wrong width moves the numbers a little and the ratios less; a wrong layer count moves both
models alike.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import platform
import resource
import sys
import time
from datetime import UTC, datetime

# Gemma 4 26B-A4B text model (the AR twin; DiffusionGemma's encoder and decoder use the same text config)
GEMMA4_26B_A4B_TEXT = {
    "vocab_size": 262_144,  # transformers default for Gemma 4 / DiffusionGemma text configs
    "hidden_size": 2816,  # ASSUMED
    "intermediate_size": 2112,  # ASSUMED (the dense MLP beside the experts)
    "num_hidden_layers": 30,  # ASSUMED
    "num_attention_heads": 16,  # ASSUMED
    "num_key_value_heads": 8,  # ASSUMED
    "head_dim": 256,  # transformers default
    "global_head_dim": 512,  # transformers default (full-attention layers)
    "num_global_key_value_heads": 2,  # transformers' EP-plan comment for gemma-4-26B-A4B-it says 2
    "attention_k_eq_v": True,  # ASSUMED
    "num_experts": 128,  # ASSUMED
    "top_k_experts": 8,  # ASSUMED
    "moe_intermediate_size": 704,  # ASSUMED
    "enable_moe_block": True,  # Gemma 4 only; "A4B": experts active
    "sliding_window": 1024,  # ASSUMED
    "max_position_embeddings": 262_144,  # ASSUMED
    "final_logit_softcapping": 30.0,  # transformers default
    "hidden_size_per_layer_input": 0,  # ASSUMED: per-layer embeddings are the E2B/E4B models'
}
CANVAS = 256  # DiffusionGemmaConfig.canvas_length default
PROMPT = 256  # ASSUMED: prompt length of the comparison (it changes ⌈log₂ keys⌉ only)
TOP_K = 8  # ASSUMED: the bottleneck's k (the paper's is not in transformers)
STEPS = (8, 16, 32, 64)
DEFAULT_STEPS = 48  # DiffusionGemma's generation config: max_denoising_steps


def configs(tiny: bool):
    import transformers

    from interp.methods.diffusion_gemma import TINY_VISION_CONFIG, gemma_layer_types

    text = dict(GEMMA4_26B_A4B_TEXT)
    if tiny:  # the test suite's 2-layer shape: a quick check of the script itself
        text.update(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                    num_key_value_heads=1, head_dim=16, global_head_dim=16, num_global_key_value_heads=None,
                    num_experts=4, top_k_experts=2, moe_intermediate_size=16, sliding_window=8)  # fmt: skip
    layers = text["num_hidden_layers"]
    text["layer_types"] = gemma_layer_types(layers)
    # Gemma 4-only fields stay out of the DiffusionGemma text config (which always has experts)
    dg_text = {
        k: v
        for k, v in text.items()
        if k not in ("enable_moe_block", "hidden_size_per_layer_input", "attention_k_eq_v")
    }
    ar = transformers.Gemma4TextConfig(**text)
    dg = transformers.DiffusionGemmaConfig(
        text_config=dg_text,
        vision_config=dict(TINY_VISION_CONFIG),
        canvas_length=8 if tiny else CANVAS,
    )  # fmt: skip  (the vision tower is not run: text-only generation)
    return ar, dg


def job(what: str, steps: int, tiny: bool) -> dict:
    import torch

    torch.set_num_threads(1)
    from interp.analyses.serial_depth import ar_generation_depth, diffusion_gemma_depth

    ar, dg = configs(tiny)
    prompt = 5 if tiny else PROMPT
    start = time.perf_counter()
    if what == "ar":
        r = ar_generation_depth(ar, prompt, dg.canvas_length)
    else:
        r = diffusion_gemma_depth(dg, prompt, steps, bottleneck=what, k=TOP_K)
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    chain = r.breakdown(("module",)).head(3)
    return {
        "what": what,
        "steps": steps,
        "serial": r.serial_depth,
        "opaque": r.opaque_serial_depth,
        "ops": r.n_ops,
        "seconds": seconds,
        "rss_gib": rss,
        "params": r.meta["n_params"],
        "top": ", ".join(f"{m or '-'} {d}" for m, d in zip(chain["module"], chain["depth"], strict=True)),
    }


def run(what: str, steps: int, tiny: bool) -> dict:
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(job, what, steps, tiny).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=list(STEPS))
    parser.add_argument("--tiny", action="store_true", help="The tests' 2-layer shape instead of the real sizes.")
    args = parser.parse_args()
    import torch
    import transformers

    print(f"$ OMP_NUM_THREADS=1 {' '.join(['python', *sys.argv])}")
    print(f"date {datetime.now(UTC).isoformat(timespec='seconds')}; machine {platform.machine()} "
          f"{platform.processor() or ''} {platform.system()} {platform.release()}; python {platform.python_version()}; "
          f"torch {torch.__version__}; transformers {transformers.__version__}")  # fmt: skip
    ar_cfg, dg_cfg = configs(args.tiny)
    print(f"configs ({'tiny' if args.tiny else 'published sizes, reconstructed: see the docstring'}): "
          f"{ar_cfg.num_hidden_layers} layers, d={ar_cfg.hidden_size}, V={ar_cfg.vocab_size}, "
          f"{ar_cfg.num_experts} experts top-{ar_cfg.top_k_experts}; canvas C={dg_cfg.canvas_length}, prompt "
          f"{5 if args.tiny else PROMPT}; bottleneck top-{TOP_K}; opaque rule cut='sampled'")  # fmt: skip
    print()
    rows = [run("ar", 0, args.tiny)]
    for steps in args.steps:
        for what in ("none", "topk"):
            rows.append(run(what, steps, args.tiny))
    header = f"{'model':34s} {'S':>3s} {'serial':>8s} {'opaque':>7s} {'ratio':>7s} {'ops':>8s} {'params':>7s} {'time s':>7s} {'RSS GiB':>8s}"
    print(header)
    print("-" * len(header))
    base = rows[0]["opaque"]
    names = {
        "ar": "Gemma 4 AR, KV cache",
        "none": "DiffusionGemma, continuous carry",
        "topk": f"DiffusionGemma, top-{TOP_K}",
    }
    for r in rows:
        print(f"{names[r['what']]:34s} {r['steps'] or '-':>3} {r['serial']:8d} {r['opaque']:7d} "
              f"{r['opaque'] / base:6.2f}x {r['ops']:8d} {r['params'] / 1e9:6.2f}B {r['seconds']:7.1f} {r['rss_gib']:8.2f}")  # fmt: skip
    print()
    print("where the longest opaque chain spends its depth (top modules):")
    for r in rows:
        print(f"  {names[r['what']]} S={r['steps'] or '-'}: {r['top']}")
    cont = [(r["steps"], r["opaque"] / base) for r in rows if r["what"] == "none"]
    topk = [(r["steps"], r["opaque"] / base) for r in rows if r["what"] == "topk"]
    if len(cont) >= 2:
        (s0, r0), (s1, r1) = cont[0], cont[-1]
        slope = (r1 - r0) / (s1 - s0)
        at = s0 + (28.6 - r0) / slope
        print()
        print(f"continuous carry: ratio ≈ {r0 - slope * s0:.2f} + {slope:.3f}·S (fit over S = {s0}..{s1}); "
              f"28.6× falls at S ≈ {at:.1f} steps per canvas; at DiffusionGemma's default {DEFAULT_STEPS} steps "
              f"the ratio is ≈ {r0 + slope * (DEFAULT_STEPS - s0):.1f}×")  # fmt: skip
        print(f"top-{TOP_K} bottleneck: ratio {min(r for _, r in topk):.2f}–{max(r for _, r in topk):.2f}× at every S "
              "(1.1× is the paper's)")  # fmt: skip


if __name__ == "__main__":
    main()
