"""The encoder's forward with one vectorized tokenize-and-align step.

spacy-transformers' TransformerModel forward tokenizes each batch through the tokenizer's Python
wrapper (padded numpy tensors, then each row's ids converted back to strings) and aligns
wordpieces to spaCy tokens in a loop over Token objects. `forward` below builds the same
FullTransformerBatch (same spans, wordpiece ids, attention mask, strings and alignment; tested
against spacy-transformers' own forward) from the fast tokenizer's Rust encodings and numpy,
and can reuse encodings made earlier for the same span texts (`pretokenized`), so that
`nlp.pipe` tokenizes each text once for both length bucketing and the encoder. With the encoder's
`case_token_types` attr (TransformerEncoder.v2) the token type ids carry casing instead (`case_token_types`);
with its `mask_rate` attr, training batches have wordpieces replaced by the mask token (`mask_wordpieces`);
with its `mean_last_layers` attr, the output is the mean of the encoder's last hidden states (`mean_last_layers`);
with its `cpu_autocast` attr, the encoder runs under torch's CPU autocast in bfloat16 (`cpu_autocast`).
"""
import contextvars
from contextlib import contextmanager, nullcontext
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy
from spacy.attrs import IDX
from spacy.tokens import Doc, Span
from spacy_transformers.data_classes import FullTransformerBatch, WordpieceBatch
from spacy_transformers.layers import transformer_model as st_transformer_model
from spacy_transformers.truncate import truncate_oversize_splits
from spacy_transformers.util import maybe_flush_pytorch_cache
from thinc.types import Ragged
from transformers import PreTrainedTokenizerFast

# Encodings by span text, made by `encode_spans` for the docs about to be predicted.
_PRETOKENIZED: contextvars.ContextVar[Optional[Dict[str, object]]] = contextvars.ContextVar(
    "ner_bert_pretokenized", default=None
)


def is_fast(tokenizer) -> bool:
    return isinstance(tokenizer, PreTrainedTokenizerFast)


def encode_texts(tokenizer, texts: Sequence[str]) -> list:
    """Rust encodings of `texts` with special tokens, no padding, no truncation (as
    spacy-transformers' huggingface_tokenize makes them, before it pads)."""
    backend = tokenizer.backend_tokenizer
    # The wrapper sets these on every call too; a previous call may have left padding on.
    backend.no_padding()
    backend.no_truncation()
    return backend.encode_batch(list(texts), add_special_tokens=True)


def encode_spans(model, docs: Sequence[Doc]) -> Tuple[Dict[str, object], List[int]]:
    """Tokenize the spans the encoder will make for `docs`, once.

    model: The component's TransformerModel (fast tokenizer).
    docs (Sequence[Doc]): The documents.
    RETURNS (Tuple[Dict, List[int]]): Encodings by span text, for `pretokenized`, and each doc's
        wordpiece count (its spans' summed lengths, special tokens included; 0 for an empty doc).
    """
    nested = model.attrs["get_spans"](docs)
    texts = [_span_texts(doc, spans) for doc, spans in zip(docs, nested)]
    flat = [t for doc_texts in texts for t in doc_texts]
    encodings = encode_texts(model.tokenizer, flat) if flat else []
    cache = dict(zip(flat, encodings))
    lengths = [sum(len(cache[t]) for t in doc_texts) for doc_texts in texts]
    return cache, lengths


@contextmanager
def pretokenized(cache: Dict[str, object]) -> Iterator[None]:
    """Let `forward` take encodings from `cache` (by span text) instead of tokenizing again."""
    token = _PRETOKENIZED.set(cache)
    try:
        yield
    finally:
        _PRETOKENIZED.reset(token)


