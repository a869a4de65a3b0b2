"""Distillation: teacher targets written on training docs, and the student's distillation loss."""
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import spacy
import torch
from spacy.tokens import Doc, DocBin
from spacy.training import Example

from spacy_ner_bert.decode import log_softmax
from spacy_ner_bert.distill import attach, teacher_log_probs, write_teacher_targets
from util import TRAIN_DATA, make_examples, ner_config, trained_nlp

ROOT = Path(__file__).resolve().parents[1]
GOLD = ["B-PER", "I-PER", "O", "B-LOC", "O"]


@pytest.fixture(scope="module")
def teacher_dir(tiny_bert, tmp_path_factory):
    """A tiny pipeline overfit on TRAIN_DATA, saved: the teacher."""
    path = tmp_path_factory.mktemp("teacher") / "model"
    trained_nlp(tiny_bert).to_disk(path)
    return path


@pytest.fixture(scope="module")
def train_file(teacher_dir, tmp_path_factory):
    nlp = spacy.load(teacher_dir)
    path = tmp_path_factory.mktemp("corpus") / "train.spacy"
    DocBin(docs=[eg.reference for eg in make_examples(nlp)]).to_disk(path)
    return path


def _example(nlp, teacher=None):
    doc = Doc(nlp.vocab, words=["John", "Smith", "visited", "Moscow", "."])
    ref = Doc(nlp.vocab, words=[t.text for t in doc], ents=GOLD)
    if teacher is not None:
        attach(ref, nlp.get_pipe("ner_bert").tags.tags, teacher)
    return Example(doc, ref)


@pytest.mark.parametrize("weight,temperature", [(0.5, 1.0), (0.3, 2.0), (1.0, 3.0)])
def test_distill_loss_matches_autograd(tiny_bert, weight, temperature):
    """get_loss with distillation against torch autograd of (1-w) CE + w T^2 KL(teacher || model)."""
    nlp = trained_nlp(tiny_bert, steps=1)
    ner = nlp.get_pipe("ner_bert")
    ner.cfg["distill_weight"], ner.cfg["distill_temperature"] = weight, temperature
    n_tags = len(ner.tags.tags)
    rng = numpy.random.default_rng(0)
    logits = (rng.normal(size=(5, n_tags)) * 3).astype("float32")
    teacher = log_softmax(rng.normal(size=(5, n_tags)) * 3)
    teacher[1, 0] = -numpy.inf  # a tag the teacher rules out: probability 0, no NaN
    teacher = log_softmax(teacher)
    eg = _example(nlp, teacher)
    loss, grads = ner.get_loss([eg], [ner.model.ops.asarray2f(logits)])

    stored = torch.tensor(teacher.astype("float16").astype("float64"))  # as attach stores it
    gold = torch.tensor([ner.tags.tags.index(t) for t in GOLD])
    z = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    ce = torch.nn.functional.cross_entropy(z, gold)
    p = torch.softmax(stored / temperature, dim=1)
    log_q = torch.log_softmax(z / temperature, dim=1)
    kl = torch.where(p > 0, p * (torch.log(p.clamp_min(1e-30)) - log_q), torch.zeros_like(p)).sum(dim=1).mean()
    expected = (1 - weight) * ce + weight * temperature**2 * kl
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-4)
    numpy.testing.assert_allclose(ner.model.ops.to_numpy(grads[0]), z.grad.numpy(), rtol=1e-3, atol=1e-6)


def test_distill_term_zero_at_teacher_and_skips_forced_rows(tiny_bert):
    from spacy_ner_bert.pipe import distill_term

    rng = numpy.random.default_rng(1)
    logits = rng.normal(size=(4, 5)).astype("float32")
    teacher = log_softmax(logits).astype("float32")
    loss, grad = distill_term(numpy, logits, teacher, 2.0)
    assert loss == pytest.approx(0.0, abs=1e-6) and numpy.abs(grad).max() < 1e-6
    logits[2, 1:] = -numpy.inf  # a token forced to O: no wordpiece
    teacher = log_softmax(rng.normal(size=(4, 5)))
    loss, grad = distill_term(numpy, logits, teacher, 1.0)
    assert numpy.isfinite(loss) and loss > 0 and numpy.isfinite(grad).all() and (grad[2] == 0).all()


