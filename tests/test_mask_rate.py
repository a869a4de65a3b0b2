"""Wordpiece masking in training: TransformerEncoder.v2 mask_rate."""
import numpy
import pytest
import spacy
from spacy.util import make_tempdir
from util import TRAIN_DATA, encoder_v2_nlp, initialized_nlp

from spacy_ner_bert.layers import wordpieces


def test_mask_wordpieces_keeps_specials_and_padding(tiny_bert):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    texts = ["John Smith visited New York in March .", "a b", ""] * 200
    encodings = wordpieces.encode_texts(tokenizer, texts)
    ids = wordpieces._wordpiece_batch(tokenizer, encodings).input_ids
    mask_id = tokenizer.mask_token_id
    numpy.random.seed(0)
    masked = wordpieces.mask_wordpieces(ids, encodings, mask_id, 0.25)
    assert masked.shape == ids.shape and masked.dtype == ids.dtype
    changed = masked != ids
    assert (masked[changed] == mask_id).all()
    maskable = numpy.zeros(ids.shape, dtype=bool)
    for row, enc in enumerate(encodings):
        maskable[row, 1 : len(enc) - 1] = True  # [CLS] first, [SEP] last, then padding
    assert not changed[~maskable].any()
    assert 0.22 < changed[maskable].mean() < 0.28
    assert (ids == wordpieces._wordpiece_batch(tokenizer, encodings).input_ids).all()  # not in place
    assert (wordpieces.mask_wordpieces(ids, encodings, mask_id, 0.0) == ids).all()


def test_mask_rate_masks_training_batches_only(tiny_bert):
    nlp, examples, optimizer = encoder_v2_nlp(tiny_bert, mask_rate=0.5)
    ner = nlp.get_pipe("ner_bert")
    encoder = ner.encoder()
    assert encoder.attrs["mask_rate"] == 0.5
    mask_id = encoder.tokenizer.mask_token_id
    docs = [nlp.make_doc(t) for t, _ in TRAIN_DATA]
    train_batch, _ = encoder(docs, is_train=True)
    predict_batch, _ = encoder(docs, is_train=False)
    assert (train_batch.wordpieces.input_ids == mask_id).any()
    assert not (predict_batch.wordpieces.input_ids == mask_id).any()
    # at prediction the model is v1's, built from the same seed
    v1, _ = initialized_nlp(tiny_bert)
    numpy.testing.assert_array_equal(
        numpy.concatenate(ner.logits(docs)), numpy.concatenate(v1.get_pipe("ner_bert").logits(docs))
    )
    losses = {}
    for _ in range(3):
        nlp.update(examples, sgd=optimizer, losses=losses)
    assert numpy.isfinite(losses["ner_bert"]) and losses["ner_bert"] > 0
    with make_tempdir() as d:
        nlp.to_disk(d)
        loaded = spacy.load(d)
    assert loaded.get_pipe("ner_bert").encoder().attrs["mask_rate"] == 0.5
    numpy.testing.assert_allclose(
        numpy.concatenate(loaded.get_pipe("ner_bert").logits([loaded.make_doc(t) for t, _ in TRAIN_DATA])),
        numpy.concatenate(ner.logits(docs)), rtol=1e-5, atol=1e-5,
    )


def test_encoder_v2_without_mask_rate_has_no_attr(tiny_bert):
    nlp, _, _ = encoder_v2_nlp(tiny_bert, mask_rate=0.0)
    assert "mask_rate" not in nlp.get_pipe("ner_bert").encoder().attrs


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_mask_rate_out_of_range_is_refused(tiny_bert, rate):
    with pytest.raises(ValueError, match=r"TransformerEncoder.v2 mask_rate must be a number in \[0, 1\)"):
        encoder_v2_nlp(tiny_bert, mask_rate=rate)


def test_mask_rate_refused_where_the_tokenizer_cannot_mask(tiny_bert):
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    fast = AutoTokenizer.from_pretrained(tiny_bert)
    slow = AutoTokenizer.from_pretrained(tiny_bert, use_fast=False)
    attrs = {"mask_rate": 0.1}
    wordpieces.check_mask_rate(SimpleNamespace(tokenizer=fast, attrs=attrs))
    with pytest.raises(ValueError, match="mask_rate = 0.1 needs a fast tokenizer"):
        wordpieces.check_mask_rate(SimpleNamespace(tokenizer=slow, attrs=attrs))
    fast.mask_token = None
    with pytest.raises(ValueError, match="mask_rate = 0.1: the encoder's tokenizer has no mask token"):
        wordpieces.check_mask_rate(SimpleNamespace(tokenizer=fast, attrs=attrs))
