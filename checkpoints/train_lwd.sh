#!/usr/bin/env bash
# Re-train the shipped LWD checkpoints (seed 0, unconditional, digits 8x8: pixels + semantic spaces):
# the learned schedule and the SFD(0.3) baseline. Needs checkpoints/feature-net-digits (the semantic space).
# Usage: bash checkpoints/train_lwd.sh [OUT_ROOT]
set -euo pipefail
cd "$(dirname "$0")/.."
INTERP=${INTERP:-.venv/bin/interp}
OUT=${1:-checkpoints}
for schedule in learned sfd; do
  rm -rf "$OUT/lwd-$schedule-digits"
  "$INTERP" train lwd --schedule "$schedule" --data digits --steps 2000 --seed 0 --no-progress \
    --out "$OUT/lwd-$schedule-digits"
  rm -rf "$OUT/lwd-$schedule-digits/trainer_state"
done
