"""Time and peak memory of counting serial depth on meta tensors, for real architectures from
their configs alone (no weights): SmolLM2-135M and a ~1B Llama-style model, at 8k and 32k tokens,
plus the headline opaque-depth ratios of the shipped diffusion LMs to the AR baseline.

Each config is counted in a fresh process (peak RSS is per process). Target: < 60 s and < 2 GB each.
Run: ``python benchmarks/serial_depth.py [--skip-configs] [--steps 4 8 16]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CONFIGS = {
    # SmolLM2-135M's published hyper-parameters
    "SmolLM2-135M": dict(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
    ),
    # Llama-3.2-1B-like
    "Llama-1B": dict(
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
    ),
}


def probe(name: str, seq_len: int) -> dict:
    from transformers import LlamaConfig

    from interp.analyses.serial_depth import hf_config_depth

    cfg = LlamaConfig(**CONFIGS[name], architectures=["LlamaForCausalLM"])
    start = time.perf_counter()
    r = hf_config_depth(cfg, seq_len)
    return {
        "config": name,
        "seq_len": seq_len,
        "seconds": time.perf_counter() - start,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "n_params": r.meta["n_params"],
        "serial_depth": r.serial_depth,
        "opaque_serial_depth": r.opaque_serial_depth,
        "n_ops": r.n_ops,
    }


def ratios(steps: list[int]) -> None:
    from interp.analyses.serial_depth import generation_depth
    from interp.checkpoints import load_checkpoint
    from interp.samplers import SamplerConfig

    ar = load_checkpoint("checkpoints/ar-addition3")
    prompt = ar.encode_prompts(["123+456="])
    base = generation_depth(ar, prompt, SamplerConfig(name="ar"))
    print(
        f"\n## opaque serial depth of whole generations (prompt 123+456=, 4 answer tokens); AR baseline "
        f"{base.opaque_serial_depth} (serial depth {base.serial_depth})"
    )
    print(f"{'model':28s} {'S':>3s} {'opaque':>7s} {'ratio':>7s} {'ratio/S':>8s}")
    for mode in ("continuous", "topk", "none"):
        dlm = load_checkpoint(f"checkpoints/dlm-addition3-{mode}")
        for S in steps:
            r = generation_depth(dlm, prompt, SamplerConfig(name="mdlm", steps=S))
            ratio = r.opaque_serial_depth / base.opaque_serial_depth
            print(f"dlm-addition3-{mode:14s} {S:3d} {r.opaque_serial_depth:7d} {ratio:7.3f} {ratio / S:8.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-configs", action="store_true")
    ap.add_argument("--steps", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--probe", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(probe(args.probe[0], int(args.probe[1]))))
        return
    print("# serial depth on meta tensors (fresh process per row), eager attention")
    if not args.skip_configs:
        print(
            f"{'config':14s} {'tokens':>7s} {'params':>8s} {'seconds':>8s} {'peak RSS MB':>12s} {'depth':>7s} {'ops':>6s}"
        )
        for name in CONFIGS:
            for seq_len in (8192, 32768):
                out = subprocess.run(
                    [sys.executable, __file__, "--probe", name, str(seq_len)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                m = json.loads(out.stdout.strip().splitlines()[-1])
                print(
                    f"{name:14s} {seq_len:7d} {m['n_params'] / 1e6:7.0f}M {m['seconds']:8.2f} {m['peak_rss_mb']:12.0f} "
                    f"{m['serial_depth']:7d} {m['n_ops']:6d}",
                    flush=True,
                )
    ratios(args.steps)


if __name__ == "__main__":
    main()
