"""IOB readers and the converter: each malformed input gets an error naming file and line."""
import pytest
import spacy
from spacy.tokens import DocBin

from spacy_ner_bert.corpus import (
    CorpusError,
    convert_corpus,
    read_conll,
    read_label_file,
    read_nemo,
    split_train_dev,
)

GMB_LABELS = ["O", "B-GPE", "B-LOC", "B-MISC", "B-ORG", "B-PER", "B-TIME",
              "I-GPE", "I-LOC", "I-MISC", "I-ORG", "I-PER", "I-TIME"]


def write_pair(d, split, text, labels, mode="w"):
    tp, lp = d / f"text_{split}.txt", d / f"labels_{split}.txt"
    if isinstance(text, bytes):
        tp.write_bytes(text)
    else:
        tp.write_text(text, encoding="utf8")
    lp.write_text(labels, encoding="utf8")
    return tp, lp


def test_read_nemo_ok(tmp_path):
    tp, lp = write_pair(tmp_path, "train", "John lives in New York\nHi\n", "B-PER O O B-LOC I-LOC\nO\n")
    sents, report = read_nemo(tp, lp, allowed=GMB_LABELS)
    assert sents[0] == (["John", "lives", "in", "New", "York"], ["B-PER", "O", "O", "B-LOC", "I-LOC"])
    assert report.sentences == 2 and report.words == 6 and report.entities == {"PER": 1, "LOC": 1}


def test_count_mismatch_names_both_files_and_line(tmp_path):
    tp, lp = write_pair(tmp_path, "train", "a b\nc d e\n", "O O\nO O\n")
    with pytest.raises(CorpusError, match=r"text_train.txt:2 has 3 words but .*labels_train.txt:2 has 2 labels"):
        read_nemo(tp, lp)


def test_different_line_counts(tmp_path):
    tp, lp = write_pair(tmp_path, "train", "a\nb\nc\n", "O\nO\n")
    with pytest.raises(CorpusError, match=r"has 3 lines but .*labels_train.txt has 2"):
        read_nemo(tp, lp)


def test_unknown_label(tmp_path):
    tp, lp = write_pair(tmp_path, "train", "a b\nc d\n", "O O\nO B-FOO\n")
    with pytest.raises(CorpusError, match=r"labels_train.txt:2 \(word 2\): unknown label 'B-FOO'"):
        read_nemo(tp, lp, allowed=GMB_LABELS)


def test_malformed_label_without_label_set(tmp_path):
    tp, lp = write_pair(tmp_path, "train", "a b\n", "O PER\n")
    with pytest.raises(CorpusError, match=r"labels_train.txt:1 \(word 2\): 'PER' is not an IOB label"):
        read_nemo(tp, lp)


def test_i_after_o_is_repaired_and_counted(tmp_path):
    tp, lp = write_pair(tmp_path, "train", "a b c\nd e\n", "O I-PER I-PER\nB-LOC I-PER\n")
    sents, report = read_nemo(tp, lp)
    assert sents[0][1] == ["O", "B-PER", "I-PER"]
    assert sents[1][1] == ["B-LOC", "B-PER"]
    assert report.repairs == 2
    assert "repaired 2 I- tags" in report.summary() and "labels_train.txt:1 (word 2)" in report.summary()


def test_i_after_o_strict(tmp_path):
    tp, lp = write_pair(tmp_path, "train", "a b\n", "O I-PER\n")
    with pytest.raises(CorpusError, match=r"labels_train.txt:1 \(word 2\): 'I-PER' follows 'O'"):
        read_nemo(tp, lp, repair=False)


def test_blank_line(tmp_path):
    tp, lp = write_pair(tmp_path, "train", "a\n\nb\n", "O\n\nO\n")
    with pytest.raises(CorpusError, match=r"text_train.txt:2: blank line"):
        read_nemo(tp, lp)


def test_crlf(tmp_path):
    tp, lp = write_pair(tmp_path, "train", b"a b\r\nc\r\n", "O O\nO\n")
    with pytest.raises(CorpusError, match=r"text_train.txt:1: CRLF line ending"):
        read_nemo(tp, lp)


def test_invalid_utf8(tmp_path):
    tp, lp = write_pair(tmp_path, "train", b"ok\nbad \xff\xfe word\n", "O\nO O O\n")
    with pytest.raises(CorpusError, match=r"text_train.txt:2: invalid UTF-8 at byte 4"):
        read_nemo(tp, lp)


def test_missing_file(tmp_path):
    with pytest.raises(CorpusError, match="text_train.txt: file not found"):
        read_nemo(tmp_path / "text_train.txt", tmp_path / "labels_train.txt")


