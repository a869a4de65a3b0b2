"""The vectorized encoder forward builds what spacy-transformers' own forward builds."""
import numpy
import pytest
import spacy
from spacy.tokens import Doc
from spacy_transformers.layers import transformer_model as st_transformer_model
from spacy_transformers.span_getters import configure_strided_spans, get_sent_spans

from spacy_ner_bert.layers import wordpieces

from util import ner_config

TEXTS = [
    "John Smith visited New York in March .",
    "",
    "  leading and  double   spaces , trailing  ",
    "Café crème à Zürich — naïve résumé ☃ 😀 emoji",
    "gonna wanna U.S. officials' talks (Baghdad)",
    "xyzzyq qwertyuiop unknownwordpieces 12345.6789",
    "\n\nnew\nlines\tand\ttabs\n",
    " ".join(["Obama met Putin in Moscow ."] * 60),  # several strided windows
    "[PAD] [CLS] literal special tokens [SEP]",
]


@pytest.fixture(scope="module")
def nlp(tiny_bert):
    nlp = spacy.blank("en")
    nlp.add_pipe("ner_bert", config=ner_config(tiny_bert))
    nlp.initialize()
    return nlp


def _both(encoder, docs):
    ours, _ = wordpieces.forward(encoder, docs, is_train=False)
    theirs, _ = st_transformer_model.forward(encoder, docs, is_train=False)
    return ours, theirs


def _assert_same(ours, theirs):
    assert ours.spans == theirs.spans
    assert ours.wordpieces.strings == theirs.wordpieces.strings
    assert ours.wordpieces.lengths == theirs.wordpieces.lengths
    numpy.testing.assert_array_equal(ours.wordpieces.input_ids, theirs.wordpieces.input_ids)
    assert ours.wordpieces.input_ids.dtype == theirs.wordpieces.input_ids.dtype
    numpy.testing.assert_array_equal(ours.wordpieces.attention_mask, theirs.wordpieces.attention_mask)
    numpy.testing.assert_array_equal(ours.wordpieces.token_type_ids, theirs.wordpieces.token_type_ids)
    numpy.testing.assert_array_equal(ours.align.dataXd, theirs.align.dataXd)
    numpy.testing.assert_array_equal(ours.align.lengths, theirs.align.lengths)
    numpy.testing.assert_allclose(
        ours.model_output.last_hidden_state.numpy(), theirs.model_output.last_hidden_state.numpy(), atol=1e-5
    )


def test_same_batch_as_spacy_transformers(nlp):
    encoder = nlp.get_pipe("ner_bert").encoder()
    docs = [nlp.make_doc(t) for t in TEXTS if t]
    ours, theirs = _both(encoder, docs)
    assert ours.align.dataXd.size > 0 and len(ours.spans[-2]) > 1  # the long doc was windowed
    _assert_same(ours, theirs)


def test_same_batch_with_sentence_spans_and_a_wordpiece_over_two_tokens(nlp):
    encoder = nlp.get_pipe("ner_bert").encoder()
    vocab = nlp.vocab
    # "new" is one wordpiece run over the tokens "ne" + "w" (no space between them).
    words = ["I", "ne", "w", "york", ".", "Paris", "!"]
    doc = Doc(vocab, words=words, spaces=[True, False, True, False, True, False, False])
    for i, token in enumerate(doc):
        token.is_sent_start = i in (0, 5)
    other = nlp.make_doc("one more doc")
    for i, token in enumerate(other):
        token.is_sent_start = i == 0
    encoder.attrs["get_spans"] = get_sent_spans
    try:
        ours, theirs = _both(encoder, [doc, other])
    finally:
        encoder.attrs["get_spans"] = configure_strided_spans(128, 96)
    assert len(ours.spans[0]) == 2
    per_token = numpy.split(ours.align.dataXd, numpy.cumsum(ours.align.lengths)[:-1])
    assert list(per_token[1]) == list(per_token[2])  # "ne" and "w" share the wordpiece "new"
    _assert_same(ours, theirs)


