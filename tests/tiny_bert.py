"""A tiny randomly initialized BERT (hidden 32, 2 layers) with its own wordpiece vocab: no hub."""
import string
from pathlib import Path

WORDS = """the a an of in on at to and for with from by is was were be has have had said
president minister government army police city country capital people year years week today
monday tuesday friday january march june december morning night new york london paris berlin
john mary smith obama bush putin merkel united nations states kingdom union european council
bank company google apple microsoft university war election world cup olympic games hurricane
katrina iraq iran china russia france germany britain america u.s. baghdad washington moscow
tokyo beijing officials troops killed attack says will visit met talks""".split()
PIECES = ["##s", "##ed", "##ing", "##er", "##ly", "##ion", "##al", "##an", "##ia"]


def build_vocab() -> list:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += list(string.ascii_lowercase) + list(string.digits)
    vocab += [f"##{c}" for c in string.ascii_lowercase + string.digits]
    vocab += list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
    vocab += PIECES
    for w in WORDS:
        vocab += w.replace(".", " . ").split()
    return list(dict.fromkeys(vocab))  # unique, first occurrence wins


def make_tiny_bert(path: Path, *, seed: int = 0, max_position_embeddings: int = 512) -> Path:
    """Write a tiny BERT (model + fast tokenizer) in Hugging Face format to `path`."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab_file = path / "vocab.txt"
    vocab_file.write_text("\n".join(build_vocab()) + "\n", encoding="utf8")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True, model_max_length=512)
    tokenizer.save_pretrained(str(path))
    config = BertConfig(
        vocab_size=len(build_vocab()),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_position_embeddings,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(str(path))
    return path
