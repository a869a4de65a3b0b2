"""The IOB tag scheme and constrained Viterbi decoding."""
import itertools

import numpy
import pytest

from spacy_ner_bert.decode import decode_docs, log_softmax, viterbi_batch
from spacy_ner_bert.tags import MISSING, IOBTags

TAGS = IOBTags.from_entity_types(["PER", "LOC"])


# NeMo's label_ids.csv for GMB (shared/data/gmb/label_ids.csv): line number = id.
NEMO_GMB_TAGS = ["O", "B-GPE", "B-LOC", "B-MISC", "B-ORG", "B-PER", "B-TIME",
                 "I-GPE", "I-LOC", "I-MISC", "I-ORG", "I-PER", "I-TIME"]


def test_nemo_order():
    tags = IOBTags.from_entity_types(["TIME", "PER", "GPE", "ORG", "MISC", "LOC"])
    assert list(tags.tags) == NEMO_GMB_TAGS


@pytest.mark.parametrize(
    "tags,message",
    [
        (["O", "B-PER", "I-PER", "I-LOC"], "I- tags without a B- tag"),
        (["O", "X-PER"], "not an IOB tag"),
        (["O", "B-PER", "B-PER", "I-PER"], "occurs twice"),
        (["B-PER", "I-PER"], "must start with 'O'"),
    ],
)
def test_bad_tag_sets(tags, message):
    with pytest.raises(ValueError, match=message):
        IOBTags(tags)


def test_from_tags_moves_o_first_and_keeps_order():
    tags = IOBTags.from_tags(["B-PER", "I-PER", "O", "B-LOC", "I-LOC"])
    assert tags.tags == ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
    with pytest.raises(ValueError, match="I- tags without a B- tag"):
        IOBTags.from_entity_types(["B-PER", "I-PER", "I-LOC"])


def test_biluo_to_ids():
    ids = TAGS.biluo_to_ids(["B-PER", "L-PER", "O", "U-LOC", None, "-", "B-LOC", "I-LOC", "L-LOC"])
    names = [TAGS.tags[i] if i != MISSING else None for i in ids]
    assert names == ["B-PER", "I-PER", "O", "B-LOC", None, None, "B-LOC", "I-LOC", "I-LOC"]
    with pytest.raises(KeyError):
        TAGS.biluo_to_ids(["U-ORG"])


def test_spans():
    seq = [TAGS.index[t] for t in ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "B-PER"]]
    assert TAGS.spans(seq) == [(0, 2, "PER"), (3, 4, "LOC"), (4, 6, "LOC"), (6, 7, "PER")]
    assert TAGS.spans([]) == []


def brute_force(lp, tags, trans=None, start=None):
    best, best_seq = -numpy.inf, None
    for seq in itertools.product(range(len(tags)), repeat=len(lp)):
        if not tags.is_valid(seq):
            continue
        score = sum(lp[i, t] for i, t in enumerate(seq))
        if trans is not None:
            score += start[seq[0]] + sum(trans[a, b] for a, b in zip(seq, seq[1:]))
        if score > best:
            best, best_seq = score, seq
    return best_seq


def test_viterbi_matches_brute_force():
    rng = numpy.random.default_rng(0)
    small = IOBTags.from_entity_types(["A", "B"])
    for _ in range(30):
        lengths = rng.integers(1, 6, size=3)
        lps = [log_softmax(rng.normal(size=(n, len(small))) * 3) for n in lengths]
        paths = viterbi_batch(lps, small)
        for lp, path in zip(lps, paths):
            assert tuple(path) == brute_force(lp, small)



def test_viterbi_with_transition_scores_matches_brute_force():
    """trans_scores / start_scores add to every path's score, as a brute force over valid paths adds them."""
    rng = numpy.random.default_rng(1)
    small = IOBTags.from_entity_types(["A", "B"])
    n = len(small)
    for _ in range(30):
        trans, start = rng.normal(size=(n, n)) * 2, rng.normal(size=n) * 2
        lps = [log_softmax(rng.normal(size=(k, n)) * 3) for k in rng.integers(1, 6, size=3)]
        for lp, path in zip(lps, viterbi_batch(lps, small, trans, start)):
            assert tuple(path) == brute_force(lp, small, trans, start)
    # Zero scores are the plain constrained decoding.
    lps = [log_softmax(rng.normal(size=(5, n)))]
    assert numpy.array_equal(viterbi_batch(lps, small, numpy.zeros((n, n)), numpy.zeros(n))[0], viterbi_batch(lps, small)[0])

@pytest.mark.parametrize("seed", range(5))
def test_viterbi_valid_under_adversarial_scores(seed):
    rng = numpy.random.default_rng(seed)
    docs = []
    for n in [0, 1, 7, 50, 300]:
        x = rng.normal(size=(n, len(TAGS))) * 10
        # Push every I- tag up so raw argmax would be invalid, and sprinkle broken values.
        x[:, TAGS.is_inside] += 100
        mask = rng.random(size=x.shape)
        x[mask < 0.05] = numpy.nan
        x[(mask > 0.05) & (mask < 0.1)] = numpy.inf
        x[(mask > 0.1) & (mask < 0.2)] = -numpy.inf
        if n:
            x[0] = -numpy.inf  # a row that forbids everything
        docs.append(x)
    paths, probs = decode_docs(docs, TAGS)
    for x, path, prob in zip(docs, paths, probs):
        assert len(path) == len(x) == len(prob)
        assert TAGS.is_valid(path)
        assert numpy.isfinite(prob).all()
    raw = numpy.argmax(numpy.nan_to_num(docs[3]), axis=1)
    assert not TAGS.is_valid(raw), "the test should feed scores whose argmax is invalid"


def test_forbidden_tags_are_respected():
    x = numpy.zeros((3, len(TAGS)))
    x[:, TAGS.index["I-PER"]] = 5.0
    x[1, 1:] = -numpy.inf  # middle token forced to O
    paths, _ = decode_docs([x], TAGS)
    assert paths[0][1] == 0
    assert TAGS.is_valid(paths[0])


def test_log_softmax_rows_normalized():
    x = numpy.array([[1.0, 2.0, 3.0, 0.0, 0.0], [numpy.nan] * 5, [0.0, -numpy.inf, 1.0, 2.0, 3.0]])
    lp = log_softmax(x)
    assert numpy.allclose(numpy.exp(lp).sum(axis=1), 1.0)
    assert numpy.isneginf(lp[2, 1])


def test_decode_docs_matches_brute_force_with_and_without_valid_argmax():
    """Docs whose argmax is valid skip Viterbi; all must still get the best valid path."""
    rng = numpy.random.default_rng(1)
    small = IOBTags.from_entity_types(["A", "B"])
    docs = []
    for _ in range(40):
        x = rng.normal(size=(int(rng.integers(0, 6)), len(small))) * 3
        if rng.random() < 0.5:
            x[:, small.is_inside] += 4  # often an invalid argmax (I- first or after another type)
        docs.append(x)
    assert any(len(x) and not small.is_valid(x.argmax(axis=1)) for x in docs)
    assert any(len(x) and small.is_valid(x.argmax(axis=1)) for x in docs)
    paths, probs = decode_docs(docs, small)
    for x, path, prob in zip(docs, paths, probs):
        assert path.dtype == numpy.int64 and len(path) == len(prob) == len(x)
        if len(x):
            assert tuple(path) == brute_force(log_softmax(x), small)
            numpy.testing.assert_allclose(prob, numpy.exp(log_softmax(x)[numpy.arange(len(x)), path]))
