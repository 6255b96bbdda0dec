#!/usr/bin/env bash
# How the bundled LBM (neurorvq/lbm-small, the spatial LBM) was made on this 2-core CPU:
# 1. prepare the whole ../shared/data/eeg (train/validation split by subject; the corpus policy keeps the reserved
#    hold-out subjects out) and tokenize it with the bundled tokenizer;
# 2. train configs/lbm/small-spatial.json on the training codes (one thread; code embeddings and codewords start from
#    the tokenizer's codebooks; conditions = the config's condition_names, 10% condition dropout);
# 3. choose the sampling defaults with the realism report (benchmarks/lbm_realism_ablation.py) and save them as the
#    model's generation_config.json;
# 4. evaluate: bits per channel-second against the count models, the realism report with its floors, prompt
#    specificity, TSTR / TRTR, and the learning curve.
set -euo pipefail
DATA=${DATA:-../shared/data/eeg}
WORK=${WORK:-runs/lbm-data}
OUT=${OUT:-runs/lbm-small}
STEPS=${STEPS:-2000}
neurorvq prepare "$DATA" --output "$WORK/data" --on-error skip
neurorvq tokenize "$WORK/data" --tokenizer neurorvq/tokenizer-small --output "$WORK/codes"
OMP_NUM_THREADS=1 neurorvq train-lbm --config configs/lbm/small-spatial.json --data "$WORK/codes" --output "$OUT/model" \
  --max-steps "$STEPS" --batch-size 8 --learning-rate 1.5e-3 --warmup-steps 100 --save-steps 200 --eval-steps 200
python benchmarks/lbm_realism_ablation.py --data "$WORK/data" --codes "$WORK/codes" --output "$OUT/ablation.json" \
  --run rounds-8 "$OUT/model" "num_rounds=8,unmasking=random,noise_filling=coherent" \
  --run rounds-16 "$OUT/model" "num_rounds=16,unmasking=random,noise_filling=coherent" \
  --run confidence-8 "$OUT/model" "num_rounds=8,unmasking=confidence,noise_filling=coherent" \
  --run rounds-8-t0.9 "$OUT/model" "num_rounds=8,unmasking=random,temperature=0.9,noise_filling=coherent" \
  --run confidence-8-choice-8 "$OUT/model" "num_rounds=8,unmasking=confidence,choice_temperature=8,temperature=0.9,noise_filling=coherent" \
  --run confidence-6-choice-8 "$OUT/model" "num_rounds=6,unmasking=confidence,choice_temperature=8,temperature=0.9,noise_filling=coherent"
# (then: the chosen settings go into "$OUT/model/generation_config.json", with window_shift 0.25 for long samples;
#  since 2026-12-02: temperature 1.0 and last_round_temperature_scale 0.2, chosen with runs such as
#  --run last-0.2 "$OUT/model" "temperature=1.0,last_round_temperature_scale=0.2" at --seed 0 / 1 and --num-channels 64;
#  speed: python benchmarks/generation_speed_ab.py --models "$OUT/model" neurorvq/lbm-small-depthwise)
neurorvq evaluate-lbm "$OUT/model" --codes "$WORK/codes" --data "$WORK/data" --tokenizer neurorvq/tokenizer-small \
  --samples 32 --seconds 8 --condition-samples 32 --guidance-scales 1,2 --output "$OUT/validation.json" \
  --figure "$OUT/realism.png" --curve "$OUT/learning_curve.png"
