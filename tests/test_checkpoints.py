"""Ready-made checkpoints: HF token-classification directories and NeMo .nemo archives."""
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy
import pytest
import spacy
import torch
import yaml
from spacy.training import Example
from spacy.util import make_tempdir
from transformers import AutoModelForTokenClassification, AutoTokenizer, BertConfig, BertForTokenClassification, BertModel

from spacy_ner_bert.checkpoints import CheckpointError, read_hf, read_nemo
from spacy_ner_bert.decode import decode_docs

from util import ents_of

# O deliberately not first: ner_bert puts O at index 0 and must permute the classifier's rows.
CKPT_LABELS = ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
TEXTS = ["John Smith visited Washingtonian Moscow today", "the united nations met obama in paris"]


def tiny_config(tiny_bert, **extra) -> BertConfig:
    config = BertConfig.from_pretrained(tiny_bert)
    for k, v in extra.items():
        setattr(config, k, v)
    return config


@pytest.fixture(scope="module")
def hf_dir(tiny_bert, tmp_path_factory):
    path = tmp_path_factory.mktemp("hf_ckpt")
    config = tiny_config(
        tiny_bert, id2label=dict(enumerate(CKPT_LABELS)), label2id={l: i for i, l in enumerate(CKPT_LABELS)}
    )
    torch.manual_seed(1)
    model = BertForTokenClassification(config)
    with torch.no_grad():  # make the classifier decisive so decoded entities are not all O
        model.classifier.weight.mul_(40.0)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(path)
    return path


def first_subtoken_rows(tokenizer, text):
    enc = tokenizer(text, return_tensors="pt")
    word_ids = enc.word_ids()
    n_words = max(i for i in word_ids if i is not None) + 1
    return enc, [word_ids.index(i) for i in range(n_words)]


def compare_to_reference(nlp, ref_logits_fn, tokenizer, ckpt_labels):
    ner = nlp.get_pipe("ner_bert")
    order = [ckpt_labels.index(t) for t in ner.tags.tags]
    for text in TEXTS:
        doc = nlp.make_doc(text)
        enc, first = first_subtoken_rows(tokenizer, text)
        assert len(first) == len(doc)
        ref = ref_logits_fn(enc)[first][:, order]
        ours = ner.model.ops.to_numpy(ner.model.predict([doc])[0])
        numpy.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
        # Entities equal the reference scores decoded under the same IOB constraints.
        paths, _ = decode_docs([ref], ner.tags)
        expected = [(doc[s:e].start_char, doc[s:e].end_char, lab) for s, e, lab in ner.tags.spans(paths[0])]
        assert ents_of(nlp(text)) == expected


def test_hf_scores_equal_transformers(hf_dir):
    nlp = spacy.blank("en")
    nlp.add_pipe("ner_bert", config={"checkpoint": str(hf_dir)})
    reference = AutoModelForTokenClassification.from_pretrained(hf_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)

    def logits(enc):
        with torch.no_grad():
            return reference(**enc).logits[0].numpy()

    compare_to_reference(nlp, logits, tokenizer, CKPT_LABELS)
    assert nlp.get_pipe("ner_bert").labels == ("LOC", "ORG", "PER")
    assert any(nlp(t).ents for t in TEXTS), "the test model should find some entities"


def test_hf_round_trip_and_fine_tune(hf_dir):
    nlp = spacy.blank("en")
    nlp.add_pipe("ner_bert", config={"checkpoint": str(hf_dir)})
    with make_tempdir() as d:
        nlp.to_disk(d)
        loaded = spacy.load(d)
    for text in TEXTS:
        assert ents_of(loaded(text)) == ents_of(nlp(text))
    # initialize keeps the checkpoint's weights; then the pipeline trains like any other.
    before = ents_of(nlp(TEXTS[0]))
    examples = [Example.from_dict(nlp.make_doc("Obama visited Paris"), {"entities": [(0, 5, "PER"), (14, 19, "LOC")]})]
    optimizer = nlp.initialize(lambda: examples)
    assert ents_of(nlp(TEXTS[0])) == before
    for _ in range(30):
        nlp.update(examples, sgd=optimizer, drop=0.0)
    assert ents_of(nlp("Obama visited Paris")) == [(0, 5, "PER"), (14, 19, "LOC")]


