"""Get the GMB zip (local copy or public URL), check its sha256 and extract the NeMo files."""
from pathlib import Path
from typing import List, Optional

import typer

from spacy_ner_bert.assets import extract_flat, fetch_archive

FILES = ["text_train.txt", "labels_train.txt", "text_dev.txt", "labels_dev.txt"]


def main(
    dest: Path = typer.Argument(..., help="Where the zip goes, e.g. assets/gmb_v_2.2.0_clean.zip"),
    out_dir: Path = typer.Argument(..., help="Where the text/labels files are extracted"),
    sha256: str = typer.Option(..., help="Expected sha256 of the zip"),
    local_dir: List[Path] = typer.Option([], help="Folders that may hold the zip (offline)"),
    url: Optional[str] = typer.Option(None, help="Public URL, used when no local copy exists ('none': never download)"),
    labels_file: Optional[Path] = typer.Option(None, help="label_ids.csv to copy beside the data"),
):
    """Fetch and unpack the data for the workflow."""
    if url and url.lower() == "none":
        url = None
    try:
        archive = fetch_archive(dest, sha256=sha256, local_dirs=local_dir, url=url)
        written = extract_flat(archive, out_dir, FILES)
    except (FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    if labels_file is not None:
        target = out_dir / "label_ids.csv"
        target.write_bytes(Path(labels_file).read_bytes())
        written.append(target)
    typer.echo("extracted: " + ", ".join(str(p) for p in written))


if __name__ == "__main__":
    typer.run(main)
