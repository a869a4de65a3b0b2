"""spacy-ner-bert: BERT token-classification NER for spaCy (NeMo's ner_en_bert recipe)."""
from . import architectures, augment, scoring  # noqa: F401  (register the architectures, augmenter, scorer)
from .pipe import NERBert, make_ner_bert
from .quantize import quantize_int8
from .tags import IOBTags
from .threads import install_fork_guard

install_fork_guard()

__version__ = "0.1.0"
__all__ = ["NERBert", "make_ner_bert", "IOBTags", "quantize_int8", "__version__"]
