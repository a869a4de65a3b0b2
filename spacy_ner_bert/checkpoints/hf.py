"""Import a Hugging Face token-classification directory (e.g. BertForTokenClassification)."""
import json
from pathlib import Path

import numpy

from .common import BERT_FAMILY, CheckpointError, ImportedCheckpoint, iob_tags_from_labels


def _load_state(path: Path) -> dict:
    if (path / "model.safetensors").is_file():
        from safetensors.numpy import load_file

        return load_file(str(path / "model.safetensors"))
    if (path / "pytorch_model.bin").is_file():
        import torch

        state = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
        return {k: v.float().numpy() for k, v in state.items()}
    raise CheckpointError(f"{path}: no weights (model.safetensors or pytorch_model.bin)")


def read_hf(path: Path) -> ImportedCheckpoint:
    """Read encoder, classifier and labels from a HF token-classification directory.

    path (Path): A directory written by `save_pretrained` (config.json with id2label, weights,
        tokenizer files).
    RETURNS (ImportedCheckpoint): The checkpoint; the encoder loads from the same directory.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{path}: no config.json")
    config = json.loads(config_path.read_text(encoding="utf8"))
    model_type = config.get("model_type", "")
    if model_type not in BERT_FAMILY:
        raise CheckpointError(f"{config_path}: model_type {model_type!r} is not a BERT-family encoder {BERT_FAMILY}")
    id2label = config.get("id2label")
    if not id2label:
        raise CheckpointError(f"{config_path}: no id2label")
    labels = [id2label[str(i)] if str(i) in id2label else id2label[i] for i in range(len(id2label))]
    tags = iob_tags_from_labels(labels, str(config_path))
    if not any((path / f).is_file() for f in ("tokenizer.json", "vocab.txt", "vocab.json")):
        raise CheckpointError(f"{path}: no tokenizer files (tokenizer.json or vocab.txt)")
    state = _load_state(path)
    if "classifier.weight" not in state or "classifier.bias" not in state:
        raise CheckpointError(f"{path}: weights hold no classifier.weight/classifier.bias (not a token classifier?)")
    W = numpy.asarray(state["classifier.weight"], dtype="float32")
    b = numpy.asarray(state["classifier.bias"], dtype="float32")
    if W.shape[0] != len(labels) or b.shape != (len(labels),):
        raise CheckpointError(
            f"{path}: classifier outputs {W.shape[0]} labels but id2label has {len(labels)}"
        )
    if W.shape[1] != config.get("hidden_size", config.get("dim", W.shape[1])):
        raise CheckpointError(f"{path}: classifier input {W.shape[1]} differs from the encoder's hidden size")
    return ImportedCheckpoint(
        source=str(path),
        kind="hf",
        encoder_dir=path,
        tags=tags,
        layers=[(W, b)],
        details={
            "encoder": f"{model_type}, {config.get('num_hidden_layers', '?')} layers, hidden {W.shape[1]}",
            "architectures": ", ".join(config.get("architectures", []) or ["?"]),
        },
    )
