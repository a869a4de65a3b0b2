"""The ner_bert component end to end, with a tiny random BERT built in a fixture."""
import numpy
import pytest
import spacy
import torch
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import make_tempdir
from transformers import AutoTokenizer

from util import TRAIN_DATA, ents_of, make_examples, ner_config, trained_nlp


@pytest.fixture(scope="module")
def nlp(tiny_bert):
    return trained_nlp(tiny_bert)


def test_overfit_five_sentences(nlp):
    scores = nlp.evaluate(make_examples(nlp))
    assert scores["ents_f"] == 1.0
    for text, ents in TRAIN_DATA:
        assert ents_of(nlp(text)) == [tuple(e) for e in ents]


def test_overfit_linear_head(tiny_bert):
    nlp = trained_nlp(tiny_bert, steps=80, head={"@architectures": "spacy-ner-bert.LinearHead.v1"})
    assert nlp.evaluate(make_examples(nlp))["ents_f"] == 1.0


def test_labels_and_scores(nlp):
    ner = nlp.get_pipe("ner_bert")
    assert ner.labels == ("LOC", "MISC", "ORG", "PER", "TIME")
    doc = nlp("John Smith visited New York in March .")
    group = doc.spans["ner_bert"]
    assert [(s.start, s.end, s.label_) for s in group] == [(e.start, e.end, e.label_) for e in doc.ents]
    scores = group.attrs["scores"]
    assert len(scores) == len(doc.ents) and all(0.0 < s <= 1.0 for s in scores)
    assert doc[0].ent_iob_ == "B" and doc[1].ent_iob_ == "I" and doc[2].ent_iob_ == "O"
    assert doc[0].ent_type_ == "PER"


def test_first_wordpiece_mapping(nlp, tiny_bert):
    """Each token's vector is the encoder's output at its first wordpiece, however it splits."""
    words = ["Katrinas", "visiting", "Washingtonian", "xyzzyq", "."]
    doc = Doc(nlp.vocab, words=words)
    tok2vec = nlp.get_pipe("ner_bert").model.get_ref("tok2vec")
    ours = tok2vec.ops.to_numpy(tok2vec.predict([doc])[0])

    encoder = tok2vec.layers[0].layers[0]  # the spacy-transformers TransformerModel
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    enc = tokenizer(doc.text, return_tensors="pt")
    assert len(enc["input_ids"][0]) > len(words) + 4, "words should split into several wordpieces"
    with torch.no_grad():
        hidden = encoder.transformer(**enc).last_hidden_state[0].numpy()
    word_ids = enc.word_ids()
    first = [word_ids.index(i) for i in range(len(words))]
    numpy.testing.assert_allclose(ours, hidden[first], rtol=1e-5, atol=1e-5)


def test_zero_wordpiece_tokens_get_o_and_shift_nothing(nlp):
    ner = nlp.get_pipe("ner_bert")
    plain = Doc(nlp.vocab, words=["John", "Smith", "visited", "Moscow", "."])
    # "\u200b" and "\x07" are dropped by BERT's tokenizer; "  " is a whitespace token.
    odd = Doc(
        nlp.vocab,
        words=["John", "\u200b", "Smith", "visited", "\x07", "Moscow", "  ", "."],
        spaces=[True, True, True, True, True, False, False, False],
    )
    keep = [0, 2, 3, 5, 7]
    s_plain, s_odd = (ner.model.ops.to_numpy(x) for x in ner.model.predict([plain, odd]))
    numpy.testing.assert_allclose(s_odd[keep], s_plain, rtol=1e-4, atol=1e-4)
    for i in (1, 4, 6):
        assert s_odd[i, 0] == 0.0 and numpy.isneginf(s_odd[i, 1:]).all()
    nlp.get_pipe("ner_bert").set_annotations([odd], ner.predict([odd]))
    assert [odd[i].ent_iob_ for i in (1, 4, 6)] == ["O", "O", "O"]
    assert ("Moscow", "LOC") in [(e.text, e.label_) for e in odd.ents]


