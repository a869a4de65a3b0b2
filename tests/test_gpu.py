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


# --- the default recipe's FGM, wordpiece masking, case token types, resume and tail averaging on CUDA ---


def _encoder_weights(pipe):
    from spacy_ner_bert.encoder_params import torch_parameters

    return {name: p for (_, name), p in torch_parameters(pipe.model)}


def test_fgm_on_gpu(gpu, tiny_bert):
    """adversarial_epsilon (the default recipe's FGM) on CUDA: the second pass adds to the gradient,
    the embeddings are put back bit for bit, and the component trains."""
    import torch

    from util import initialized_nlp

    grads = {}
    for eps in (0.0, 0.5):
        nlp, examples = initialized_nlp(tiny_bert, adversarial_epsilon=eps)
        pipe = nlp.get_pipe("ner_bert")
        weights = _encoder_weights(pipe)
        assert all(p.device.type == "cuda" for p in weights.values())
        before = {n: p.detach().clone() for n, p in weights.items()}
        pipe.update(examples, sgd=None, drop=0.0)
        assert all(torch.equal(before[n], p.detach()) for n, p in weights.items())  # bit for bit
        grads[eps] = {n: p.grad.detach().cpu().numpy() for n, p in weights.items() if p.grad is not None}
    assert grads[0.0].keys() == grads[0.5].keys()
    assert sum(not numpy.allclose(grads[0.0][k], grads[0.5][k], rtol=1e-3, atol=1e-6) for k in grads[0.0]) > len(grads[0.0]) // 2
    nlp = trained_nlp(tiny_bert, steps=80, adversarial_epsilon=1.0)
    assert nlp.evaluate(make_examples(nlp))["ents_f"] == 1.0


def test_mask_rate_on_gpu(gpu, tiny_bert):
    from thinc.util import to_numpy

    from util import encoder_v2_nlp

    nlp, examples, optimizer = encoder_v2_nlp(tiny_bert, mask_rate=0.5)
    encoder = nlp.get_pipe("ner_bert").encoder()
    mask_id = encoder.tokenizer.mask_token_id
    docs = [nlp.make_doc(t) for t, _ in TRAIN_DATA]
    assert (to_numpy(encoder(docs, is_train=True)[0].wordpieces.input_ids) == mask_id).any()
    assert not (to_numpy(encoder(docs, is_train=False)[0].wordpieces.input_ids) == mask_id).any()
    losses = {}
    for _ in range(3):
        nlp.update(examples, sgd=optimizer, losses=losses)
    assert numpy.isfinite(losses["ner_bert"]) and losses["ner_bert"] > 0


def test_case_token_types_on_gpu(gpu, tiny_bert):
    """The encoder sees case on CUDA (the uncased tokenizer gives both texts the same ids), trains, and
    its output equals the CPU pipeline's loaded from the same bytes."""
    import thinc.api
    from thinc.util import to_numpy

    from util import encoder_v2_nlp

    nlp, examples, optimizer = encoder_v2_nlp(tiny_bert, case_token_types=True)
    ner = nlp.get_pipe("ner_bert")
    docs = [nlp.make_doc("Obama met Putin ."), nlp.make_doc("obama met putin .")]
    upper, lower = (to_numpy(x) for x in ner.model.get_ref("tok2vec").predict(docs))
    assert not numpy.allclose(upper, lower)
    for _ in range(40):
        nlp.update(examples, sgd=optimizer, drop=0.0)
    for text, ents in TRAIN_DATA:
        assert [(e.start_char, e.end_char, e.label_) for e in nlp(text).ents] == ents
    texts = [t for t, _ in TRAIN_DATA] + ["obama MET putin"]
    on_gpu = numpy.concatenate([to_numpy(x) for x in ner.logits([nlp.make_doc(t) for t in texts])])
    data, config = nlp.to_bytes(), dict(nlp.config["components"]["ner_bert"])
    config.pop("factory")
    thinc.api.require_cpu()
    cpu_nlp = spacy.blank("en")
    cpu_nlp.add_pipe("ner_bert", config=config)
    cpu_nlp.from_bytes(data)
    on_cpu = numpy.concatenate(cpu_nlp.get_pipe("ner_bert").logits([cpu_nlp.make_doc(t) for t in texts]))
    numpy.testing.assert_allclose(on_cpu, on_gpu, rtol=1e-3, atol=1e-3)


