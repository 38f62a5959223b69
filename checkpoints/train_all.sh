#!/usr/bin/env bash
# Re-train the shipped checkpoints exactly as committed (seed 0, 2000 steps each, ~3 min each on 2 cores).
# Usage: bash checkpoints/train_all.sh [OUT_ROOT]   (default: checkpoints/)
set -euo pipefail
cd "$(dirname "$0")/.."
INTERP=${INTERP:-.venv/bin/interp}
OUT=${1:-checkpoints}
COMMON=(--task addition --digits 3 --steps 2000 --seed 0 --no-progress)
for mode in continuous topk none; do
  rm -rf "$OUT/dlm-addition3-$mode"
  "$INTERP" train dlm --selfcond "$mode" "${COMMON[@]}" --out "$OUT/dlm-addition3-$mode"
done
rm -rf "$OUT/ar-addition3"
"$INTERP" train ar "${COMMON[@]}" --out "$OUT/ar-addition3"
# Shipped checkpoints keep only what inference needs (trainer state is ~2x the weights).
for d in "$OUT"/dlm-addition3-* "$OUT"/ar-addition3; do rm -rf "$d/trainer_state"; done  # metrics.jsonl stays
