#!/usr/bin/env bash
# Regenerate the test music in tests/fixtures/music/ (see tests/fixtures/README.md): six short
# public-domain excerpts rendered from the music21 corpus with fluidsynth + FluidR3 GM.
# Needs: apt-get install fluidsynth fluid-soundfont-gm ; pip install -e '.[dev]'.
# Deterministic: rerunning gives the same audio on the same fluidsynth/soundfont/music21 versions.
set -euo pipefail
cd "$(dirname "$0")/.."
PREP="${DEEPAQ_PREP:-.venv/bin/deepaq-prep}"
OUT=tests/fixtures/music
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# name  work (music21 corpus)  ensemble  seconds
while read -r name work ensemble seconds; do
  $PREP render "$tmp/$name" --works "$work" --ensembles "$ensemble" \
      --max-seconds "$seconds" --seed 0 --bit-depth 16 -q >&2
  install -m 644 "$tmp/$name"/audio/*.flac "$OUT/$name.flac"
  sed "s#\"path\": \"audio/[^\"]*\"#\"path\": \"$name.flac\"#" "$tmp/$name/index.jsonl"
done > "$OUT/index.jsonl" <<'LIST'
guitar mozart/k156/movement1 guitar 4
mallets mozart/k155/movement1 mallets 4
pizzicato haydn/opus1no1/movement1 pizzicato 4
harpsichord bach/bwv1.6 harpsichord 4
choir palestrina/Agnus choir 4
brass bach/bwv10.7 brass 10
LIST
ls -l "$OUT"