def test_missing_or_mismatched_targets(tiny_bert):
    nlp = trained_nlp(tiny_bert, steps=1)
    ner = nlp.get_pipe("ner_bert")
    ner.cfg["distill_weight"] = 0.5
    eg = _example(nlp)
    scores = ner.model.predict([eg.predicted])
    with pytest.raises(ValueError, match=r"example 0 .*'John Smith.* has no teacher targets.*teacher_targets\.py"):
        ner.get_loss([eg], scores)
    n_tags = len(ner.tags.tags)
    short = _example(nlp, numpy.zeros((4, n_tags)))
    with pytest.raises(ValueError, match="teacher targets for 4 tokens, but the doc has 5"):
        ner.get_loss([short], scores)
    other = _example(nlp)
    attach(other.reference, list(reversed(ner.tags.tags)), numpy.zeros((5, n_tags)))
    with pytest.raises(ValueError, match="teacher targets for the tags"):
        ner.get_loss([other], scores)
    assert teacher_log_probs(eg.reference, 5, ner.tags.tags, "x") is None


def test_write_teacher_targets(teacher_dir, train_file, tmp_path):
    out = tmp_path / "train_teacher.spacy"
    # Two copies of one teacher pool to that teacher's own log-probabilities.
    stats = write_teacher_targets(train_file, out, [teacher_dir, teacher_dir], log=lambda _: None)
    assert stats["docs"] == len(TRAIN_DATA) and stats["teachers"] == 2
    assert stats["pooled_argmax_equals_gold"] == 1.0  # the teacher is overfit on these docs
    nlp = spacy.load(teacher_dir)
    ner = nlp.get_pipe("ner_bert")
    docs = list(DocBin().from_disk(out).get_docs(nlp.vocab))
    expected = ner.logits([nlp.make_doc(d.text) for d in docs])
    for doc, logits in zip(docs, expected):
        assert [(e.text, e.label_) for e in doc.ents]  # the gold annotation is kept
        got = teacher_log_probs(doc, len(logits), ner.tags.tags, "doc")
        numpy.testing.assert_allclose(got, log_softmax(logits), atol=2e-2)  # stored as float16


def test_student_trains_on_targets_and_saves(tiny_bert, teacher_dir, train_file, tmp_path):
    out = tmp_path / "train_teacher.spacy"
    write_teacher_targets(train_file, out, [teacher_dir], log=lambda _: None)
    nlp = spacy.blank("en")
    nlp.add_pipe("ner_bert", config=ner_config(tiny_bert, distill_weight=0.5, distill_temperature=2.0))
    examples = [Example(nlp.make_doc(d.text), d) for d in DocBin().from_disk(out).get_docs(nlp.vocab)]
    optimizer = nlp.initialize(lambda: examples)
    losses = {}
    for _ in range(80):
        losses = nlp.update(examples, sgd=optimizer, drop=0.0)
    assert numpy.isfinite(losses["ner_bert"])
    assert nlp.evaluate(make_examples(nlp))["ents_f"] == 1.0
    nlp.to_disk(tmp_path / "student")
    cfg = spacy.load(tmp_path / "student").get_pipe("ner_bert").cfg
    assert (cfg["distill_weight"], cfg["distill_temperature"]) == (0.5, 2.0)


def test_teacher_with_other_tags(tiny_bert, teacher_dir, train_file, tmp_path):
    other = spacy.blank("en")
    other.add_pipe("ner_bert", config=ner_config(tiny_bert))
    other.initialize(lambda: make_examples(other, TRAIN_DATA[:2]))  # PER, LOC, TIME only
    other.to_disk(tmp_path / "other")
    with pytest.raises(ValueError, match="other: tags .* differ from"):
        write_teacher_targets(train_file, tmp_path / "out.spacy", [teacher_dir, tmp_path / "other"], log=lambda _: None)


def test_script_names_missing_teacher(train_file, tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "teacher_targets.py"), str(train_file), str(tmp_path / "o.spacy"),
         str(tmp_path / "no_such_model")],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode == 1
    assert "no_such_model: no such teacher pipeline directory" in " ".join((result.stdout + result.stderr).split())
    assert not (tmp_path / "o.spacy").exists()


def test_bad_inputs_name_the_file(teacher_dir, tmp_path):
    bad = tmp_path / "bad.spacy"
    bad.write_text("not a DocBin")
    with pytest.raises(ValueError, match=r"bad\.spacy: .*DocBin"):
        write_teacher_targets(bad, tmp_path / "o.spacy", [teacher_dir], log=lambda _: None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"teacher .*empty: "):
        write_teacher_targets(bad, tmp_path / "o.spacy", [tmp_path / "empty"], log=lambda _: None)
    assert not (tmp_path / "o.spacy").exists()
