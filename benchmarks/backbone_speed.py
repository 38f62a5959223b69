"""Sampling-speed cost of the hooked backbone against hookless plain-torch models of the same shapes.

Workload: d_model 256, 6 layers, batch 8 x 64 positions, 64 forward passes (one
masked-diffusion sampling run), no gradients. Candidates, timed interleaved in one process and
reported as ratios to the plain functional model (noisy machine: compare ratios, not seconds):

- ``plain``: the same weights run by a hookless functional forward (identical math, no HookPoints);
- ``nn.TransformerEncoder``: torch's own encoder layer (pre-LN, GELU) of the same shapes;
- ``interp``: :class:`interp.models.TokenTransformer` with its HookPoints, no hooks attached;
- ``tl-bridge``: TransformerLens ``TransformerBridge`` booted natively (``boot_native``), when it builds.

Run: ``python benchmarks/backbone_speed.py [--reps 7] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from interp.models import TokenTransformer, TransformerConfig

D, LAYERS, HEADS, BATCH, LEN, STEPS, VOCAB = 256, 6, 8, 8, 64, 64, 32


def plain_forward(m: TokenTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """TokenTransformer's math with no HookPoint calls."""
    B, L = tokens.shape
    H, Dh = m.cfg.n_heads, m.cfg.d_head
    x = m.W_E[tokens] + m.W_pos[:L]
    for blk in m.blocks:
        h = F.layer_norm(x, (D,), blk.ln1.weight, blk.ln1.bias)
        q, k, v = F.linear(h, blk.attn.qkv.weight, blk.attn.qkv.bias).view(B, L, 3, H, Dh).unbind(2)
        pattern = (torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(Dh)).softmax(-1)
        z = torch.einsum("bhqk,bkhd->bqhd", pattern, v).reshape(B, L, D)
        x = x + F.linear(z, blk.attn.out.weight, blk.attn.out.bias)
        h = F.layer_norm(x, (D,), blk.ln2.weight, blk.ln2.bias)
        x = x + F.linear(
            F.gelu(F.linear(h, blk.mlp.fc_in.weight, blk.mlp.fc_in.bias)), blk.mlp.fc_out.weight, blk.mlp.fc_out.bias
        )
    return F.linear(F.layer_norm(x, (D,), m.ln_final.weight, m.ln_final.bias), m.unembed.weight, m.unembed.bias)


class TorchEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, D)
        self.pos = nn.Parameter(torch.zeros(LEN, D))
        layer = nn.TransformerEncoderLayer(
            D, HEADS, 4 * D, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.enc = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.ln = nn.LayerNorm(D)
        self.out = nn.Linear(D, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.ln(self.enc(self.emb(tokens) + self.pos)))


def build_bridge():
    from transformer_lens.model_bridge.sources.native import boot

    cfg = {
        "d_model": D,
        "n_layers": LAYERS,
        "n_heads": HEADS,
        "d_head": D // HEADS,
        "d_mlp": 4 * D,
        "d_vocab": VOCAB,
        "n_ctx": LEN,
        "act_fn": "gelu",
        "normalization_type": "LN",
        "seed": 0,
    }
    return boot(cfg)


def sampling_run(fn, tokens: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(STEPS):
            fn(tokens)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = TokenTransformer(
        TransformerConfig(vocab_size=VOCAB, n_ctx=LEN, d_model=D, n_layers=LAYERS, n_heads=HEADS, d_mlp=4 * D)
    ).eval()
    tokens = torch.randint(0, VOCAB, (BATCH, LEN))
    candidates = {
        "plain": lambda x: plain_forward(model, x),
        "nn.TransformerEncoder": TorchEncoder().eval(),
        "interp": model,
    }
    try:
        bridge = build_bridge().eval()
        candidates["tl-bridge"] = lambda x: bridge(x, return_type="logits")
        candidates["tl-bridge"](tokens)
    except Exception as exc:
        candidates.pop("tl-bridge", None)
        print(f"tl-bridge: not measured ({type(exc).__name__}: {str(exc)[:120]})")
    assert torch.allclose(plain_forward(model, tokens), model(tokens), atol=1e-5), "plain and hooked models disagree"
    times: dict[str, list[float]] = {k: [] for k in candidates}
    for fn in candidates.values():  # warm-up
        sampling_run(fn, tokens)
    for _ in range(args.reps):
        for name, fn in candidates.items():
            times[name].append(sampling_run(fn, tokens))
    base = statistics.median(times["plain"])
    print(
        f"# backbone sampling speed: d_model {D}, {LAYERS} layers, batch {BATCH}x{LEN}, {STEPS} steps, "
        f"{args.threads} threads, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"median of {args.reps}"
    )
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:24s} {med * 1000:8.1f} ms/run   ratio to plain {med / base:5.3f}")


if __name__ == "__main__":
    main()
