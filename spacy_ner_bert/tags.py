"""The IOB tag scheme: tags <-> entity types, allowed transitions, BILUO -> IOB."""
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy

OUTSIDE = "O"
# Marks a token whose gold tag is missing (unannotated or unalignable): it is left out of the loss.
MISSING = -1


class IOBTags:
    """An IOB tag set: `O` at index 0, then `B-X`/`I-X` pairs, each entity type with both.

    O is always index 0 so that layers can force it without knowing the label set (tokens
    with no wordpiece are tagged O by the model itself).
    """

    def __init__(self, tags: Sequence[str]):
        tags = list(tags)
        _validate_tags(tags)
        self.tags: Tuple[str, ...] = tuple(tags)
        self.index: Dict[str, int] = {tag: i for i, tag in enumerate(tags)}
        self.entity_types: Tuple[str, ...] = tuple(
            sorted({tag[2:] for tag in tags if tag != OUTSIDE})
        )
        types = [tag[2:] if tag != OUTSIDE else "" for tag in tags]
        prefixes = [tag[0] for tag in tags]
        n = len(tags)
        self.is_begin = numpy.array([p == "B" for p in prefixes], dtype=bool)
        self.is_inside = numpy.array([p == "I" for p in prefixes], dtype=bool)
        # allowed[i, j]: may tag j follow tag i? I-X only after B-X or I-X.
        allowed = numpy.ones((n, n), dtype=bool)
        for j in range(n):
            if prefixes[j] == "I":
                allowed[:, j] = [types[i] == types[j] and prefixes[i] in "BI" for i in range(n)]
        self.allowed = allowed
        # An entity cannot start with I-: the first tag of a doc is B-X or O.
        self.allowed_start = ~self.is_inside
        self.type_of = numpy.array(types, dtype=object)

    @classmethod
    def from_entity_types(cls, types: Iterable[str]) -> "IOBTags":
        """Build NeMo's order: O, then B- of each sorted type, then I- of each.

        types (Iterable[str]): Entity types such as "PER" (or IOB tags, validated).
        RETURNS (IOBTags): The tag set.
        """
        types = list(types)
        if any(_looks_like_tag(t) for t in types):
            return cls.from_tags(types)
        for t in types:
            if not isinstance(t, str) or not t or t != t.strip():
                raise ValueError(f"[ner_bert] Invalid entity label {t!r}: expected a non-empty string.")
        unique = sorted(set(types))
        return cls([OUTSIDE] + [f"B-{t}" for t in unique] + [f"I-{t}" for t in unique])

    @classmethod
    def from_tags(cls, tags: Iterable[str]) -> "IOBTags":
        """Build from IOB tag names in any order; O is moved to index 0, the rest keep theirs.

        tags (Iterable[str]): Tag names such as "O", "B-PER", "I-PER".
        RETURNS (IOBTags): The tag set.
        """
        tags = list(tags)
        if OUTSIDE not in tags:
            tags = [OUTSIDE] + tags
        return cls([OUTSIDE] + [t for t in tags if t != OUTSIDE])

    def __len__(self) -> int:
        return len(self.tags)

    def __eq__(self, other) -> bool:
        return isinstance(other, IOBTags) and self.tags == other.tags

    def biluo_to_ids(self, biluo: Sequence[Optional[str]]) -> numpy.ndarray:
        """Map BILUO tags (as `Example.get_aligned_ner` gives them) to IOB tag ids.

        biluo (Sequence[Optional[str]]): One tag per token; None or "-" where missing.
        RETURNS (numpy.ndarray): Tag ids, MISSING (-1) where the gold tag is missing.
        """
        ids = numpy.full(len(biluo), MISSING, dtype="int32")
        for i, tag in enumerate(biluo):
            if tag is None or tag == "-" or tag == "":
                continue
            if tag == OUTSIDE:
                ids[i] = 0
                continue
            prefix, label = tag[0], tag[2:]
            iob = ("B-" if prefix in "BU" else "I-") + label
            if iob not in self.index:
                raise KeyError(label)
            ids[i] = self.index[iob]
        return ids

    def is_valid(self, ids: Sequence[int]) -> bool:
        """Whether a tag sequence is a valid IOB sequence (no I-X without B-X/I-X before it)."""
        ids = numpy.asarray(ids, dtype="int64")
        if len(ids) == 0:
            return True
        if not self.allowed_start[ids[0]]:
            return False
        return bool(self.allowed[ids[:-1], ids[1:]].all())

    def spans(self, ids: Sequence[int]) -> List[Tuple[int, int, str]]:
        """Entity spans of a valid IOB sequence, vectorized.

        ids (Sequence[int]): Tag ids of one doc.
        RETURNS (List[Tuple[int, int, str]]): (start, end, label) token offsets.
        """
        ids = numpy.asarray(ids, dtype="int64")
        if len(ids) == 0:
            return []
        starts = numpy.flatnonzero(self.is_begin[ids])
        if not len(starts):
            return []
        # An entity runs from its B- to the first later token that is not I-.
        not_inside = numpy.flatnonzero(~self.is_inside[ids])
        ends_pos = numpy.searchsorted(not_inside, starts, side="right")
        ends = numpy.append(not_inside, len(ids))[ends_pos]
        labels = self.type_of[ids[starts]]
        return [(int(s), int(e), str(lab)) for s, e, lab in zip(starts, ends, labels)]


def _looks_like_tag(label: str) -> bool:
    return isinstance(label, str) and (label == OUTSIDE or label[:2] in ("B-", "I-"))


def _validate_tags(tags: List[str]) -> None:
    if not tags or tags[0] != OUTSIDE:
        raise ValueError(f"[ner_bert] The tag set must start with 'O', got {tags[:3]!r}.")
    seen = set()
    for tag in tags:
        if not isinstance(tag, str):
            raise ValueError(f"[ner_bert] Tag {tag!r} is not a string.")
        if tag in seen:
            raise ValueError(f"[ner_bert] Tag {tag!r} occurs twice in the tag set.")
        seen.add(tag)
        if tag != OUTSIDE and (tag[:2] not in ("B-", "I-") or len(tag) < 3):
            raise ValueError(
                f"[ner_bert] Tag {tag!r} is not an IOB tag: expected 'O', 'B-<type>' or 'I-<type>'."
            )
    begins = {t[2:] for t in tags if t.startswith("B-")}
    insides = {t[2:] for t in tags if t.startswith("I-")}
    if insides - begins:
        raise ValueError(
            "[ner_bert] The tag set has I- tags without a B- tag for "
            f"{sorted(insides - begins)}: an entity of that type could never start."
        )
