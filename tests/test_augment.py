"""spacy-ner-bert.mention_replace.v1: swaps entity mentions for others of the same label, loses nothing else."""
import random
from pathlib import Path

import pytest
import spacy
from spacy.tokens import Doc, DocBin, Span
from spacy.training import Example
from spacy.util import registry

from spacy_ner_bert.augment import MentionPool, create_mention_replace_augmenter, mention_replace_augmenter
from spacy_ner_bert.scoring import doc_iob_tags
from util import make_examples

ROOT = Path(__file__).parent.parent
NAME = "spacy-ner-bert.mention_replace.v1"


def example(nlp, words, tags, sent_starts=None):
    spaces = [True] * (len(words) - 1) + [False]
    ref = Doc(nlp.vocab, words=words, spaces=spaces, ents=tags, sent_starts=sent_starts)
    return Example(nlp.make_doc(ref.text), ref)


def run(augmenter, nlp, examples):
    return [out for eg in examples for out in augmenter(nlp, eg)]


def replace_with(nlp, eg, label, words, spaces, labels=None):
    """Augment `eg` at level 1 from a pool holding one mention: `words` as `label`."""
    pool = MentionPool()
    pool.add(label, (tuple(words), tuple(spaces)))
    (out,) = mention_replace_augmenter(nlp, eg, level=1.0, labels=labels, pool=pool)
    return out


def test_level_zero_yields_the_same_examples():
    nlp = spacy.blank("en")
    examples = make_examples(nlp)
    state = random.getstate()
    out = run(create_mention_replace_augmenter(level=0.0), nlp, examples * 2)
    assert [id(eg) for eg in out] == [id(eg) for eg in examples * 2]
    # no random draw either: the configs' level 0 leaves the batcher's shuffle, so training, as it was
    assert random.getstate() == state


def test_replaces_each_mention_with_one_of_its_label():
    nlp = spacy.blank("en")
    pool_examples = make_examples(nlp)
    augmenter = create_mention_replace_augmenter(level=1.0)
    run(augmenter, nlp, pool_examples)  # fills the pool: PER "John Smith", "Obama", "Putin"; LOC ...
    pool = {label: set() for label in ("PER", "LOC", "ORG", "TIME", "MISC")}
    for eg in pool_examples:
        for ent in eg.reference.ents:
            pool[ent.label_].add(ent.text)
    random.seed(3)
    eg = example(nlp, ["Yesterday", "Obama", "and", "Putin", "met", "in", "Moscow", "."],
                 ["O", "B-PER", "O", "B-PER", "O", "O", "B-LOC", "O"])
    (out,) = run(augmenter, nlp, [eg])
    ref = out.reference
    assert [ent.label_ for ent in ref.ents] == ["PER", "PER", "LOC"]
    assert all(ent.text in pool[ent.label_] for ent in ref.ents)
    outside = [t.text for t in ref if not t.ent_type_]
    assert outside == ["Yesterday", "and", "met", "in", "."]
    assert out.predicted.text == ref.text  # the predicted side is the new text, tokenized by nlp
    assert [t.whitespace_ for t in ref if not t.ent_type_] == [t.whitespace_ for t in eg.reference if not t.ent_type_]


def test_mentions_of_other_lengths_keep_tags_and_neighbours():
    """A two-word mention in place of a one-word one and the reverse; adjacent mentions stay apart."""
    nlp = spacy.blank("en")
    eg = example(nlp, ["Obama", "Putin", "met", "Merkel", "in", "Paris"],
                 ["B-PER", "B-PER", "O", "B-PER", "O", "B-LOC"])
    ref = replace_with(nlp, eg, "PER", ["John", "Smith"], [True, False]).reference
    assert [t.text for t in ref] == ["John", "Smith", "John", "Smith", "met", "John", "Smith", "in", "Paris"]
    assert doc_iob_tags(ref) == ["B-PER", "I-PER", "B-PER", "I-PER", "O", "B-PER", "I-PER", "O", "B-LOC"]
    assert [ent.text for ent in ref.ents] == ["John Smith", "John Smith", "John Smith", "Paris"]
    assert ref.text == "John Smith John Smith met John Smith in Paris"
    # the other way round; the original's last word is not followed by a space, so neither is the new one
    ref = Doc(nlp.vocab, words=["John", "Smith", "."], spaces=[True, False, False], ents=["B-PER", "I-PER", "O"])
    eg = Example(nlp.make_doc(ref.text), ref)
    out = replace_with(nlp, eg, "PER", ["Obama"], [True])
    assert out.reference.text == "Obama." and doc_iob_tags(out.reference) == ["B-PER", "O"]


def test_only_the_chosen_labels_are_replaced():
    nlp = spacy.blank("en")
    augmenter = create_mention_replace_augmenter(level=1.0, labels=["MISC"])
    run(augmenter, nlp, make_examples(nlp))  # MISC pool: "Hurricane Katrina" only
    eg = example(nlp, ["Obama", "saw", "Sandy", "in", "Ohio"], ["B-PER", "O", "B-MISC", "O", "B-LOC"])
    (out,) = run(augmenter, nlp, [eg])
    assert [(e.text, e.label_) for e in out.reference.ents] == [
        ("Obama", "PER"), ("Hurricane Katrina", "MISC"), ("Ohio", "LOC")
    ]
    assert augmenter.keywords["pool"].count("PER") == 0  # other labels are not even pooled


