"""Token-level scores agree with sklearn's classification_report; entity scores with spaCy's."""
import numpy
import pytest
import spacy
from sklearn.metrics import classification_report
from spacy.tokens import Doc
from spacy.training import Example

from spacy_ner_bert.scoring import (
    bootstrap_macro_f1,
    doc_label_counts,
    format_token_report,
    macro_f1_from_counts,
    score_examples,
    token_report,
)

LABELS = ["O", "B-GPE", "B-LOC", "B-MISC", "B-ORG", "B-PER", "B-TIME",
          "I-GPE", "I-LOC", "I-MISC", "I-ORG", "I-PER", "I-TIME"]


def test_token_report_matches_sklearn():
    rng = numpy.random.default_rng(0)
    gold = list(rng.choice(LABELS[:-1], size=2000, p=[0.8] + [0.2 / 11] * 11))  # I-TIME never gold
    pred = [g if rng.random() < 0.85 else str(rng.choice(LABELS)) for g in gold]
    ours = token_report(gold, pred, LABELS)
    ref = classification_report(gold, pred, labels=LABELS, output_dict=True, zero_division=0)
    for label in LABELS + ["macro avg", "weighted avg"]:
        for key in ("precision", "recall", "f1-score", "support"):
            assert ours[label][key] == pytest.approx(ref[label][key], abs=1e-12), (label, key)
    assert ours["accuracy"] == pytest.approx(numpy.mean([g == p for g, p in zip(gold, pred)]))


def test_hand_computed_example():
    gold = ["O", "O", "B-PER", "I-PER", "B-LOC"]
    pred = ["O", "B-PER", "B-PER", "O", "B-LOC"]
    r = token_report(gold, pred, ["O", "B-PER", "I-PER", "B-LOC"])
    assert r["O"] == {"precision": 0.5, "recall": 0.5, "f1-score": 0.5, "support": 2}
    assert r["B-PER"] == {"precision": 0.5, "recall": 1.0, "f1-score": pytest.approx(2 / 3), "support": 1}
    assert r["I-PER"]["f1-score"] == 0.0 and r["B-LOC"]["f1-score"] == 1.0
    assert r["accuracy"] == 0.6
    assert r["macro avg"]["f1-score"] == pytest.approx((0.5 + 2 / 3 + 0 + 1) / 4)


def test_format_has_nemo_rows():
    gold = ["O", "B-PER", "I-PER"]
    table = format_token_report(token_report(gold, gold, LABELS), LABELS)
    rows = [line for line in table.splitlines() if "(label_id:" in line]
    assert [r.split()[0] for r in rows] == LABELS
    assert "O (label_id: 0)" in rows[0] and "I-TIME (label_id: 12)" in rows[-1]
    assert any(line.strip().startswith("macro avg") for line in table.splitlines())
    assert any(line.strip().startswith("weighted avg") for line in table.splitlines())


def test_score_examples_entity_level():
    vocab = spacy.blank("en").vocab
    words = ["John", "Smith", "went", "to", "Paris"]
    gold = Doc(vocab, words=words, ents=["B-PER", "I-PER", "O", "O", "B-GPE"])
    pred = Doc(vocab, words=words, ents=["B-PER", "O", "O", "O", "B-GPE"])
    scores = score_examples([Example(pred, gold)], LABELS)
    assert scores["entity"]["p"] == 0.5 and scores["entity"]["r"] == 0.5
    assert scores["entity"]["per_type"]["GPE"]["f"] == 1.0
    assert scores["token"]["I-PER"]["recall"] == 0.0


def _example(nlp, pred_words, pred_ents, gold_words, gold_ents):
    pred = Doc(nlp.vocab, words=pred_words, ents=pred_ents)
    gold = Doc(nlp.vocab, words=gold_words, ents=gold_ents)
    return Example(pred, gold)


def test_registered_scorer_adds_token_scores():
    from spacy.util import registry

    nlp = spacy.blank("en")
    words = ["Ann", "went", "to", "New", "York", "today"]
    examples = [
        _example(nlp, words, ["B-PER", "O", "O", "B-LOC", "B-LOC", "O"], words, ["B-PER", "O", "O", "B-LOC", "I-LOC", "O"]),
        _example(nlp, words, ["O", "O", "O", "B-GPE", "I-GPE", "B-TIME"], words, ["B-PER", "O", "O", "B-GPE", "I-GPE", "O"]),
    ]
    scores = registry.scorers.get("spacy-ner-bert.ner_scorer.v1")()(examples)
    gold = [t for eg in examples for t in score_gold(eg)]
    pred = [t for eg in examples for t in score_pred(eg)]
    labels = ["O"] + sorted(set(gold + pred) - {"O"})
    ref = classification_report(gold, pred, labels=labels, output_dict=True, zero_division=0)
    assert scores["token_macro_f"] == pytest.approx(ref["macro avg"]["f1-score"])
    assert scores["token_macro_p"] == pytest.approx(ref["macro avg"]["precision"])
    assert scores["token_acc"] == pytest.approx(ref["accuracy"])
    assert scores["token_per_tag"]["B-TIME"]["p"] == 0.0
    assert scores["ents_f"] == pytest.approx(score_examples(examples, labels)["entity"]["f"])


def score_gold(eg):
    from spacy_ner_bert.scoring import doc_iob_tags

    return doc_iob_tags(eg.reference)


