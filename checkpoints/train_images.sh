#!/usr/bin/env bash
# Re-train the shipped image checkpoints (seed 0): a timestep-conditioned and a time-agnostic ("blind")
# DiT with flow matching on scikit-learn digits (8x8, patch 2) and on MNIST-5k (28x28, patch 4), and the
# feature networks that `interp eval` measures sample quality with.
# Usage: bash checkpoints/train_images.sh [OUT_ROOT] [digits|mnist5k ...]
set -euo pipefail
cd "$(dirname "$0")/.."
INTERP=${INTERP:-.venv/bin/interp}
OUT=${1:-checkpoints}
shift || true
DATASETS=("${@:-digits mnist5k}")
for data in ${DATASETS[@]}; do
  patch=$([ "$data" = digits ] && echo 2 || echo 4)
  rm -rf "$OUT/feature-net-$data"
  "$INTERP" train feature-net --data "$data" --steps "$([ "$data" = digits ] && echo 600 || echo 2000)" --seed 0 \
    --out "$OUT/feature-net-$data"
  for tc in on off; do
    name=$([ "$tc" = on ] && echo cond || echo blind)
    rm -rf "$OUT/dit-$data-flow-$name"
    "$INTERP" train image --model dit --process flow --time-conditioning "$tc" --data "$data" --patch-size "$patch" \
      --steps 2000 --seed 0 --no-progress --out "$OUT/dit-$data-flow-$name"
    rm -rf "$OUT/dit-$data-flow-$name/trainer_state"
  done
done
