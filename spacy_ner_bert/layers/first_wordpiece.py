"""First-wordpiece pooling: one vector per spaCy token, from the encoder's wordpiece output."""
from typing import Callable, List, Tuple, Union

import numpy
from spacy_transformers.data_classes import FullTransformerBatch, TransformerData
from thinc.api import Model, torch2xp, xp2torch
from thinc.types import Floats2d, Ragged
from transformers.file_utils import ModelOutput

from .wordpieces import doc_offsets


def first_wordpiece(
    grad_factor: float = 1.0,
) -> Model[Union[FullTransformerBatch, List[TransformerData]], List[Floats2d]]:
    """Take each token's vector from its first wordpiece.

    The input is the encoder's whole batch (FullTransformerBatch: pooled at once, the
    component's own encoder) or its split per doc (List[TransformerData]: a listener).

    Where strided windows overlap, a token occurs in several windows: its vector is the mean of
    its first wordpiece in each of them. Tokens with no wordpiece (whitespace, characters the
    tokenizer drops) get a zero row, which the classifier turns into a forced O.

    grad_factor (float): Scales the gradient passed back to the encoder (0 freezes it).
    RETURNS (Model[List[TransformerData], List[Floats2d]]): The pooling layer.
    """
    return Model(
        "first_wordpiece", forward, attrs={"grad_factor": grad_factor}, dims={"nO": None}
    )


def first_wordpiece_index(
    align_data: numpy.ndarray, lengths: numpy.ndarray, window_len: int
) -> Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """Which wordpiece rows are a token's first wordpiece in some window.

    align_data (numpy.ndarray): Flat wordpiece indices of all tokens, in token order.
    lengths (numpy.ndarray): Number of wordpieces aligned to each token.
    window_len (int): Padded wordpiece length of each window (flat index // it = window).
    RETURNS (Tuple): rows (wordpiece rows to take), owners (their token), counts (rows per token).
    """
    idx = numpy.asarray(align_data, dtype="int64").ravel()
    lengths = numpy.asarray(lengths, dtype="int64")
    n_tokens = len(lengths)
    owners_all = numpy.repeat(numpy.arange(n_tokens), lengths)
    if len(idx) == 0:
        return idx, owners_all, numpy.zeros((n_tokens,), dtype="int64")
    window = idx // window_len
    # The alignment lists each token's indices sorted, so a token's first wordpiece in a
    # window is where the token starts or the window changes.
    is_first = numpy.ones(len(idx), dtype=bool)
    is_first[1:] = (window[1:] != window[:-1]) | (owners_all[1:] != owners_all[:-1])
    rows, owners = idx[is_first], owners_all[is_first]
    counts = numpy.bincount(owners, minlength=n_tokens)
    return rows, owners, counts


def pass_batch() -> Model[FullTransformerBatch, FullTransformerBatch]:
    """Hand the encoder's whole batch on (first_wordpiece pools it without a split per doc).

    It takes the place of spacy-transformers' split_trf_batch in the model tree, so pipelines
    saved with that node load unchanged (thinc matches nodes by position).
    """
    return Model("pass-trf-batch", _pass_forward)


def _pass_forward(model: Model, batch: FullTransformerBatch, is_train: bool):
    return batch, lambda d_batch: d_batch


def forward(model: Model, inputs, is_train: bool):
    if isinstance(inputs, FullTransformerBatch):
        return _forward_batch(model, inputs, is_train)
    return _forward_docs(model, inputs, is_train)


def _forward_batch(model: Model, batch: FullTransformerBatch, is_train: bool):
    """Pool the whole batch in one go; each doc's rows are its tokens' unique positions."""
    ops = model.ops
    hidden_t = batch.model_output.get("last_hidden_state") if batch.model_output else None
    hidden = torch2xp(hidden_t) if hidden_t is not None and hidden_t.numel() else None
    width = _width(model, hidden)
    # A doc's rows run from its first span's first token to its last span's last token (as
    # spacy-transformers' split_by_doc cuts them); a doc whose first span is empty gets none.
    doc_base, n_positions = doc_offsets(span for doc_spans in batch.spans for span in doc_spans)
    bounds: List[Tuple[int, int]] = []
    for doc_spans in batch.spans:
        if not doc_spans or not len(doc_spans[0]):
            bounds.append((0, 0))
            continue
        base = doc_base[id(doc_spans[0].doc)]
        bounds.append((base + doc_spans[0].start, base + doc_spans[-1].end))
    if hidden is None:
        Y = ops.alloc2f(n_positions, width)
        return [Y[a:b] for a, b in bounds], lambda d_outputs: batch
    Y, backprop_pool = _pool(model, hidden, batch.align)

    def backprop(d_outputs: List[Floats2d]) -> FullTransformerBatch:
        dY = ops.alloc2f(n_positions, width)
        for (a, b), d_out in zip(bounds, d_outputs):
            if b > a:
                dY[a:b] += d_out  # += : a doc given twice shares its rows
        return FullTransformerBatch(
            spans=batch.spans,
            wordpieces=batch.wordpieces,
            model_output=ModelOutput(last_hidden_state=xp2torch(backprop_pool(dY))),
            align=batch.align,
        )

    return [Y[a:b] for a, b in bounds], backprop