def test_long_document_labeled_to_its_end(nlp):
    """Far over 512 wordpieces: strided windows label the end as they label the start."""
    sentence = TRAIN_DATA[1][0]
    n = 900  # 6 tokens each: 5,400 words
    doc = nlp(" ".join([sentence] * n))
    assert len(doc) == 6 * n
    assert any(e.start >= len(doc) - 12 for e in doc.ents)
    # Windows cut sentences at arbitrary places, so a model overfit on single sentences misses
    # some; what matters is that the end is labeled as densely as the start.
    head = sum(1 for e in doc.ents if e.end <= 600)
    tail = sum(1 for e in doc.ents if e.start >= len(doc) - 600)
    assert head >= 0.7 * 300 and tail >= 0.9 * head


def test_empty_and_whitespace_docs(nlp):
    texts = ["", "   ", "\n\n", "John Smith visited New York in March .", "", " Obama met Putin in Moscow . "]
    docs = list(nlp.pipe(texts, batch_size=3))
    assert [len(d.ents) for d in docs[:3]] == [0, 0, 0]
    assert ents_of(docs[3]) == ents_of(nlp(texts[3]))
    assert [e.text for e in docs[5].ents] == ["Obama", "Putin", "Moscow"]
    for text in ["", "   "]:
        assert nlp(text).ents == ()
    # a batch of empty docs only
    assert [d.ents for d in nlp.pipe(["", " ", ""])] == [(), (), ()]
    # empty docs beside one so long that they form a sub-batch of their own
    long_text = " ".join([texts[3]] * 400)
    docs = list(nlp.pipe(["", long_text, ""], batch_size=3))
    assert docs[0].ents == () and docs[2].ents == () and len(docs[1].ents) > 100


def test_update_on_empty_batch(nlp):
    ner = nlp.get_pipe("ner_bert")
    losses = ner.update([Example.from_dict(nlp.make_doc(""), {"entities": []})])
    assert losses == {"ner_bert": 0.0}


def test_pipe_equals_call(nlp):
    texts = [t for t, _ in TRAIN_DATA] * 3 + ["", "Paris and Berlin", "x " * 300]
    piped = list(nlp.pipe(texts, batch_size=4))
    called = [nlp(t) for t in texts]
    assert [ents_of(d) for d in piped] == [ents_of(d) for d in called]
    for a, b in zip(piped, called):
        numpy.testing.assert_allclose(a.spans["ner_bert"].attrs["scores"], b.spans["ner_bert"].attrs["scores"], rtol=1e-5)


def test_n_process_2(nlp):
    texts = [t for t, _ in TRAIN_DATA] * 4
    multi = list(nlp.pipe(texts, batch_size=2, n_process=2))
    assert [ents_of(d) for d in multi] == [ents_of(nlp(t)) for t in texts]


def test_to_disk_round_trip(nlp, tiny_bert):
    texts = [t for t, _ in TRAIN_DATA] + ["Merkel visited Paris on Friday ."]
    with make_tempdir() as d:
        nlp.to_disk(d)
        loaded = spacy.load(d)
    for text in texts:
        a, b = nlp(text), loaded(text)
        assert ents_of(a) == ents_of(b)
        assert a.spans["ner_bert"].attrs["scores"] == pytest.approx(b.spans["ner_bert"].attrs["scores"], rel=1e-6)
    assert loaded.get_pipe("ner_bert").labels == nlp.get_pipe("ner_bert").labels


def test_to_bytes_round_trip(nlp):
    nlp2 = spacy.blank("en")
    config = dict(nlp.config["components"]["ner_bert"])
    config.pop("factory")
    nlp2.add_pipe("ner_bert", config=config)
    nlp2.from_bytes(nlp.to_bytes())
    text = TRAIN_DATA[0][0]
    assert ents_of(nlp2(text)) == ents_of(nlp(text))


def test_serialize_before_initialize(tiny_bert):
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("ner_bert", config=ner_config(tiny_bert))
    ner.add_label("PER")
    with make_tempdir() as d:
        nlp.to_disk(d)
        loaded = spacy.load(d)
    assert loaded.get_pipe("ner_bert").labels == ("PER",)


