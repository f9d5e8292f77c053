#!/usr/bin/env bash
# Recipe of wsi-synth's bundled demonstration model: public data from ../shared/data, the project's own
# commands, a 2-core CPU (about an hour in total). Rerun it to reproduce the bundle:
#   bash examples/train_default_model.sh            # writes build/default-model
#   DATA=/path/to/shared/data OUT=my-model bash examples/train_default_model.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
WORK=${WORK:-build/default-data}
OUT=${OUT:-build/default-model}
HERE=examples/default_model
COMMON=(--tile 64 --mpp 0.5 --region 256 --region-mask 32 --classes "$HERE/classes.yaml" --out "$WORK" -q)

rm -rf "$WORK" "$OUT"
# Labelled tiles with masks: lung adenocarcinoma (WSSS4LUAD) and oral squamous cell carcinoma (OCDC).
wsi-synth import "$DATA/tiles_masks/wsss4luad_val/img" --masks "$DATA/tiles_masks/wsss4luad_val/mask" --legend "$HERE/wsss.yaml" --subtype adenocarcinoma "${COMMON[@]}"
wsi-synth import "$DATA/tiles_masks/wsss4luad_test/img" --masks "$DATA/tiles_masks/wsss4luad_test/mask" --legend "$HERE/wsss.yaml" --subtype adenocarcinoma "${COMMON[@]}"
wsi-synth import "$DATA/tiles_masks/ocdc_oscc/images" --masks "$DATA/tiles_masks/ocdc_oscc/masks" --legend "$HERE/ocdc.yaml" --subtype squamous --scale 0.5 "${COMMON[@]}"
# Unlabelled tiles (the semi-supervised branch): LC25000 lung adenocarcinoma and squamous cell carcinoma.
wsi-synth import "$DATA/tiles/lc25000_224/lung_aca" --subtype adenocarcinoma "${COMMON[@]}"
wsi-synth import "$DATA/tiles/lc25000_224/lung_scc" --subtype squamous "${COMMON[@]}"
wsi-synth info "$WORK"

STEPS=(--config "$HERE/train.yaml" --checkpoint-every 1000 --sample-every 4000 -q)
time wsi-synth train codec "$WORK" --out "$OUT" --max-steps "${CODEC_STEPS:-5000}" "${STEPS[@]}"
time wsi-synth train image "$WORK" --out "$OUT" --max-steps "${IMAGE_STEPS:-20000}" "${STEPS[@]}"
time wsi-synth train mask "$WORK" --out "$OUT" --max-steps "${MASK_STEPS:-8000}" "${STEPS[@]}"
wsi-synth info "$OUT"
