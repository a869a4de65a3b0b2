import os

import pytest

from tiny_bert import make_tiny_bert

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _has_gpu() -> bool:
    try:
        import cupy  # noqa: F401
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _has_gpu():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU with cupy")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """Path of a tiny random BERT in HF format (hidden 32, 2 layers), built once per session."""
    return str(make_tiny_bert(tmp_path_factory.mktemp("tiny_bert")))


@pytest.fixture
def corpus(tmp_path):
    """The trainer tests' corpus folder: train.spacy (TRAIN_DATA four times, 20 docs of 6-9 words) and
    dev.spacy (its first 5)."""
    import spacy
    from spacy.tokens import DocBin

    from util import make_examples

    docs = [eg.reference for eg in make_examples(spacy.blank("en"))] * 4
    DocBin(docs=docs).to_disk(tmp_path / "train.spacy")
    DocBin(docs=docs[:5]).to_disk(tmp_path / "dev.spacy")
    return tmp_path