def test_pretokenized_encodings_are_reused_and_match(nlp):
    encoder = nlp.get_pipe("ner_bert").encoder()
    docs = [nlp.make_doc(t) for t in TEXTS]
    cache, lengths = wordpieces.encode_spans(encoder, docs)
    assert lengths[1] == 0  # the empty doc
    assert lengths[0] == len(encoder.tokenizer(TEXTS[0])["input_ids"])
    with wordpieces.pretokenized(cache):
        calls = []
        real = wordpieces.encode_texts
        wordpieces.encode_texts = lambda tok, texts: calls.append(texts) or real(tok, texts)
        try:
            ours, _ = wordpieces.forward(encoder, [d for d in docs if len(d)], is_train=False)
        finally:
            wordpieces.encode_texts = real
    assert calls == []  # every span text came from the cache
    _, theirs = _both(encoder, [d for d in docs if len(d)])
    _assert_same(ours, theirs)
    assert wordpieces._PRETOKENIZED.get() is None  # the cache does not outlive the block


def test_padding_left_on_the_tokenizer_does_not_leak_in(nlp):
    encoder = nlp.get_pipe("ner_bert").encoder()
    encoder.tokenizer(["a", "a b c d"], padding="max_length", max_length=40)
    encodings = wordpieces.encode_texts(encoder.tokenizer, ["a b", "c"])
    assert [len(e) for e in encodings] == [4, 3]


def test_batch_pooling_equals_pooling_per_doc(nlp):
    """first_wordpiece on the whole batch == on spacy-transformers' split per doc, both ways."""
    from thinc.api import torch2xp

    from spacy_ner_bert.layers.first_wordpiece import first_wordpiece

    encoder = nlp.get_pipe("ner_bert").encoder()
    docs = [nlp.make_doc(t) for t in TEXTS]  # an empty doc and a windowed one among them
    batch, _ = wordpieces.forward(encoder, docs, is_train=False)
    pool = first_wordpiece(grad_factor=0.5)
    whole, bp_whole = pool(batch, is_train=True)
    split, bp_split = pool(batch.doc_data, is_train=True)
    assert [len(y) for y in whole] == [len(d) for d in docs]
    for a, b in zip(whole, split):
        numpy.testing.assert_allclose(a, b, atol=1e-6)
    rng = numpy.random.default_rng(0)
    d_outputs = [rng.normal(size=y.shape).astype("float32") for y in whole]
    d_whole = torch2xp(bp_whole(d_outputs).model_output.last_hidden_state)
    d_split = batch.unsplit_by_doc([x.tensors for x in bp_split(d_outputs)]).model_output["output_0"]
    assert numpy.abs(d_whole).sum() > 0
    numpy.testing.assert_allclose(d_whole, torch2xp(d_split), atol=1e-6)


def test_pipeline_saved_with_split_trf_batch_loads(nlp, tiny_bert):
    """Pipelines saved before pass_batch replaced split_trf_batch load and predict the same."""
    from spacy_transformers.layers import split_trf_batch

    from spacy_ner_bert.layers.first_wordpiece import _pass_forward

    old = spacy.blank("en")
    pipe = old.add_pipe("ner_bert", config=ner_config(tiny_bert))
    old.initialize()
    encoder_chain = pipe.model.get_ref("tok2vec").layers[0]
    encoder_chain.layers[1] = split_trf_batch()  # the node as older versions built it
    assert encoder_chain.layers[1].name == "split-trf-batch"
    docs = [old.make_doc(t) for t in TEXTS]
    before = pipe.logits(docs)
    loaded = spacy.blank("en")
    loaded.add_pipe("ner_bert", config=ner_config(tiny_bert))
    loaded.get_pipe("ner_bert").from_bytes(pipe.to_bytes())
    after = loaded.get_pipe("ner_bert").logits(docs)
    loaded_chain = loaded.get_pipe("ner_bert").model.get_ref("tok2vec").layers[0]
    assert loaded_chain.layers[1]._func is _pass_forward  # pooled as one batch after loading
    for a, b in zip(before, after):
        numpy.testing.assert_allclose(a, b, atol=1e-5)
