"""Mention replacement: a training-data augmenter for spaCy corpora (`[corpora.train.augmenter]`).

Each entity mention of the chosen labels is, with probability `level`, swapped for another mention
of the same label seen in the training data ("Barack Obama" -> "Angela Merkel", both PER). The rare
types (GMB's MISC: 963 train entities) then appear in many more contexts than the corpus holds,
which simple NER augmentation studies found helps rare and low-resource types (Dai & Adel 2020,
"An Analysis of Simple Data Augmentation for Named Entity Recognition").

The pool of mentions is filled from the examples the augmenter itself sees, as it sees them, so it
needs no extra path in the config: a mention is replaced by one seen in an earlier example (never
while the pool holds none of its label). `spacy train` reads the whole training corpus in
`initialize` before the first update, so the pool is complete by then. The augmented example replaces the
original (the number of examples per epoch, and so the learning-rate schedule, is unchanged).
Random choices use Python's `random`, which `spacy train` seeds from `[system] seed`.

Only entities, sentence starts and `doc.cats` are carried over: an example whose reference has
other annotation (tags, lemmas, a parse, span groups) is refused with an error rather than
silently stripped.
"""
import random
from functools import partial
from typing import Callable, Dict, FrozenSet, Iterator, List, Optional, Set, Tuple

from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import registry

from .pipe import check_number

Mention = Tuple[Tuple[str, ...], Tuple[bool, ...]]  # words, and whether each is followed by a space

# Token annotation the augmenter cannot carry into a replaced mention: refused, never dropped.
_REFUSED = ("TAG", "POS", "MORPH", "LEMMA", "DEP", "ENT_KB_ID")


class MentionPool:
    """Distinct mentions per label, in the order first seen."""

    def __init__(self) -> None:
        self._seen: Dict[str, Set[Mention]] = {}
        self._items: Dict[str, List[Mention]] = {}

    def add(self, label: str, mention: Mention) -> None:
        seen = self._seen.setdefault(label, set())
        if mention not in seen:
            seen.add(mention)
            self._items.setdefault(label, []).append(mention)

    def sample(self, label: str) -> Mention:
        return random.choice(self._items[label])

    def count(self, label: str) -> int:
        return len(self._items.get(label, ()))


@registry.augmenters("spacy-ner-bert.mention_replace.v1")
def create_mention_replace_augmenter(
    level: float, labels: Optional[List[str]] = None
) -> Callable[[Language, Example], Iterator[Example]]:
    """Create an augmenter that swaps entity mentions for other mentions of the same label.

    level (float): The probability, per mention, that it is replaced (0 leaves the data as it is).
    labels (Optional[List[str]]): The entity labels to replace, e.g. ["MISC"]; None: all.
    RETURNS (Callable[[Language, Example], Iterator[Example]]): The augmenter.
    """
    check_number("level", level, lambda x: 0.0 <= x <= 1.0, "a probability in [0, 1]", owner="mention_replace")
    if labels is not None:
        if not isinstance(labels, (list, tuple)) or not labels or not all(isinstance(x, str) and x for x in labels):
            raise ValueError(
                f"[mention_replace] labels must be null or a non-empty list of entity labels, got {labels!r}"
            )
        labels = frozenset(labels)
    return partial(mention_replace_augmenter, level=float(level), labels=labels, pool=MentionPool())


def mention_replace_augmenter(
    nlp: Language, example: Example, *, level: float, labels: Optional[FrozenSet[str]], pool: MentionPool
) -> Iterator[Example]:
    """Yield `example`, or a copy of it with some mentions replaced from `pool` (see the module)."""
    ref = example.reference
    mentions = [ent for ent in ref.ents if labels is None or ent.label_ in labels]
    # replacements come from the mentions seen before this example; its own join the pool after
    chosen = [
        (ent, pool.sample(ent.label_))
        for ent in mentions
        if level > 0 and pool.count(ent.label_) and random.random() < level  # level 0: no draw at all
    ]
    for ent in mentions:
        pool.add(ent.label_, _mention(ent))
    if not chosen:
        yield example
        return
    _refuse_other_annotation(ref)
    words: List[str] = []
    spaces: List[bool] = []
    tags: List[str] = []
    sent_starts: List[Optional[bool]] = []
    has_sents = ref.has_annotation("SENT_START")
    start = 0
    for ent, (new_words, new_spaces) in chosen:
        _copy_tokens(ref[start : ent.start], words, spaces, tags, sent_starts)
        words.extend(new_words)
        # the mention's own spacing inside it; the original's after its last word
        spaces.extend(list(new_spaces[:-1]) + [bool(ent[-1].whitespace_)])
        tags.extend([f"B-{ent.label_}"] + [f"I-{ent.label_}"] * (len(new_words) - 1))
        sent_starts.extend([ent[0].is_sent_start] + [False if has_sents else None] * (len(new_words) - 1))
        start = ent.end
    _copy_tokens(ref[start:], words, spaces, tags, sent_starts)
    new_ref = Doc(ref.vocab, words=words, spaces=spaces, ents=tags, sent_starts=sent_starts)
    new_ref.cats = dict(ref.cats)
    yield Example(nlp.make_doc(new_ref.text), new_ref)


def _mention(ent) -> Mention:
    return tuple(t.text for t in ent), tuple(bool(t.whitespace_) for t in ent)


def _copy_tokens(span, words: List[str], spaces: List[bool], tags: List[str], sent_starts: List) -> None:
    for token in span:
        words.append(token.text)
        spaces.append(bool(token.whitespace_))
        iob = token.ent_iob_
        tags.append(iob if iob in ("O", "") else f"{iob}-{token.ent_type_}")
        sent_starts.append(token.is_sent_start)


def _refuse_other_annotation(doc: Doc) -> None:
    found = [attr for attr in _REFUSED if doc.has_annotation(attr)]
    if doc.spans:
        found.append(f"span groups {sorted(doc.spans)}")
    if found:
        raise ValueError(
            "[mention_replace] the augmenter keeps only entities, sentence starts and cats, but a "
            f"training example ({_shorten(doc.text)!r}) also has {', '.join(found)}: it would be lost. "
            "Use the augmenter on an entity-only corpus, or set [corpora.train] augmenter = null."
        )


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
