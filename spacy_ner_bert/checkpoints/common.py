"""What an imported checkpoint provides, and how it becomes a ner_bert model."""
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy

from ..tags import OUTSIDE, IOBTags

# Encoder families spacy-transformers runs through AutoModel with a wordpiece/BPE fast tokenizer.
BERT_FAMILY = ("bert", "distilbert", "roberta", "xlm-roberta", "camembert", "electra")


class CheckpointError(ValueError):
    """A checkpoint that cannot be imported; the message says what is wrong."""


@dataclass
class ImportedCheckpoint:
    """An encoder directory in HF format plus a token-classification head and its labels."""

    source: str
    kind: str  # "hf" or "nemo"
    encoder_dir: Path
    tags: List[str]  # the checkpoint's labels, in its id order
    layers: List[Tuple[numpy.ndarray, numpy.ndarray]]  # (W: out x in, b) per Linear, last -> tags
    activation: str = "relu"
    dropout: float = 0.1
    window: int = 128
    stride: int = 96
    details: Dict[str, str] = field(default_factory=dict)
    _tmp: Optional[tempfile.TemporaryDirectory] = None

    def describe(self) -> str:
        lines = [f"{self.kind} checkpoint {self.source}"]
        lines += [f"  {k}: {v}" for k, v in self.details.items()]
        shapes = " -> ".join(f"Linear {W.shape[1]}x{W.shape[0]}" for W, _ in self.layers)
        lines.append(f"  head: {shapes} ({self.activation} between layers)")
        lines.append(f"  labels ({len(self.tags)}): {' '.join(self.tags)}")
        return "\n".join(lines)

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def iob_tags_from_labels(labels: List[str], where: str) -> List[str]:
    """Check checkpoint labels are an IOB scheme ('O', 'B-X', 'I-X'; 'B_X' is read as 'B-X')."""
    tags = []
    for label in labels:
        tag = label.strip()
        if len(tag) > 2 and tag[1] == "_" and tag[0] in "BIOSEUL":
            tag = f"{tag[0]}-{tag[2:]}"
        if tag != OUTSIDE and tag[:2] not in ("B-", "I-"):
            scheme = "BILUO/BIOES" if tag[:2] in ("U-", "L-", "S-", "E-") else "unknown"
            raise CheckpointError(
                f"{where}: label {label!r} is not IOB ({scheme} scheme); ner_bert maps only "
                "'O', 'B-<type>' and 'I-<type>' labels"
            )
        tags.append(tag)
    if OUTSIDE not in tags:
        raise CheckpointError(f"{where}: no 'O' label among {labels}")
    try:
        IOBTags.from_tags(tags)
    except ValueError as err:
        raise CheckpointError(f"{where}: {err}") from None
    return tags


def model_config(ckpt: ImportedCheckpoint) -> Dict:
    """The `model` config block of a ner_bert component with this checkpoint's architecture."""
    if len(ckpt.layers) == 1:
        head = {"@architectures": "spacy-ner-bert.LinearHead.v1"}
    else:
        head = {
            "@architectures": "spacy-ner-bert.MLPHead.v1",
            "num_fc_layers": len(ckpt.layers),
            "activation": ckpt.activation,
            "dropout": ckpt.dropout,
        }
    return {
        "@architectures": "spacy-ner-bert.TokenClassifier.v1",
        "tok2vec": {
            "@architectures": "spacy-ner-bert.TransformerEncoder.v1",
            "name": str(ckpt.encoder_dir),
            "get_spans": {
                "@span_getters": "spacy-transformers.strided_spans.v1",
                "window": ckpt.window,
                "stride": ckpt.stride,
            },
            "tokenizer_config": {"use_fast": True},
            "transformer_config": {},
            "mixed_precision": False,
            "grad_scaler_config": {},
            "grad_factor": 1.0,
        },
        "head": head,
    }


def linear_layers(head) -> List:
    """The Linear-like layers of a head (fc0, fc1, ..., final), in order."""
    if head.name == "linear":
        return [head]
    hidden = [head.get_ref(f"fc{i}") for i in range(head.attrs["num_fc_layers"] - 1)]
    return hidden + [head.layers[0].layers[-1]]


def load_into_pipe(pipe, ckpt: ImportedCheckpoint) -> None:
    """Initialize `pipe`'s model from the checkpoint: encoder weights, head weights, labels.

    pipe (NERBert): A component whose model has this checkpoint's architecture (model_config).
    ckpt (ImportedCheckpoint): The imported checkpoint.
    """
    from spacy.tokens import Doc

    tags = IOBTags.from_tags(ckpt.tags)  # O moves to index 0; the others keep their order
    pipe._set_tags(tags)
    for label in pipe.labels:
        pipe.vocab.strings.add(label)
    sample = [Doc(pipe.vocab, words=["ner", "bert"])]
    try:
        pipe.model.initialize(X=sample, Y=[pipe.model.ops.alloc2f(2, len(tags))])
    except OSError as err:
        raise CheckpointError(f"{ckpt.source}: could not load the encoder: {err}") from err
    linears = linear_layers(pipe.model.get_ref("head"))
    if len(linears) != len(ckpt.layers):
        raise CheckpointError(f"{ckpt.source}: head has {len(ckpt.layers)} layers, model {len(linears)}")
    # Our tag order puts O first: permute the rows of the last layer to match.
    order = [ckpt.tags.index(tag) for tag in tags.tags]
    for i, (layer, (W, b)) in enumerate(zip(linears, ckpt.layers)):
        if i == len(linears) - 1:
            W, b = W[order], b[order]
        if (layer.get_dim("nO"), layer.get_dim("nI")) != W.shape:
            raise CheckpointError(
                f"{ckpt.source}: head layer {i} has shape {W.shape}, the encoder needs "
                f"({layer.get_dim('nO')}, {layer.get_dim('nI')})"
            )
        layer.set_param("W", layer.ops.asarray2f(W))
        layer.set_param("b", layer.ops.asarray1f(b))
    pipe.cfg["checkpoint_loaded"] = True


def write_pipeline(ckpt: ImportedCheckpoint, out_dir: Path, lang: str = "en") -> Path:
    """Write a spaCy pipeline with one ner_bert component built from the checkpoint.

    Everything is written to a temporary folder first and moved into place at the end, so a
    failure leaves nothing half-written at out_dir.
    """
    import spacy

    require_empty_dir(out_dir)
    nlp = spacy.blank(lang)
    pipe = nlp.add_pipe("ner_bert", config={"model": model_config(ckpt)})
    load_into_pipe(pipe, ckpt)
    return write_dir_atomically(out_dir, nlp.to_disk)


def require_empty_dir(out_dir: Path) -> None:
    """CheckpointError unless out_dir is missing or empty."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise CheckpointError(f"{out_dir} exists and is not empty")


def write_dir_atomically(out_dir: Path, write: Callable[[Path], None], replace: bool = False) -> Path:
    """Call write(tmp) on a temporary folder beside out_dir, then move it to out_dir.

    A failure leaves out_dir as it was. out_dir must not exist or be empty, unless `replace`
    (then an existing out_dir is removed once the new one is complete).
    """
    out_dir = Path(out_dir)
    if not replace:
        require_empty_dir(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        write(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.replace(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
