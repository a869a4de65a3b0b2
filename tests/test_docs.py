"""The repo's own Markdown links: every relative link names a file that exists, and every #anchor a heading.

README and BENCHMARKS link to each other's sections by GitHub's heading anchors; a renamed heading
otherwise breaks them silently.
"""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
DOCS = ["README.md", "BENCHMARKS.md"]
LINK = re.compile(r"\]\(([^)\s]*)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but '-' and '_' dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set:
    found, seen, fenced = set(), {}, False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else re.match(r"#{1,6} (.+)", line)
        if match:
            base = slug(match.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken_links(doc: Path) -> list:
    text = doc.read_text(encoding="utf8")
    bad = []
    for number, line in enumerate(text.splitlines(), 1):
        for target in LINK.findall(line):
            if "://" in target or target.startswith("mailto:"):
                continue
            path, _, fragment = target.partition("#")
            linked = doc if not path else (doc.parent / path)
            if not linked.exists():
                bad.append(f"{doc.name}:{number}: {target} (no file {path})")
            elif fragment and linked.suffix == ".md":
                if fragment not in anchors(linked.read_text(encoding="utf8")):
                    bad.append(f"{doc.name}:{number}: {target} (no heading #{fragment} in {linked.name})")
    return bad


def test_slug_follows_githubs_rule():
    assert slug("FGM's second seed: started, stopped unscored (CPU, session 29)") == (
        "fgms-second-seed-started-stopped-unscored-cpu-session-29"
    )
    assert slug("Batches of ~100 padded words for 2 epochs") == "batches-of-100-padded-words-for-2-epochs"
    assert slug("encoder_lr_decay 0.8") == "encoder_lr_decay-08"
    assert anchors("# A\n```\n# not a heading\n```\n## A\n") == {"a", "a-1"}


def test_broken_links_are_found(tmp_path):
    (tmp_path / "B.md").write_text("# Some section\n")
    doc = tmp_path / "A.md"
    doc.write_text("# Top\n[ok](B.md#some-section) [ok](#top) [web](https://x.org/#y)\n"
                   "[gone](B.md#other) [missing](C.md)\n")
    assert broken_links(doc) == [
        "A.md:3: B.md#other (no heading #other in B.md)",
        "A.md:3: C.md (no file C.md)",
    ]


@pytest.mark.parametrize("name", DOCS)
def test_repo_docs_links_resolve(name):
    assert broken_links(ROOT / name) == []
