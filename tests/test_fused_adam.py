"""fused_adam: the embedded encoder's Adam update in torch's fused kernel is thinc's update (same
settings, moments, step counts and semantics, up to rounding), it is the path taken where it
applies, and thinc's per-tensor update runs where it does not."""
import numpy
import pytest
import spacy
from thinc.api import Adam, RAdam, warmup_linear
from thinc.shims import PyTorchShim

from spacy_ner_bert import fused_adam
from spacy_ner_bert.encoder_params import torch_parameters
from util import head_params, initialized_nlp, ner_config


def _np(array):
    """A numpy copy of a numpy, cupy or torch array (the GPU test uses these helpers too)."""
    if hasattr(array, "detach"):
        return array.detach().cpu().numpy().copy()
    return array.get() if hasattr(array, "get") else numpy.array(array)


def _train(encoder, make_optimizer, steps, fused, flip_after=None, **extra):
    """Parameters and optimizer after `steps` updates (dropout off), the encoder's update fused or
    thinc's (switched to the other at step `flip_after`)."""
    nlp, examples = initialized_nlp(encoder, fused_adam=fused, **extra)
    pipe = nlp.get_pipe("ner_bert")
    optimizer = make_optimizer()
    for step in range(steps):
        if step == flip_after:
            pipe.fused_adam = not pipe.fused_adam
        nlp.update(examples, sgd=optimizer, drop=0.0)
        optimizer.step_schedules()
    encoder_params = {key[1]: _np(p) for key, p in torch_parameters(pipe.model)}
    head = head_params(pipe)
    head = [_np(head[k]) for k in sorted(head, key=lambda k: (k[1], k[0]))]
    shim_keys = {key for key, _ in torch_parameters(pipe.model)}
    moments = {
        key[1]: (_np(optimizer.mom1[key]), _np(optimizer.mom2[key]), optimizer.nr_update[key])
        for key in shim_keys if key in optimizer.mom1
    }
    return encoder_params, head, moments


def _assert_same(a, b):
    enc_a, head_a, mom_a = a
    enc_b, head_b, mom_b = b
    # the moments: every parameter with a gradient (the tiny BERT's pooler has none)
    assert enc_a.keys() == enc_b.keys() and mom_a.keys() == mom_b.keys() and len(mom_a) >= len(enc_a) - 2
    for name in enc_a:
        if name.endswith("attention.self.key.bias"):
            # Its gradient is 0 up to rounding (softmax ignores a shift shared by all keys): Adam
            # turns that noise (~1e-13) into steps of about lr, in whatever direction the rounding
            # gives, on either path. Nothing to compare.
            continue
        # float32 rounding of weights near 1 (LayerNorm); the steps are ~1e-3
        numpy.testing.assert_allclose(enc_a[name], enc_b[name], rtol=1e-5, atol=2e-6, err_msg=name)
        if name not in mom_a:
            continue
        m1a, m2a, na = mom_a[name]
        m1b, m2b, nb = mom_b[name]
        assert na == nb
        # the gradients differ where the weights differ in the last bits: entries far below the
        # largest differ by more than rtol
        for x, y in ((m1a, m1b), (m2a, m2b)):
            numpy.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4 * float(numpy.abs(y).max()), err_msg=name)
    for x, y in zip(head_a, head_b):
        numpy.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def _moved(before, after):
    return sum(float(numpy.abs(after[k] - before[k]).sum()) for k in before)


