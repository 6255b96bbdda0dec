#!/usr/bin/env bash
# How the bundled LBM (neurorvq/lbm-small) was made on this 2-core CPU: tokenize the prepared ../shared/data/eeg with
# the bundled tokenizer (the rows carry `neurorvq prepare`'s labels: EEGMAT rest / arithmetic, EEGMMIDB eyes_open /
# eyes_closed baselines), train configs/lbm/small-depthwise.json on the training codes (code embeddings and codeword
# scores start from the tokenizer's codebooks; conditions = the config's condition_names, 10% condition dropout),
# evaluate NLL against the count models, realism, prompt specificity and the conditional utility (TSTR / TRTR) on the
# validation subjects, and draw the learning curve. Sampling uses the pipeline's defaults: temperature 0.8 times the
# config's stream_temperature_scales (colder gain tokens and 30-100 Hz codes, chosen by measuring samples of the
# trained model against real validation EEG), decoded with the tokenizer's noise filling.
set -euo pipefail
WORK=${WORK:-runs/tokenizer-small}     # holds data/ from examples/train_bundled_tokenizer.sh
OUT=${OUT:-runs/lbm-small}
STEPS=${STEPS:-1200}
CONFIG=${CONFIG:-configs/lbm/small-depthwise.json}
neurorvq tokenize "$WORK/data" --tokenizer neurorvq/tokenizer-small --output "$WORK/codes"
# one thread: the bundle was trained so, with the second core busy with other work
OMP_NUM_THREADS=1 neurorvq train-lbm --config "$CONFIG" --data "$WORK/codes" --output "$OUT/model" \
  --max-steps "$STEPS" --batch-size 8 --learning-rate 1.5e-3 --warmup-steps 100 --save-steps 200 --eval-steps 200
neurorvq evaluate-lbm "$OUT/model" --codes "$WORK/codes" --data "$WORK/data" --tokenizer neurorvq/tokenizer-small \
  --samples 32 --seconds 8 --condition-samples 64 --guidance-scales 1,2,3,4 --output "$OUT/validation.json" \
  --figure "$OUT/realism.png" --curve "$OUT/learning_curve.png"
