#!/usr/bin/env bash
# Recipe of wsi-synth's bundled demonstration model: public data from ../shared/data, the project's own
# commands, a 2-core CPU (about two hours, one stage after another: codec 28, image 51, mask 22, layout ~10 min);
# the data is examples/default_model/import.sh. Rerun it to reproduce the bundle:
#   bash examples/train_default_model.sh            # writes build/default-model
#   DATA=/path/to/shared/data OUT=my-model bash examples/train_default_model.sh
# Stages after the codec may also run at the same time, one core each (OMP_NUM_THREADS=1): image, and mask then
# layout, into the same --out (each merges its record into model.json); the 0.2 bundle was built so, in 95 min.
# An interrupted stage continues with the same command and --resume. The image stage's student (`distill`, last)
# took about an hour on one core beside other work.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
WORK=${WORK:-build/default-data}
OUT=${OUT:-build/default-model}
HERE=examples/default_model
rm -rf "$OUT"
DATA=$DATA WORK=$WORK bash "$HERE/import.sh"

STEPS=(--config "$HERE/train.yaml" --checkpoint-every 1000 --sample-every 4000 -q)
time wsi-synth train codec "$WORK" --out "$OUT" --max-steps "${CODEC_STEPS:-5000}" "${STEPS[@]}"
time wsi-synth train image "$WORK" --out "$OUT" --max-steps "${IMAGE_STEPS:-40000}" "${STEPS[@]}"
time wsi-synth train mask "$WORK" --out "$OUT" --max-steps "${MASK_STEPS:-8000}" "${STEPS[@]}"
# the layout stage: tissue layout at slide scale (2048 px regions at 64 px per layout px), from the layouts alone
time wsi-synth train layout "$WORK-layouts" --out "$OUT" --max-steps "${LAYOUT_STEPS:-3000}" "${STEPS[@]}"
# last, from the finished image stage: a student for 1-8 steps (generate uses it at --steps <= 8); --resume continues it
time wsi-synth distill "$OUT" "$WORK" --steps 8 --max-steps "${DISTILL_STEPS:-4000}" --batch-size 16 --checkpoint-every 250 -q
wsi-synth info "$OUT"
