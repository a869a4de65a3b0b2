"""The embedded encoder in bfloat16 on CPU: ner_bert's cpu_bf16."""
import numpy
import pytest
import spacy
import torch
from spacy.util import fix_random_seed, make_tempdir
from test_listener import CONFIG as LISTENER_CONFIG
from thinc.api import Config, ConfigValidationError
from util import TRAIN_DATA, encoder_v2_nlp, initialized_nlp

from spacy_ner_bert import quantize_int8


def _linear_output_dtypes(encoder, run):
    """The dtypes the encoder's torch Linear layers return while `run()` runs, and its result."""
    seen = set()
    hooks = [
        module.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
        for module in encoder.transformer.modules()
        if isinstance(module, torch.nn.Linear)
    ]
    try:
        result = run()
    finally:
        for hook in hooks:
            hook.remove()
    return seen, result


def _docs(nlp):
    return [nlp.make_doc(t) for t, _ in TRAIN_DATA]


@pytest.mark.parametrize("use_fast", [True, False])
def test_cpu_bf16_runs_the_encoder_in_bfloat16(tiny_bert, use_fast):
    # use_fast False: spacy-transformers' own forward (alignment by wordpiece strings)
    model = {"tok2vec": {"name": tiny_bert, "tokenizer_config": {"use_fast": use_fast}}}
    nlp, _ = initialized_nlp(tiny_bert, model=model, cpu_bf16=True)
    ner = nlp.get_pipe("ner_bert")
    encoder = ner.encoder()
    assert encoder.attrs["cpu_autocast"] == torch.bfloat16
    for is_train in (False, True):
        dtypes, (batch, _) = _linear_output_dtypes(encoder, lambda: encoder(_docs(nlp), is_train=is_train))
        assert dtypes == {torch.bfloat16}
        # what the head reads stays float32 (BERT's layers end in a layer norm, run in float32)
        assert batch.model_output.last_hidden_state.dtype == torch.float32
    assert not torch.is_autocast_enabled("cpu")  # the forward pass alone ran under autocast
    # the same weights in float32 (same seed) give the same logits up to bfloat16's rounding
    plain_nlp, _ = initialized_nlp(tiny_bert, model=model)
    plain_ner = plain_nlp.get_pipe("ner_bert")
    dtypes, plain = _linear_output_dtypes(plain_ner.encoder(), lambda: plain_ner.logits(_docs(nlp)))
    assert dtypes == {torch.float32}
    bf16 = numpy.concatenate(ner.logits(_docs(nlp)))
    plain = numpy.concatenate(plain)
    assert bf16.dtype == numpy.float32
    numpy.testing.assert_allclose(bf16, plain, atol=0.05)
    assert not numpy.array_equal(bf16, plain)


def test_cpu_bf16_trains_float32_weights_and_the_config_decides_at_load(tiny_bert):
    # on TransformerEncoder.v2 with its options, as on v1 above
    nlp, examples, optimizer = encoder_v2_nlp(tiny_bert, mean_last_layers=2)
    nlp.get_pipe("ner_bert")._set_cpu_bf16()  # what cpu_bf16 = true does at construction
    ner = nlp.get_pipe("ner_bert")
    hf = ner.encoder().transformer
    before = {k: p.detach().clone() for k, p in hf.named_parameters()}
    losses = []
    for _ in range(40):
        step = {}
        nlp.update(examples, sgd=optimizer, losses=step, drop=0.0)
        losses.append(step["ner_bert"])
    assert all(p.dtype == torch.float32 for p in hf.parameters())
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in hf.parameters())
    assert any(not torch.equal(before[k], p) for k, p in hf.named_parameters())
    assert numpy.isfinite(losses).all() and losses[-1] < 0.5 * losses[0]
    with make_tempdir() as d:
        nlp.to_disk(d)
        saved_off = spacy.load(d)  # its config says cpu_bf16 = false: the weights alone carry no autocast
        on = spacy.load(d, config={"components": {"ner_bert": {"cpu_bf16": True}}})
    assert "cpu_autocast" not in saved_off.get_pipe("ner_bert").encoder().attrs
    assert on.get_pipe("ner_bert").encoder().attrs["cpu_autocast"] == torch.bfloat16
    assert on.config["components"]["ner_bert"]["cpu_bf16"] is True
    numpy.testing.assert_array_equal(
        numpy.concatenate(on.get_pipe("ner_bert").logits(_docs(on))), numpy.concatenate(ner.logits(_docs(nlp)))
    )


def test_cpu_bf16_off_by_default(tiny_bert):
    nlp, _ = initialized_nlp(tiny_bert)
    assert nlp.config["components"]["ner_bert"]["cpu_bf16"] is False
    encoder = nlp.get_pipe("ner_bert").encoder()
    assert "cpu_autocast" not in encoder.attrs
    dtypes, _ = _linear_output_dtypes(encoder, lambda: encoder(_docs(nlp), is_train=False))
    assert dtypes == {torch.float32}


@pytest.mark.parametrize("value", [1, "yes", None])
def test_cpu_bf16_not_a_bool_is_refused_naming_the_setting(tiny_bert, value):
    # the config's type check names the setting and the value
    with pytest.raises(ConfigValidationError, match=r"ner_bert -> cpu_bf16\s.*is not <class 'bool'>"):
        initialized_nlp(tiny_bert, cpu_bf16=value)


def test_cpu_bf16_refused_with_a_listener(tiny_bert):
    fix_random_seed(0)
    config = Config().from_str(LISTENER_CONFIG.format(encoder=tiny_bert))
    config["components"]["ner_bert"]["cpu_bf16"] = True
    with pytest.raises(ValueError, match=r"cpu_bf16 = true needs the encoder inside this component"):
        spacy.util.load_model_from_config(config, auto_fill=True)


def test_quantize_int8_refuses_cpu_bf16_and_the_advice_works(tiny_bert):
    nlp, _ = initialized_nlp(tiny_bert, cpu_bf16=True)
    with pytest.raises(ValueError, match=r"runs its encoder in bfloat16 \(cpu_bf16 = true\)"):
        quantize_int8(nlp)
    assert not nlp.get_pipe("ner_bert").quantized
    with make_tempdir() as d:
        nlp.to_disk(d)
        loaded = spacy.load(d, config={"components": {"ner_bert": {"cpu_bf16": False}}})  # the message's advice
    assert "cpu_autocast" not in loaded.get_pipe("ner_bert").encoder().attrs
    quantize_int8(loaded)
    assert len(list(loaded.pipe([t for t, _ in TRAIN_DATA]))) == len(TRAIN_DATA)
