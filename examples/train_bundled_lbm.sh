#!/usr/bin/env bash
# How the bundled LBM (neurorvq/lbm-small) was made on this 2-core CPU: tokenize the prepared ../shared/data/eeg with
# the bundled tokenizer, train configs/lbm/small-depthwise.json on the training codes (code embeddings start from the
# tokenizer's codebooks), evaluate NLL against the count models, realism and prompt specificity on the validation
# subjects, and draw the learning curve.
set -euo pipefail
WORK=${WORK:-runs/tokenizer-small}     # holds data/ from examples/train_bundled_tokenizer.sh
OUT=${OUT:-runs/lbm-small}
STEPS=${STEPS:-1600}
CONFIG=${CONFIG:-configs/lbm/small-depthwise.json}
neurorvq tokenize "$WORK/data" --tokenizer neurorvq/tokenizer-small --output "$WORK/codes"
neurorvq train-lbm --config "$CONFIG" --data "$WORK/codes" --output "$OUT/model" \
  --max-steps "$STEPS" --batch-size 8 --learning-rate 1.5e-3 --warmup-steps 100 --save-steps 200 --eval-steps 200
neurorvq evaluate-lbm "$OUT/model" --codes "$WORK/codes" --data "$WORK/data" --tokenizer neurorvq/tokenizer-small \
  --samples 32 --seconds 8 --temperature 1.0 --output "$OUT/validation.json" --figure "$OUT/realism.png" \
  --curve "$OUT/learning_curve.png"
