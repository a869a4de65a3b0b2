#!/usr/bin/env bash
# Copy of ../shared/device/pack-stack.sh with the two fixes the GPU machine needed: keep
# transformers/models/encoder_decoder, and keep every model's __init__.py + configuration_*.py
# (AutoModel/AutoTokenizer import them while resolving a config). Imported on an H200 in session 1.
# Pack the spaCy stack for the GPU machine (Python 3.12, x86-64; its image has torch, cupy, numpy,
# typer, requests, jinja2, pyyaml, safetensors but no spaCy, and transformers 5 which
# spacy-transformers 1.4 refuses). Output: .gpu/spacy-stack-cp312.tar.xz (~21 MB: .so files stripped
# of debug info, transformers model folders other than BERT-family removed).
# usage (repo root): bash ../shared/device/pack-stack.sh [extra-requirement ...]
set -euo pipefail
out=.gpu; mkdir -p "$out"; grep -qxF '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
w=$(mktemp -d); s=$(mktemp -d)
F=(--python-version 3.12 --implementation cp --only-binary=:all: --platform manylinux_2_28_x86_64
   --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
   --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64)
pkgs=(spacy==3.8.18 thinc==8.3.14 spacy-transformers==1.4.0 transformers==4.53.2 tokenizers==0.21.4
      "huggingface-hub>=0.30,<1.0" spacy-alignments blis cymem preshed murmurhash srsly wasabi catalogue
      confection weasel spacy-legacy spacy-loggers langcodes language-data marisa-trie cloudpathlib
      smart-open pydantic pydantic-core annotated-types typing-inspection "$@")
python3 -m pip download -q --no-deps "${F[@]}" -d "$w" "${pkgs[@]}"
python3 -m pip install -q --no-deps --no-index "${F[@]}" --target "$s" "$w"/*.whl
# Keep every model's package __init__ and configuration module (the auto classes import them while
# resolving a config), but only the BERT family's modeling/tokenization code.
find "$s/transformers/models" -mindepth 1 -maxdepth 1 -type d ! -name auto ! -name bert ! -name distilbert \
     ! -name roberta ! -name xlm_roberta ! -name encoder_decoder -print0 |
  while IFS= read -r -d '' d; do find "$d" -type f ! -name __init__.py ! -name 'configuration_*.py' -delete; done
rm -rf "$s"/spacy/tests "$s"/thinc/tests "$s"/spacy_transformers/tests "$s"/srsly/tests "$s"/blis/tests
find "$s" -name __pycache__ -prune -exec rm -rf {} +
find "$s" -name '*.so' -exec strip --strip-debug {} \;
tar cJf "$out/spacy-stack-cp312.tar.xz" -C "$s" .
rm -rf "$w" "$s"; ls -la "$out"