def test_read_conll(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text("-DOCSTART- -X- O\n\nJohn NNP B-PER\nSmith NNP I-PER\nleft VBD O\n\n\nParis NNP I-LOC\n")
    sents, report = read_conll(path)
    assert sents == [(["John", "Smith", "left"], ["B-PER", "I-PER", "O"]), (["Paris"], ["B-LOC"])]
    assert report.repairs == 1 and f"{path}:8" in report.repair_examples[0]


def test_conll_errors(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text("John B-PER\nlonely\n")
    with pytest.raises(CorpusError, match=r"train.conll:2: expected a word and a label"):
        read_conll(path)
    path.write_text("John B-PER\nX B-FOO\n")
    with pytest.raises(CorpusError, match=r"train.conll:2: unknown label 'B-FOO'"):
        read_conll(path, allowed=GMB_LABELS)


def test_label_file(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("\n".join(GMB_LABELS) + "\n")
    assert read_label_file(path) == GMB_LABELS
    path.write_text("B-PER\nO\n")
    with pytest.raises(CorpusError, match="labels.csv:1: the first label must be 'O'"):
        read_label_file(path)


def test_split_is_fixed_and_disjoint():
    items = list(range(100))
    train, dev = split_train_dev(items, 10, seed=0)
    assert (train, dev) == split_train_dev(items, 10, seed=0)
    assert len(dev) == 10 and sorted(train + dev) == items
    assert split_train_dev(items, 10, seed=1)[1] != dev


def test_convert_corpus_writes_three_docbins(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_pair(data, "train", "".join(f"w{i} Paris\n" for i in range(20)), "O B-GPE\n" * 20)
    write_pair(data, "dev", "London calling\n", "B-LOC O\n")
    convert_corpus(data, tmp_path / "out", dev_size=5, seed=0, log=lambda m: None)
    vocab = spacy.blank("en").vocab
    docs = {n: list(DocBin().from_disk(tmp_path / "out" / f"{n}.spacy").get_docs(vocab)) for n in ("train", "dev", "test")}
    assert (len(docs["train"]), len(docs["dev"]), len(docs["test"])) == (15, 5, 1)
    test_doc = docs["test"][0]
    assert [t.text for t in test_doc] == ["London", "calling"]
    assert [(e.text, e.label_) for e in test_doc.ents] == [("London", "LOC")]


def test_convert_leaves_no_partial_output(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_pair(data, "train", "a b\n" * 10, "O O\n" * 10)
    write_pair(data, "dev", "a b\nc\n", "O O\nO O\n")  # line 2 of dev is bad
    out = tmp_path / "out"
    with pytest.raises(CorpusError, match="text_dev.txt:2 has 1 words"):
        convert_corpus(data, out, dev_size=2, log=lambda m: None)
    assert not out.exists() or not any(out.iterdir())


def test_convert_groups_sentences_into_docs(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_pair(data, "train", "".join(f"w{i} Paris\n" for i in range(20)), "O B-GPE\n" * 20)
    # An entity split by the sentence boundary stays two entities (line 2 starts with I-LOC,
    # repaired to B-LOC).
    write_pair(data, "dev", "to New\nYork now\nbye\n", "O B-LOC\nI-LOC O\nO\n")
    out = tmp_path / "out"
    convert_corpus(data, out, dev_size=5, seed=0, doc_sents=3, log=lambda m: None)
    vocab = spacy.blank("en").vocab
    docs = {n: list(DocBin().from_disk(out / f"{n}.spacy").get_docs(vocab)) for n in ("train", "dev", "test")}
    # 7 docs (6 of 3 sentences, 1 of 2); 5 sentences round up to 2 whole docs held out.
    assert [len(list(d.sents)) for d in docs["dev"]] == [3, 3]
    assert sum(len(list(d.sents)) for d in docs["train"]) == 14
    # A held-out doc is a run of consecutive sentences, in order.
    for doc in docs["dev"] + docs["train"]:
        firsts = [int(s[0].text[1:]) for s in doc.sents]
        assert firsts == list(range(firsts[0], firsts[0] + len(firsts)))
    train_sents = {s[0].text for d in docs["train"] for s in d.sents}
    assert not train_sents & {s[0].text for d in docs["dev"] for s in d.sents}
    (test_doc,) = docs["test"]
    assert [s.text for s in test_doc.sents] == ["to New", "York now", "bye"]
    assert [(e.text, e.label_) for e in test_doc.ents] == [("New", "LOC"), ("York", "LOC")]


def test_convert_rejects_bad_doc_sents(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_pair(data, "train", "a b\n" * 10, "O O\n" * 10)
    write_pair(data, "dev", "a b\n", "O O\n")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="doc_sents .* must be at least 1, got 0"):
        convert_corpus(data, out, dev_size=2, doc_sents=0, log=lambda m: None)
    assert not out.exists()


def test_convert_rejects_a_dev_size_that_takes_every_doc(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_pair(data, "train", "a b\n" * 10, "O O\n" * 10)
    write_pair(data, "dev", "a b\n", "O O\n")
    with pytest.raises(ValueError, match=r"dev_size must be in \[0, 10\) .* got 7 of 10 sentences in 2 docs of 5"):
        convert_corpus(data, tmp_path / "out", dev_size=7, doc_sents=5, log=lambda m: None)
    with pytest.raises(ValueError, match=r"got 10 of 10 sentences in 10 docs of 1"):
        convert_corpus(data, tmp_path / "out", dev_size=10, log=lambda m: None)
