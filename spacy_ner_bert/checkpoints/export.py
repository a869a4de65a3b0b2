"""Export a ner_bert component as a Hugging Face token-classification directory."""
from pathlib import Path

from .common import CheckpointError, require_empty_dir, write_dir_atomically


def export_hf(nlp, out_dir: Path, component: str = "ner_bert") -> Path:
    """Write `component` of `nlp` as a HF AutoModelForTokenClassification directory.

    Possible when the component's model is what BertForTokenClassification computes: an
    encoder it owns (spacy-ner-bert.TransformerEncoder.v1), a linear head
    (spacy-ner-bert.LinearHead.v1), no casing features and no lexical features. The labels become id2label in our tag
    order (O is id 0). HF's pipeline then labels each word by its first wordpiece with
    aggregation_strategy="first"; it does not constrain the IOB sequence as ner_bert does.

    nlp (Language): A pipeline with a trained ner_bert component.
    out_dir (Path): Directory to write (must not exist or be empty); written atomically.
    component (str): The component's name.
    RETURNS (Path): out_dir.
    """
    import torch
    from transformers import AutoModelForTokenClassification

    from ..pipe import get_ner_bert

    pipe = get_ner_bert(nlp, component, error=CheckpointError)
    model = pipe.model
    if model.attrs.get("with_case"):
        raise CheckpointError(
            f"{component!r} uses casing features (TokenClassifier.v2 case_features = true), which a "
            "HF token-classification model cannot represent"
        )
    if model.has_ref("features"):
        raise CheckpointError(
            f"{component!r} gives its head lexical features (TokenClassifier.v3 features), which a HF "
            "token-classification model cannot represent"
        )
    head = model.get_ref("head")
    if head.name != "linear":
        raise CheckpointError(
            f"{component!r} has a {head.name!r} head: only a linear head (spacy-ner-bert.LinearHead.v1) "
            "maps onto a HF token-classification model"
        )
    encoder = pipe.encoder()
    if encoder is None:
        raise CheckpointError(
            f"{component!r} listens to a shared transformer component: export needs the encoder "
            "inside the component (spacy-ner-bert.TransformerEncoder.v1)"
        )
    if encoder.attrs.get("case_token_types"):
        raise CheckpointError(
            f"{component!r} marks casing in the encoder's token types (TransformerEncoder.v2 "
            "case_token_types = true), which HF's token-classification pipeline does not set"
        )
    if encoder.attrs.get("mean_last_layers", 1) > 1:
        raise CheckpointError(
            f"{component!r} averages the encoder's last {encoder.attrs['mean_last_layers']} hidden states "
            "(TransformerEncoder.v2 mean_last_layers), where a HF token-classification model reads the last one"
        )
    require_empty_dir(out_dir)  # before the work, not only at the end
    transformer, tokenizer = encoder.transformer, encoder.tokenizer
    tags = list(pipe.tags.tags)
    config = transformer.config.__class__.from_dict(transformer.config.to_dict())
    config.id2label = dict(enumerate(tags))
    config.label2id = {tag: i for i, tag in enumerate(tags)}
    config.num_labels = len(tags)
    config.architectures = None
    net = AutoModelForTokenClassification.from_config(config)
    base = getattr(net, net.base_model_prefix)
    missing, unexpected = base.load_state_dict(transformer.state_dict(), strict=False)
    unexpected = [k for k in unexpected if not k.startswith("pooler.")]
    if missing or unexpected:
        raise CheckpointError(f"encoder weights do not fit {type(net).__name__}: missing {missing}, unexpected {unexpected}")
    W = model.ops.to_numpy(head.get_param("W"))
    b = model.ops.to_numpy(head.get_param("b"))
    with torch.no_grad():
        net.classifier.weight.copy_(torch.from_numpy(W.copy()))
        net.classifier.bias.copy_(torch.from_numpy(b.copy()))

    def write(path: Path) -> None:
        net.save_pretrained(path)
        tokenizer.save_pretrained(path)

    return write_dir_atomically(out_dir, write)