def score_pred(eg):
    from spacy_ner_bert.scoring import doc_iob_tags

    return doc_iob_tags(eg.predicted)


def test_token_scores_on_a_different_tokenization():
    """During `spacy train` the predicted doc is re-tokenized: each gold word takes the tag of
    the first predicted token it aligns to."""
    from spacy_ner_bert.scoring import gold_word_tags, token_scores

    nlp = spacy.blank("en")
    eg = _example(
        nlp, ["U.S", ".", "troops", "left", "Iraq"], ["B-GPE", "O", "O", "O", "B-GPE"],
        ["U.S.", "troops", "left", "Iraq"], ["B-GPE", "O", "O", "B-GPE"],
    )
    assert gold_word_tags(eg) == ["B-GPE", "O", "O", "B-GPE"]
    assert token_scores([eg])["token_macro_f"] == 1.0


def test_token_scores_without_tokens():
    from spacy_ner_bert.scoring import token_scores

    nlp = spacy.blank("en")
    assert token_scores([Example(nlp(""), nlp(""))])["token_macro_f"] is None


def _random_docs(rng, n_docs, labels=LABELS, accuracy=0.85):
    gold, pred = [], []
    for _ in range(n_docs):
        g = list(rng.choice(labels, size=int(rng.integers(1, 12)), p=[0.7] + [0.3 / (len(labels) - 1)] * (len(labels) - 1)))
        gold.append(g)
        pred.append([t if rng.random() < accuracy else str(rng.choice(labels)) for t in g])
    return gold, pred


def test_doc_counts_sum_to_the_token_report():
    rng = numpy.random.default_rng(1)
    gold, pred = _random_docs(rng, 300)
    counts = doc_label_counts(gold, pred, LABELS)
    assert counts.shape == (300, 3, len(LABELS))
    flat = token_report(sum(gold, []), sum(pred, []), LABELS)
    assert macro_f1_from_counts(counts.sum(axis=0)) == pytest.approx(flat["macro avg"]["f1-score"], abs=1e-12)
    assert counts.sum(axis=0)[2].tolist() == [flat[label]["support"] for label in LABELS]


def test_a_bootstrap_resample_is_the_report_of_the_repeated_docs():
    """Resample r of bootstrap_macro_f1 scores the docs drawn with the same seed, each as often as drawn."""
    rng = numpy.random.default_rng(2)
    gold, pred = _random_docs(rng, 50)
    counts = doc_label_counts(gold, pred, LABELS)
    samples = bootstrap_macro_f1([counts], n_resamples=3, seed=7)
    draws = numpy.random.default_rng(7).multinomial(50, numpy.full(50, 1 / 50), size=3)
    for r in range(3):
        g = [t for d, k in enumerate(draws[r]) for _ in range(k) for t in gold[d]]
        p = [t for d, k in enumerate(draws[r]) for _ in range(k) for t in pred[d]]
        assert samples[0, r] == pytest.approx(token_report(g, p, LABELS)["macro avg"]["f1-score"], abs=1e-12)
    assert len(set(samples[0].tolist())) == 3  # the resamples differ


def test_bootstrap_is_paired_and_seeded():
    rng = numpy.random.default_rng(3)
    gold, pred = _random_docs(rng, 200)
    worse = [[t if rng.random() < 0.6 else str(rng.choice(LABELS)) for t in g] for g in gold]
    a = doc_label_counts(gold, pred, LABELS)
    b = doc_label_counts(gold, worse, LABELS)
    samples = bootstrap_macro_f1([a, a, b], n_resamples=400, seed=0)
    assert samples.shape == (3, 400)
    assert (samples[0] == samples[1]).all()  # the same model on the same resamples: no difference at all
    assert (samples[0] > samples[2]).mean() > 0.95
    assert (bootstrap_macro_f1([a], n_resamples=400, seed=0) == samples[:1]).all()
    assert not (bootstrap_macro_f1([a], n_resamples=400, seed=1) == samples[:1]).all()


def test_bootstrap_interval_narrows_with_more_docs():
    rng = numpy.random.default_rng(4)
    widths = []
    for n in (100, 1600):
        gold, pred = _random_docs(rng, n)
        s = bootstrap_macro_f1([doc_label_counts(gold, pred, LABELS)], n_resamples=300, seed=0)[0]
        widths.append(numpy.percentile(s, 97.5) - numpy.percentile(s, 2.5))
    assert widths[1] < widths[0] / 2


def test_bootstrap_rejects_bad_input():
    a = doc_label_counts([["O", "B-PER"]], [["O", "O"]], LABELS)
    b = doc_label_counts([["O"], ["O"]], [["O"], ["O"]], LABELS)
    with pytest.raises(ValueError, match="different docs"):
        bootstrap_macro_f1([a, b])
    with pytest.raises(ValueError, match="no models"):
        bootstrap_macro_f1([])
    with pytest.raises(ValueError, match="doc 1: 1 gold tags but 2 predicted"):
        doc_label_counts([["O"], ["O"]], [["O"], ["O", "O"]], LABELS)
    with pytest.raises(ValueError, match="doc 0: tags \\['B-FOO'\\]"):
        doc_label_counts([["B-FOO"]], [["O"]], LABELS)
    with pytest.raises(ValueError, match="2 gold docs but 1 predicted"):
        doc_label_counts([["O"], ["O"]], [["O"]], LABELS)
