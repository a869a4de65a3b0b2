"""The speed benchmark script runs end to end on a tiny model (what it measures is not tested)."""
import json
import subprocess
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

ROOT = Path(__file__).parent.parent
LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def test_speed_benchmark_runs(tiny_bert, tmp_path):
    config = BertConfig.from_pretrained(tiny_bert, id2label=dict(enumerate(LABELS)),
                                        label2id={label: i for i, label in enumerate(LABELS)})
    torch.manual_seed(0)
    BertForTokenClassification(config).save_pretrained(tmp_path / "model")
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(tmp_path / "model")
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(["John Smith visited New York in March ."] * 20 + ["Obama met Putin ."] * 20))
    out = tmp_path / "results"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--model", str(tmp_path / "model"),
         "--texts", str(texts), "--join", "4", "--batch-size", "4", "--threads", "1", "--out", str(out),
         "--contenders", "ner_bert,ner_bert_int8,hf,floor"],
        capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((out / "speed_join4_n10.json").read_text())
    assert set(summary["results"]) == {"ner_bert", "ner_bert_int8", "hf", "floor"}
    for result in summary["results"].values():
        assert result["words"] == 20 * 8 + 20 * 4 and result["words_per_s"] > 0
    assert 0.0 <= summary["entity_agreement_f1_ner_bert_hf"] <= 1.0
    assert "ner_bert time / floor time" in run.stdout
