"""First-wordpiece pooling: one vector per spaCy token, from the encoder's wordpiece output."""
from typing import Callable, List, Tuple

import numpy
from spacy_transformers.data_classes import TransformerData
from thinc.api import Model
from thinc.types import Floats2d
from transformers.file_utils import ModelOutput


def first_wordpiece(grad_factor: float = 1.0) -> Model[List[TransformerData], List[Floats2d]]:
    """Take each token's vector from its first wordpiece.

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


def forward(model: Model, trf_datas: List[TransformerData], is_train: bool):
    ops = model.ops
    grad_factor = model.attrs["grad_factor"]
    width = _find_width(model, trf_datas)
    outputs: List[Floats2d] = []
    callbacks: List[Callable] = []
    for trf_data in trf_datas:
        hidden = trf_data.model_output.get("last_hidden_state") if trf_data.model_output else None
        n_tokens = len(trf_data.align.lengths)
        if hidden is None or hidden.size == 0:
            # Empty doc: no spans were made for it, so the encoder gave it nothing.
            outputs.append(ops.alloc2f(n_tokens, width))
            callbacks.append(None)
            continue
        n_windows, window_len, _ = hidden.shape
        rows, owners, counts = first_wordpiece_index(
            trf_data.align.dataXd, trf_data.align.lengths, window_len
        )
        src = ops.reshape2f(hidden, -1, width)
        rows_x = ops.asarray1i(rows)
        owners_x = ops.asarray1i(owners)
        scale = ops.asarray2f((1.0 / numpy.maximum(counts, 1)).reshape(-1, 1))
        Y = ops.alloc2f(n_tokens, width)
        if len(rows) and counts.max() <= 1:
            # Every token in one window only (any doc shorter than a window): a plain copy.
            Y[owners_x] = ops.asarray2f(src[rows_x], dtype="float32")
        elif len(rows):
            # ufunc.at, not ops.scatter_add: thinc's cupy path calls a method cupy 14 deprecates.
            ops.xp.add.at(Y, owners_x, ops.asarray2f(src[rows_x], dtype="float32"))
            Y *= scale
        outputs.append(Y)
        callbacks.append((trf_data, hidden.shape, hidden.dtype, rows_x, owners_x, scale))

    def backprop(d_outputs: List[Floats2d]) -> List[TransformerData]:
        d_trf_datas: List[TransformerData] = []
        for trf_data, d_out, info in zip(trf_datas, d_outputs, callbacks):
            if info is None:
                # Empty docs have no rows in the encoder's batch: send nothing back for them,
                # as spacy-transformers' own pooling does.
                continue
            trf_data, shape, dtype, rows_x, owners_x, scale = info
            d_src = ops.alloc2f(shape[0] * shape[1], shape[2])
            if len(rows_x):
                ops.xp.add.at(d_src, rows_x, (d_out * scale)[owners_x])
            d_src *= grad_factor
            d_hidden = d_src.reshape(shape).astype(dtype, copy=False)
            d_trf_datas.append(
                TransformerData(
                    model_output=ModelOutput(last_hidden_state=d_hidden),
                    wordpieces=trf_data.wordpieces,
                    align=trf_data.align,
                )
            )
        return d_trf_datas

    return outputs, backprop


def _find_width(model: Model, trf_datas: List[TransformerData]) -> int:
    for trf_data in trf_datas:
        hidden = trf_data.model_output.get("last_hidden_state") if trf_data.model_output else None
        if hidden is not None and hidden.size:
            if not model.has_dim("nO"):
                model.set_dim("nO", int(hidden.shape[-1]))
            return int(hidden.shape[-1])
    # A batch of empty docs only: the width is whatever the encoder had before, if known.
    return model.get_dim("nO") if model.has_dim("nO") else 0
