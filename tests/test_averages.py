"""Parameter averages reach the PyTorch encoder under nlp.use_params (spacy train evaluates and saves
model-best that way); thinc's PyTorch shim alone misses them."""
import numpy
import spacy
import torch
from spacy.util import fix_random_seed
from thinc.api import Adam

from spacy_ner_bert.averages import torch_averages
from util import TRAIN_DATA, head_params, make_examples, ner_config


def _trained_with_averages(encoder, steps=12):
    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("ner_bert", config=ner_config(encoder))
    examples = make_examples(nlp)
    nlp.initialize(lambda: examples)
    optimizer = Adam(1e-3, use_averages=True)
    for _ in range(steps):
        nlp.update(examples, sgd=optimizer, drop=0.0)
    return nlp, optimizer


def _torch_params(pipe):
    out = {}
    for node in pipe.model.walk():
        for shim in node.shims:
            for name, p in shim._model.named_parameters():
                out[(shim.id, name)] = p.detach().clone()
    return out


def test_use_params_swaps_encoder_and_head_to_averages_and_back(tiny_bert):
    nlp, optimizer = _trained_with_averages(tiny_bert)
    pipe = nlp.get_pipe("ner_bert")
    current_t, current_h = _torch_params(pipe), head_params(pipe)
    # Every encoder parameter that gets gradients has an average (the unused pooler has none).
    averaged = [k for k in current_t if k in optimizer.averages]
    assert averaged == [k for k in current_t if not k[1].startswith("pooler.")]
    with nlp.use_params(optimizer.averages):
        inside_t, inside_h = _torch_params(pipe), head_params(pipe)
    for key in averaged:
        numpy.testing.assert_allclose(inside_t[key].numpy(), optimizer.averages[key], rtol=0, atol=1e-7)
    assert any(not torch.equal(inside_t[k], current_t[k]) for k in current_t)
    assert any(not numpy.array_equal(inside_h[k], current_h[k]) for k in current_h)
    after_t, after_h = _torch_params(pipe), head_params(pipe)
    assert all(torch.equal(after_t[k], current_t[k]) for k in current_t)
    assert all(numpy.array_equal(after_h[k], current_h[k]) for k in current_h)


def test_pipeline_saved_under_averages_predicts_as_inside_the_block(tiny_bert):
    nlp, optimizer = _trained_with_averages(tiny_bert)
    pipe = nlp.get_pipe("ner_bert")
    docs = [nlp.make_doc(text) for text, _ in TRAIN_DATA]
    current = pipe.logits(docs)
    with nlp.use_params(optimizer.averages):
        averaged = pipe.logits(docs)
        data = nlp.to_bytes()
    assert any(not numpy.allclose(a, c) for a, c in zip(averaged, current))
    loaded = spacy.blank("en")
    config = dict(nlp.config["components"]["ner_bert"])
    config.pop("factory")
    loaded.add_pipe("ner_bert", config=config)
    loaded.from_bytes(data)
    for a, b in zip(averaged, loaded.get_pipe("ner_bert").logits(docs)):
        numpy.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(current, pipe.logits(docs)):
        numpy.testing.assert_array_equal(a, b)


def test_no_averages_changes_nothing(tiny_bert):
    nlp, _ = _trained_with_averages(tiny_bert, steps=2)
    pipe = nlp.get_pipe("ner_bert")
    before = _torch_params(pipe)
    with torch_averages(pipe.model, {}) as swapped:
        assert swapped == 0
    with torch_averages(pipe.model, {("not", "a key"): numpy.zeros(1)}) as swapped:
        assert swapped == 0
    after = _torch_params(pipe)
    assert all(torch.equal(before[k], after[k]) for k in before)
