#!/usr/bin/env bash
# The bundled model's training data: public tiles from ../shared/data, every source resampled to one magnification,
# and the WSSS4LUAD tissue layouts twice: as 256 px regions for the mask stage and as 2048 px regions (2.3 mm) at
# 64 px per mask px for the layout stage, in a dataset of their own ($WORK-layouts).
#   DATA=../shared/data WORK=build/default-data bash examples/default_model/import.sh
# Each source's µm/px is measured from its nuclei (python examples/default_model/source_scale.py): WSSS4LUAD's tiles
# are ~1.13 µm/px, so the dataset is 1.1 µm/px and the others are scaled to it. LC25000's 224 px tiles are a
# downscaled 40× photograph (0.46 µm/px adenocarcinoma, 0.40 squamous): scale 0.41 and 0.35. OCDC's pale nuclei
# defeat the detector; its 640 px tiles are taken at their stated 20× (0.5 µm/px): scale 0.44.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-../shared/data}
WORK=${WORK:-build/default-data}
HERE=examples/default_model
COMMON=(--tile 64 --mpp 1.1 --region 256 --region-mask 32 --classes "$HERE/classes.yaml" --out "$WORK" -q)

LAYOUTS="$DATA/tiles_masks/wsss4luad_layout_masks"
rm -rf "$WORK" "$WORK-layouts"
# Labelled tiles with masks: lung adenocarcinoma (WSSS4LUAD) and oral squamous cell carcinoma (OCDC).
wsi-synth import "$DATA/tiles_masks/wsss4luad_val/img" --masks "$DATA/tiles_masks/wsss4luad_val/mask" --legend "$HERE/wsss.yaml" --subtype adenocarcinoma "${COMMON[@]}"
wsi-synth import "$DATA/tiles_masks/wsss4luad_test/img" --masks "$DATA/tiles_masks/wsss4luad_test/mask" --legend "$HERE/wsss.yaml" --subtype adenocarcinoma "${COMMON[@]}"
wsi-synth import "$DATA/tiles_masks/ocdc_oscc/images" --masks "$DATA/tiles_masks/ocdc_oscc/masks" --legend "$HERE/ocdc.yaml" --subtype squamous --scale 0.44 "${COMMON[@]}"
# Unlabelled tiles (the semi-supervised branch): LC25000 lung adenocarcinoma and squamous cell carcinoma.
wsi-synth import "$DATA/tiles/lc25000_224/lung_aca" --subtype adenocarcinoma --scale 0.41 "${COMMON[@]}"
wsi-synth import "$DATA/tiles/lc25000_224/lung_scc" --subtype squamous --scale 0.35 "${COMMON[@]}"
# Pathologist-drawn layouts without images (WSSS4LUAD masks whose images are too large for the snapshot).
wsi-synth import --layouts "$LAYOUTS" --legend "$HERE/wsss.yaml" --subtype adenocarcinoma "${COMMON[@]}"
wsi-synth import --layouts "$LAYOUTS" --legend "$HERE/wsss.yaml" --subtype adenocarcinoma --tile 64 --mpp 1.1 --region 2048 --region-mask 32 \
  --classes "$HERE/classes.yaml" --out "$WORK-layouts" -q
wsi-synth info "$WORK"
wsi-synth info "$WORK-layouts"
