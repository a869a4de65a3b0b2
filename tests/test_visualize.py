"""The displaCy page renders in a real headless browser (Debian's chromium)."""
import shutil
import struct
import subprocess
import warnings

import pytest
import spacy
from spacy.tokens import Doc

from spacy_ner_bert.visualize import COLORS, render_page, write_page

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def page(tmp_path):
    vocab = spacy.blank("en").vocab
    docs = [
        Doc(vocab, words=["Obama", "visited", "Paris", "in", "March", "."],
            ents=["B-PER", "O", "B-LOC", "O", "B-TIME", "O"]),
        Doc(vocab, words=["The", "United", "Nations", "met", "in", "Iraq"],
            ents=["O", "B-ORG", "I-ORG", "O", "O", "B-GPE"]),
    ]
    return write_page(docs, tmp_path / "page.html")


def test_page_has_six_colors(page):
    html = page.read_text()
    for label in ("PER", "LOC", "TIME", "ORG", "GPE"):
        assert COLORS[label] in html
    assert set(COLORS) == {"PER", "ORG", "GPE", "LOC", "TIME", "MISC"}


def test_sentence_without_entities_is_shown_without_w006():
    vocab = spacy.blank("en").vocab
    docs = [Doc(vocab, words=["Obama", "spoke", "."], ents=["B-PER", "O", "O"]),
            Doc(vocab, words=["Nothing", "happened", "today", "."])]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        html = render_page(docs)
        warnings.warn("a later warning still shows", UserWarning)
    assert "Nothing" in html and "happened" in html
    assert [str(w.message) for w in caught] == ["a later warning still shows"]


@pytest.mark.browser
@pytest.mark.skipif(BROWSER is None, reason="no headless browser installed (apt-get install chromium)")
def test_page_renders_in_chromium(page, tmp_path):
    profile = tmp_path / "profile"
    dom = subprocess.run(
        [BROWSER, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<mark") == 5
    assert "United Nations" in dom.stdout and "ORG" in dom.stdout
    shot = tmp_path / "shot.png"
    out = subprocess.run(
        [BROWSER, *FLAGS, f"--user-data-dir={profile}", "--window-size=1000,700",
         f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0 and shot.is_file(), out.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1000, 700)