def test_resume_on_gpu_and_from_a_gpu_checkpoint_on_cpu(gpu, tiny_bert, corpus, tmp_path, monkeypatch):
    """The workflow's trainer on CUDA: stopped by SIGTERM it saves a checkpoint (with CUDA's random
    state), which resumes to the end on CUDA, and also on the CPU (a run moved off a lost GPU machine).
    Not bit for bit (CUDA kernels, cupy's generator reseeded): the steps, the checkpoints and the
    outputs are checked."""
    import shutil

    import thinc.api
    import torch

    from spacy_ner_bert import resume
    from test_resume import CONFIG, overrides, saved_steps

    steps = saved_steps(monkeypatch)
    settings = overrides(tiny_bert, corpus, signal_step=6)
    run = tmp_path / "run"
    assert resume.train(CONFIG, run, overrides=settings, use_gpu=0, checkpoint_every=4) is False
    assert steps == [3, 6]
    state = torch.load(resume.checkpoint_path(run) / resume.STATE_FILE, map_location="cpu", weights_only=False)
    assert "torch_cuda" in state["rng"]
    stopped = resume._params(spacy.load(run / "model-last"))
    shutil.copytree(run, tmp_path / "moved")
    assert resume.train(CONFIG, run, overrides=settings, use_gpu=0, resume=True, checkpoint_every=4) is True
    assert steps[2:] == [7, 11, 15] and not resume.checkpoint_path(run).exists()
    thinc.api.require_cpu()
    assert resume.train(CONFIG, tmp_path / "moved", overrides=settings, resume=True, checkpoint_every=4) is True
    assert steps[5:] == [7, 11, 15]
    for out in (run, tmp_path / "moved"):
        nlp = spacy.load(out / "model-last")
        assert type(nlp.get_pipe("ner_bert").model.ops).__name__ == "NumpyOps"
        finished = resume._params(nlp)
        moved = 0
        for where, values in finished.items():
            for name, value in values.items():
                value = numpy.asarray(value, dtype="float64")
                assert numpy.isfinite(value).all(), f"{out.name}: {where} {name}"
                moved += not numpy.allclose(value, numpy.asarray(stopped[where][name], dtype="float64"))
        assert moved > 10  # it went on training after the stop
        assert nlp("Peter lives in Berlin .").ents is not None


def test_tail_averaging_on_gpu(gpu, tiny_bert, corpus, tmp_path):
    from spacy_ner_bert import resume
    from test_resume import CONFIG, assert_averaged_is_the_mean, overrides

    run = tmp_path / "avg"
    settings = overrides(tiny_bert, corpus)
    assert resume.train(CONFIG, run, overrides=settings, use_gpu=0, checkpoint_every=0, average_from=10,
                        average_every=3) is True
    assert resume.snapshot_steps(run) == [10, 13, 16]
    assert_averaged_is_the_mean(run, [10, 13, 16], 17)


def test_speed_benchmark_on_gpu(tiny_bert, tmp_path):
    """benchmarks/speed.py --gpu-id 0: every contender runs on the device and reports its GPU memory, and the
    entity agreement between ner_bert and the HF pipeline (same weights) is computed as on the CPU."""
    import json

    from test_benchmarks import run_speed

    run = run_speed(tiny_bert, tmp_path, "--contenders", "ner_bert,hf,floor", "--gpu-id", "0")
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((tmp_path / "results" / "speed_join4_n10_gpu0.json").read_text())
    assert summary["gpu_id"] == 0 and "GPU 0:" in summary["machine"]
    for name, result in summary["results"].items():
        assert result["words_per_s"] > 0 and result["peak_gpu_mb"] > 0, name
    assert 0.0 <= summary["entity_agreement_f1_ner_bert_hf"] <= 1.0
