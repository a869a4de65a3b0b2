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


@app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train_command(
    ctx: typer.Context,
    config_path: Path = typer.Argument(..., help="The training config (as for spacy train)"),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder: model-best, model-last, checkpoint"),
    gpu_id: int = typer.Option(-1, "--gpu-id", "-g", help="GPU id, -1 for CPU"),
    resume: bool = typer.Option(False, "--resume", help="Continue the run whose checkpoint is in --output"),
    auto_resume: bool = typer.Option(
        False, "--auto-resume", help="Continue the run if --output holds its checkpoint, else start it"
    ),
    checkpoint_every: int = typer.Option(1000, help="Save a checkpoint every this many steps (0: only when stopped)"),
    max_minutes: float = typer.Option(None, help="Stop with a checkpoint after the first step past this many minutes"),
    code: Path = typer.Option(None, "--code", "-c", help="Python file with registered functions to import (as spacy train's)"),
    average_from: int = typer.Option(
        None, help="Tail averaging: snapshot the parameters from this step on; model-averaged = their mean"
    ),
    average_every: int = typer.Option(1000, help="Steps between tail-averaging snapshots"),
):
    """spacy train that can stop and resume: the same run, with its state saved every
    --checkpoint-every steps, on SIGTERM/SIGINT and at --max-minutes. Config overrides as for spacy
    train (--section.key value). Exit status: 0 finished, 3 stopped with a checkpoint (--resume or
    --auto-resume goes on). With --average-from, a finished run also writes model-averaged: the mean
    of the parameters snapshotted every --average-every steps from that step on, and the final ones."""
    from spacy.cli._util import import_code, parse_config_overrides, show_validation_error

    from .resume import ResumeError, train

    try:
        overrides = parse_config_overrides(list(ctx.args))
    except SystemExit:
        _fail(f"config overrides must be --section.key value pairs, not {' '.join(ctx.args)!r}")
    if resume and auto_resume:
        _fail("--resume and --auto-resume: give one of them")
    if code is not None and not code.is_file():
        _fail(f"{code}: --code file not found")
    import_code(code)
    try:
        with show_validation_error(config_path):
            finished = train(config_path, output, overrides=overrides, use_gpu=gpu_id,
                             resume="auto" if auto_resume else resume, checkpoint_every=checkpoint_every,
                             max_minutes=max_minutes, average_from=average_from, average_every=average_every)
    except ResumeError as err:
        _fail(err)
    raise typer.Exit(0 if finished else 3)


if __name__ == "__main__":
    app()
