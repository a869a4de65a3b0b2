"""Logit adjustment chosen on validation data: tag_bias, calibrate(), scripts/calibrate.py."""
import json
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import spacy
from spacy.tokens import DocBin
from spacy.training import Example
from util import TRAIN_DATA, ents_of, make_examples, trained_nlp

from spacy_ner_bert.calibrate import calibrate, choose_tau
from spacy_ner_bert.scoring import doc_iob_tags, token_report

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def nlp(tiny_bert):
    return trained_nlp(tiny_bert, steps=8)  # under-trained: some tags are still wrong


def macro_f(nlp, examples):
    gold = [t for eg in examples for t in doc_iob_tags(eg.reference)]
    pred = [t for eg in examples for t in doc_iob_tags(nlp(eg.reference.text))]
    return token_report(gold, pred, list(nlp.get_pipe("ner_bert").tags.tags))["macro avg"]["f1-score"]


def test_tag_bias_shifts_decisions(nlp):
    ner = nlp.get_pipe("ner_bert")
    text = TRAIN_DATA[0][0]
    try:
        bias = [0.0] * len(ner.tags)
        bias[ner.tags.tags.index("B-PER")] = 100.0
        ner.set_tag_bias(bias)
        doc = nlp(text)
        # B-PER everywhere it may go; an I- tag may still follow it, an O may not win.
        assert all(t.ent_iob_ in ("B", "I") for t in doc)
        ner.set_tag_bias(None)
        assert ents_of(nlp(text)) != ents_of(doc)
    finally:
        ner.set_tag_bias(None)


@pytest.mark.parametrize("bad", [[1.0], [float("nan")] * 13, [float("inf")] * 13])
def test_bad_tag_bias(nlp, bad):
    ner = nlp.get_pipe("ner_bert")
    if len(bad) == 13:
        bad = bad[: len(ner.tags)]
    with pytest.raises(ValueError, match="tag_bias needs"):
        ner.set_tag_bias(bad)


def test_calibrate_picks_the_best_tau_and_keeps_it(nlp, tiny_bert, tmp_path):
    examples = make_examples(nlp)
    ner = nlp.get_pipe("ner_bert")
    try:
        tau, table = calibrate(nlp, examples, taus=(-1.0, 0.5, 2.0, 5.0))
        assert [row["tau"] for row in table] == [-1.0, 0.0, 0.5, 2.0, 5.0]
        best = max(row["f"] for row in table)
        assert [row["f"] for row in table if row["tau"] == tau] == [best]
        # What calibrate reports for the chosen tau is what the pipeline now scores.
        assert macro_f(nlp, examples) == pytest.approx(best)
        assert (ner.cfg["tag_bias"] is None) == (tau == 0.0)
        nlp.to_disk(tmp_path / "p")
        loaded = spacy.load(tmp_path / "p").get_pipe("ner_bert").cfg["tag_bias"]
        assert loaded == (None if tau == 0.0 else pytest.approx(ner.cfg["tag_bias"], rel=1e-6))
    finally:
        ner.set_tag_bias(None)


def test_calibrate_bad_inputs(nlp):
    with pytest.raises(ValueError, match="no component 'ner'"):
        calibrate(nlp, make_examples(nlp), component="ner")
    empty = spacy.blank("en")("")
    with pytest.raises(ValueError, match="with tokens"):
        calibrate(nlp, [Example(empty, empty)])
    doc = nlp.make_doc("Bob ran")
    odd = Example.from_dict(doc, {"entities": [(0, 3, "FOO")]})
    with pytest.raises(ValueError, match="not among the component's tags"):
        calibrate(nlp, [odd])
    tags = nlp.get_pipe("ner_bert").tags
    with pytest.raises(ValueError, match="3 gold tags for 2 tokens of logits"):
        choose_tau([numpy.zeros((2, len(tags)))], ["O", "O", "O"], tags)


def test_calibrate_script(nlp, tmp_path):
    nlp.to_disk(tmp_path / "model")
    db = DocBin(docs=[eg.reference for eg in make_examples(nlp)])
    db.to_disk(tmp_path / "dev.spacy")
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "calibrate.py"), str(tmp_path / "model"),
                          str(tmp_path / "dev.spacy"), str(tmp_path / "out"), "--report", str(tmp_path / "r.json")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert "<- chosen" in run.stdout and len(report["table"]) == 16
    gold = [t for doc in db.get_docs(nlp.vocab) for t in doc_iob_tags(doc)]
    assert report["support"] == {tag: gold.count(tag) for tag in nlp.get_pipe("ner_bert").tags.tags}
    assert report["support"]["B-PER"] == 3 and "has 0 words" in " ".join(run.stdout.split())
    bias = spacy.load(tmp_path / "out").get_pipe("ner_bert").cfg.get("tag_bias")
    assert (bias is None) == (report["chosen_tau"] == 0.0)
    missing = subprocess.run([sys.executable, str(ROOT / "scripts" / "calibrate.py"), str(tmp_path / "nope"),
                              str(tmp_path / "dev.spacy"), str(tmp_path / "o2")], capture_output=True, text=True)
    assert missing.returncode == 1 and "no such pipeline directory" in " ".join((missing.stdout + missing.stderr).split())
    assert not (tmp_path / "o2").exists()


def test_evaluate_script_int8_and_bf16(nlp, tmp_path):
    """scripts/evaluate.py --int8 scores the quantized pipeline, --bf16 the pipeline with cpu_bf16 on;
    either with a GPU id, and the two together, are refused."""
    nlp.to_disk(tmp_path / "model")
    DocBin(docs=[eg.reference for eg in make_examples(nlp)]).to_disk(tmp_path / "test.spacy")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(nlp.get_pipe("ner_bert").tags.tags) + "\n")
    script = str(ROOT / "scripts" / "evaluate.py")
    args = [str(tmp_path / "model"), str(tmp_path / "test.spacy"), str(labels), str(tmp_path / "m")]
    run = subprocess.run([sys.executable, script, *args, "--int8"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "quantized to int8" in run.stdout
    report = json.loads((tmp_path / "m" / "token_report.json").read_text())
    assert 0.0 <= report["macro avg"]["f1-score"] <= 1.0
    gpu = subprocess.run([sys.executable, script, *args, "--int8", "--gpu-id", "0"], capture_output=True, text=True)
    assert gpu.returncode == 1 and "--int8 runs on CPU only" in gpu.stdout + gpu.stderr
    assert nlp.config["components"]["ner_bert"]["cpu_bf16"] is False
    run = subprocess.run([sys.executable, script, *args[:3], str(tmp_path / "b"), "--bf16"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "bfloat16 (cpu_bf16 = true)" in run.stdout
    report = json.loads((tmp_path / "b" / "token_report.json").read_text())
    assert 0.0 <= report["macro avg"]["f1-score"] <= 1.0
    for extra, message in ((["--gpu-id", "0"], "does nothing on a GPU"), (["--int8"], "cannot be combined")):
        clash = subprocess.run([sys.executable, script, *args, "--bf16", *extra], capture_output=True, text=True)
        assert clash.returncode == 1 and message in clash.stdout + clash.stderr
