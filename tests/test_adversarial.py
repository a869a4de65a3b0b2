"""adversarial_epsilon (FGM): a second pass on word embeddings moved along their gradient, the
gradients of both passes summed, the embeddings put back exactly."""
import math

import numpy
import pytest
import spacy
import torch
from thinc.api import Adam, Config

from spacy_ner_bert.encoder_params import torch_parameters
from test_encoder_lr import _encoder_params as _weights
from test_listener import CONFIG as LISTENER_CONFIG
from util import gradients, initialized_nlp, make_examples, ner_config, trained_nlp


def test_fgm_gradient_is_clean_plus_perturbed_pass_and_embeddings_are_restored(tiny_bert):
    eps = 0.5
    # the FGM pass, gradients accumulated only (no optimizer step)
    nlp, examples = initialized_nlp(tiny_bert, adversarial_epsilon=eps)
    pipe = nlp.get_pipe("ner_bert")
    before = _weights(pipe)
    pipe.update(examples, sgd=None, drop=0.0)
    fgm = gradients(pipe)
    after = _weights(pipe)
    assert all(numpy.array_equal(before[k], after[k]) for k in before)  # bit for bit

    # the same by hand: a clean pass, then a clean pass at the moved embeddings
    nlp, examples = initialized_nlp(tiny_bert)
    pipe = nlp.get_pipe("ner_bert")
    pipe.update(examples, sgd=None, drop=0.0)
    clean = gradients(pipe)
    name = "embeddings.word_embeddings.weight"
    g = torch.tensor(clean[("encoder", name)])
    assert float(g.norm()) > 0
    nlp, examples = initialized_nlp(tiny_bert)  # the same weights, no gradient yet
    pipe = nlp.get_pipe("ner_bert")
    emb = dict((n, p) for (_, n), p in torch_parameters(pipe.model))[name]
    with torch.no_grad():
        emb += eps * g / g.norm()
    pipe.update(examples, sgd=None, drop=0.0)
    moved = gradients(pipe)
    assert set(fgm) == set(clean) == set(moved)
    differs = 0
    for k in fgm:
        numpy.testing.assert_allclose(fgm[k], clean[k] + moved[k], rtol=1e-4, atol=1e-7)
        differs += not numpy.allclose(fgm[k], clean[k], rtol=1e-3, atol=1e-6)
    assert differs > len(fgm) // 2  # the second pass added something to most parameters


def test_fgm_trains(tiny_bert):
    nlp = trained_nlp(tiny_bert, steps=60, adversarial_epsilon=1.0)
    assert nlp.evaluate(make_examples(nlp))["ents_f"] == 1.0
    assert nlp.get_pipe("ner_bert").adversarial_epsilon == 1.0


def test_fgm_steps_differ_from_plain_ones(tiny_bert):
    steps = []
    for eps in (0.0, 1.0):
        nlp, examples = initialized_nlp(tiny_bert, adversarial_epsilon=eps)
        pipe = nlp.get_pipe("ner_bert")
        w0 = _weights(pipe)
        nlp.update(examples, sgd=Adam(1e-3), drop=0.0)
        w1 = _weights(pipe)
        steps.append(numpy.concatenate([(w1[k] - w0[k]).ravel() for k in sorted(w0)]))
    assert numpy.abs(steps[0]).sum() > 0 and not numpy.allclose(steps[0], steps[1])


@pytest.mark.parametrize("bad", [-0.1, math.inf, math.nan, True, "1.0"])
def test_bad_adversarial_epsilon_is_refused(tiny_bert, bad):
    with pytest.raises(ValueError, match="adversarial_epsilon"):
        spacy.blank("en").add_pipe("ner_bert", config=ner_config(tiny_bert, adversarial_epsilon=bad))


def test_adversarial_epsilon_with_a_listener_says_what_to_do(tiny_bert):
    config = Config().from_str(LISTENER_CONFIG.format(encoder=tiny_bert))
    config["components"]["ner_bert"]["adversarial_epsilon"] = 1.0
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    examples = make_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    with pytest.raises(ValueError, match="adversarial_epsilon = 1.0 needs the encoder inside"):
        nlp.update(examples, sgd=optimizer)
