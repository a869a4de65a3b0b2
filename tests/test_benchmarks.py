"""The benchmark scripts run end to end on a tiny model (what the speed script measures is not tested)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from spacy.tokens import DocBin
from spacy.training import Example
from transformers import AutoTokenizer, BertConfig, BertForTokenClassification
from util import make_examples, trained_nlp

from spacy_ner_bert.corpus import read_label_file, unannotated_copy
from spacy_ner_bert.scoring import score_examples

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


def test_device_variants_apply_to_the_default_config(tiny_bert):
    """Each line of benchmarks/device/variants/*.txt overrides keys that exist in
    configs/minilm_cpu.cfg, with values the ner_bert factory accepts: a typo there would only show
    on the lent GPU machine, whose time is scarce."""
    import spacy
    from spacy.cli._util import parse_config_overrides

    files = sorted((ROOT / "benchmarks" / "device" / "variants").glob("*.txt"))
    assert files
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, *args = line.split()
            overrides = parse_config_overrides(args)
            overrides["paths.encoder"] = tiny_bert
            where = f"{path.name} line {number} ({name})"
            try:
                config = spacy.util.load_config(ROOT / "configs" / "minilm_cpu.cfg", overrides=overrides)
                spacy.util.load_model_from_config(config, auto_fill=False, validate=True)
            except Exception as err:  # the message names the file and line at fault
                raise AssertionError(f"{where}: {err}") from err


def test_bootstrap_benchmark_runs(tiny_bert, tmp_path):
    """benchmarks/bootstrap.py scores what evaluate scores; the same pipeline twice differs by exactly 0."""
    nlp = trained_nlp(tiny_bert, steps=15)
    nlp.to_disk(tmp_path / "model")
    gold = [eg.reference for eg in make_examples(nlp)]
    DocBin(docs=gold).to_disk(tmp_path / "gold.spacy")
    labels = ROOT / "configs" / "gmb_labels.txt"
    out = tmp_path / "boot.json"
    script = str(ROOT / "benchmarks" / "bootstrap.py")
    run = subprocess.run(
        [sys.executable, script, str(tmp_path / "gold.spacy"), str(labels), str(tmp_path / "model"),
         str(tmp_path / "model"), "--n", "50", "--json", str(out)],
        capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    expected = score_examples(
        [Example(p, g) for p, g in zip(nlp.pipe(unannotated_copy(d) for d in gold), gold)], read_label_file(labels)
    )["token"]["macro avg"]["f1-score"]
    first, second = result["models"]
    assert first["macro_f1"] == pytest.approx(expected, abs=1e-12) == second["macro_f1"]
    assert first["low"] <= first["macro_f1"] <= first["high"]
    assert (second["diff"], second["diff_low"], second["diff_high"], second["first_ahead"]) == (0.0, 0.0, 0.0, 0.0)
    assert result["docs"] == len(gold) and "rarest labels:" in run.stdout

    missing = subprocess.run([sys.executable, script, str(tmp_path / "gold.spacy"), str(labels),
                              str(tmp_path / "nope")], capture_output=True, text=True)
    assert missing.returncode == 2 and f"{tmp_path / 'nope'}: no such pipeline directory" in missing.stderr
    (tmp_path / "empty").mkdir()
    not_a_pipeline = subprocess.run([sys.executable, script, str(tmp_path / "gold.spacy"), str(labels),
                                     str(tmp_path / "empty")], capture_output=True, text=True)
    assert not_a_pipeline.returncode == 1 and not_a_pipeline.stderr.startswith(f"{tmp_path / 'empty'} on ")
