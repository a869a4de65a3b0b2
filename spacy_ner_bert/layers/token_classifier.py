"""The token classifier: token vectors from an encoder, then a head giving IOB tag logits."""
from typing import List

from spacy.tokens import Doc
from thinc.api import Model
from thinc.types import Floats2d

from .case_features import CASE_FEATURES, case_features


def token_classifier(
    tok2vec: Model[List[Doc], List[Floats2d]],
    head: Model[Floats2d, Floats2d],
    with_case: bool = False,
) -> Model[List[Doc], List[Floats2d]]:
    """Apply `head` to every token vector of `tok2vec`; output one row of logits per token.

    With `with_case`, the head sees each token vector followed by the token's casing flags
    (layers.case_features: lower, upper, title, mixed, uncased, digit, sentence start), which an
    uncased encoder cannot see.

    Tokens whose vector is all zeros had no wordpiece (first-wordpiece pooling leaves them so):
    their row is forced to O (tag 0) by giving every other tag a logit of -inf, and no gradient
    flows from them.

    tok2vec (Model[List[Doc], List[Floats2d]]): One vector per token.
    head (Model[Floats2d, Floats2d]): Token vectors to tag logits.
    with_case (bool): Append the casing flags to the head's input.
    RETURNS (Model[List[Doc], List[Floats2d]]): The classifier.
    """
    return Model(
        "ner_bert_token_classifier",
        forward,
        init=init,
        layers=[tok2vec, head],
        refs={"tok2vec": tok2vec, "head": head},
        dims={"nO": None},
        attrs={"with_case": with_case},
    )


def _head_input(model: Model, docs: List[Doc], X):
    """X, with the casing columns appended when the model uses them."""
    if not model.attrs["with_case"]:
        return X
    return model.ops.xp.hstack([X, model.ops.asarray2f(case_features(docs))])


def forward(model: Model, docs: List[Doc], is_train: bool):
    tok2vec, head = model.layers
    ops = model.ops
    vectors, backprop_tok2vec = tok2vec(docs, is_train)
    for doc, vec in zip(docs, vectors):
        if vec.shape[0] != len(doc):
            raise ValueError(
                f"[ner_bert] The encoder gave {vec.shape[0]} vectors for a doc of {len(doc)} "
                "tokens: the span getter must cover every token of each doc."
            )
    lengths = ops.asarray1i([len(doc) for doc in docs])
    n_tags = model.get_dim("nO")
    if int(lengths.sum()) == 0:
        outputs = [ops.alloc2f(0, n_tags) for _ in docs]
        return outputs, lambda d_outputs: backprop_tok2vec([ops.alloc2f(0, 0) for _ in docs])
    X = ops.flatten([v for v in vectors if v.shape[0]])
    Y, backprop_head = head(_head_input(model, docs, X), is_train)
    no_wordpiece = ops.xp.abs(X).sum(axis=1) == 0
    has_forced = bool(no_wordpiece.any())
    if has_forced:
        Y = Y.copy()
        Y[no_wordpiece] = -ops.xp.inf
        Y[no_wordpiece, 0] = 0.0
    outputs = ops.unflatten(Y, lengths)

    def backprop(d_outputs: List[Floats2d]) -> List[Floats2d]:
        dY = ops.flatten([d for d in d_outputs if d.shape[0]])
        if has_forced:
            dY = dY.copy()
            dY[no_wordpiece] = 0.0
        dX = backprop_head(dY)
        if model.attrs["with_case"]:
            dX = model.ops.xp.ascontiguousarray(dX[:, : dX.shape[1] - len(CASE_FEATURES)])
        return backprop_tok2vec(ops.unflatten(dX, lengths))

    return outputs, backprop


def init(model: Model, X=None, Y=None) -> None:
    tok2vec, head = model.layers
    tok2vec.initialize(X=X)
    X_head = Y_head = None
    if X is not None:
        vectors = [v for v in tok2vec.predict(X) if v.shape[0]]
        X_head = _head_input(model, X, model.ops.flatten(vectors)) if vectors else None
    if Y is not None:
        rows = [y for y in Y if y.shape[0]]
        Y_head = model.ops.flatten(rows) if rows else None
    if Y_head is None and model.has_dim("nO"):
        Y_head = model.ops.alloc2f(1, model.get_dim("nO"))
        X_head = X_head[:1] if X_head is not None else None
    head.initialize(X=X_head, Y=Y_head)
    model.set_dim("nO", head.get_dim("nO"))
