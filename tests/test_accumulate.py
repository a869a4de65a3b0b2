"""Gradient accumulation (spaCy's `accumulate_gradient`: one batch sent as sub-batches, one update):
the component's loss is a mean over tokens, so sub-batches are weighted by their token counts and the
accumulated gradient is the whole batch's."""
import numpy
import pytest
from thinc.api import Adam

from util import gradients, initialized_nlp, make_examples


def _accumulated(encoder, splits, **settings):
    """The gradients after sending the examples in `splits` (slices), dropout off, no update."""
    nlp, examples = initialized_nlp(encoder, **settings)
    pipe = nlp.get_pipe("ner_bert")
    for part in splits:
        pipe.update(examples[part], sgd=None, drop=0.0)
    return gradients(pipe)


def _relative_gap(a, b):
    """The largest difference of a tensor in `a` from its match in `b`, relative to that tensor's
    largest entry, or to 1e-4 x the largest entry in `b` where that is larger (the attention keys'
    bias has a gradient of 0 up to rounding)."""
    floor = 1e-4 * max(float(numpy.abs(g).max()) for g in b.values())
    return max(float(numpy.abs(a[k] - b[k]).max() / max(numpy.abs(b[k]).max(), floor)) for k in b)


@pytest.mark.parametrize("splits", [
    [slice(0, 2), slice(2, 5)],
    [slice(0, 1), slice(1, 3), slice(3, 5)],
])
def test_sub_batches_accumulate_the_whole_batch_gradient(tiny_bert, splits):
    whole = _accumulated(tiny_bert, [slice(0, 5)])
    parts = _accumulated(tiny_bert, splits)
    assert set(parts) == set(whole) and len(whole) > 10
    assert {k[0] for k in whole} == {"head", "encoder"}
    assert _relative_gap(parts, whole) < 1e-4
    # each sub-batch's own mean, summed (what accumulation gave before), is far from it
    naive = {}
    for part in splits:
        for k, g in _accumulated(tiny_bert, [part]).items():
            naive[k] = naive.get(k, 0.0) + g
    assert _relative_gap(naive, whole) > 0.3


def test_class_weighted_sub_batches_accumulate_the_whole_batch_gradient(tiny_bert):
    whole = _accumulated(tiny_bert, [slice(0, 5)], class_weighting=0.5)
    parts = _accumulated(tiny_bert, [slice(0, 3), slice(3, 5)], class_weighting=0.5)
    assert _relative_gap(parts, whole) < 1e-4


def test_fgm_sub_batches_stay_at_the_whole_batch_scale(tiny_bert):
    # FGM's direction comes from the gradient so far, so sub-batches are not the whole batch exactly,
    # but both of each sub-batch's passes are weighted alike: the accumulated gradient keeps the scale
    whole = _accumulated(tiny_bert, [slice(0, 5)], adversarial_epsilon=1.0)
    parts = _accumulated(tiny_bert, [slice(0, 2), slice(2, 5)], adversarial_epsilon=1.0)
    ratios = [numpy.linalg.norm(parts[k]) / numpy.linalg.norm(whole[k]) for k in whole if numpy.linalg.norm(whole[k]) > 0]
    assert 0.8 < numpy.median(ratios) < 1.25


def test_the_count_starts_again_after_each_update(tiny_bert):
    nlp, examples = initialized_nlp(tiny_bert)
    pipe = nlp.get_pipe("ner_bert")
    optimizer = Adam(1e-3)
    pipe.update(examples[:2], sgd=None, drop=0.0)
    pipe.update(examples[2:], sgd=optimizer, drop=0.0)
    # the next batch's gradient is its own mean, not scaled against the last batch's tokens
    pipe.update(examples[:2], sgd=None, drop=0.0)
    after_step = gradients(pipe)
    pipe.finish_update(Adam(0.0))  # the count and the gradients start again, the parameters stay
    pipe.update(examples[:2], sgd=None, drop=0.0)
    alone = gradients(pipe)
    assert _relative_gap(after_step, alone) < 1e-6


def test_with_a_listener_each_sub_batch_keeps_its_own_mean(tiny_bert):
    # the shared transformer's gradients are out of the component's reach, so nothing is rescaled
    # (rescaling the head alone would weight the head and the encoder differently)
    from spacy.util import fix_random_seed, load_model_from_config
    from thinc.api import Config

    from test_listener import CONFIG

    def head_grads(splits):
        fix_random_seed(0)
        nlp = load_model_from_config(Config().from_str(CONFIG.format(encoder=tiny_bert)), auto_fill=True)
        examples = make_examples(nlp)
        nlp.initialize(lambda: examples)
        for part in splits:
            nlp.update(examples[part], sgd=False, drop=0.0)  # False: no update (None: a default optimizer)
        return {k: g for k, g in gradients(nlp.get_pipe("ner_bert")).items() if k[0] == "head"}

    together = head_grads([slice(0, 2), slice(2, 5)])
    assert together
    summed = {k: head_grads([slice(0, 2)])[k] + head_grads([slice(2, 5)])[k] for k in together}
    assert _relative_gap(together, summed) < 1e-4
