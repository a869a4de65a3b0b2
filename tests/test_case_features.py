"""Casing flags for uncased encoders: the flags, and TokenClassifier.v2 using them."""
import copy

import numpy
import pytest
import spacy
from spacy.util import make_tempdir
from util import TRAIN_DATA, ents_of, make_examples

from spacy_ner_bert.layers.case_features import CASE_FEATURES, case_features
from spacy_ner_bert.pipe import DEFAULT_MODEL

V2 = {"@architectures": "spacy-ner-bert.TokenClassifier.v2", "case_features": True}


def flags(row):
    return {name for name, v in zip(CASE_FEATURES, row) if v}


def test_flags_per_token():
    nlp = spacy.blank("en")
    docs = [nlp("Hello WORLD from U.S. iPhone 2020 , ok"), nlp(""), nlp("the End")]
    rows = case_features(docs)
    assert rows.shape == (10, len(CASE_FEATURES)) and rows.dtype == numpy.float32
    expected = [
        {"title", "sent_start"}, {"upper"}, {"lower"}, {"upper", "title"}, {"mixed"},
        {"uncased", "digit"}, {"uncased"}, {"lower"},
        {"lower", "sent_start"}, {"title"},  # second non-empty doc: its first token starts a sentence
    ]
    assert [flags(r) for r in rows] == expected


def test_sentence_starts_inside_a_doc():
    nlp = spacy.blank("en")
    doc = nlp("Rain fell . Sun shone")
    doc[3].is_sent_start = True
    assert [("sent_start" in flags(r)) for r in case_features([doc])] == [True, False, False, True, False]


def test_no_docs_or_only_empty_docs():
    nlp = spacy.blank("en")
    assert case_features([]).shape == (0, len(CASE_FEATURES))
    assert case_features([nlp(""), nlp("")]).shape == (0, len(CASE_FEATURES))
    assert flags(case_features([nlp(""), nlp(" ")])[0]) == {"uncased", "sent_start"}


def _component_config(tiny_bert, case=True):
    model = copy.deepcopy(dict(DEFAULT_MODEL))
    model.update(V2, case_features=case)
    model["tok2vec"]["name"] = tiny_bert
    return {"model": model}


def test_v2_trains_and_sees_case(tiny_bert):
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("ner_bert", config=_component_config(tiny_bert))

    spacy.util.fix_random_seed(0)
    examples = make_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    # The head's input: encoder width + one column per casing flag.
    head = ner.model.get_ref("head")
    hidden = ner.model.get_ref("tok2vec").predict([nlp("x")])[0].shape[1]
    assert head.get_dim("nI") == hidden + len(CASE_FEATURES)
    for _ in range(60):
        nlp.update(examples, sgd=optimizer, drop=0.0)
    for text, ents in TRAIN_DATA:
        assert ents_of(nlp(text)) == ents
    # The encoder is uncased: only the casing flags can tell these two apart.
    upper, lower = (ner.model.predict([nlp(t)])[0] for t in ("Obama met Putin .", "obama met putin ."))
    assert not numpy.allclose(upper, lower)
    with make_tempdir() as d:
        nlp.to_disk(d)
        loaded = spacy.load(d)
    for text, _ in TRAIN_DATA:
        a, b = nlp(text), loaded(text)
        assert ents_of(a) == ents_of(b)
        assert a.spans["ner_bert"].attrs["scores"] == pytest.approx(b.spans["ner_bert"].attrs["scores"], rel=1e-5)


def test_v2_without_case_features_is_v1(tiny_bert):
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("ner_bert", config=_component_config(tiny_bert, case=False))
    examples = make_examples(nlp)
    nlp.initialize(lambda: examples)
    upper, lower = (ner.model.predict([nlp(t)])[0] for t in ("Obama met Putin .", "obama met putin ."))
    numpy.testing.assert_allclose(upper, lower, rtol=1e-5, atol=1e-6)


def test_v2_with_empty_docs_in_batch(tiny_bert):
    nlp = spacy.blank("en")
    nlp.add_pipe("ner_bert", config=_component_config(tiny_bert))

    examples = make_examples(nlp)
    nlp.initialize(lambda: examples)
    docs = list(nlp.pipe(["", "Obama met Putin .", " ", "In Moscow ."]))
    assert [len(d) for d in docs] == [0, 4, 1, 3]


def test_export_hf_refuses_case_features(tiny_bert, tmp_path):
    from spacy_ner_bert.checkpoints import CheckpointError, export_hf

    nlp = spacy.blank("en")
    config = _component_config(tiny_bert)
    config["model"]["head"] = {"@architectures": "spacy-ner-bert.LinearHead.v1"}
    nlp.add_pipe("ner_bert", config=config)
    examples = make_examples(nlp)
    nlp.initialize(lambda: examples)
    with pytest.raises(CheckpointError, match="casing features"):
        export_hf(nlp, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", [False, True])
def test_sentence_spans_give_each_sentence_its_own_logits(tiny_bert, case):
    """README's configuration for documents: with a sentencizer before ner_bert and sent_spans as the
    span getter (set at load time), a sentence inside a document gets the logits it gets alone, the
    casing flags' sentence start included; the default strided windows mix the sentences."""
    nlp = spacy.blank("en")
    nlp.add_pipe("ner_bert", config=_component_config(tiny_bert, case))
    examples = make_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(3):
        nlp.update(examples, sgd=optimizer)
    sents = [text for text, _ in TRAIN_DATA[:3]]
    with make_tempdir() as d:
        nlp.to_disk(d)
        spans = spacy.load(d, config={"components": {"ner_bert": {"model": {"tok2vec": {
            "get_spans": {"@span_getters": "spacy-transformers.sent_spans.v1"}}}}}})
    spans.add_pipe("sentencizer", before="ner_bert")
    sentencizer = spans.get_pipe("sentencizer")
    document = sentencizer(spans.make_doc(" ".join(sents)))
    assert [s.text for s in document.sents] == sents
    model = spans.get_pipe("ner_bert").model
    alone = numpy.concatenate([model.predict([sentencizer(spans.make_doc(s))])[0] for s in sents])
    assert numpy.allclose(model.predict([document])[0], alone, atol=1e-5)
    strided = nlp.get_pipe("ner_bert").model
    assert not numpy.allclose(strided.predict([nlp.make_doc(" ".join(sents))])[0], alone, atol=1e-3)
