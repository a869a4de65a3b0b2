"""Render N test documents with the trained pipeline's entities to a displaCy HTML page."""
from pathlib import Path

import spacy
import typer
from spacy.tokens import DocBin

from spacy_ner_bert.corpus import unannotated_copy
from spacy_ner_bert.visualize import write_page


def main(
    model: Path = typer.Argument(..., help="Trained pipeline directory"),
    test_path: Path = typer.Argument(..., help="Test .spacy file"),
    output: Path = typer.Argument(..., help="HTML page to write"),
    n_docs: int = typer.Option(50, help="How many test documents to render"),
):
    """Predict entities for the first N test documents and write them as one page."""
    nlp = spacy.load(model)
    gold = list(DocBin().from_disk(test_path).get_docs(nlp.vocab))[:n_docs]
    docs = nlp.pipe(unannotated_copy(d) for d in gold)
    write_page(docs, output, title=f"ner_bert on {test_path.name}")
    typer.echo(f"wrote {output} ({len(gold)} docs)")


if __name__ == "__main__":
    typer.run(main)
