"""thinc layers of the ner_bert model, one per file."""
from .first_wordpiece import first_wordpiece
from .mlp_head import mlp_head
from .token_classifier import token_classifier

__all__ = ["first_wordpiece", "mlp_head", "token_classifier"]
