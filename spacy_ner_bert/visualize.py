"""displaCy rendering of entities, one color per GMB type."""
import warnings
from pathlib import Path
from typing import Iterable

from spacy import displacy
from spacy.tokens import Doc

COLORS = {
    "PER": "#aa9cfc",
    "ORG": "#7aecec",
    "GPE": "#feca74",
    "LOC": "#ff9561",
    "TIME": "#bfe1d9",
    "MISC": "#e4e7d2",
}


def render_page(docs: Iterable[Doc], title: str = "ner_bert entities") -> str:
    """A standalone HTML page with displaCy's entity view of `docs`.

    A sentence with no entity is shown as plain text; displaCy's W006 warning ("No entities to
    visualize found"), meant for a pipeline without NER, is silenced for it, since on a page of test
    sentences some have none. Other warnings pass through.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\[W006\]")
        html = displacy.render(list(docs), style="ent", page=True, options={"colors": COLORS})
    return html.replace("<title>displaCy</title>", f"<title>{title}</title>")


def write_page(docs: Iterable[Doc], path: Path, title: str = "ner_bert entities") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_page(docs, title), encoding="utf8")
    return path
