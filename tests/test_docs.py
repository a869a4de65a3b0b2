"""The repo's own Markdown links: every relative link names a file that exists, and every #anchor a heading.

README and BENCHMARKS link to each other's sections by GitHub's heading anchors; a renamed heading
otherwise breaks them silently. A link to a git-ignored path (an asset the workflow fetches, e.g. in
weasel's generated Assets table) names a file that exists only after the workflow ran: it is not checked.
"""
import re
import subprocess
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


def git_ignored(path: Path) -> bool:
    """True where git ignores `path` (False outside a git checkout)."""
    try:
        run = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=path.parent if path.parent.exists()
                             else ROOT, capture_output=True)
    except OSError:
        return False
    return run.returncode == 0


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
                if git_ignored(linked):
                    continue
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
    # workflow outputs are git-ignored, so a link to one is not reported before the workflow made it
    assert git_ignored(ROOT / "corpus" / "not-made-yet.spacy")
    assert not git_ignored(ROOT / "spacy_ner_bert" / "not-there.py")


@pytest.mark.parametrize("name", DOCS)
def test_repo_docs_links_resolve(name):
    assert broken_links(ROOT / name) == []
