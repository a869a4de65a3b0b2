"""The mean of the encoder's last hidden states: TransformerEncoder.v2 mean_last_layers."""
import numpy
import pytest
import spacy
import torch
from spacy.util import make_tempdir
from spacy_transformers.data_classes import FullTransformerBatch
from transformers.file_utils import ModelOutput
from util import TRAIN_DATA, encoder_v2_nlp, initialized_nlp

from spacy_ner_bert.layers.wordpieces import is_fast, mean_last_layers


def _encoder_inputs(batch):
    wp = batch.wordpieces
    return {
        "input_ids": torch.from_numpy(numpy.asarray(wp.input_ids)),
        "attention_mask": torch.from_numpy(numpy.asarray(wp.attention_mask)),
        "token_type_ids": torch.from_numpy(numpy.asarray(wp.token_type_ids)),
    }


@pytest.mark.parametrize("n,use_fast", [(2, True), (3, True), (2, False)])
def test_output_is_the_mean_of_the_last_hidden_states(tiny_bert, n, use_fast):
    # use_fast False: spacy-transformers' own forward (alignment by wordpiece strings)
    nlp, _, _ = encoder_v2_nlp(tiny_bert, mean_last_layers=n, tokenizer_config={"use_fast": use_fast})
    encoder = nlp.get_pipe("ner_bert").encoder()
    assert encoder.attrs["mean_last_layers"] == n
    assert is_fast(encoder.tokenizer) == use_fast
    docs = [nlp.make_doc(t) for t, _ in TRAIN_DATA]
    batch, _ = encoder(docs, is_train=False)
    # the same HF model run directly (the tiny BERT: 2 layers, so 3 hidden states)
    with torch.no_grad():
        states = encoder.transformer(**_encoder_inputs(batch), output_hidden_states=True).hidden_states
    assert len(states) == 3
    expected = sum(states[-n:]) / n
    got = batch.model_output.last_hidden_state
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got, states[-1], atol=1e-3)  # not the last layer's alone


def test_gradient_reaches_the_averaged_layers(tiny_bert):
    nlp, _, _ = encoder_v2_nlp(tiny_bert, mean_last_layers=2)
    encoder = nlp.get_pipe("ner_bert").encoder()
    hf = encoder.transformer
    docs = [nlp.make_doc(t) for t, _ in TRAIN_DATA]
    batch, backprop = encoder(docs, is_train=True)
    d_hidden = torch.from_numpy(
        numpy.random.default_rng(0).standard_normal(tuple(batch.model_output.last_hidden_state.shape)).astype("float32")
    )
    hf.zero_grad()
    backprop(
        FullTransformerBatch(
            spans=batch.spans,
            wordpieces=batch.wordpieces,
            model_output=ModelOutput(last_hidden_state=d_hidden),
            align=batch.align,
        )
    )
    through_thinc = {k: p.grad.clone() for k, p in hf.named_parameters() if p.grad is not None}
    # the same gradient by autograd on the HF model alone: d(mean of the last two) = d/2 to each
    hf.zero_grad()
    states = hf(**_encoder_inputs(batch), output_hidden_states=True).hidden_states
    ((states[-1] + states[-2]) / 2 * d_hidden).sum().backward()
    direct = {k: p.grad.clone() for k, p in hf.named_parameters() if p.grad is not None}
    assert through_thinc.keys() == direct.keys()
    assert any(k.startswith("encoder.layer.0.") for k in direct)
    for k in direct:
        torch.testing.assert_close(through_thinc[k], direct[k], rtol=1e-4, atol=1e-6)
    hf.zero_grad()


def test_trains_and_survives_saving(tiny_bert):
    nlp, examples, optimizer = encoder_v2_nlp(tiny_bert, mean_last_layers=2)
    losses = []
    for _ in range(20):
        step = {}
        nlp.update(examples, sgd=optimizer, losses=step, drop=0.0)
        losses.append(step["ner_bert"])
    assert numpy.isfinite(losses).all() and losses[-1] < 0.5 * losses[0]
    docs = [nlp.make_doc(t) for t, _ in TRAIN_DATA]
    logits = numpy.concatenate(nlp.get_pipe("ner_bert").logits(docs))
    with make_tempdir() as d:
        nlp.to_disk(d)
        loaded = spacy.load(d)
    pipe = loaded.get_pipe("ner_bert")
    assert pipe.encoder().attrs["mean_last_layers"] == 2
    numpy.testing.assert_allclose(
        numpy.concatenate(pipe.logits([loaded.make_doc(t) for t, _ in TRAIN_DATA])), logits, rtol=1e-5, atol=1e-5
    )


def test_one_layer_is_v1(tiny_bert):
    v1, _ = initialized_nlp(tiny_bert)
    v2, _, _ = encoder_v2_nlp(tiny_bert, mean_last_layers=1)
    assert "mean_last_layers" not in v2.get_pipe("ner_bert").encoder().attrs
    texts = [t for t, _ in TRAIN_DATA]
    numpy.testing.assert_array_equal(
        numpy.concatenate(v2.get_pipe("ner_bert").logits([v2.make_doc(t) for t in texts])),
        numpy.concatenate(v1.get_pipe("ner_bert").logits([v1.make_doc(t) for t in texts])),
    )


@pytest.mark.parametrize("bad", [0, -1])
def test_bad_counts_are_refused(tiny_bert, bad):
    with pytest.raises(ValueError, match=rf"mean_last_layers must be a whole number >= 1, got {bad}"):
        encoder_v2_nlp(tiny_bert, mean_last_layers=bad)


@pytest.mark.parametrize("bad", [1.5, True, "2"])
def test_counts_of_other_types_are_refused(tiny_bert, bad):
    # spaCy's config check names the setting; the architecture's own check, called from Python
    from spacy_ner_bert.architectures import build_transformer_encoder_v2

    with pytest.raises(ValueError, match="mean_last_layers"):
        encoder_v2_nlp(tiny_bert, mean_last_layers=bad)
    with pytest.raises(ValueError, match=r"mean_last_layers must be a whole number >= 1, got"):
        build_transformer_encoder_v2(name=tiny_bert, get_spans=None, mean_last_layers=bad)


def test_more_layers_than_the_encoder_has_are_refused(tiny_bert):
    with pytest.raises(ValueError, match=r"mean_last_layers = 4, but the encoder has only 3 hidden states"):
        encoder_v2_nlp(tiny_bert, mean_last_layers=4)


def test_hidden_states_switched_off_are_refused(tiny_bert):
    with pytest.raises(ValueError, match="must not set output_hidden_states = false"):
        encoder_v2_nlp(tiny_bert, mean_last_layers=2, transformer_config={"output_hidden_states": False})
    with pytest.raises(ValueError, match="returned no hidden states"):
        mean_last_layers(ModelOutput(last_hidden_state=torch.zeros(1, 2, 3)), 2)


def test_export_refuses_the_mean(tiny_bert, tmp_path):
    from spacy_ner_bert.checkpoints import export_hf
    from spacy_ner_bert.checkpoints.common import CheckpointError

    linear, _, _ = encoder_v2_nlp(
        tiny_bert, head={"@architectures": "spacy-ner-bert.LinearHead.v1"}, mean_last_layers=2
    )
    with pytest.raises(CheckpointError, match="last 2 hidden states"):
        export_hf(linear, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
