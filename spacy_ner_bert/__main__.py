"""Command line: `python -m spacy_ner_bert <command>`."""
from pathlib import Path

import typer

app = typer.Typer(help="spacy-ner-bert commands", no_args_is_help=True, add_completion=False)


def _fail(message) -> None:
    """Print `error: message` to stderr and exit with status 1."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _convert(reader, source: Path, out_dir: Path, lang: str) -> None:
    from .checkpoints import CheckpointError, write_pipeline

    try:
        ckpt = reader(source)
    except CheckpointError as err:
        _fail(err)
    try:
        typer.echo("found " + ckpt.describe())
        write_pipeline(ckpt, out_dir, lang=lang)
    except CheckpointError as err:
        _fail(err)
    finally:
        ckpt.cleanup()
    typer.echo(f"wrote spaCy pipeline {out_dir} (spacy.load('{out_dir}'))")


@app.command("convert-nemo")
def convert_nemo(
    source: Path = typer.Argument(..., help="A NeMo .nemo TokenClassificationModel archive"),
    out_dir: Path = typer.Argument(..., help="Pipeline directory to write (must not exist or be empty)"),
    lang: str = typer.Option("en", help="Language of the blank spaCy pipeline"),
):
    """Convert a NeMo .nemo token-classification model (e.g. ner_en_bert) to a spaCy pipeline."""
    from .checkpoints import read_nemo

    _convert(read_nemo, source, out_dir, lang)


@app.command("convert-hf")
def convert_hf(
    source: Path = typer.Argument(..., help="A Hugging Face token-classification directory"),
    out_dir: Path = typer.Argument(..., help="Pipeline directory to write (must not exist or be empty)"),
    lang: str = typer.Option("en", help="Language of the blank spaCy pipeline"),
):
    """Convert a Hugging Face token-classification model (e.g. BertForTokenClassification) to a spaCy pipeline."""
    from .checkpoints import read_hf

    _convert(read_hf, source, out_dir, lang)


@app.command("export-hf")
def export_hf_command(
    pipeline: Path = typer.Argument(..., help="A spaCy pipeline directory with a trained ner_bert component"),
    out_dir: Path = typer.Argument(..., help="HF directory to write (must not exist or be empty)"),
    component: str = typer.Option("ner_bert", help="Name of the ner_bert component"),
):
    """Export a ner_bert component (linear head, no casing features) as a HF token-classification directory."""
    import spacy

    from .checkpoints import CheckpointError, export_hf

    if not pipeline.is_dir():
        _fail(f"{pipeline}: not a pipeline directory")
    try:
        export_hf(spacy.load(pipeline), out_dir, component=component)
    except CheckpointError as err:
        _fail(err)
    typer.echo(f"wrote {out_dir} (AutoModelForTokenClassification.from_pretrained('{out_dir}'))")


if __name__ == "__main__":
    app()