def forward(model, docs: List[Doc], is_train: bool):
    """TransformerModel's forward: spans, wordpieces, alignment, then the HF model."""
    tokenizer = model.tokenizer
    if model.attrs.get("case_token_types"):
        check_case_token_types(model)
    mask_rate = model.attrs.get("mask_rate", 0.0) if is_train else 0.0
    if mask_rate:
        check_mask_rate(model)
    if not is_fast(tokenizer):
        # Slow tokenizers have no offsets: spacy-transformers aligns by wordpiece strings.
        with cpu_autocast(model):
            output, backprop = st_transformer_model.forward(model, docs, is_train)
        _mean_layers_if_set(model, output.model_output)
        return output, backprop
    transformer = model.layers[0]
    maybe_flush_pytorch_cache(chance=model.attrs.get("flush_cache_chance", 0))
    nested_spans = model.attrs["get_spans"](docs)
    flat_spans: List[Span] = []
    texts: List[str] = []
    for doc, doc_spans in zip(docs, nested_spans):
        flat_spans.extend(doc_spans)
        texts.extend(_span_texts(doc, doc_spans))
    cache = _PRETOKENIZED.get() or {}
    missing = [t for t in texts if t not in cache]
    # Texts not tokenized beforehand (all of them in training; none within logits(), which
    # tokenized every span), without copying the cache.
    fresh = dict(zip(missing, encode_texts(tokenizer, missing))) if missing else {}
    encodings = [fresh[t] if t in fresh else cache[t] for t in texts]
    wordpieces = _wordpiece_batch(tokenizer, encodings)
    if model.attrs.get("case_token_types"):
        wordpieces.token_type_ids = case_token_types(encodings, texts, wordpieces.input_ids.shape[1])
    if mask_rate:
        wordpieces.input_ids = mask_wordpieces(
            wordpieces.input_ids, encodings, tokenizer.mask_token_id, mask_rate
        )
    align = _alignment(flat_spans, texts, encodings, wordpieces.input_ids.shape[1])
    wordpieces, align = truncate_oversize_splits(wordpieces, align, tokenizer.model_max_length)
    with cpu_autocast(model):
        model_output, bp_tensors = transformer(wordpieces, is_train)
    _mean_layers_if_set(model, model_output)
    output = FullTransformerBatch(
        spans=nested_spans, wordpieces=wordpieces, model_output=model_output, align=align
    )

    def backprop(d_output: FullTransformerBatch) -> List[Doc]:
        bp_tensors(d_output.model_output)
        return docs

    return output, backprop


def case_token_types(encodings: Sequence, texts: Sequence[str], width: int) -> numpy.ndarray:
    """Token types that carry casing into an uncased encoder: 1 for a wordpiece whose characters
    in the original text hold an upper-case letter, 0 otherwise (special tokens and padding too).

    An uncased tokenizer lowercases before splitting, so "Apple" and "apple" reach the encoder as
    the same ids; BERT's token-type embedding (two types, one segment per window here) is the one
    input the encoder already adds to every position, so type 1 can mark case there, where
    attention sees it in context (the head's casing flags see one token at a time).

    encodings (Sequence): The rows' fast-tokenizer encodings (offsets into each row's text).
    texts (Sequence[str]): Each row's text.
    width (int): The padded row length.
    RETURNS (numpy.ndarray): (rows, width) int64 token type ids.
    """
    types = numpy.zeros((len(encodings), width), dtype="int64")
    for row, (enc, text) in enumerate(zip(encodings, texts)):
        upper = numpy.zeros(len(text) + 1, dtype="int64")
        upper[1:] = numpy.cumsum(numpy.fromiter((c.isupper() for c in text), dtype=bool, count=len(text)))
        offsets = numpy.asarray(enc.offsets, dtype="int64").reshape(-1, 2)
        has_upper = upper[offsets[:, 1]] > upper[offsets[:, 0]]
        types[row, : len(has_upper)] = has_upper
    return types


def check_case_token_types(model) -> None:
    """Refuse case token types where the encoder cannot take them, naming the setting."""
    setting = "TransformerEncoder.v2 case_token_types = true"
    if not is_fast(model.tokenizer):
        raise ValueError(f"[ner_bert] {setting} needs a fast tokenizer (character offsets).")
    if "token_type_ids" not in model.tokenizer.model_input_names:
        raise ValueError(f"[ner_bert] {setting}: the encoder's tokenizer makes no token type ids.")
    n_types = getattr(model.transformer.config, "type_vocab_size", 0)
    if n_types < 2:
        raise ValueError(
            f"[ner_bert] {setting} needs an encoder with at least 2 token types; this one has {n_types}."
        )


