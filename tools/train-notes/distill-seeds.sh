#!/usr/bin/env bash
# Issue 8 [note] check: logit distillation vs the same student trained with
# alpha = 0 (identical config, seeds, epochs), 3 seeds.
# Teacher: models/fmnist_mnv2.onnx (9.71M MACs). Student: kiln zoo fmnist-mnv2
# --width 0.35 (1.60M MACs, 0.16x). Test top-1 on the 10,000 test images.
# Usage: tools/train-notes/distill-seeds.sh OUTDIR [extra train args...]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:?OUTDIR}; shift
KILN=${KILN:-target/debug/kiln}
DATA=.fixtures/fashion-mnist
COMMON=(--data "$DATA" --limit "${LIMIT:-12000}" --val-count "${VAL:-2000}" --epochs "${EPOCHS:-3}"
        --batch 64 --lr 4e-3 --augment "${AUGMENT:-none}" --teacher models/fmnist_mnv2.onnx
        --temperature "${T:-4}")
mkdir -p "$OUT"
for seed in ${SEEDS:-0 1 2}; do
  "$KILN" zoo fmnist-mnv2 --width 0.35 --seed "$seed" -o "$OUT/student-$seed.onnx" >/dev/null
  for alpha in ${ALPHAS:-0 0.9}; do
    dir="$OUT/s$seed-a$alpha"
    if [ ! -f "$dir/done" ]; then
      "$KILN" train distill "$OUT/student-$seed.onnx" "${COMMON[@]}" --alpha "$alpha" --seed "$seed" -o "$dir" "$@" > "$dir.log" 2>&1
      touch "$dir/done"
    fi
    acc=$("$KILN" eval "$dir/model.onnx" --data "$DATA" --split test 2>/dev/null | grep -i 'top-1' | head -1)
    echo "seed=$seed alpha=$alpha $acc" | tee -a "$OUT/results.txt"
  done
done