def test_sentence_starts_missing_tags_and_cats_are_kept():
    nlp = spacy.blank("en")
    words = ["Obama", "spoke", ".", "He", "left", "Paris", "."]
    tags = ["B-PER", "O", "O", "O", "", "", "O"]  # "left Paris" unannotated (missing), not O
    sent_starts = [True, False, False, True, False, False, False]
    eg = example(nlp, words, tags, sent_starts)
    eg.reference.cats = {"POLITICS": 1.0}
    ref = replace_with(nlp, eg, "PER", ["Ban", "Ki-moon"], [True, True]).reference
    assert [t.text for t in ref] == ["Ban", "Ki-moon", "spoke", ".", "He", "left", "Paris", "."]
    assert [t.ent_iob_ for t in ref] == ["B", "I", "O", "O", "O", "", "", "O"]
    assert [t.is_sent_start for t in ref] == [True, False, False, False, True, False, False, False]
    assert ref.cats == {"POLITICS": 1.0}


def test_first_mention_of_a_label_waits_for_the_pool():
    """Nothing to replace it with yet: the example passes unchanged, and its mention joins the pool."""
    nlp = spacy.blank("en")
    augmenter = create_mention_replace_augmenter(level=1.0)
    first = example(nlp, ["Obama", "spoke"], ["B-PER", "O"])
    assert run(augmenter, nlp, [first]) == [first]
    (out,) = run(augmenter, nlp, [example(nlp, ["Putin", "spoke"], ["B-PER", "O"])])
    assert out.reference.text == "Obama spoke"


def test_same_seed_same_output():
    nlp = spacy.blank("en")
    outs = []
    for _ in range(2):
        random.seed(7)
        augmenter = create_mention_replace_augmenter(level=0.5)
        outs.append([eg.reference.text for eg in run(augmenter, nlp, make_examples(nlp) * 3)])
    assert outs[0] == outs[1]
    assert outs[0] != [eg.reference.text for eg in make_examples(nlp) * 3]  # something was replaced


@pytest.mark.parametrize("attr", ["TAG", "LEMMA", "spans"])
def test_refuses_annotation_it_would_lose(attr):
    nlp = spacy.blank("en")
    eg = example(nlp, ["Obama", "spoke"], ["B-PER", "O"])
    if attr == "TAG":
        eg.reference[1].tag_ = "VBD"
    elif attr == "LEMMA":
        eg.reference[1].lemma_ = "speak"
    else:
        eg.reference.spans["sc"] = [Span(eg.reference, 0, 1, "X")]
    with pytest.raises(ValueError, match=r"mention_replace.*'Obama spoke'.*would be lost"):
        replace_with(nlp, eg, "PER", ["Putin"], [True])
    # nothing chosen, nothing lost: the example passes as it is
    assert run(create_mention_replace_augmenter(level=0.0), nlp, [eg]) == [eg]


@pytest.mark.parametrize(
    "kwargs,where",
    [({"level": 1.5}, "level"), ({"level": -0.1}, "level"), ({"level": True}, "level"), ({"level": "0.5"}, "level"),
     ({"level": 0.5, "labels": []}, "labels"), ({"level": 0.5, "labels": "MISC"}, "labels"),
     ({"level": 0.5, "labels": ["MISC", ""]}, "labels"), ({"level": 0.5, "labels": 3}, "labels")],
)
def test_bad_arguments_are_named(kwargs, where):
    with pytest.raises(ValueError, match=rf"\[mention_replace\] {where} must"):
        create_mention_replace_augmenter(**kwargs)


def test_the_workflow_config_reads_augmented_examples(tmp_path):
    """configs/minilm_cpu.cfg's [corpora.train.augmenter], with level set from the command line as a
    variants file would, changes what spacy.Corpus yields; the dev corpus stays unaugmented."""
    nlp = spacy.blank("en")
    path = tmp_path / "train.spacy"
    DocBin(docs=[eg.reference for eg in make_examples(nlp)] * 4).to_disk(path)
    overrides = {"paths.train": str(path), "paths.dev": str(path), "corpora.train.augmenter.level": 1.0}
    config = spacy.util.load_config(ROOT / "configs" / "minilm_cpu.cfg", overrides=overrides, interpolate=True)
    assert config["corpora"]["train"]["augmenter"]["@augmenters"] == NAME
    corpora = registry.resolve(config["corpora"])
    random.seed(1)
    train = [eg.reference for eg in corpora["train"](nlp)]
    dev = [eg.reference for eg in corpora["dev"](nlp)]
    originals = [eg.reference.text for eg in make_examples(nlp)] * 4
    assert [d.text for d in dev] == originals
    assert [d.text for d in train] != originals
    assert [[e.label_ for e in d.ents] for d in train] == [[e.label_ for e in d.ents] for d in dev]
    # at the config's own level (0) the train corpus is the data as it is
    config = spacy.util.load_config(ROOT / "configs" / "minilm_cpu.cfg", overrides=overrides | {
        "corpora.train.augmenter.level": 0.0}, interpolate=True)
    assert [eg.reference.text for eg in registry.resolve(config["corpora"])["train"](nlp)] == originals
