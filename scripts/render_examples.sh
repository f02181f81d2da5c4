#!/usr/bin/env bash
# Regenerate the example music shipped in deepaq/examples/ (see deepaq/examples/README.md):
# two ~4 s public-domain excerpts rendered from the music21 corpus with fluidsynth + FluidR3 GM.
# Needs: apt-get install fluidsynth fluid-soundfont-gm ; pip install 'deepaq[demo]'.
# Deterministic: rerunning gives the same audio on the same fluidsynth/soundfont/music21 versions.
set -euo pipefail
cd "$(dirname "$0")/.."
PREP="${DEEPAQ_PREP:-.venv/bin/deepaq-prep}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

"$PREP" render "$tmp/bach" --works bach/bwv66.6 --ensembles strings \
    --max-seconds 4 --seed 0 --bit-depth 16 -q
"$PREP" render "$tmp/mozart" --works mozart/k545/movement1_exposition --ensembles piano \
    --max-seconds 4 --seed 0 --bit-depth 16 -q

install -m 644 "$tmp/bach/audio/bach__bwv66.6.flac" deepaq/examples/bach_bwv66.6_strings.flac
install -m 644 "$tmp/mozart/audio/mozart__k545__movement1_exposition.flac" \
    deepaq/examples/mozart_k545_piano.flac
cat "$tmp/bach/index.jsonl" "$tmp/mozart/index.jsonl"
ls -l deepaq/examples/*.flac