def _forward_docs(model: Model, trf_datas: List[TransformerData], is_train: bool):
    ops = model.ops
    width = _find_width(model, trf_datas)
    outputs: List[Floats2d] = []
    callbacks: List = []
    for trf_data in trf_datas:
        hidden = trf_data.model_output.get("last_hidden_state") if trf_data.model_output else None
        if hidden is None or hidden.size == 0:
            # Empty doc: no spans were made for it, so the encoder gave it nothing.
            outputs.append(ops.alloc2f(len(trf_data.align.lengths), width))
            callbacks.append(None)
            continue
        Y, backprop_pool = _pool(model, hidden, trf_data.align)
        outputs.append(Y)
        callbacks.append(backprop_pool)

    def backprop(d_outputs: List[Floats2d]) -> List[TransformerData]:
        d_trf_datas: List[TransformerData] = []
        for trf_data, d_out, backprop_pool in zip(trf_datas, d_outputs, callbacks):
            if backprop_pool is None:
                # Empty docs have no rows in the encoder's batch: send nothing back for them,
                # as spacy-transformers' own pooling does.
                continue
            d_trf_datas.append(
                TransformerData(
                    model_output=ModelOutput(last_hidden_state=backprop_pool(d_out)),
                    wordpieces=trf_data.wordpieces,
                    align=trf_data.align,
                )
            )
        return d_trf_datas

    return outputs, backprop


def _pool(model: Model, hidden, align: Ragged) -> Tuple[Floats2d, Callable]:
    """Each token's first-wordpiece vector (mean over the windows it is in), and the backprop
    from the tokens' gradient to the hidden states' (scaled by grad_factor).

    hidden: (windows, window length, width) encoder output, numpy or cupy.
    align (Ragged): The wordpieces of each token, flat indices into `hidden`'s rows.
    """
    ops = model.ops
    grad_factor = model.attrs["grad_factor"]
    n_windows, window_len, width = hidden.shape
    rows, owners, counts = first_wordpiece_index(align.dataXd, align.lengths, window_len)
    src = ops.reshape2f(hidden, -1, width)
    rows_x, owners_x = ops.asarray1i(rows), ops.asarray1i(owners)
    scale = ops.asarray2f((1.0 / numpy.maximum(counts, 1)).reshape(-1, 1))
    Y = ops.alloc2f(len(align.lengths), width)
    if len(rows) and counts.max() <= 1:
        # Every token in one window only (any doc shorter than a window): a plain copy.
        Y[owners_x] = ops.asarray2f(src[rows_x], dtype="float32")
    elif len(rows):
        # ufunc.at, not ops.scatter_add: thinc's cupy path calls a method cupy 14 deprecates.
        ops.xp.add.at(Y, owners_x, ops.asarray2f(src[rows_x], dtype="float32"))
        Y *= scale

    def backprop(dY: Floats2d):
        d_src = ops.alloc2f(n_windows * window_len, width)
        if len(rows_x):
            ops.xp.add.at(d_src, rows_x, (dY * scale)[owners_x])
        d_src *= grad_factor
        return d_src.reshape(hidden.shape).astype(hidden.dtype, copy=False)

    return Y, backprop


def _find_width(model: Model, trf_datas: List[TransformerData]) -> int:
    hiddens = (t.model_output.get("last_hidden_state") if t.model_output else None for t in trf_datas)
    return _width(model, next((h for h in hiddens if h is not None and h.size), None))


def _width(model: Model, hidden) -> int:
    """The encoder's width: from `hidden` (recorded as nO the first time), or, with no hidden
    states (a batch of empty docs only), whatever the encoder had before, if known."""
    if hidden is not None:
        if not model.has_dim("nO"):
            model.set_dim("nO", int(hidden.shape[-1]))
        return int(hidden.shape[-1])
    return model.get_dim("nO") if model.has_dim("nO") else 0
