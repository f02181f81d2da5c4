#!/usr/bin/env bash
# Smoke run of the paper recipe (configs/train/mert95m_lora_rnc.yaml) on CPU, with no network:
#
#   (a) a fake MERT-v1-95M hub snapshot in MERT's own format (config.json with
#       model_type: mert_model and MERT's extra keys, pytorch_model.bin with the old
#       weight_g/weight_v positional-conv names, MERTModel's top-level key names and the
#       pretraining codebook) from a random default-config HubertModel (= the MERT-95M shape);
#   (b) deepaq convert-mert SNAPSHOT WORK/mert-v1-95m;
#   (c) a tiny corpus from 2 shared references with deepaq-prep build (ViSQOL labels);
#   (d) deepaq fit with the paper recipe for 3 steps on CPU from the converted folder, then the
#       exported model folder is listed.
#
# Why: issue 3 is done when "the paper recipe starts training on CPU for a few steps from a
# converted (random, test-made) MERT folder"; this is that check as one command.
#
#   scripts/smoke_paper_recipe.sh [WORK]      # WORK defaults to a new temp folder; a few minutes
#
# Everything (snapshot ~380 MB, converted folder, corpus, logs, exported model) goes under WORK.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${1:-$(mktemp -d -t deepaq-smoke-XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
BIN=${DEEPAQ_BIN:-$REPO/.venv/bin}
PY=$BIN/python
AUDIO=$REPO/../shared/data/visqol_conformance/audio
cd "$REPO"
start=$(date +%s)
stamp() { echo "[smoke $(( $(date +%s) - start )) s] $*"; }

stamp "work folder: $WORK"
for ref in guitar48_stereo.wav sopr48_stereo.wav; do
  [[ -f "$AUDIO/$ref" ]] || { echo "missing shared reference $AUDIO/$ref" >&2; exit 1; }
done

# (a) fake MERT snapshot, with the helpers of the conversion test (same format it checks)
SNAPSHOT=$WORK/MERT-v1-95M-snapshot
rm -rf "$SNAPSHOT"
stamp "(a) fake MERT-v1-95M snapshot -> $SNAPSHOT"
"$PY" - "$REPO/tests/deepaq/test_convert_mert.py" "$SNAPSHOT" <<'EOF'
import importlib.util
import json
import sys
from pathlib import Path

import torch
from transformers import HubertConfig, HubertModel

spec = importlib.util.spec_from_file_location("test_convert_mert", sys.argv[1])
helpers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(helpers)

torch.manual_seed(0)
model = HubertModel(HubertConfig()).eval()          # default HubertConfig = MERT-v1-95M's shape
folder = helpers.make_snapshot(Path(sys.argv[2]), model)
keys = list(torch.load(folder / "pytorch_model.bin", weights_only=True))
cfg = json.loads((folder / "config.json").read_text())
print(f"  model_type={cfg['model_type']}, hidden_size={cfg['hidden_size']}, "
      f"{cfg['num_hidden_layers']} layers, {sum(p.numel() for p in model.parameters()):,} params")
print(f"  {len(keys)} tensors, e.g. {[k for k in keys if 'weight_g' in k or 'weight_v' in k]}, "
      f"{[k for k in keys if not k.startswith(('encoder.', 'feature_'))]}")
EOF

# (b) convert into a plain HubertModel folder
CONVERTED=$WORK/mert-v1-95m
stamp "(b) deepaq convert-mert -> $CONVERTED"
"$BIN/deepaq" convert-mert "$SNAPSHOT" "$CONVERTED" --force
cat "$CONVERTED/conversion.json"

# (c) tiny corpus: 2 references, 3 s excerpts, 2 codecs x 2 bitrates, ViSQOL labels
CORPUS=$WORK/corpus
stamp "(c) deepaq-prep build -> $CORPUS"
mkdir -p "$WORK/refs"
ln -sf "$AUDIO/guitar48_stereo.wav" "$AUDIO/sopr48_stereo.wav" "$WORK/refs/"
"$BIN/deepaq-prep" build "$WORK/refs" -o "$CORPUS" --grid configs/data_prep/tiny_grid.yaml \
  --excerpt-seconds 3 --max-excerpts-per-track 2 --labels visqol --splits train=0.5,val=0.5 \
  --resume -q
"$PY" - "$CORPUS/manifest.jsonl" <<'EOF'
import collections, sys
from deepaq.records import read_jsonl
rows = read_jsonl(sys.argv[1])
print(f"  {len(rows)} items:", dict(collections.Counter(r["split"] for r in rows)))
EOF

# (d) the paper recipe, 3 training steps on CPU, then validation, calibration and export.
# Batches of 2 excerpts x (clean + 2 coded): the bitrate term ranks coded items only, and with a
# single coded item per excerpt (batch 4 x 2 conditions) it would be identically 0.
RUNS=$WORK/runs
EXPORT=$WORK/model
stamp "(d) deepaq fit -c configs/train/mert95m_lora_rnc.yaml (3 steps on CPU) -> $RUNS"
rm -rf "$RUNS" "$EXPORT"
"$BIN/deepaq" fit -c configs/train/mert95m_lora_rnc.yaml \
  --data.manifest "$CORPUS/manifest.jsonl" \
  --model.model.backbone_args.pretrained "$CONVERTED" \
  --trainer.accelerator cpu --trainer.precision 32-true \
  --trainer.max_steps 3 --trainer.log_every_n_steps 1 \
  --trainer.num_sanity_val_steps 0 --trainer.val_check_interval 3 --trainer.check_val_every_n_epoch null \
  --trainer.enable_progress_bar false \
  --trainer.default_root_dir "$RUNS" --trainer.logger.init_args.save_dir "$RUNS" \
  --data.batch_size 6 --data.conditions_per_excerpt 3 --data.crop_seconds 2 \
  --data.val_batch_size 4 --data.val_crop_seconds 2 \
  --data.num_workers 0 --data.pin_memory false \
  --model.export_dir "$EXPORT" 2>&1 | tee "$WORK/fit.log"

stamp "trainable fraction and export:"
grep -E "trainable parameters|written to" "$WORK/fit.log" || true
metrics=$(find "$RUNS" -name metrics.csv | head -1)
[[ -n "$metrics" ]] && { echo "  $metrics:"; sed 's/^/    /' "$metrics"; }
echo "exported model folder: $EXPORT"
ls -l "$EXPORT"
stamp "done"
