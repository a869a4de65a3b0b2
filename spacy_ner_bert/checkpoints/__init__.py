"""Importers of trained token-classification checkpoints: Hugging Face directories and NeMo .nemo files."""
from pathlib import Path

from .common import CheckpointError, ImportedCheckpoint, load_into_pipe, model_config, write_pipeline
from .export import export_hf
from .hf import read_hf
from .nemo import read_nemo


def read_checkpoint(path) -> ImportedCheckpoint:
    """Read a HF token-classification directory or a .nemo file (by what `path` is)."""
    path = Path(path)
    if path.is_dir():
        return read_hf(path)
    if path.is_file():
        return read_nemo(path)
    raise CheckpointError(f"{path}: no such file or directory")


__all__ = ["CheckpointError", "ImportedCheckpoint", "read_checkpoint", "read_hf", "read_nemo",
           "load_into_pipe", "model_config", "write_pipeline", "export_hf"]