OPTIMIZERS = {
    "spacy default": lambda: Adam(1e-3, L2=0.01, grad_clip=1.0, use_averages=False),
    # clip 1e-3: every tensor's gradient is clipped
    "clipped": lambda: Adam(1e-3, L2=0.01, grad_clip=1e-3, use_averages=False),
    "L2 in the gradient": lambda: Adam(1e-3, L2=0.01, L2_is_weight_decay=False, grad_clip=1.0, use_averages=False),
    "schedule, no clip": lambda: Adam(
        warmup_linear(1e-3, warmup_steps=2, total_steps=8), L2=0.0, grad_clip=0.0, use_averages=False
    ),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_fused_update_is_thincs_update(tiny_bert, name):
    fused = _train(tiny_bert, OPTIMIZERS[name], 4, True)
    thinc = _train(tiny_bert, OPTIMIZERS[name], 4, False)
    start = _train(tiny_bert, OPTIMIZERS[name], 0, False)
    assert _moved(start[0], fused[0]) > 0.01  # the encoder did learn
    _assert_same(fused, thinc)


def test_fused_update_keeps_layer_learning_rates(tiny_bert):
    settings = {"encoder_lr_scale": 0.5, "encoder_lr_decay": 0.5}
    _assert_same(
        _train(tiny_bert, OPTIMIZERS["spacy default"], 3, True, **settings),
        _train(tiny_bert, OPTIMIZERS["spacy default"], 3, False, **settings),
    )


def test_the_two_updates_take_over_from_each_other(tiny_bert):
    """The fused update keeps its moments and step counts where thinc does: switching path after
    2 of 4 steps (either way) trains the same model as 4 steps of thinc's update."""
    make = OPTIMIZERS["spacy default"]
    thinc = _train(tiny_bert, make, 4, False)
    _assert_same(_train(tiny_bert, make, 4, True, flip_after=2), thinc)
    _assert_same(_train(tiny_bert, make, 4, False, flip_after=2), thinc)


def _count_shim_updates(monkeypatch):
    calls = []
    original = PyTorchShim.finish_update

    def spy(self, optimizer):
        calls.append(self.id)
        return original(self, optimizer)

    monkeypatch.setattr(PyTorchShim, "finish_update", spy)
    return calls


def test_the_fused_update_replaces_thincs_where_it_applies(tiny_bert, monkeypatch):
    calls = _count_shim_updates(monkeypatch)
    nlp, examples = initialized_nlp(tiny_bert)
    optimizer = nlp.initialize(lambda: examples)  # spaCy's default: Adam without averages
    assert nlp.get_pipe("ner_bert").fused_adam and fused_adam.applies(optimizer)
    nlp.update(examples, sgd=optimizer)
    assert calls == []


@pytest.mark.parametrize(
    "make_optimizer",
    [lambda: Adam(1e-3, use_averages=True), lambda: RAdam(1e-3, use_averages=False)],
    ids=["averages", "radam"],
)
def test_thincs_update_runs_where_the_fused_one_does_not_apply(tiny_bert, monkeypatch, make_optimizer):
    calls = _count_shim_updates(monkeypatch)
    nlp, examples = initialized_nlp(tiny_bert)
    optimizer = make_optimizer()
    assert not fused_adam.applies(optimizer)
    nlp.update(examples, sgd=optimizer)
    assert len(calls) == 1


def test_fused_adam_false_keeps_thincs_update(tiny_bert, monkeypatch):
    calls = _count_shim_updates(monkeypatch)
    nlp, examples = initialized_nlp(tiny_bert, fused_adam=False)
    nlp.update(examples, sgd=Adam(1e-3, use_averages=False))
    assert len(calls) == 1


def test_a_shim_with_an_active_grad_scaler_is_left_to_thinc(tiny_bert):
    nlp, examples = initialized_nlp(tiny_bert)
    pipe = nlp.get_pipe("ner_bert")
    shims = [shim for node in pipe.model.walk() for shim in node.shims]
    assert len(shims) == 1
    nlp.update(examples, sgd=None)  # gradients only
    before = {k: p.detach().clone() for k, p in torch_parameters(pipe.model)}
    shims[0]._grad_scaler._enabled = True
    try:
        assert fused_adam._update_shim(shims[0], Adam(1e-3, use_averages=False), {}) is False
    finally:
        shims[0]._grad_scaler._enabled = False
    assert all(bool((p == before[k]).all()) for k, p in torch_parameters(pipe.model))


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_fused_adam_must_be_a_bool(tiny_bert, bad):
    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match="fused_adam"):
        nlp.add_pipe("ner_bert", config=ner_config(tiny_bert, fused_adam=bad))
