"""IOB readers (NeMo text+labels files, CoNLL columns) -> Docs / DocBin, with line-precise errors."""
import os
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from spacy.tokens import Doc, DocBin
from spacy.vocab import Vocab

Sentence = Tuple[List[str], List[str]]  # words, IOB tags


class CorpusError(ValueError):
    """Malformed input data; the message names the file and line."""


@dataclass
class ConversionReport:
    """What a conversion read, and what it repaired."""

    sentences: int = 0
    words: int = 0
    entities: Dict[str, int] = field(default_factory=dict)
    repairs: int = 0
    repair_examples: List[str] = field(default_factory=list)

    def add(self, words: List[str], tags: List[str]) -> None:
        self.sentences += 1
        self.words += len(words)
        for tag in tags:
            if tag.startswith("B-"):
                self.entities[tag[2:]] = self.entities.get(tag[2:], 0) + 1

    def note_repair(self, where: str) -> None:
        self.repairs += 1
        if len(self.repair_examples) < 5:
            self.repair_examples.append(where)

    def summary(self) -> str:
        ents = ", ".join(f"{k} {v:,}" for k, v in sorted(self.entities.items()))
        text = f"{self.sentences:,} sentences, {self.words:,} words; entities: {ents or 'none'}"
        if self.repairs:
            text += (
                f"; repaired {self.repairs:,} I- tags that did not continue an entity "
                f"(made B-), e.g. {'; '.join(self.repair_examples)}"
            )
        return text


