"""encoder_lr_scale: the embedded encoder trains at a fraction of the optimizer's learning rate,
the head at the full rate, with one optimizer (its moments and averages stay keyed as before);
encoder_lr_decay: its lower layers train slower than its top one."""
import math

import numpy
import pytest
import spacy
from spacy.util import fix_random_seed
from thinc.api import Adam, Config

from spacy_ner_bert.encoder_params import layer_lr_scales, torch_parameters
from test_listener import CONFIG as LISTENER_CONFIG
from util import head_params, initialized_nlp, make_examples, ner_config


def _encoder_params(pipe):
    return {key: p.detach().numpy().copy() for key, p in torch_parameters(pipe.model)}


def _one_step_by_name(encoder, **settings):
    """Parameter changes after one Adam step (dropout off, same seed for all settings): the
    encoder's by parameter name, the head's in a fixed order."""
    nlp, examples = initialized_nlp(encoder, **settings)
    pipe = nlp.get_pipe("ner_bert")
    enc0, head0 = _encoder_params(pipe), head_params(pipe)
    fix_random_seed(1)
    nlp.update(examples, sgd=Adam(1e-3), drop=0.0)
    enc1, head1 = _encoder_params(pipe), head_params(pipe)
    enc = {k[1]: enc1[k] - enc0[k] for k in enc0}
    head = [head1[k] - head0[k] for k in sorted(head0, key=lambda k: (k[1], k[0]))]
    return enc, head


def _one_step(encoder, scale):
    enc, head = _one_step_by_name(encoder, encoder_lr_scale=scale)
    return [enc[name] for name in sorted(enc)], head


def test_encoder_steps_scale_with_encoder_lr_scale_and_the_head_does_not(tiny_bert):
    enc_full, head_full = _one_step(tiny_bert, 1.0)
    enc_part, head_part = _one_step(tiny_bert, 0.25)
    assert sum(float(numpy.abs(d).sum()) for d in enc_full) > 0
    for full, part in zip(enc_full, enc_part):
        # atol: float32 rounding of weights near 1 (LayerNorm); the steps are ~1e-3 and ~2.5e-4
        numpy.testing.assert_allclose(part, 0.25 * full, rtol=1e-4, atol=1e-6)
    for full, part in zip(head_full, head_part):
        numpy.testing.assert_allclose(part, full, rtol=1e-5, atol=1e-6)


def test_zero_freezes_the_encoder_and_the_head_still_learns(tiny_bert):
    nlp, examples = initialized_nlp(tiny_bert, encoder_lr_scale=0.0)
    pipe = nlp.get_pipe("ner_bert")
    enc0, head0 = _encoder_params(pipe), head_params(pipe)
    optimizer = Adam(1e-3, use_averages=True)
    for _ in range(3):
        nlp.update(examples, sgd=optimizer, drop=0.0)
    enc1, head1 = _encoder_params(pipe), head_params(pipe)
    assert all(numpy.array_equal(enc0[k], enc1[k]) for k in enc0)
    assert any(not numpy.array_equal(head0[k], head1[k]) for k in head0)
    # The optimizer still keeps the encoder's averages under its usual keys.
    assert any(k in optimizer.averages for k in enc0)


@pytest.mark.parametrize(
    "option,bad",
    [("encoder_lr_scale", v) for v in (-0.1, math.inf, math.nan, True)]
    + [("encoder_lr_decay", v) for v in (0.0, -0.5, 1.5, math.nan, True, "0.9")],
)
def test_bad_encoder_lr_settings_are_refused(tiny_bert, option, bad):
    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match=option):
        nlp.add_pipe("ner_bert", config=ner_config(tiny_bert, **{option: bad}))


@pytest.mark.parametrize("option,value", [("encoder_lr_scale", 0.5), ("encoder_lr_decay", 0.8)])
def test_encoder_lr_settings_with_a_listener_say_what_to_do(tiny_bert, option, value):
    config = Config().from_str(LISTENER_CONFIG.format(encoder=tiny_bert))
    config["components"]["ner_bert"][option] = value
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    examples = make_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    with pytest.raises(ValueError, match=f"{option} = {value} needs the encoder inside"):
        nlp.update(examples, sgd=optimizer)


def test_layer_lr_scales_by_name():
    names = [
        "embeddings.word_embeddings.weight",
        "embeddings.LayerNorm.weight",
        "encoder.layer.0.attention.self.query.weight",
        "encoder.layer.1.output.dense.bias",
        "encoder.layer.2.output.LayerNorm.weight",
        "pooler.dense.weight",
    ]
    assert layer_lr_scales(names, 0.5) == {
        "embeddings.word_embeddings.weight": 0.125,
        "embeddings.LayerNorm.weight": 0.125,
        "encoder.layer.0.attention.self.query.weight": 0.25,
        "encoder.layer.1.output.dense.bias": 0.5,
        "encoder.layer.2.output.LayerNorm.weight": 1.0,
        "pooler.dense.weight": 1.0,
    }
    assert set(layer_lr_scales(names, 1.0).values()) == {1.0}
    with pytest.raises(ValueError, match="encoder_lr_decay = 0.5 needs numbered layers"):
        layer_lr_scales(["transformer.wte.weight", "lm_head.weight"], 0.5)


def test_encoder_steps_decay_by_layer_and_the_head_does_not(tiny_bert):
    """With scale 0.5 and decay 0.5, each encoder parameter's first Adam step is its layer's
    factor times 0.5 times the undecayed step; the head's step is unchanged."""
    enc_full, head_full = _one_step_by_name(tiny_bert)
    enc_part, head_part = _one_step_by_name(tiny_bert, encoder_lr_scale=0.5, encoder_lr_decay=0.5)
    factors = layer_lr_scales(enc_full, 0.5)
    assert len(set(factors.values())) >= 3  # embeddings and at least two layers
    for name, full in enc_full.items():
        numpy.testing.assert_allclose(enc_part[name], 0.5 * factors[name] * full, rtol=1e-4, atol=1e-6)
    for full, part in zip(head_full, head_part):
        numpy.testing.assert_allclose(part, full, rtol=1e-5, atol=1e-6)