def mask_wordpieces(input_ids: numpy.ndarray, encodings: Sequence, mask_id: int, rate: float) -> numpy.ndarray:
    """Replace each wordpiece by `mask_id` with probability `rate` (numpy's global generator, which
    spaCy's fix_random_seed seeds); special tokens and padding are kept.

    input_ids (numpy.ndarray): (rows, width) wordpiece ids, row k made from encodings[k].
    encodings (Sequence): The rows' fast-tokenizer encodings (their special-tokens masks).
    mask_id (int): The tokenizer's mask token id.
    rate (float): The probability, in [0, 1).
    RETURNS (numpy.ndarray): A new array of ids.
    """
    maskable = numpy.zeros(input_ids.shape, dtype=bool)
    for row, enc in enumerate(encodings):
        maskable[row, : len(enc)] = numpy.asarray(enc.special_tokens_mask, dtype=bool) == 0
    chosen = maskable & (numpy.random.random_sample(input_ids.shape) < rate)
    return numpy.where(chosen, numpy.asarray(mask_id, dtype=input_ids.dtype), input_ids)


def check_mask_rate(model) -> None:
    """Refuse wordpiece masking where the tokenizer cannot do it, naming the setting."""
    setting = f"TransformerEncoder.v2 mask_rate = {model.attrs['mask_rate']}"
    if not is_fast(model.tokenizer):
        raise ValueError(f"[ner_bert] {setting} needs a fast tokenizer.")
    if model.tokenizer.mask_token_id is None:
        raise ValueError(f"[ner_bert] {setting}: the encoder's tokenizer has no mask token.")


def cpu_autocast(model):
    """torch's CPU autocast in the dtype of the encoder's `cpu_autocast` attr (bfloat16, set by
    ner_bert's cpu_bf16), else nothing.

    It covers the forward pass only: the backward pass, run later from the returned callback,
    follows the dtypes the forward recorded, as autocast asks. Ops on a GPU are not affected.
    """
    dtype = model.attrs.get("cpu_autocast")
    if dtype is None:
        return nullcontext()
    import torch

    return torch.autocast("cpu", dtype=dtype)


def mean_last_layers(model_output, n: int) -> None:
    """Make `model_output`'s last_hidden_state the mean of the encoder's last `n` hidden states, in
    place. spacy-transformers backpropagates into the encoder from the last_hidden_state of this same
    object (read when the gradient comes), so the gradient reaches each of the `n` layers through
    the mean, and no other code sees the difference.

    model_output (ModelOutput): The HF encoder's output, with hidden_states (the embeddings' output,
        then each layer's).
    n (int): How many of the last hidden states to average (n > 1).
    """
    import torch

    setting = f"TransformerEncoder.v2 mean_last_layers = {n}"
    hidden_states = model_output.get("hidden_states")
    if not hidden_states:
        raise ValueError(
            f"[ner_bert] {setting}: the encoder returned no hidden states "
            "(its transformer_config has output_hidden_states = false)."
        )
    if len(hidden_states) < n:
        raise ValueError(
            f"[ner_bert] {setting}, but the encoder has only {len(hidden_states)} hidden states "
            f"(the embeddings' and {len(hidden_states) - 1} layers')."
        )
    model_output["last_hidden_state"] = torch.stack(hidden_states[-n:]).mean(dim=0)


def _mean_layers_if_set(model, model_output) -> None:
    n = model.attrs.get("mean_last_layers", 1)
    if n > 1:
        mean_last_layers(model_output, n)


def _span_texts(doc: Doc, spans: Sequence[Span]) -> List[str]:
    if not spans:
        return []
    text = doc.text
    return [text[span.start_char : span.end_char] for span in spans]


def _wordpiece_batch(tokenizer, encodings: list) -> WordpieceBatch:
    """Pad the encodings into a WordpieceBatch, as huggingface_tokenize + from_batch_encoding do."""
    n = len(encodings)
    lengths = [len(e) for e in encodings]
    width = max(lengths) if lengths else 0
    pad_token = tokenizer.pad_token
    input_ids = numpy.full((n, width), tokenizer.pad_token_id, dtype="int64")
    attention_mask = numpy.zeros((n, width), dtype="float32")
    with_types = "token_type_ids" in tokenizer.model_input_names
    token_type_ids = numpy.full((n, width), tokenizer.pad_token_type_id, dtype="int64") if with_types else None
    strings: List[List[str]] = []
    for row, (enc, length) in enumerate(zip(encodings, lengths)):
        input_ids[row, :length] = enc.ids
        attention_mask[row, :length] = 1.0
        if with_types:
            token_type_ids[row, :length] = enc.type_ids
        strings.append(enc.tokens + [pad_token] * (width - length))
    # spacy-transformers counts the strings that are not the pad token.
    unpadded = [length - enc.tokens.count(pad_token) for enc, length in zip(encodings, lengths)]
    return WordpieceBatch(
        strings=strings,
        input_ids=input_ids,
        attention_mask=attention_mask,
        lengths=unpadded,
        token_type_ids=token_type_ids,
    )


