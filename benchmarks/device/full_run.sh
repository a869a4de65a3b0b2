#!/usr/bin/env bash
# Runs on the lent GPU machine (device tool), from the repo root, with .gpu/ carried (the three files
# benchmarks/device/setup.sh lists; it sets up the stack, the encoder and the corpus). Times the
# workflow's full default recipe (configs/minilm_cpu.cfg, 3 epochs, no override but the paths and the seed) in ONE process on the GPU,
# with the GPU tests beside it for their first ~40 s. Log lines are stamped with the seconds since the
# training started.
# A device call lasts 10 minutes at most and a session has 15 minutes of device time; the recipe takes
# longer on an H200 (session 15: 3,900 steps per ~208 s, of 19,569): the training is stopped at WAIT
# seconds and the log says how far it got. (Session 15 also tried to carry a training started with setsid
# into a second call; that call ended before the next validation row was due, so whether the training
# outlived the first call was not established. This script stays within one call.) If the training ends
# within WAIT (a longer call limit), it is calibrated on the validation slice and the test split is
# scored, as the workflow does.
# Results: $OUT/summary.txt and $OUT/results.tar.gz.
# usage: WAIT=seconds SEED=n bash benchmarks/device/full_run.sh
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
T0=$(date +%s); WAIT=${WAIT:-500}; SEED=${SEED:-0}
W=/tmp/full; R=$W/results
copy_out() {
  { echo "== call at $(date -u +%FT%TZ), waited $(( $(date +%s) - T0 ))s"
    cat $R/train.log 2>/dev/null
    [ -f $R/train.rc ] && echo "training: $(cat $R/train.rc)"
    [ -f $R/pytest_gpu.txt ] && echo "GPU tests: $(tail -1 $R/pytest_gpu.txt)"
    [ -f $R/test.log ] && tail -25 $R/test.log
  } > $OUT/summary.txt
  tar czf $OUT/results.tar.gz -C $W results
  cat $OUT/summary.txt
}
source benchmarks/device/setup.sh
( timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_registration.py \
    tests/test_wordpieces.py > $R/pytest_gpu.txt 2>&1 ) &
LEFT=$(( WAIT - ($(date +%s) - T0) ))
timeout $LEFT python3 -m spacy train configs/minilm_cpu.cfg --output $W/model \
    --paths.train /tmp/corpus/train.spacy --paths.dev /tmp/corpus/dev.spacy --paths.encoder /tmp/minilm \
    --gpu-id 0 --system.seed $SEED 2>&1 | python3 benchmarks/device/stamp.py > $R/train.log
echo "rc ${PIPESTATUS[0]} (124: stopped at WAIT)" > $R/train.rc
wait
if grep -q "^rc 0 " $R/train.rc; then
  m=$W/model/model-best; [ -d $m ] || m=$W/model/model-last
  python3 scripts/calibrate.py $m /tmp/corpus/dev.spacy $W/model/model-final --report $R/calibration.json --gpu-id 0 > $R/cal.log 2>&1
  python3 scripts/evaluate.py $W/model/model-final /tmp/corpus/test.spacy configs/gmb_labels.txt $R/test --gpu-id 0 > $R/test.log 2>&1
  tail -3 $R/cal.log
fi
copy_out
