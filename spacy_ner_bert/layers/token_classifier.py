"""The token classifier: token vectors from an encoder, then a head giving IOB tag logits."""
from typing import List, Optional

from spacy.tokens import Doc
from thinc.api import Model
from thinc.types import Floats2d

from .case_features import case_features


def token_classifier(
    tok2vec: Model[List[Doc], List[Floats2d]],
    head: Model[Floats2d, Floats2d],
    with_case: bool = False,
    features: Optional[Model[List[Doc], List[Floats2d]]] = None,
) -> Model[List[Doc], List[Floats2d]]:
    """Apply `head` to every token vector of `tok2vec`; output one row of logits per token.

    With `with_case`, the head sees each token vector followed by the token's casing flags
    (layers.case_features: lower, upper, title, mixed, uncased, digit, sentence start), which an
    uncased encoder cannot see. With `features` (a spaCy embedding such as spacy.MultiHashEmbed.v2:
    one vector per token), the head's input also ends with that token's feature vector, and the
    feature model trains with the rest.

    Tokens whose vector is all zeros had no wordpiece (first-wordpiece pooling leaves them so):
    their row is forced to O (tag 0) by giving every other tag a logit of -inf, and no gradient
    flows from them.

    tok2vec (Model[List[Doc], List[Floats2d]]): One vector per token.
    head (Model[Floats2d, Floats2d]): Token vectors to tag logits.
    with_case (bool): Append the casing flags to the head's input.
    features (Optional[Model[List[Doc], List[Floats2d]]]): Extra per-token vectors, appended last.
    RETURNS (Model[List[Doc], List[Floats2d]]): The classifier.
    """
    layers = [tok2vec, head] + ([features] if features is not None else [])
    refs = {"tok2vec": tok2vec, "head": head}
    if features is not None:
        refs["features"] = features
    return Model(
        "ner_bert_token_classifier",
        forward,
        init=init,
        layers=layers,
        refs=refs,
        dims={"nO": None},
        attrs={"with_case": with_case},
    )


def _features(model: Model, docs: List[Doc], is_train: bool):
    """The feature model's vectors for the tokens of docs, flattened, and their backprop (or None)."""
    if not model.has_ref("features"):
        return None, None
    rows, backprop = model.get_ref("features")(docs, is_train)
    for doc, row in zip(docs, rows):
        if row.shape[0] != len(doc):
            raise ValueError(
                f"[ner_bert] The features model gave {row.shape[0]} vectors for a doc of {len(doc)} "
                "tokens: it must give one vector per token."
            )
    return model.ops.flatten([r for r in rows if r.shape[0]]), backprop


def _head_input(model: Model, docs: List[Doc], X, F=None):
    """X, with the casing columns and the feature vectors F appended when the model uses them."""
    parts = [X]
    if model.attrs["with_case"]:
        parts.append(model.ops.asarray2f(case_features(docs)))
    if F is not None:
        parts.append(F)
    return X if len(parts) == 1 else model.ops.xp.hstack(parts)


def forward(model: Model, docs: List[Doc], is_train: bool):
    tok2vec, head = model.get_ref("tok2vec"), model.get_ref("head")
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
    F, backprop_features = _features(model, docs, is_train)
    Y, backprop_head = head(_head_input(model, docs, X, F), is_train)
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
        d_input = backprop_head(dY)
        width = X.shape[1]
        if F is not None:
            dF = ops.xp.ascontiguousarray(d_input[:, d_input.shape[1] - F.shape[1] :])
            backprop_features(ops.unflatten(dF, lengths))
        dX = d_input if d_input.shape[1] == width else ops.xp.ascontiguousarray(d_input[:, :width])
        return backprop_tok2vec(ops.unflatten(dX, lengths))

    return outputs, backprop


def init(model: Model, X=None, Y=None) -> None:
    tok2vec, head = model.get_ref("tok2vec"), model.get_ref("head")
    tok2vec.initialize(X=X)
    if model.has_ref("features"):
        model.get_ref("features").initialize(X=X)
    X_head = Y_head = None
    if X is not None:
        vectors = [v for v in tok2vec.predict(X) if v.shape[0]]
        if vectors:
            F, _ = _features(model, X, is_train=False)
            X_head = _head_input(model, X, model.ops.flatten(vectors), F)
    if Y is not None:
        rows = [y for y in Y if y.shape[0]]
        Y_head = model.ops.flatten(rows) if rows else None
    if Y_head is None and model.has_dim("nO"):
        Y_head = model.ops.alloc2f(1, model.get_dim("nO"))
        X_head = X_head[:1] if X_head is not None else None
    head.initialize(X=X_head, Y=Y_head)
    model.set_dim("nO", head.get_dim("nO"))