def read_lines(path: Path) -> List[str]:
    """Lines of a UTF-8 text file with LF endings; errors name the file and line.

    path (Path): The file.
    RETURNS (List[str]): Its lines, without line endings (a final newline is optional).
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: file not found")
    data = path.read_bytes()
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    lines = []
    for i, raw in enumerate(raw_lines, start=1):
        if raw.endswith(b"\r"):
            raise CorpusError(
                f"{path}:{i}: CRLF line ending; convert the file to LF endings (e.g. dos2unix)"
            )
        try:
            lines.append(raw.decode("utf8"))
        except UnicodeDecodeError as err:
            raise CorpusError(
                f"{path}:{i}: invalid UTF-8 at byte {err.start} of the line ({raw[err.start:err.start + 4]!r})"
            ) from None
    return lines


def check_tags(
    tags: List[str],
    where: Callable[[int], str],
    allowed: Optional[Sequence[str]],
    report: ConversionReport,
    repair: bool,
) -> List[str]:
    """Validate IOB tags of one sentence; repair (or reject) I-X that does not continue X.

    tags (List[str]): The sentence's tags.
    where (Callable[[int], str]): Location text ("file:line") for the tag at an index.
    allowed (Optional[Sequence[str]]): The label set; None accepts any well-formed IOB tag.
    report (ConversionReport): Counts repairs.
    repair (bool): Turn a stray I-X into B-X (counted); if False, raise.
    RETURNS (List[str]): The (repaired) tags.
    """
    out = list(tags)
    prev = "O"
    for j, tag in enumerate(out):
        if allowed is not None and tag not in allowed:
            raise CorpusError(f"{where(j)}: unknown label {tag!r} (known: {', '.join(allowed)})")
        if tag != "O" and (tag[:2] not in ("B-", "I-") or len(tag) < 3):
            raise CorpusError(f"{where(j)}: {tag!r} is not an IOB label (O, B-<type> or I-<type>)")
        if tag.startswith("I-") and prev[2:] != tag[2:]:
            if not repair:
                raise CorpusError(f"{where(j)}: {tag!r} follows {prev!r}: an entity must start with B-")
            out[j] = "B-" + tag[2:]
            report.note_repair(f"{where(j)} {prev} {tag}")
        prev = out[j]
    return out


def read_nemo(
    text_path: Path,
    labels_path: Path,
    *,
    allowed: Optional[Sequence[str]] = None,
    repair: bool = True,
) -> Tuple[List[Sentence], ConversionReport]:
    """Read NeMo's token-classification format: one sentence a line, one label per word.

    text_path (Path): text_*.txt, words separated by spaces.
    labels_path (Path): labels_*.txt, one IOB label per word of the same line.
    allowed (Optional[Sequence[str]]): The label set (e.g. NeMo's label_ids.csv); None: any IOB.
    repair (bool): Make an I-X that does not continue an X entity B-X (counted), else raise.
    RETURNS (Tuple[List[Sentence], ConversionReport]): Sentences and what was read.
    """
    texts, labels = read_lines(text_path), read_lines(labels_path)
    if len(texts) != len(labels):
        raise CorpusError(
            f"{text_path} has {len(texts):,} lines but {labels_path} has {len(labels):,}: "
            "they must have one line per sentence each"
        )
    report = ConversionReport()
    sentences: List[Sentence] = []
    for i, (text, label_line) in enumerate(zip(texts, labels), start=1):
        words, tags = text.split(), label_line.split()
        if not words:
            raise CorpusError(f"{text_path}:{i}: blank line (every line must hold one sentence)")
        if not tags:
            raise CorpusError(f"{labels_path}:{i}: blank line (every line must hold one label per word)")
        if len(words) != len(tags):
            raise CorpusError(
                f"{text_path}:{i} has {len(words)} words but {labels_path}:{i} has {len(tags)} labels"
            )
        tags = check_tags(tags, lambda j: f"{labels_path}:{i} (word {j + 1})", allowed, report, repair)
        report.add(words, tags)
        sentences.append((words, tags))
    return sentences, report


def read_conll(
    path: Path, *, allowed: Optional[Sequence[str]] = None, repair: bool = True
) -> Tuple[List[Sentence], ConversionReport]:
    """Read CoNLL-style IOB: one token a line, the word first and the label last, blank lines
    between sentences; `-DOCSTART-` lines are skipped.

    path (Path): The file.
    allowed (Optional[Sequence[str]]): The label set; None accepts any well-formed IOB tag.
    repair (bool): Make an I-X that does not continue an X entity B-X (counted), else raise.
    RETURNS (Tuple[List[Sentence], ConversionReport]): Sentences and what was read.
    """
    report = ConversionReport()
    sentences: List[Sentence] = []
    words: List[str] = []
    tags: List[str] = []
    lines_of: List[int] = []

    def flush() -> None:
        if words:
            fixed = check_tags(tags, lambda j: f"{path}:{lines_of[j]}", allowed, report, repair)
            report.add(words, fixed)
            sentences.append((list(words), fixed))
        words.clear(), tags.clear(), lines_of.clear()

    for i, line in enumerate(read_lines(path), start=1):
        cols = line.split()
        if not cols:
            flush()
            continue
        if cols[0] == "-DOCSTART-":
            continue
        if len(cols) < 2:
            raise CorpusError(f"{path}:{i}: expected a word and a label, found {line!r}")
        words.append(cols[0])
        tags.append(cols[-1])
        lines_of.append(i)
    flush()
    return sentences, report


def groups_to_docs(groups: Iterable[Sequence[Sentence]], vocab: Vocab) -> List[Doc]:
    """One Doc per group of consecutive sentences (group_sentences); its tokens are exactly the
    given words, its entities the tags, and each sentence starts a sentence.

    With groups of more than one sentence the encoder sees the neighbouring sentences as context
    (its strided windows span sentence boundaries), as it does on a user's multi-sentence documents.
    """
    docs = []
    for group in groups:
        words = [w for ws, _ in group for w in ws]
        tags = [t for _, ts in group for t in ts]
        sent_starts = [i == 0 for ws, _ in group for i in range(len(ws))]
        spaces = [True] * (len(words) - 1) + [False]
        docs.append(Doc(vocab, words=words, spaces=spaces, ents=tags, sent_starts=sent_starts))
    return docs


def group_sentences(sentences: Sequence[Sentence], size: int) -> List[List[Sentence]]:
    """Consecutive runs of `size` sentences, in order (the last run may be shorter)."""
    if size < 1:
        raise ValueError(f"doc_sents (sentences per doc) must be at least 1, got {size}")
    return [list(sentences[i : i + size]) for i in range(0, len(sentences), size)]


def unannotated_copy(doc: Doc) -> Doc:
    """The same words and spaces as `doc`, without annotation: input for prediction."""
    return Doc(doc.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc])


def split_train_dev(
    items: Sequence, dev_size: int, seed: int
) -> Tuple[List, List]:
    """Shuffle with a fixed seed and hold out `dev_size` items for validation.

    RETURNS (Tuple[List, List]): (train, dev), each in the original order.
    """
    if not 0 <= dev_size < len(items):
        raise ValueError(f"dev_size must be in [0, {len(items)}), got {dev_size}")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    dev_ids = set(order[:dev_size])
    train = [x for i, x in enumerate(items) if i not in dev_ids]
    dev = [x for i, x in enumerate(items) if i in dev_ids]
    return train, dev


def write_docbin(docs: Iterable[Doc], path: Path) -> None:
    """Write a DocBin atomically: a failed write leaves no partial file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = DocBin(attrs=["ORTH", "SPACY", "ENT_IOB", "ENT_TYPE", "SENT_START"], docs=docs, store_user_data=False).to_bytes()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_label_file(path: Path) -> List[str]:
    """NeMo's label_ids.csv: one label per line, line number = id, 'O' first."""
    labels = [line.strip() for line in read_lines(path)]
    for i, label in enumerate(labels, start=1):
        if not label:
            raise CorpusError(f"{path}:{i}: blank line in the label file")
    if not labels or labels[0] != "O":
        raise CorpusError(f"{path}:1: the first label must be 'O'")
    return labels


def read_split(
    input_dir: Path, split: str, fmt: str, allowed: Optional[Sequence[str]], repair: bool
) -> Tuple[List[Sentence], ConversionReport]:
    """Read one split: NeMo's text_<split>.txt + labels_<split>.txt, or CoNLL's <split>.conll."""
    input_dir = Path(input_dir)
    if fmt == "nemo":
        return read_nemo(
            input_dir / f"text_{split}.txt", input_dir / f"labels_{split}.txt", allowed=allowed, repair=repair
        )
    if fmt == "conll":
        return read_conll(input_dir / f"{split}.conll", allowed=allowed, repair=repair)
    raise ValueError(f"unknown format {fmt!r}: use 'nemo' or 'conll'")


def convert_corpus(
    input_dir: Path,
    output_dir: Path,
    *,
    fmt: str = "nemo",
    train_split: str = "train",
    test_split: str = "dev",
    labels_file: Optional[Path] = None,
    dev_size: int = 2000,
    seed: int = 0,
    train_limit: int = 0,
    test_limit: int = 0,
    doc_sents: int = 1,
    repair: bool = True,
    log: Callable[[str], None] = print,
) -> Dict[str, ConversionReport]:
    """Convert IOB data to train.spacy, dev.spacy (held out of train) and test.spacy.

    Consecutive sentences are grouped into docs of `doc_sents` (1: one doc per sentence). The
    train split's docs are shuffled with `seed` and docs holding `dev_size` sentences (rounded
    up to whole docs) are held out for checkpoint selection; the test split (NeMo's "dev") is
    kept whole for the final score. Everything is read and checked before anything is written,
    and each file is written atomically.

    RETURNS (Dict[str, ConversionReport]): What was read, per output file.
    """
    allowed = read_label_file(labels_file) if labels_file else None
    train_all, train_report = read_split(input_dir, train_split, fmt, allowed, repair)
    log(f"read {train_split}: {train_report.summary()}")
    test, test_report = read_split(input_dir, test_split, fmt, allowed, repair)
    log(f"read {test_split}: {test_report.summary()}")
    if train_limit:
        train_all = train_all[: train_limit + dev_size]
    if test_limit:
        test = test[:test_limit]
    # Whole docs are held out, so no validation sentence is another train doc's context.
    groups = group_sentences(train_all, doc_sents)
    dev_docs = -(-dev_size // doc_sents)
    if dev_size < 0 or dev_docs >= len(groups):
        raise ValueError(
            f"dev_size must be in [0, {len(train_all)}) and leave at least one train doc: "
            f"got {dev_size} of {len(train_all)} sentences in {len(groups)} docs of {doc_sents}"
        )
    train_groups, dev_groups = split_train_dev(groups, dev_docs, seed)
    splits = {"train": train_groups, "dev": dev_groups, "test": group_sentences(test, doc_sents)}
    vocab = Vocab()
    reports = {}
    for name, split_groups in splits.items():
        report = ConversionReport()
        for words, tags in (sentence for group in split_groups for sentence in group):
            report.add(words, tags)
        reports[name] = report
    outputs = {name: Path(output_dir) / f"{name}.spacy" for name in splits}
    for name, split_groups in splits.items():
        write_docbin(groups_to_docs(split_groups, vocab), outputs[name])
        log(f"wrote {outputs[name]}: {reports[name].summary()}")
    reports["read_train"], reports["read_test"] = train_report, test_report
    return reports
