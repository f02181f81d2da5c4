#!/usr/bin/env bash
# The main job on what ships in the repo (no download, no GPU): code the two example excerpts in
# deepaq/examples/ over the full codec grid (Opus/MP3/AAC x 16..128 kbps), label every pair with
# ViSQOL v3, score every pair with the shipped model (checkpoints/deepaq-small-4) and correlate.
# Usage: scripts/demo.sh [OUT]   (default /tmp/deepaq-demo; a few minutes on 2 CPU cores, mostly ViSQOL)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-/tmp/deepaq-demo}"
BIN="${DEEPAQ_BIN:-.venv/bin}"

"$BIN/deepaq-prep" build deepaq/examples -o "$OUT" --excerpt-seconds 4 --splits test=1 -j 2 -q --overwrite
"$BIN/deepaq-prep" summary "$OUT/manifest.jsonl"
"$BIN/deepaq-prep" pairs "$OUT/manifest.jsonl" -o "$OUT/pairs.csv" --force
"$BIN/deepaq" score --input "$OUT/pairs.csv" --output "$OUT/scores.csv" --no-progress --overwrite
echo "per-pair scores: $OUT/scores.csv"
"$BIN/deepaq" eval "$OUT/pairs.csv" --metrics deepaq,logmel_l1 -o "$OUT/eval" --no-progress
