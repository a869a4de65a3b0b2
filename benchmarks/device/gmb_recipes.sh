#!/usr/bin/env bash
# Runs on the lent GPU machine (device tool), from the repo root, with .gpu/ carried (the three files
# benchmarks/device/setup.sh lists; it sets up the stack, the encoder and the corpus).
# usage: BUDGET=seconds bash benchmarks/device/gmb_recipes.sh [VARIANTS_FILE]
#   VARIANTS_FILE (default benchmarks/device/variants/levers.txt): one run per line,
#   "NAME [spacy train overrides...]"; '#' lines are comments.
# 1) GMB conversion, 2) GPU tests, 3) the variants trained in parallel, all with the same number of
# steps (sized from a speed probe to fit the time left; warm-up 6 %, linear decay to that step),
# 4) each calibrated on the validation slice (scripts/calibrate.py, as the workflow does) and scored
# once on the test split. Results: $OUT/summary.txt and $OUT/results.tar.gz (logs, metrics JSON).
# The config's full length: 3 epochs, about 9,945 updates of ~400 padded words (each in two sub-batches
# of ~200) since session 70 (19,569 steps of ~200 in sessions 14-69, about 10,000 of ~400 in session 13,
# 5,150 of ~800 before; the variants files that say STEPS=5150 were
# written for that recipe).
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
T0=$(date +%s); BUDGET=${BUDGET:-500}; VARIANTS=${1:-benchmarks/device/variants/levers.txt}
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
[ -f "$VARIANTS" ] || { echo "$VARIANTS: no such variants file"; exit 2; }
mapfile -t LINES < <(grep -v '^\s*#' "$VARIANTS" | grep -v '^\s*$')
N=${#LINES[@]}; echo "$N variants from $VARIANTS"
R=/tmp/results
echo "== stack, encoder, convert ($(left)s left)"
source benchmarks/device/setup.sh
echo "== GPU tests, in the background until training ends ($(left)s left)"
[ -n "${NO_TESTS:-}" ] || ( timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_registration.py \
    tests/test_wordpieces.py > $R/pytest_gpu.txt 2>&1 ) &
CFG=configs/minilm_cpu.cfg
if [ -z "${STEPS:-}" ]; then
echo "== probe, $N processes ($(left)s left)"
for i in $(seq 1 $N); do python3 benchmarks/device/probe_speed.py $CFG /tmp/corpus/train.spacy /tmp/minilm 60 > $R/probe_$i.log 2>&1 & done; wait
RATE=$(grep -h STEPS_PER_S $R/probe_*.log | awk '{s+=$2; n++} END {if (n) printf "%.3f", s/n; else print 0}')
echo "steps/s per process with $N in parallel: $RATE"
# Train for the time left minus ~120 s for calibrate + test scoring; of that, ~40 s go to loading
# and ~12 s to each of the 5 validation passes (steps 0, 1/4 ... 4/4). In session 1 the runs went
# ~20 % slower than the probe (batches by padded size, validation), hence the 0.8.
TRAIN_S=$(( $(left) - 120 ))
STEPS=$(python3 -c "r=float('$RATE'); print(max(200, min(int(0.8 * r * ($TRAIN_S - 100)), 6870)))")
else TRAIN_S=$(( $(left) - 60 )); fi  # STEPS given: no probe (to repeat an earlier run's length)
EVAL_FREQ=$(( STEPS / 4 ))
echo "train ${TRAIN_S}s: ${STEPS} steps, eval every ${EVAL_FREQ}"
for line in "${LINES[@]}"; do
  read -r -a words <<< "$line"; name=${words[0]}; args=("${words[@]:1}")  # no glob: ["MISC"] stays as written
  ( s=$(date +%s); timeout $TRAIN_S python3 -m spacy train $CFG --output /tmp/runs/$name --paths.train /tmp/corpus/train.spacy \
      --paths.dev /tmp/corpus/dev.spacy --paths.encoder /tmp/minilm --gpu-id 0 --training.max_epochs 0 \
      --training.max_steps $STEPS --training.eval_frequency $EVAL_FREQ \
      --training.optimizer.learn_rate.warmup_steps $(( STEPS * 6 / 100 )) \
      --training.optimizer.learn_rate.total_steps $STEPS "${args[@]}" > $R/train_$name.log 2>&1
    echo "rc $? wall $(( $(date +%s) - s ))s" >> $R/train_$name.log ) &
done; wait
[ -n "${NO_TESTS:-}" ] || echo "GPU tests: $(tail -1 $R/pytest_gpu.txt)"
echo "== calibrate + test ($(left)s left)"
for d in /tmp/runs/*; do
  n=$(basename $d); m=$d/model-best; [ -d $m ] || m=$d/model-last
  ( python3 scripts/calibrate.py $m /tmp/corpus/dev.spacy $d/model-final --report $R/$n/calibration.json --gpu-id 0 > $R/$n.cal.log 2>&1
    python3 scripts/evaluate.py $d/model-final /tmp/corpus/test.spacy configs/gmb_labels.txt $R/$n/test --gpu-id 0 > $R/$n.test.log 2>&1 ) &
done; wait
python3 - "$STEPS" <<'PY' | tee $R/summary.txt
import json, glob, os, sys
print(f"steps per run: {sys.argv[1]}")
for d in sorted(glob.glob("/tmp/results/*/calibration.json")):
    n = d.split("/")[-2]
    c = json.load(open(d)); t0 = [r for r in c["table"] if r["tau"] == 0][0]
    tc = [r for r in c["table"] if r["tau"] == c["chosen_tau"]][0]
    row = [n, f"val macroF1 raw {t0['f']:.4f} cal {tc['f']:.4f} (tau {c['chosen_tau']})"]
    p = f"/tmp/results/{n}/test/token_report.json"
    if os.path.exists(p):
        r = json.load(open(p)); e = json.load(open(f"/tmp/results/{n}/test/entity_scores.json"))
        row.append(f"test macroF1 {r['macro avg']['f1-score']:.4f} P {r['macro avg']['precision']:.4f} R {r['macro avg']['recall']:.4f} acc {r['accuracy']:.4f} entF {e['f']:.4f}")
    print(" | ".join(row))
PY
for n in $(ls /tmp/runs); do echo "$n: $(tail -1 $R/train_$n.log)"; done
tar czf $OUT/results.tar.gz -C /tmp results; cp $R/summary.txt $OUT/
echo "done in $(( $(date +%s) - T0 ))s"