def doc_offsets(spans: Iterable[Span]) -> Tuple[Dict[int, int], int]:
    """Where each doc's tokens start among the unique tokens of a batch, and their number.

    Tokens are numbered doc by doc, in the order the spans' docs first appear, as
    spacy-transformers' get_token_positions numbers them (the rows of the alignment).

    spans (Iterable[Span]): The batch's spans, in order.
    RETURNS (Tuple[Dict[int, int], int]): id(doc) -> its first token's number; the total.
    """
    doc_base: Dict[int, int] = {}
    n_positions = 0
    for span in spans:
        doc = span.doc
        if id(doc) not in doc_base:
            doc_base[id(doc)] = n_positions
            n_positions += len(doc)
    return doc_base, n_positions


def _alignment(spans: List[Span], texts: List[str], encodings: list, width: int) -> Ragged:
    """Wordpieces of each unique token, as get_alignment_via_offset_mapping computes them.

    A wordpiece at row k, column j (flat index k * width + j) is aligned to every token of span
    k that one of its characters falls in, a token owning its characters and its trailing
    whitespace. Tokens are numbered by first appearance, doc by doc.
    """
    doc_base, n_positions = doc_offsets(spans)
    doc_arrays: Dict[int, numpy.ndarray] = {}
    starts, positions, wp_lo, wp_hi, wp_flat = [], [], [], [], []
    char_base = 0
    for k, (span, text, enc) in enumerate(zip(spans, texts, encodings)):
        doc = span.doc
        arr = doc_arrays.get(id(doc))
        if arr is None:
            arr = doc_arrays[id(doc)] = doc.to_array(IDX).astype("int64")
        rel = arr[span.start : span.end] - span.start_char + char_base
        starts.append(rel)
        positions.append(numpy.arange(span.start, span.end, dtype="int64") + doc_base[id(doc)])
        offsets = numpy.asarray(enc.offsets, dtype="int64").reshape(-1, 2)
        keep = offsets[:, 1] > offsets[:, 0]
        idx = numpy.nonzero(keep)[0]
        wp_lo.append(offsets[idx, 0] + char_base)
        wp_hi.append(offsets[idx, 1] + char_base)
        wp_flat.append(idx + k * width)
        char_base += len(text) + 2
    if not spans:
        return Ragged(numpy.zeros((0,), dtype="i"), numpy.zeros((n_positions,), dtype="i"))
    starts_a = numpy.concatenate(starts)
    pos_a = numpy.concatenate(positions)
    lo_c, hi_c, flat = numpy.concatenate(wp_lo), numpy.concatenate(wp_hi), numpy.concatenate(wp_flat)
    # The token of character c is the last token starting at or before c: a span's text is its
    # tokens and their trailing whitespace, so every character has one. A wordpiece's tokens
    # are those of its first and last characters and all between.
    lo_t = numpy.searchsorted(starts_a, lo_c, side="right") - 1
    hi_t = numpy.searchsorted(starts_a, hi_c - 1, side="right") - 1
    counts = numpy.maximum(hi_t - lo_t + 1, 0)
    pair_wp = numpy.repeat(flat, counts)
    ramp = numpy.arange(int(counts.sum())) - numpy.repeat(numpy.cumsum(counts) - counts, counts)
    pair_pos = pos_a[numpy.repeat(lo_t, counts) + ramp]
    order = numpy.lexsort((pair_wp, pair_pos))
    data = pair_wp[order].astype("i")
    lengths = numpy.bincount(pair_pos, minlength=n_positions).astype("i")
    return Ragged(data, lengths)
