"""Casing flags for uncased encoders: the flags, and TokenClassifier.v2 using them."""
import copy

import numpy
import pytest
import spacy
from spacy.util import make_tempdir
from util import TRAIN_DATA, encoder_v2_nlp, ents_of, initialized_nlp, make_examples

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


# --- casing at the encoder's input: TransformerEncoder.v2 case_token_types ---------------------


def test_case_token_types_mark_the_wordpieces_with_upper_case(tiny_bert):
    from transformers import AutoTokenizer

    from spacy_ner_bert.layers import wordpieces

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    texts = ["John SMITH met iPhone fans", "all lower case 12", "", "Zürich ÉTÉ"]
    encodings = wordpieces.encode_texts(tokenizer, texts)
    width = max(len(e) for e in encodings) + 2
    types = wordpieces.case_token_types(encodings, texts, width)
    assert types.shape == (4, width) and types.dtype == numpy.int64
    for row, (enc, text) in enumerate(zip(encodings, texts)):
        marked = [text[a:b] for (a, b), t in zip(enc.offsets, types[row]) if t]
        unmarked = [text[a:b] for (a, b), t in zip(enc.offsets, types[row]) if not t]
        assert all(any(c.isupper() for c in piece) for piece in marked)
        assert not any(c.isupper() for piece in unmarked for c in piece)
        # every upper-case letter of the text lies in a marked piece; specials and padding are 0
        assert sum(c.isupper() for c in "".join(marked)) == sum(c.isupper() for c in text)
        assert types[row, 0] == 0 and not types[row, len(enc) - 1 :].any()
    assert types[0].any() and types[3].any() and not types[1].any() and not types[2].any()


def test_case_token_types_reach_the_encoder_and_survive_saving(tiny_bert):
    nlp, examples, optimizer = encoder_v2_nlp(tiny_bert, case_token_types=True)
    ner = nlp.get_pipe("ner_bert")
    encoder = ner.encoder()
    assert encoder.attrs["case_token_types"] is True
    docs = [nlp.make_doc("Obama met Putin ."), nlp.make_doc("obama met putin .")]
    batch, _ = encoder(docs, is_train=False)
    assert batch.wordpieces.token_type_ids[0].any() and not batch.wordpieces.token_type_ids[1].any()
    tok2vec = ner.model.get_ref("tok2vec")
    upper, lower = tok2vec.predict(docs)
    assert not numpy.allclose(upper, lower)  # the uncased tokenizer gives both the same ids
    encoder.attrs["case_token_types"] = False
    upper, lower = tok2vec.predict(docs)
    numpy.testing.assert_allclose(upper, lower, rtol=1e-5, atol=1e-6)
    encoder.attrs["case_token_types"] = True
    for _ in range(40):
        nlp.update(examples, sgd=optimizer, drop=0.0)
    for text, ents in TRAIN_DATA:
        assert ents_of(nlp(text)) == ents
    with make_tempdir() as d:
        nlp.to_disk(d)
        loaded = spacy.load(d)
    assert loaded.get_pipe("ner_bert").encoder().attrs["case_token_types"] is True
    texts = [t for t, _ in TRAIN_DATA] + ["obama MET putin"]
    numpy.testing.assert_allclose(
        numpy.concatenate(loaded.get_pipe("ner_bert").logits([loaded.make_doc(t) for t in texts])),
        numpy.concatenate(ner.logits([nlp.make_doc(t) for t in texts])), rtol=1e-5, atol=1e-5,
    )


def test_encoder_v2_without_case_token_types_is_v1(tiny_bert):
    v1, _ = initialized_nlp(tiny_bert)
    v2, _, _ = encoder_v2_nlp(tiny_bert, case_token_types=False)
    assert "case_token_types" not in v2.get_pipe("ner_bert").encoder().attrs
    texts = [t for t, _ in TRAIN_DATA] + ["Obama met Putin .", "obama met putin ."]
    numpy.testing.assert_array_equal(
        numpy.concatenate(v2.get_pipe("ner_bert").logits([v2.make_doc(t) for t in texts])),
        numpy.concatenate(v1.get_pipe("ner_bert").logits([v1.make_doc(t) for t in texts])),
    )


def test_case_token_types_refused_where_the_encoder_cannot_take_them(tiny_bert, tmp_path):
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from spacy_ner_bert.checkpoints import export_hf
    from spacy_ner_bert.checkpoints.common import CheckpointError
    from spacy_ner_bert.layers.wordpieces import check_case_token_types

    fast = AutoTokenizer.from_pretrained(tiny_bert)
    slow = AutoTokenizer.from_pretrained(tiny_bert, use_fast=False)

    def encoder(tokenizer, n_types=2):
        return SimpleNamespace(tokenizer=tokenizer, transformer=SimpleNamespace(config=SimpleNamespace(type_vocab_size=n_types)))

    check_case_token_types(encoder(fast))
    with pytest.raises(ValueError, match="case_token_types = true needs a fast tokenizer"):
        check_case_token_types(encoder(slow))
    with pytest.raises(ValueError, match="at least 2 token types; this one has 1"):
        check_case_token_types(encoder(fast, n_types=1))
    fast.model_input_names = ["input_ids", "attention_mask"]
    with pytest.raises(ValueError, match="makes no token type ids"):
        check_case_token_types(encoder(fast))
    linear, _, _ = encoder_v2_nlp(
        tiny_bert, head={"@architectures": "spacy-ner-bert.LinearHead.v1"}, case_token_types=True
    )
    with pytest.raises(CheckpointError, match="token types"):
        export_hf(linear, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
