"""Import a NeMo `.nemo` archive of a TokenClassificationModel (e.g. NGC's ner_en_bert).

A .nemo file is a tar (gzip-compressed before NeMo 1.7) holding model_config.yaml,
model_weights.ckpt (a torch state dict) and artifacts named `<hex>_<basename>`, which the yaml
refers to as `nemo:<hex>_<basename>`. Encoder keys are `bert_model.` + HF BertModel names; the head
is `classifier.mlp.layer0` (Linear H->H), activation, ..., `classifier.mlp.layer{2(N-1)}` (Linear
H->labels), N = head.num_fc_layers, with dropout before it.
"""
import io
import json
import re
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

import numpy

from .common import BERT_FAMILY, CheckpointError, ImportedCheckpoint, iob_tags_from_labels

_IGNORED_KEYS = ("bert_model.embeddings.position_ids", "loss.weight")


class _Archive:
    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: file not found")
        try:
            self.tar = tarfile.open(self.path, "r:*")
        except (tarfile.ReadError, EOFError, OSError) as err:
            raise CheckpointError(f"{self.path}: not a .nemo archive (not a tar or tar.gz file: {err})") from None
        self.members = {re.sub(r"^(\./)+", "", m.name): m for m in self.tar.getmembers() if m.isfile()}

    def read(self, name: str, what: str) -> bytes:
        member = self.members.get(name)
        if member is None:
            raise CheckpointError(f"{self.path}: the archive has no {name} ({what}); it holds {sorted(self.members)}")
        return self.tar.extractfile(member).read()

    def artifact(self, ref: Optional[str], what: str, suffix: str) -> bytes:
        """An artifact the yaml names as nemo:<name>, or else the one member ending in _<suffix>."""
        if isinstance(ref, str) and ref.startswith("nemo:"):
            return self.read(ref[len("nemo:"):], what)
        if isinstance(ref, str) and Path(ref).name in self.members:
            return self.read(Path(ref).name, what)
        found = [n for n in self.members if n == suffix or n.endswith("_" + suffix)]
        if len(found) != 1:
            raise CheckpointError(f"{self.path}: the archive has no {what} (looked for {ref!r} / *_{suffix})")
        return self.read(found[0], what)


def _get(cfg: Dict, dotted: str, default: Any = None) -> Any:
    node: Any = cfg
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def read_nemo(path: Path) -> ImportedCheckpoint:
    """Read a .nemo TokenClassificationModel into an HF encoder directory + head + labels.

    path (Path): The .nemo file.
    RETURNS (ImportedCheckpoint): Its encoder lives in a temporary directory until cleanup().
    """
    archive = _Archive(path)
    try:
        return _read(archive, Path(path))
    finally:
        archive.tar.close()


