#!/usr/bin/env bash
# Re-train the shipped CrossFlow checkpoints (seed 0, digits 8x8): the KL autoencoder, baseline A (latent flow
# matching on its latents) and CrossFlow with the autoencoder's encoder frozen.
# Usage: bash checkpoints/train_crossflow.sh [OUT_ROOT]
set -euo pipefail
cd "$(dirname "$0")/.."
INTERP=${INTERP:-.venv/bin/interp}
OUT=${1:-checkpoints}
rm -rf "$OUT/autoencoder-digits" "$OUT/latent-flow-digits" "$OUT/crossflow-digits"
"$INTERP" train autoencoder --data digits --steps 2000 --seed 0 --no-progress --out "$OUT/autoencoder-digits"
"$INTERP" train latent-flow --data digits --autoencoder "$OUT/autoencoder-digits" --steps 2000 --seed 0 --no-progress \
  --out "$OUT/latent-flow-digits"
"$INTERP" train crossflow --data digits --autoencoder "$OUT/autoencoder-digits" --steps 2000 --seed 0 --no-progress \
  --out "$OUT/crossflow-digits"
rm -rf "$OUT/autoencoder-digits/trainer_state" "$OUT/latent-flow-digits/trainer_state" "$OUT/crossflow-digits/trainer_state"