def test_hf_checkpoint_with_cpu_bf16(hf_dir):
    # the checkpoint's model replaces the config's, and cpu_bf16 applies to it as to any encoder
    plain, bf16 = spacy.blank("en"), spacy.blank("en")
    plain.add_pipe("ner_bert", config={"checkpoint": str(hf_dir)})
    bf16.add_pipe("ner_bert", config={"checkpoint": str(hf_dir), "cpu_bf16": True})
    assert bf16.get_pipe("ner_bert").encoder().attrs["cpu_autocast"] == torch.bfloat16
    docs = [bf16.make_doc(t) for t in TEXTS]
    ours = numpy.concatenate(bf16.get_pipe("ner_bert").logits(docs))
    ref = numpy.concatenate(plain.get_pipe("ner_bert").logits(docs))
    numpy.testing.assert_allclose(ours, ref, atol=0.05)
    assert not numpy.array_equal(ours, ref)


def test_convert_hf_cli(hf_dir, tmp_path):
    out = tmp_path / "pipeline"
    run = subprocess.run([sys.executable, "-m", "spacy_ner_bert", "convert-hf", str(hf_dir), str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "labels (7): B-PER I-PER O B-LOC I-LOC B-ORG I-ORG" in run.stdout
    direct = spacy.blank("en")
    direct.add_pipe("ner_bert", config={"checkpoint": str(hf_dir)})
    loaded = spacy.load(out)
    assert loaded.config["components"]["ner_bert"]["checkpoint"] is None
    for text in TEXTS:
        assert ents_of(loaded(text)) == ents_of(direct(text))


@pytest.mark.parametrize(
    "labels,message",
    [
        (["O", "B-PER", "I-PER", "U-PER", "L-PER"], "BILUO/BIOES scheme"),
        (["O", "B-PER", "I-PER", "I-LOC"], "I- tags without a B- tag"),
        (["PER", "LOC"], "not IOB"),
    ],
)
def test_hf_bad_label_scheme(tiny_bert, tmp_path, labels, message):
    config = tiny_config(tiny_bert, id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    BertForTokenClassification(config).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=message):
        read_hf(tmp_path)


def test_hf_not_a_token_classifier(tiny_bert, tmp_path):
    config = tiny_config(tiny_bert, id2label={0: "O", 1: "B-PER", 2: "I-PER"})
    BertModel(config).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="no classifier.weight"):
        read_hf(tmp_path)


# --- NeMo -------------------------------------------------------------------------------------

NEMO_LABELS = ["O", "B-GPE", "B-LOC", "B-MISC", "B-ORG", "B-PER", "B-TIME",
               "I-GPE", "I-LOC", "I-MISC", "I-ORG", "I-PER", "I-TIME"]


def nemo_parts(tiny_bert, *, seed=0, labels=NEMO_LABELS, lm_name="bert-base-uncased", head_out=None,
               bad_layer0=False):
    """NeMo's layout around a tiny BERT: yaml, artifacts, state dict and a torch reference."""
    config = BertConfig.from_pretrained(tiny_bert)
    torch.manual_seed(seed)
    bert = BertModel(config).eval()
    hidden = config.hidden_size
    layer0 = torch.nn.Linear(hidden, hidden + (1 if bad_layer0 else 0))
    layer2 = torch.nn.Linear(hidden, head_out or len(labels))
    with torch.no_grad():
        layer2.weight.mul_(30.0)
    state = {f"bert_model.{k}": v for k, v in bert.state_dict().items()}
    state["bert_model.embeddings.position_ids"] = torch.arange(config.max_position_embeddings)[None]
    state.update({"classifier.mlp.layer0.weight": layer0.weight.data, "classifier.mlp.layer0.bias": layer0.bias.data,
                  "classifier.mlp.layer2.weight": layer2.weight.data, "classifier.mlp.layer2.bias": layer2.bias.data,
                  "loss.weight": torch.ones(len(labels))})
    buf = io.BytesIO()
    torch.save(state, buf)
    enc_config = config.to_dict()
    cfg = {
        "target": "nemo.collections.nlp.models.token_classification.token_classification_model.TokenClassificationModel",
        "language_model": {"pretrained_model_name": lm_name, "lm_checkpoint": None,
                           "config_file": "nemo:5e1c0a_bert_config.json", "config": None},
        "tokenizer": {"tokenizer_name": "bert-base-uncased", "vocab_file": "nemo:9f3b2d_vocab.txt",
                      "tokenizer_model": None, "special_tokens": None},
        "head": {"num_fc_layers": 2, "fc_dropout": 0.5, "activation": "relu", "log_softmax": False},
        "class_labels": {"class_labels_file": "nemo:ab12cd_label_ids.csv"},
        "dataset": {"max_seq_length": 128, "do_lower_case": True},
    }
    members = {
        "model_config.yaml": yaml.safe_dump(cfg).encode(),
        "model_weights.ckpt": buf.getvalue(),
        "5e1c0a_bert_config.json": json.dumps(enc_config).encode(),
        "9f3b2d_vocab.txt": Path(tiny_bert, "vocab.txt").read_bytes(),
        "ab12cd_label_ids.csv": ("\n".join(labels) + "\n").encode(),
    }

    def reference(enc):  # NeMo's forward in eval mode: BertModel -> dropout -> Linear -> ReLU -> Linear
        with torch.no_grad():
            h = bert(**enc).last_hidden_state[0]
            return layer2(torch.relu(layer0(h))).numpy()

    return members, reference


def write_nemo(path, members, *, gz=False, prefix="./", drop=()):
    with tarfile.open(path, "w:gz" if gz else "w") as tar:
        for name, data in members.items():
            if name in drop:
                continue
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("gz,prefix", [(False, "./"), (True, "./"), (True, "")])
def test_nemo_scores_equal_reference(tiny_bert, tmp_path, gz, prefix):
    members, reference = nemo_parts(tiny_bert)
    path = write_nemo(tmp_path / "ner_en_bert.nemo", members, gz=gz, prefix=prefix)
    nlp = spacy.blank("en")
    nlp.add_pipe("ner_bert", config={"checkpoint": str(path)})
    assert nlp.get_pipe("ner_bert").tags.tags == tuple(NEMO_LABELS)
    compare_to_reference(nlp, reference, AutoTokenizer.from_pretrained(tiny_bert), NEMO_LABELS)


def test_convert_nemo_cli(tiny_bert, tmp_path):
    members, _ = nemo_parts(tiny_bert)
    path = write_nemo(tmp_path / "m.nemo", members, gz=True)
    out = tmp_path / "pipeline"
    run = subprocess.run([sys.executable, "-m", "spacy_ner_bert", "convert-nemo", str(path), str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    for expected in ("bert-base-uncased: 2 layers, hidden 32", "Linear 32x32 -> Linear 32x13", "labels (13): O B-GPE"):
        assert expected in run.stdout
    direct = spacy.blank("en")
    direct.add_pipe("ner_bert", config={"checkpoint": str(path)})
    loaded = spacy.load(out)
    for text in TEXTS:
        assert ents_of(loaded(text)) == ents_of(direct(text))


@pytest.mark.parametrize(
    "case,message",
    [
        ("not_tar", "not a .nemo archive"),
        ("missing_weights", "has no model_weights.ckpt"),
        ("missing_labels", r"has no ab12cd_label_ids.csv \(label file"),
        ("megatron", "Megatron"),
        ("label_count", "the label file has 12 labels but the head outputs 13"),
        ("shape", r"classifier.mlp.layer0.weight has shape \(33, 32\)"),
        ("encoder_shape", "encoder weights do not fit"),
    ],
)
def test_nemo_bad_inputs_leave_nothing(tiny_bert, tmp_path, case, message):
    path = tmp_path / "bad.nemo"
    if case == "not_tar":
        path.write_bytes(b"definitely not a tar file" * 100)
    else:
        kwargs = {
            "megatron": {"lm_name": "megatron-bert-345m-uncased"},
            "label_count": {"labels": NEMO_LABELS[:-1], "head_out": 13},
            "shape": {"bad_layer0": True},
        }.get(case, {})
        members, _ = nemo_parts(tiny_bert, **kwargs)
        drop = {"missing_weights": ("model_weights.ckpt",), "missing_labels": ("ab12cd_label_ids.csv",)}.get(case, ())
        if case == "encoder_shape":
            cfg = json.loads(members["5e1c0a_bert_config.json"])
            cfg["intermediate_size"] = 48
            members["5e1c0a_bert_config.json"] = json.dumps(cfg).encode()
        write_nemo(path, members, drop=drop)
    with pytest.raises(CheckpointError, match=message):
        read_nemo(path)
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "spacy_ner_bert", "convert-nemo", str(path), str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "error:" in run.stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


# --- export to a HF token-classification directory ----------------------------------------


def _linear_nlp(tiny_bert, **model):
    from util import trained_nlp

    return trained_nlp(tiny_bert, steps=30, head={"@architectures": "spacy-ner-bert.LinearHead.v1"}, **model)


def test_export_hf_equals_our_scores(tiny_bert, tmp_path):
    nlp = _linear_nlp(tiny_bert)
    out = tmp_path / "hf"
    run = subprocess.run([sys.executable, "-m", "spacy_ner_bert", "export-hf", str(_saved(nlp, tmp_path)), str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    reference = AutoModelForTokenClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    tags = list(nlp.get_pipe("ner_bert").tags.tags)
    assert [reference.config.id2label[i] for i in range(len(tags))] == tags

    def logits(enc):
        with torch.no_grad():
            return reference(**enc).logits[0].numpy()

    compare_to_reference(nlp, logits, tokenizer, tags)
    # ... and imports back to the same pipeline.
    back = spacy.blank("en")
    back.add_pipe("ner_bert", config={"checkpoint": str(out)})
    for text in TEXTS + ["John Smith visited New York in March ."]:
        assert ents_of(back(text)) == ents_of(nlp(text))


def _saved(nlp, tmp_path):
    path = tmp_path / "pipeline"
    nlp.to_disk(path)
    return path


def test_export_hf_refuses_what_hf_cannot_hold(tiny_bert, tmp_path):
    from spacy_ner_bert.checkpoints import export_hf
    from util import trained_nlp

    mlp = trained_nlp(tiny_bert, steps=1)
    with pytest.raises(CheckpointError, match="mlp_head' head: only a linear head"):
        export_hf(mlp, tmp_path / "a")
    with pytest.raises(CheckpointError, match="no component 'ner'"):
        export_hf(mlp, tmp_path / "a", component="ner")
    assert not (tmp_path / "a").exists()
    nonempty = tmp_path / "b"
    nonempty.mkdir()
    (nonempty / "keep.txt").write_text("x")
    with pytest.raises(CheckpointError, match="not empty"):
        export_hf(_linear_nlp(tiny_bert), nonempty)
    assert [p.name for p in nonempty.iterdir()] == ["keep.txt"]


def test_export_hf_cli_bad_pipeline_path(tmp_path):
    run = subprocess.run([sys.executable, "-m", "spacy_ner_bert", "export-hf", str(tmp_path / "nope"), str(tmp_path / "o")],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "not a pipeline directory" in run.stderr