def _read(archive: _Archive, path: Path) -> ImportedCheckpoint:
    import torch
    import yaml
    from transformers import BertConfig, BertModel, BertTokenizerFast

    cfg = yaml.safe_load(archive.read("model_config.yaml", "model configuration"))
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: model_config.yaml is not a mapping")
    target = str(cfg.get("target", ""))
    if target and "TokenClassificationModel" not in target:
        raise CheckpointError(f"{path}: model is {target}, not a TokenClassificationModel")

    lm_name = str(_get(cfg, "language_model.pretrained_model_name", ""))
    config_ref = _get(cfg, "language_model.config_file")
    inline_config = _get(cfg, "language_model.config")
    if "megatron" in lm_name.lower():
        raise CheckpointError(f"{path}: encoder {lm_name!r} is a Megatron model; only BERT-family encoders are supported")
    if isinstance(inline_config, dict) and inline_config:
        enc_config = dict(inline_config)
    else:
        enc_config = json.loads(archive.artifact(config_ref, "encoder config json", "config.json"))
    model_type = enc_config.get("model_type") or ("bert" if "bert" in lm_name.lower() else "")
    if model_type != "bert":
        family = model_type if model_type in BERT_FAMILY else "non-BERT"
        raise CheckpointError(
            f"{path}: encoder {lm_name!r} has model_type {model_type!r} ({family}); "
            "only BERT encoders (bert_model.* keys) can be imported from .nemo"
        )
    enc_config["model_type"] = "bert"

    label_ref = _get(cfg, "class_labels.class_labels_file")
    label_lines = archive.artifact(label_ref, "label file (label_ids.csv)", "label_ids.csv").decode("utf8").splitlines()
    labels = [line.strip() for line in label_lines if line.strip()]
    tags = iob_tags_from_labels(labels, f"{path}: label_ids.csv")
    vocab = archive.artifact(_get(cfg, "tokenizer.vocab_file"), "tokenizer vocab.txt", "vocab.txt")
    lower = None
    for key in ("tokenizer.do_lower_case", "dataset.do_lower_case", "language_model.do_lower_case", "do_lower_case"):
        if _get(cfg, key) is not None:
            lower = bool(_get(cfg, key))
            break
    if lower is None:
        lower = "uncased" in lm_name.lower() or "uncased" in str(_get(cfg, "tokenizer.tokenizer_name", "")).lower()

    try:
        state = torch.load(io.BytesIO(archive.read("model_weights.ckpt", "weights")), map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(f"{path}: model_weights.ckpt is not a readable torch state dict ({err})") from None
    state = {k: v for k, v in state.items() if k not in _IGNORED_KEYS}
    encoder_state = {k[len("bert_model."):]: v for k, v in state.items() if k.startswith("bert_model.")}
    if not encoder_state:
        raise CheckpointError(f"{path}: model_weights.ckpt has no bert_model.* keys (not a BERT encoder?)")

    n_layers = int(_get(cfg, "head.num_fc_layers", 2))
    activation = str(_get(cfg, "head.activation", "relu"))
    if activation not in ("relu", "gelu"):
        raise CheckpointError(f"{path}: head.activation {activation!r} is not supported (relu, gelu)")
    hidden = int(enc_config.get("hidden_size", 0))
    layers = []
    for i in range(n_layers):
        key = f"classifier.mlp.layer{2 * i}"
        if f"{key}.weight" not in state or f"{key}.bias" not in state:
            raise CheckpointError(f"{path}: model_weights.ckpt has no {key}.weight/bias (head.num_fc_layers = {n_layers})")
        W = state[f"{key}.weight"].float().numpy()
        b = state[f"{key}.bias"].float().numpy()
        expected_out = len(labels) if i == n_layers - 1 else hidden
        if W.shape != (expected_out, hidden) or b.shape != (expected_out,):
            if i == n_layers - 1 and W.shape[1:] == (hidden,) and W.shape[0] != len(labels):
                raise CheckpointError(
                    f"{path}: the label file has {len(labels)} labels but the head outputs {W.shape[0]}"
                )
            raise CheckpointError(
                f"{path}: {key}.weight has shape {tuple(W.shape)}, expected ({expected_out}, {hidden}) "
                f"from the encoder config (hidden_size {hidden})"
            )
        layers.append((numpy.ascontiguousarray(W, dtype="float32"), numpy.ascontiguousarray(b, dtype="float32")))
    extra_head = [k for k in state if k.startswith("classifier.") and not any(
        k.startswith(f"classifier.mlp.layer{2 * i}.") for i in range(n_layers))]
    if extra_head:
        raise CheckpointError(f"{path}: unexpected head weights {extra_head[:4]} for head.num_fc_layers = {n_layers}")

    tmp = tempfile.TemporaryDirectory(prefix="ner_bert_nemo_")
    enc_dir = Path(tmp.name)
    try:
        bert_config = BertConfig.from_dict({k: v for k, v in enc_config.items() if k != "architectures"})
        model = BertModel(bert_config)
        try:
            missing, unexpected = model.load_state_dict(encoder_state, strict=False)
        except RuntimeError as err:
            raise CheckpointError(f"{path}: encoder weights do not fit the encoder config: {err}") from None
        missing = [k for k in missing if not k.startswith("pooler.")]
        if missing or unexpected:
            raise CheckpointError(
                f"{path}: encoder weights do not match a BertModel: missing {missing[:4]}, unexpected {list(unexpected)[:4]}"
            )
        model.save_pretrained(str(enc_dir))
        (enc_dir / "vocab.txt").write_bytes(vocab)
        BertTokenizerFast(vocab_file=str(enc_dir / "vocab.txt"), do_lower_case=lower).save_pretrained(str(enc_dir))
    except BaseException:
        tmp.cleanup()
        raise

    max_seq = int(_get(cfg, "dataset.max_seq_length", 128) or 128)
    # Windows are counted in spaCy tokens; a token is ~1.3 wordpieces, so half of NeMo's wordpiece
    # window keeps each window (with [CLS]/[SEP]) inside it for ordinary text.
    window = max(8, max_seq // 2)
    return ImportedCheckpoint(
        source=str(path),
        kind="nemo",
        encoder_dir=enc_dir,
        tags=tags,
        layers=layers,
        activation=activation,
        dropout=float(_get(cfg, "head.fc_dropout", 0.5) or 0.0),
        window=window,
        stride=max(1, window * 3 // 4),
        details={
            "encoder": f"{lm_name or 'bert'}: {bert_config.num_hidden_layers} layers, hidden {hidden}, "
            f"{'uncased' if lower else 'cased'} wordpiece vocab of {bert_config.vocab_size}",
            "max_seq_length": str(max_seq),
        },
        _tmp=tmp,
    )
