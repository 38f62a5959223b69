#!/usr/bin/env bash
# Re-train the shipped FlowBender checkpoints (seed 0, digits 8x8, DiT width 64 / depth 4 / patch 2, 2000 steps):
# FlowBender (zero-order feedback) and the plain conditional baseline, for super-resolution x4 and JPEG q10.
# Usage: bash checkpoints/train_flowbender.sh [OUT_ROOT]
set -euo pipefail
cd "$(dirname "$0")/.."
INTERP=${INTERP:-.venv/bin/interp}
OUT=${1:-checkpoints}
for op in sr4 jpeg10; do
  rm -rf "$OUT/flowbender-$op-digits" "$OUT/flowbender-plain-$op-digits"
  "$INTERP" train flowbender --operator "$op" --feedback zero --data digits --steps 2000 --seed 0 --no-progress \
    --out "$OUT/flowbender-$op-digits"
  "$INTERP" train flowbender --operator "$op" --feedback none --data digits --steps 2000 --seed 0 --no-progress \
    --out "$OUT/flowbender-plain-$op-digits"
  rm -rf "$OUT/flowbender-$op-digits/trainer_state" "$OUT/flowbender-plain-$op-digits/trainer_state"
done
