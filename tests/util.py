"""Shared test data and helpers."""
import copy
from typing import Dict, List, Optional, Tuple

import numpy
import spacy
from spacy.language import Language
from spacy.training import Example
from spacy.util import fix_random_seed
from thinc.api import Optimizer

from spacy_ner_bert.encoder_params import torch_parameters
from spacy_ner_bert.pipe import DEFAULT_MODEL

TRAIN_DATA = [
    ("John Smith visited New York in March .", [(0, 10, "PER"), (19, 27, "LOC"), (31, 36, "TIME")]),
    ("Obama met Putin in Moscow .", [(0, 5, "PER"), (10, 15, "PER"), (19, 25, "LOC")]),
    ("The United Nations said the army killed people .", [(4, 18, "ORG")]),
    ("Google and Microsoft opened offices in London .", [(0, 6, "ORG"), (11, 20, "ORG"), (39, 45, "LOC")]),
    ("Hurricane Katrina hit on Monday .", [(0, 17, "MISC"), (25, 31, "TIME")]),
]


def ner_config(encoder: str, head: Optional[Dict] = None, tok2vec: Optional[Dict] = None, **extra) -> Dict:
    """The ner_bert component config on `encoder`: `head` replaces the default head, `tok2vec` adds
    encoder settings (e.g. transformer_config), `extra` sets the component's own keys."""
    cfg: Dict = {"model": {"tok2vec": {"name": encoder, **(tok2vec or {})}}}
    if head is not None:
        cfg["model"]["head"] = head
    cfg.update(extra)
    return cfg


def make_examples(nlp: Language, data=TRAIN_DATA) -> List[Example]:
    return [Example.from_dict(nlp.make_doc(text), {"entities": ents}) for text, ents in data]


def initialized_nlp(encoder: str, **extra) -> Tuple[Language, List[Example]]:
    """A blank English pipeline with ner_bert (settings `extra`) initialized on TRAIN_DATA, seed 0,
    and the examples."""
    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("ner_bert", config=ner_config(encoder, **extra))
    examples = make_examples(nlp)
    nlp.initialize(lambda: examples)
    return nlp, examples


def encoder_v2_nlp(encoder: str, head: Optional[Dict] = None, **settings) -> Tuple[Language, List[Example], Optimizer]:
    """A blank English pipeline with ner_bert on TransformerEncoder.v2 (its `settings`, e.g.
    case_token_types or mask_rate; `head` replaces the default head), initialized on TRAIN_DATA,
    seed 0; the examples and the optimizer."""
    fix_random_seed(0)
    nlp = spacy.blank("en")
    model = copy.deepcopy(dict(DEFAULT_MODEL))
    model["tok2vec"].update({"@architectures": "spacy-ner-bert.TransformerEncoder.v2", "name": encoder, **settings})
    if head is not None:
        model["head"] = head
    nlp.add_pipe("ner_bert", config={"model": model})
    examples = make_examples(nlp)
    return nlp, examples, nlp.initialize(lambda: examples)


def trained_nlp(encoder: str, steps: int = 60, head: Optional[Dict] = None, **extra) -> Language:
    """A blank English pipeline with ner_bert overfit on TRAIN_DATA."""
    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("ner_bert", config=ner_config(encoder, head, **extra))
    examples = make_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(steps):
        nlp.update(examples, sgd=optimizer, drop=0.0)
    return nlp


def ents_of(doc):
    return [(e.start_char, e.end_char, e.label_) for e in doc.ents]


def gradients(pipe) -> Dict:
    """Copies of every gradient the component holds: the head's (thinc, keyed ("head", walk index,
    name); the walk order is the same in two builds of one config) and the encoder's (torch, keyed
    ("encoder", name))."""
    out = {}
    for i, node in enumerate(pipe.model.walk()):
        for name in node.param_names:
            if node.has_grad(name):
                out[("head", i, name)] = numpy.asarray(node.get_grad(name)).copy()
    for (_, name), param in torch_parameters(pipe.model):
        if param.grad is not None:
            out[("encoder", name)] = param.grad.detach().numpy().copy()
    return out


def head_params(pipe) -> Dict:
    """Copies of the thinc (head) parameters under `pipe.model`, keyed as the optimizer keys them."""
    return {
        (node.id, n): node.get_param(n).copy()
        for node in pipe.model.walk()
        for n in node.param_names
        if node.has_param(n)
    }
