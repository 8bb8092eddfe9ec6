#!/bin/bash
# Device run for issue 16 (session 21), from the repository root with gpu/ carried
# (benchmarks/device/prepare_how_gpu.sh fills it): a view bank of the HOW training photos, then four
# HOW trainings side by side on one GPU, each for the minutes left of END seconds; the end models
# come back in $OUT as .pt, exported here with `copyseek train --out DIR --export NAME.pt`.
#   usage: how_gpu.sh [NAME:SIZE[:KEY=VALUE,...] ...]   (default: session 21's four runs below)
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD/gpu/site:$PWD/src PYTHONUNBUFFERED=1 LD_LIBRARY_PATH=$PWD/gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
OUT=${OUT:-/tmp/out}; VIEWS=${VIEWS:-100}; WORKERS=${WORKERS:-14}; DEVICE=${DEVICE:-cuda}; END=${END:-500}
T0=$(date +%s); W=${WORK:-/tmp/how21}; mkdir -p $W/runs $OUT
if ! python3 -c "import magic" 2>/dev/null; then
  echo "libmagic missing: stub magic (our edits never call it)"; mkdir -p $W/stub; : > $W/stub/magic.py; export PYTHONPATH=$W/stub:$PYTHONPATH
fi
python3 -c "import torch, cv2, copyseek.edits, copyseek.learn.train as t; print(torch.__version__, t.pick_device('$DEVICE'))" || exit 3
nproc; nvidia-smi -L 2>/dev/null
RUNS=("$@"); [ ${#RUNS[@]} -gt 0 ] || RUNS=(g192:192 g288:288 g384:384 g384c64:384:classes_per_batch=64)
SIZES=$(printf '%s\n' "${RUNS[@]}" | cut -d: -f2 | sort -un | paste -sd,)
python3 benchmarks/device/make_banks.py gpu/holdout.txt $W/banks $VIEWS $WORKERS $SIZES || exit 4
NOW=$(date +%s); MIN=$(python3 -c "print(round(max(0.2, ($T0 + $END - $NOW - 70) / 60), 2))"); echo "banks done at $((NOW-T0)) s; training minutes $MIN"
train() {  # NAME:SIZE[:KEY=VALUE,...]
  IFS=: read -r name size extra <<< "$1"; set --
  for kv in ${extra//,/ }; do set -- "$@" --set "$kv"; done
  OMP_NUM_THREADS=3 python3 benchmarks/device/train_end.py train --config configs/how.toml --images gpu/holdout.txt --out $W/runs/$name \
    --set device=$DEVICE --set minutes=$MIN --set steps=0 --set bank=$W/banks/$size --set bank_views=$VIEWS --set image_size=$size "$@" \
    > $W/runs/$name.log 2>&1
  cp $W/runs/$name/end.pt $OUT/$name.pt
}
for run in "${RUNS[@]}"; do train "$run" & done
wait
for n in $(printf '%s\n' "${RUNS[@]}" | cut -d: -f1); do
  echo "== $n"; tr '\r' '\n' < $W/runs/$n.log | grep -v "it/s\|img/s\|step/s\|s/step\|s/s," | tail -5
  tr '\r' '\n' < $W/runs/$n.log | grep "training:" | tail -1
  awk -F, 'NR==1 || NR%250==0' $W/runs/$n/metrics.csv; tail -1 $W/runs/$n/metrics.csv
done > $OUT/summary.txt 2>&1
cat $OUT/summary.txt; echo "total $(( $(date +%s) - T0 )) s"; ls -la $OUT