def test_initialize_with_labels(tiny_bert):
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("ner_bert", config=ner_config(tiny_bert))
    ner.initialize(lambda: make_examples(nlp), nlp=nlp, labels=["PER", "GPE"])
    assert ner.labels == ("GPE", "PER")
    assert ner.model.get_dim("nO") == 5
    with pytest.raises(ValueError, match="not among this component's labels"):
        ner.update(make_examples(nlp))


def test_initialize_with_iob_tags(tiny_bert):
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("ner_bert", config=ner_config(tiny_bert))
    with pytest.raises(ValueError, match="I- tags without a B- tag"):
        ner.initialize(lambda: make_examples(nlp), nlp=nlp, labels=["O", "B-PER", "I-PER", "I-LOC"])


def test_add_label_after_initialize_fails(nlp):
    with pytest.raises(ValueError, match="after the model is initialized"):
        nlp.get_pipe("ner_bert").add_label("NEW")


@pytest.mark.parametrize("label", ["", "B-PER", "O"])
def test_add_bad_label(tiny_bert, label):
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("ner_bert", config=ner_config(tiny_bert))
    with pytest.raises(ValueError, match="Invalid entity label"):
        ner.add_label(label)


def test_missing_encoder_path(tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("ner_bert", config=ner_config(str(tmp_path / "nope")))
    with pytest.raises(ValueError, match="does not exist"):
        nlp.initialize(lambda: make_examples(nlp))


def test_encoder_path_without_model(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    nlp = spacy.blank("en")
    nlp.add_pipe("ner_bert", config=ner_config(str(tmp_path)))
    with pytest.raises(ValueError, match="holds no model"):
        nlp.initialize(lambda: make_examples(nlp))


def test_missing_gold_is_masked(tiny_bert):
    """Tokens without gold annotation add nothing to the loss or its gradient."""
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("ner_bert", config=ner_config(tiny_bert))
    nlp.initialize(lambda: make_examples(nlp))
    doc = nlp.make_doc("John Smith visited Moscow")
    full = Example.from_dict(doc, {"entities": ["B-PER", "L-PER", "O", "U-LOC"]})
    part = Example.from_dict(doc, {"entities": ["B-PER", "L-PER", "-", "-"]})
    scores = ner.model.predict([doc])
    loss_full, d_full = ner.get_loss([full], scores)
    assert (ner.model.ops.to_numpy(d_full[0])[2:] != 0).any()
    loss_part, d_part = ner.get_loss([part], scores)
    d_part = ner.model.ops.to_numpy(d_part[0])
    assert (d_part[2:] == 0).all() and (d_part[:2] != 0).any()
    assert loss_part > 0


def test_misaligned_entities_warn(tiny_bert):
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("ner_bert", config=ner_config(tiny_bert))
    nlp.initialize(lambda: make_examples(nlp))
    predicted = nlp.make_doc("NewYork is big")
    reference = Doc(nlp.vocab, words=["New", "York", "is", "big"], spaces=[False, True, True, False])
    reference.ents = [reference.char_span(0, 3, label="LOC")]
    with pytest.warns(UserWarning, match="do not align"):
        ner.update([Example(predicted, reference)])


def test_overwrite_false_keeps_existing_entities(tiny_bert):
    nlp = trained_nlp(tiny_bert, overwrite=False)
    ner = nlp.get_pipe("ner_bert")
    doc = nlp.make_doc("Obama met Putin in Moscow .")
    doc.ents = [doc.char_span(0, 5, label="CUSTOM")]
    ner(doc)
    assert [(e.text, e.label_) for e in doc.ents] == [("Obama", "CUSTOM"), ("Putin", "PER"), ("Moscow", "LOC")]


def test_label_smoothing_trains(tiny_bert):
    nlp = trained_nlp(tiny_bert, steps=80, label_smoothing=0.1)
    assert nlp.evaluate(make_examples(nlp))["ents_f"] == 1.0


def test_class_weighting(tiny_bert):
    nlp = trained_nlp(tiny_bert, steps=80, class_weighting=0.5)
    ner = nlp.get_pipe("ner_bert")
    weights = dict(zip(ner.tags.tags, ner.cfg["class_weights"]))
    assert weights["B-MISC"] > weights["B-PER"] > weights["O"]  # MISC is rarest here, O commonest
    assert nlp.evaluate(make_examples(nlp))["ents_f"] == 1.0
    with make_tempdir() as d:
        nlp.to_disk(d)
        assert spacy.load(d).get_pipe("ner_bert").cfg["class_weights"] == pytest.approx(ner.cfg["class_weights"])


@pytest.mark.parametrize("focal_gamma", [0.0, 2.0])
def test_loss_finite_with_smoothing_and_forced_rows(tiny_bert, focal_gamma):
    nlp = trained_nlp(tiny_bert, steps=5, label_smoothing=0.2, class_weighting=0.3, focal_gamma=focal_gamma)
    ner = nlp.get_pipe("ner_bert")
    doc = Doc(nlp.vocab, words=["John", "\u200b", "Smith"], ents=["B-PER", "O", "B-PER"])
    eg = Example(Doc(nlp.vocab, words=["John", "\u200b", "Smith"]), doc)
    loss, grads = ner.get_loss([eg], ner.model.predict([eg.predicted]))
    assert numpy.isfinite(loss) and loss > 0
    g = ner.model.ops.to_numpy(grads[0])
    assert numpy.isfinite(g).all() and (g[1] == 0).all()


@pytest.mark.parametrize("gamma,smoothing", [(0.0, 0.0), (0.5, 0.0), (2.0, 0.0), (2.0, 0.1)])
def test_focal_loss_matches_autograd(tiny_bert, gamma, smoothing):
    """get_loss's hand-written focal gradient against torch autograd of the same loss."""
    nlp = trained_nlp(tiny_bert, steps=1, class_weighting=0.5, label_smoothing=smoothing)
    ner = nlp.get_pipe("ner_bert")
    ner.cfg["focal_gamma"] = gamma
    doc = Doc(nlp.vocab, words=["John", "Smith", "visited", "Moscow", "."])
    ref = Doc(nlp.vocab, words=[t.text for t in doc], ents=["B-PER", "I-PER", "O", "B-LOC", "O"])
    n_tags = len(ner.tags.tags)
    rng = numpy.random.default_rng(0)
    logits = (rng.normal(size=(len(doc), n_tags)) * 4).astype("float32")
    logits[2, ner.tags.tags.index("O")] = 30.0  # a token it is sure of: p rounds to 1
    loss, grads = ner.get_loss([Example(doc, ref)], [ner.model.ops.asarray2f(logits)])

    gold = torch.tensor([ner.tags.tags.index(t) for t in ["B-PER", "I-PER", "O", "B-LOC", "O"]])
    z = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    target = torch.nn.functional.one_hot(gold, n_tags).double() * (1 - smoothing) + smoothing / n_tags
    log_p = torch.log_softmax(z, dim=1)
    focus = (1 - log_p.exp()).clamp_min(1e-12) ** gamma
    w = torch.tensor(ner.cfg["class_weights"], dtype=torch.float64)[gold]
    expected = -(target * focus * log_p * w[:, None]).sum() / len(gold)
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-4)
    numpy.testing.assert_allclose(ner.model.ops.to_numpy(grads[0]), z.grad.numpy(), rtol=1e-3, atol=1e-6)


def test_focal_loss_trains_and_saves(tiny_bert):
    nlp = trained_nlp(tiny_bert, steps=80, focal_gamma=2.0)
    assert nlp.evaluate(make_examples(nlp))["ents_f"] == 1.0
    with make_tempdir() as d:
        nlp.to_disk(d)
        assert spacy.load(d).get_pipe("ner_bert").cfg["focal_gamma"] == 2.0


@pytest.mark.parametrize(
    "bad",
    [
        {"label_smoothing": 1.0},
        {"label_smoothing": "0.1"},
        {"class_weighting": -0.1},
        {"class_weighting": "0.3"},
        {"focal_gamma": -1.0},
        {"focal_gamma": 11},
        {"distill_weight": 1.5},
        {"distill_weight": "0.5"},
        {"distill_temperature": 0.0},
    ],
)
def test_bad_loss_settings(tiny_bert, bad):
    # A string passes spaCy's config validation for a float argument: it must still get an error
    # that names the setting (it used to be a bare TypeError from the range comparison).
    (name,) = bad
    with pytest.raises(ValueError, match=f"{name} must be"):
        spacy.blank("en").add_pipe("ner_bert", config=ner_config(tiny_bert, **bad))


def test_length_buckets():
    from spacy_ner_bert.pipe import length_buckets

    lengths = [5, 50, 1, 7, 300, 5, 0]
    groups = length_buckets(lengths, budget=20)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        assert max(lengths[i] for i in g) * len(g) <= 20 or len(g) == 1
    assert [lengths[g[0]] for g in groups] == sorted(lengths[g[0]] for g in groups)


@pytest.mark.parametrize("sort_buffer", [1, 3, 1024])
def test_pipe_sort_buffer_keeps_order(nlp, sort_buffer):
    """nlp.pipe reads max(batch_size, sort_buffer) docs, runs them length-sorted, yields in order."""
    ner = nlp.get_pipe("ner_bert")
    texts = [t for t, _ in TRAIN_DATA] + ["", "Putin ."] + [" ".join(t for t, _ in TRAIN_DATA)]
    expected = [ents_of(nlp(t)) for t in texts]
    old = ner.sort_buffer
    ner.sort_buffer = sort_buffer
    try:
        docs = list(nlp.pipe(texts, batch_size=2))
    finally:
        ner.sort_buffer = old
    assert [d.text for d in docs] == texts
    assert [ents_of(d) for d in docs] == expected


@pytest.mark.parametrize("bad", [0, -5, True, 2.5])
def test_bad_sort_buffer(tiny_bert, bad):
    with pytest.raises(ValueError, match="sort_buffer"):
        spacy.blank("en").add_pipe("ner_bert", config=ner_config(tiny_bert, sort_buffer=bad))


def test_check_number_integer():
    """integer=True refuses floats (even whole ones) and bools, names owner and setting; floats pass otherwise."""
    from spacy_ner_bert.pipe import check_number

    check_number("n", 3, lambda x: x >= 1, "an integer >= 1", integer=True)
    check_number("x", 2.5, lambda x: x >= 1, "a number >= 1")
    for bad in (2.5, 3.0, True, "3", 0):
        with pytest.raises(ValueError, match=r"^\[own\] n must be an integer >= 1, got "):
            check_number("n", bad, lambda x: x >= 1, "an integer >= 1", owner="own", integer=True)


def test_quantize_int8(tiny_bert, tmp_path):
    from spacy_ner_bert import quantize_int8

    nlp = trained_nlp(tiny_bert)
    ner = nlp.get_pipe("ner_bert")
    texts = [t for t, _ in TRAIN_DATA]
    before = [ner.model.predict([nlp.make_doc(t)])[0] for t in texts]
    quantize_int8(nlp)
    linears = [m for m in ner.model.walk() if hasattr(m, "shims") and m.shims]
    assert any("quantized" in type(mod).__module__ for mod in linears[0].shims[0]._model.modules())
    after = [ner.model.predict([nlp.make_doc(t)])[0] for t in texts]
    # int8 changes the scores a little, not the decisions on the training sentences.
    assert any(not numpy.array_equal(a, b) for a, b in zip(before, after))
    for a, b in zip(before, after):
        assert numpy.abs(a - b).max() < 0.1 * numpy.abs(a).max()
    assert [ents_of(d) for d in nlp.pipe(texts)] == [ents for _, ents in TRAIN_DATA]
    for action, call in [("save", lambda: nlp.to_disk(tmp_path / "q")), ("serialize", nlp.to_bytes),
                         ("train", lambda: nlp.update(make_examples(nlp)))]:
        with pytest.raises(ValueError, match=f"Cannot {action} a pipeline quantized"):
            call()


def test_quantize_int8_bad_inputs(tiny_bert):
    from spacy_ner_bert import quantize_int8

    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match="no component 'ner_bert'"):
        quantize_int8(nlp)
    nlp.add_pipe("ner_bert", config=ner_config(tiny_bert))
    with pytest.raises(ValueError, match="not initialized"):
        quantize_int8(nlp)
