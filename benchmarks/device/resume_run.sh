#!/usr/bin/env bash
# Runs on the lent GPU machine (device tool), from the repo root, with .gpu/ carried (the three files
# benchmarks/device/setup.sh lists; it sets up the stack, the encoder and the corpus). The workflow's
# trainer on CUDA with the default recipe (configs/minilm_cpu.cfg, FGM, no override but the paths and the
# seed), as project.yml's train step runs it (`python -m spacy_ner_bert train ... --checkpoint-every 1000`):
#   piece 1: stopped by --max-minutes PIECE1 (a checkpoint), the GPU tests running beside it;
#   piece 2: the same command with --resume, alone on the GPU, stopped by --max-minutes so that it ends
#            about WAIT seconds after the script started.
# A device call lasts 10 minutes at most: the recipe (about 9,945 updates of ~400 since
# session 70, 19,572 steps of ~200 before) does not fit, so this measures the
# second piece's steps per second (Δstep / Δseconds of the two checkpoints' progress.json, any validation
# pass included) and checks that a checkpoint written on CUDA resumes there; a validation row (every
# 1,980 updates since session 70) is printed if the run gets that far. Log lines are stamped with the seconds since the piece started.
# Results: $OUT/summary.txt and $OUT/results.tar.gz.
# usage: WAIT=seconds PIECE1=minutes SEED=n bash benchmarks/device/resume_run.sh
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
T0=$(date +%s); WAIT=${WAIT:-540}; SEED=${SEED:-0}; PIECE1=${PIECE1:-0.75}; GPU=${GPU:-0}  # GPU=-1: a dry run on the CPU
W=/tmp/full; R=$W/results
copy_out() {
  { echo "== call at $(date -u +%FT%TZ), waited $(( $(date +%s) - T0 ))s, setup took ${SETUP:-?}s"
    for piece in 1 2; do
      echo "-- piece $piece"; cat $R/piece$piece.log 2>/dev/null
      [ -f $R/progress_piece$piece.json ] && python3 -c "import json,sys; p=json.load(open(sys.argv[1])); print('progress: step', p['step'], 'seconds', p['seconds'], 'epoch', p['epoch'], 'results', p['results'])" $R/progress_piece$piece.json
    done
    cat $R/rc.txt 2>/dev/null
    [ -f $R/progress_piece1.json ] && [ -f $R/progress_piece2.json ] && python3 -c "
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:])
print(f'piece 2: steps {a[\"step\"]}..{b[\"step\"]} in {b[\"seconds\"] - a[\"seconds\"]} s: {(b[\"step\"] - a[\"step\"]) / max(1, b[\"seconds\"] - a[\"seconds\"]):.2f} steps/s')" $R/progress_piece1.json $R/progress_piece2.json
    [ -f $R/pytest_gpu.txt ] && { echo "-- GPU tests"; grep -E "passed|failed|error|Error|FAILED" $R/pytest_gpu.txt | tail -15; }
  } > $OUT/summary.txt
  tar czf $OUT/results.tar.gz -C $W results
  cat $OUT/summary.txt
}
source benchmarks/device/setup.sh
SETUP=$(( $(date +%s) - T0 ))
( timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_registration.py \
    tests/test_wordpieces.py > $R/pytest_gpu.txt 2>&1 ) &
ARGS=(configs/minilm_cpu.cfg --output $W/run --checkpoint-every 1000 --paths.train /tmp/corpus/train.spacy
      --paths.dev /tmp/corpus/dev.spacy --paths.encoder /tmp/minilm --gpu-id $GPU --system.seed $SEED)
python3 -m spacy_ner_bert train "${ARGS[@]}" --max-minutes $PIECE1 2>&1 | python3 benchmarks/device/stamp.py > $R/piece1.log
echo "piece 1: rc ${PIPESTATUS[0]} (3: stopped with a checkpoint)" >> $R/rc.txt
cp $W/run/checkpoint/progress.json $R/progress_piece1.json 2>/dev/null
wait  # the GPU tests: piece 2 has the GPU alone
# piece 2's limit: what is left of WAIT, less ~45 s to build the pipeline and ~15 s to save
M2=$(python3 -c "print(max(0.5, ($WAIT - ($(date +%s) - $T0) - 60) / 60))")
echo "piece 2: --max-minutes $M2" >> $R/rc.txt
timeout -s TERM $(( WAIT - ($(date +%s) - T0) + 20 )) python3 -m spacy_ner_bert train "${ARGS[@]}" --resume \
    --max-minutes $M2 2>&1 | python3 benchmarks/device/stamp.py > $R/piece2.log
echo "piece 2: rc ${PIPESTATUS[0]} (3: stopped with a checkpoint)" >> $R/rc.txt
cp $W/run/checkpoint/progress.json $R/progress_piece2.json 2>/dev/null
copy_out
