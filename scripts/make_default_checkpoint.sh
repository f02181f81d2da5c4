#!/usr/bin/env bash
# Reproduce checkpoints/deepaq-small end to end on a CPU:
#   render -> prep (code + ViSQOL labels) -> train -> evaluate -> export.
# Usage: scripts/make_default_checkpoint.sh [WORK]   (default: /tmp/deepaq-default-small)
# Needs: apt-get install fluidsynth fluid-soundfont-gm ; pip install -e '.[dev]' (music21).
# Every step resumes: rerun after an interruption and finished work is kept.
# Cost on 2 CPU cores: render ~5 min, corpus ~40 min (2,640 ViSQOL pairs), training ~15 min
# (8 epochs; the first computes each clip's band spectrograms, later ones reuse them).
# ABLATIONS=1 also trains the model card's two ablations (~25 min each) and benchmarks them.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-/tmp/deepaq-default-small}"
BIN="${DEEPAQ_BIN:-.venv/bin}"
mkdir -p "$WORK"

# 1. music: 120 public-domain pieces from the music21 corpus, 10 s each, varied GM ensembles
[ -f "$WORK/music/index.jsonl" ] || \
  "$BIN/deepaq-prep" render "$WORK/music" -n 120 --max-seconds 10 --seed 7 -j 2 -q

# 2. corpus: one 4 s excerpt per piece x (clean + 21 codec conditions), ViSQOL-labelled;
#    splits by piece: 80 % train, 20 % val (model selection). The real recordings in
#    ../shared are never used here: they are the held-out test set of step 4.
"$BIN/deepaq-prep" build "$WORK/music/index.jsonl" -o "$WORK/corpus" --excerpt-seconds 4 \
  --max-excerpts-per-track 1 --splits train=0.8,val=0.2 --seed 0 -j 2 -q --resume
"$BIN/deepaq-prep" summary "$WORK/corpus/manifest.jsonl"

# 3. train (recipe: configs/train/default_small.yaml), best epoch by val Spearman, calibrated
"$BIN/deepaq" fit -c configs/train/default_small.yaml --data.manifest "$WORK/corpus/manifest.jsonl" \
  --trainer.default_root_dir "$WORK/runs" --trainer.logger.init_args.save_dir "$WORK/runs" \
  --model.export_dir "$WORK/model"

# 4. evaluate on the held-out real recordings against the baselines (model card table)
EXTRA=()
if [ "${ABLATIONS:-0}" = 1 ]; then
  for ablation in logmel_cnn_frame pooled_rnc; do
    [ -f "$WORK/ablation_$ablation/model/config.yaml" ] || \
      "$BIN/deepaq" fit -c configs/train/default_small.yaml -c "configs/train/ablation_$ablation.yaml" \
        --data.manifest "$WORK/corpus/manifest.jsonl" --trainer.default_root_dir "$WORK/ablation_$ablation" \
        --trainer.logger.init_args.save_dir "$WORK/ablation_$ablation" \
        --model.export_dir "$WORK/ablation_$ablation/model"
  done
  EXTRA=(--extra-checkpoint "ablation: log-mel CNN, frame L2, ViSQOL ranking (deepaq-small-1)=$WORK/ablation_logmel_cnn_frame/model"
         --extra-checkpoint "ablation: log-mel CNN, pooled embedding + whole-batch RnC (DeePAQ-style)=$WORK/ablation_pooled_rnc/model")
fi
"$BIN/python" benchmarks/bench_default_model.py --checkpoint "$WORK/model" \
  --train-manifest "$WORK/corpus/manifest.jsonl" --work "$WORK/bench" --json "$WORK/bench.json" \
  "${EXTRA[@]}"

# 5. export: the shipped folder (weights, config, calibration) + the label manifest it was trained on
mkdir -p checkpoints/deepaq-small
cp "$WORK/model/model.safetensors" "$WORK/model/calibration.json" checkpoints/deepaq-small/
# the work folder's absolute path is this machine's, not the model's: shipped files say WORK/
for f in config.yaml train_config.yaml; do
  sed "s#$WORK/#WORK/#g" "$WORK/model/$f" > "checkpoints/deepaq-small/$f"
done
sed "s#$WORK/#WORK/#g" "$WORK/corpus/manifest.jsonl" | gzip -9n > checkpoints/deepaq-small/train_manifest.jsonl.gz
echo "exported to checkpoints/deepaq-small (update its README.md with $WORK/bench.json)"
