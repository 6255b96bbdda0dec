#!/usr/bin/env bash
# How the bundled tokenizer (neurorvq/tokenizer-small, mdct design) was made on this 2-core CPU:
# 1. prepare ../shared/data/eeg (train/validation split by subject);
# 2. fit its codebooks: k-means of every band's residual on the train split (configs/tokenizer/small-codebooks.json,
#    no refiner: the codes are final after this step, so the LBM can be trained on them right away);
# 3. train the refiner (the joint decoder of configs/tokenizer/small.json) on top of the fitted codebooks;
# 4. evaluate on the validation subjects against the DCT codec.
set -euo pipefail
DATA=${DATA:-../shared/data/eeg}
WORK=${WORK:-runs/tokenizer-small}
STEPS=${STEPS:-1000}
neurorvq prepare "$DATA" --output "$WORK/data" --on-error skip
neurorvq train-tokenizer --config configs/tokenizer/small-codebooks.json --data "$WORK/data" --output "$WORK/codebooks"
neurorvq train-tokenizer --config configs/tokenizer/small.json --init-from "$WORK/codebooks" --data "$WORK/data" \
  --output "$WORK/model" --max-steps "$STEPS" --batch-size 8 --learning-rate 1e-3 --warmup-steps 50 \
  --save-steps 200 --eval-steps 200
neurorvq evaluate-tokenizer "$WORK/model" --data "$WORK/data" --split validation \
  --output "$WORK/validation.json" --figure "$WORK/validation.png"
