#!/usr/bin/env bash
# Re-train the shipped image checkpoints (seed 0): a timestep-conditioned and a time-agnostic ("blind")
# DiT on scikit-learn digits with flow matching. Usage: bash checkpoints/train_images.sh [OUT_ROOT]
set -euo pipefail
cd "$(dirname "$0")/.."
INTERP=${INTERP:-.venv/bin/interp}
OUT=${1:-checkpoints}
for tc in on off; do
  name=$([ "$tc" = on ] && echo cond || echo blind)
  rm -rf "$OUT/dit-digits-flow-$name"
  "$INTERP" train image --model dit --process flow --time-conditioning "$tc" --data digits --steps 2000 --seed 0 \
    --no-progress --out "$OUT/dit-digits-flow-$name"
  rm -rf "$OUT/dit-digits-flow-$name/trainer_state"
done
