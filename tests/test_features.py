"""TokenClassifier.v3: lexical features (any spaCy per-token embedding) beside the encoder's vectors."""
import copy

import numpy
import pytest
import spacy
from spacy.util import fix_random_seed, make_tempdir
from thinc.api import Linear, Model
from util import TRAIN_DATA, ents_of, make_examples

from spacy_ner_bert.layers import token_classifier
from spacy_ner_bert.layers.case_features import CASE_FEATURES
from spacy_ner_bert.pipe import DEFAULT_MODEL

WIDTH = 16
FEATURES = {
    "@architectures": "spacy.MultiHashEmbed.v2",
    "width": WIDTH,
    "attrs": ["NORM", "PREFIX", "SUFFIX", "SHAPE"],
    "rows": [500, 100, 250, 250],
    "include_static_vectors": False,
}


def _config(tiny_bert, features=FEATURES, version="v3"):
    model = copy.deepcopy(dict(DEFAULT_MODEL))
    model.update({"@architectures": f"spacy-ner-bert.TokenClassifier.{version}", "case_features": True})
    if features is not None:
        model["features"] = copy.deepcopy(features)
    model["tok2vec"]["name"] = tiny_bert
    return {"model": model}


def _nlp(tiny_bert, **kwargs):
    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("ner_bert", config=_config(tiny_bert, **kwargs))
    examples = make_examples(nlp)
    return nlp, examples, nlp.initialize(lambda: examples)


def test_v3_trains_its_features_and_survives_saving(tiny_bert):
    nlp, examples, optimizer = _nlp(tiny_bert)
    ner = nlp.get_pipe("ner_bert")
    head, features = ner.model.get_ref("head"), ner.model.get_ref("features")
    hidden = ner.model.get_ref("tok2vec").predict([nlp("x")])[0].shape[1]
    assert head.get_dim("nI") == hidden + len(CASE_FEATURES) + WIDTH
    before = {(node.id, n): node.get_param(n).copy() for node in features.walk() for n in node.param_names if node.has_param(n)}
    assert before
    for _ in range(60):
        nlp.update(examples, sgd=optimizer, drop=0.0)
    moved = [k for k, v in before.items() if not numpy.array_equal(v, [n for n in features.walk() if n.id == k[0]][0].get_param(k[1]))]
    assert len(moved) == len(before)  # every table and the Maxout learned
    for text, ents in TRAIN_DATA:
        assert ents_of(nlp(text)) == ents
    with make_tempdir() as d:
        nlp.to_disk(d)
        loaded = spacy.load(d)
    texts = [t for t, _ in TRAIN_DATA] + ["unseen Words here ."]
    numpy.testing.assert_allclose(
        numpy.concatenate(loaded.get_pipe("ner_bert").logits([loaded.make_doc(t) for t in texts])),
        numpy.concatenate(ner.logits([nlp.make_doc(t) for t in texts])), rtol=1e-5, atol=1e-5,
    )


def test_v3_without_features_is_v2(tiny_bert):
    v3, _, _ = _nlp(tiny_bert, features=None)
    v2, _, _ = _nlp(tiny_bert, features=None, version="v2")
    assert not v3.get_pipe("ner_bert").model.has_ref("features")
    texts = [t for t, _ in TRAIN_DATA] + ["", "obama met putin ."]
    numpy.testing.assert_array_equal(
        numpy.concatenate(v3.get_pipe("ner_bert").logits([v3.make_doc(t) for t in texts])),
        numpy.concatenate(v2.get_pipe("ner_bert").logits([v2.make_doc(t) for t in texts])),
    )


def _fixed(name, rows_of):
    """A parameter-free layer giving rows_of(doc) per doc; it records the gradient it receives."""

    def forward(model, docs, is_train):
        out = [rows_of(doc) for doc in docs]

        def backprop(d_out):
            model.attrs["d"] = [numpy.asarray(d).copy() for d in d_out]
            return []

        return out, backprop

    return Model(name, forward, attrs={"d": None})


def test_the_head_input_and_the_gradients_split_by_columns():
    """The head's input is [token vector | casing flags | features]; each part gets back its columns
    of the head's input gradient (checked against a linear head's weights), empty docs included."""
    nlp = spacy.blank("en")
    docs = [nlp("Obama met Putin"), nlp(""), nlp("in Moscow")]
    rng = numpy.random.default_rng(0)
    vec = {doc.text: rng.normal(size=(len(doc), 5)).astype("f") for doc in docs}
    feat = {doc.text: rng.normal(size=(len(doc), 3)).astype("f") for doc in docs}
    tok2vec = _fixed("tok2vec", lambda doc: vec[doc.text])
    features = _fixed("features", lambda doc: feat[doc.text])
    head = Linear(4)
    model = token_classifier(tok2vec, head, with_case=True, features=features)
    model.initialize(X=docs)
    assert head.get_dim("nI") == 5 + len(CASE_FEATURES) + 3
    W, b = head.get_param("W"), head.get_param("b")
    outputs, backprop = model(docs, is_train=True)
    from spacy_ner_bert.layers.case_features import case_features

    X = numpy.hstack([numpy.concatenate([vec[d.text] for d in docs]), case_features(docs),
                      numpy.concatenate([feat[d.text] for d in docs])])
    numpy.testing.assert_allclose(numpy.concatenate(outputs), X @ W.T + b, rtol=1e-5, atol=1e-6)
    dY = [rng.normal(size=o.shape).astype("f") for o in outputs]
    backprop(dY)
    d_input = numpy.concatenate(dY) @ W
    got_vec, got_feat = tok2vec.attrs["d"], features.attrs["d"]
    assert [d.shape for d in got_vec] == [(3, 5), (0, 5), (2, 5)]
    assert [d.shape for d in got_feat] == [(3, 3), (0, 3), (2, 3)]
    numpy.testing.assert_allclose(numpy.concatenate(got_vec), d_input[:, :5], rtol=1e-5, atol=1e-6)
    numpy.testing.assert_allclose(numpy.concatenate(got_feat), d_input[:, -3:], rtol=1e-5, atol=1e-6)


def test_features_must_give_one_vector_per_token():
    nlp = spacy.blank("en")
    docs = [nlp("Obama met Putin")]
    tok2vec = _fixed("tok2vec", lambda doc: numpy.ones((len(doc), 5), dtype="f"))
    short = _fixed("features", lambda doc: numpy.ones((len(doc) - 1, 3), dtype="f"))
    model = token_classifier(tok2vec, Linear(4, 8), features=short)
    model.set_dim("nO", 4)
    model.layers[1].initialize()
    with pytest.raises(ValueError, match="features model gave 2 vectors for a doc of 3 tokens"):
        model.predict(docs)


def test_export_hf_refuses_features(tiny_bert, tmp_path):
    from spacy_ner_bert.checkpoints import CheckpointError, export_hf

    fix_random_seed(0)
    nlp = spacy.blank("en")
    config = _config(tiny_bert)
    config["model"]["case_features"] = False
    config["model"]["head"] = {"@architectures": "spacy-ner-bert.LinearHead.v1"}
    nlp.add_pipe("ner_bert", config=config)
    nlp.initialize(lambda: make_examples(nlp))
    with pytest.raises(CheckpointError, match="lexical features"):
        export_hf(nlp, tmp_path / "out")
    assert not (tmp_path / "out").exists()
