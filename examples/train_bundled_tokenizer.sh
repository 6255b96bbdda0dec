#!/usr/bin/env bash
# How the bundled tokenizer (neurorvq/tokenizer-small) was made: prepare ../shared/data/eeg (train/validation split by
# subject), train configs/tokenizer/small.json on the train split on this CPU, evaluate on the validation subjects.
set -euo pipefail
DATA=${DATA:-../shared/data/eeg}
WORK=${WORK:-runs/tokenizer-small}
STEPS=${STEPS:-2500}
neurorvq prepare "$DATA" --output "$WORK/data" --on-error skip
neurorvq train-tokenizer --config configs/tokenizer/small.json --data "$WORK/data" --output "$WORK/model" \
  --max-steps "$STEPS" --batch-size 8 --learning-rate 1e-3 --warmup-steps 100 --save-steps 500 --eval-steps 500
neurorvq evaluate-tokenizer "$WORK/model" --data "$WORK/data" --split validation \
  --output "$WORK/validation.json" --figure "$WORK/validation.png"
