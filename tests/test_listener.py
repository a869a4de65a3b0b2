"""ner_bert listening to a shared `transformer` component instead of embedding its own."""
import spacy
from spacy.util import fix_random_seed, make_tempdir
from thinc.api import Config

from util import TRAIN_DATA, ents_of, make_examples

CONFIG = """
[nlp]
lang = "en"
pipeline = ["transformer", "ner_bert"]

[components]

[components.transformer]
factory = "transformer"

[components.transformer.model]
@architectures = "spacy-transformers.TransformerModel.v3"
name = "{encoder}"
tokenizer_config = {{"use_fast": true}}

[components.transformer.model.get_spans]
@span_getters = "spacy-transformers.strided_spans.v1"
window = 128
stride = 96

[components.ner_bert]
factory = "ner_bert"

[components.ner_bert.model]
@architectures = "spacy-ner-bert.TokenClassifier.v1"

[components.ner_bert.model.tok2vec]
@architectures = "spacy-ner-bert.TransformerListener.v1"
grad_factor = 1.0
upstream = "*"

[components.ner_bert.model.head]
@architectures = "spacy-ner-bert.LinearHead.v1"
"""


def test_listener_trains_and_round_trips(tiny_bert):
    fix_random_seed(0)
    nlp = spacy.util.load_model_from_config(Config().from_str(CONFIG.format(encoder=tiny_bert)), auto_fill=True)
    examples = make_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(80):
        nlp.update(examples, sgd=optimizer, drop=0.0)
    assert nlp.evaluate(examples)["ents_f"] == 1.0
    with make_tempdir() as d:
        nlp.to_disk(d)
        loaded = spacy.load(d)
    for text, _ in TRAIN_DATA:
        assert ents_of(loaded(text)) == ents_of(nlp(text))
    # The shared transformer can be copied into the component, which then stands alone.
    nlp.replace_listeners("transformer", "ner_bert", ["model.tok2vec"])
    nlp.remove_pipe("transformer")
    for text, ents in TRAIN_DATA:
        assert ents_of(nlp(text)) == [tuple(e) for e in ents]
