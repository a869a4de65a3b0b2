"""GPU: the component trains and predicts on CUDA (cupy + torch). Skipped without a GPU."""
import numpy
import pytest
import spacy
from thinc.api import NumpyOps, get_current_ops, set_current_ops

from util import TRAIN_DATA, ents_of, make_examples, trained_nlp

pytestmark = pytest.mark.gpu


@pytest.fixture
def gpu():
    previous = get_current_ops()
    spacy.require_gpu()
    yield
    set_current_ops(previous if not isinstance(previous, NumpyOps) else NumpyOps())
    import thinc.api

    thinc.api.require_cpu()


def test_train_on_gpu(gpu, tiny_bert):
    nlp = trained_nlp(tiny_bert, steps=80)
    ops = nlp.get_pipe("ner_bert").model.ops
    assert type(ops).__name__ == "CupyOps"
    assert nlp.evaluate(make_examples(nlp))["ents_f"] == 1.0


def test_gpu_matches_cpu(gpu, tiny_bert):
    nlp = trained_nlp(tiny_bert, steps=60)
    data = nlp.to_bytes()
    gpu_docs = [nlp(t) for t, _ in TRAIN_DATA]
    import thinc.api

    thinc.api.require_cpu()
    cpu_nlp = spacy.blank("en")
    config = dict(nlp.config["components"]["ner_bert"])
    config.pop("factory")
    cpu_nlp.add_pipe("ner_bert", config=config)
    cpu_nlp.from_bytes(data)
    for doc in gpu_docs:
        cpu_doc = cpu_nlp(doc.text)
        assert ents_of(cpu_doc) == ents_of(doc)
        numpy.testing.assert_allclose(
            cpu_doc.spans["ner_bert"].attrs["scores"], doc.spans["ner_bert"].attrs["scores"], atol=1e-3
        )


def test_mixed_precision_on_gpu(gpu, tiny_bert):
    nlp = trained_nlp(tiny_bert, steps=80, model={"tok2vec": {"name": tiny_bert, "mixed_precision": True}})
    assert nlp.evaluate(make_examples(nlp))["ents_f"] == 1.0


def test_fused_adam_is_thincs_update_on_gpu(gpu, tiny_bert):
    """torch's fused kernel on CUDA, the optimizer's moments as cupy arrays: thinc's update."""
    from test_fused_adam import OPTIMIZERS, _assert_same, _train

    make = OPTIMIZERS["clipped"]
    _assert_same(_train(tiny_bert, make, 4, True), _train(tiny_bert, make, 4, False))
