"""Gather one training run, trained in pieces, and its scores into one results JSON.

A long CPU run is trained in pieces (`python -m spacy_ner_bert train ... --max-minutes M --auto-resume`,
each appended to one log under `/usr/bin/time -v`, each piece's output preceded by a line that starts
with "=== "). This reads that log: for each piece where it resumed and stopped, its wall time, exit
status and peak RSS; and the validation rows spaCy printed (ENTS_F and TOKEN_MACRO_F by step). With the
scores of the finished run (scripts/calibrate.py --report, scripts/evaluate.py's folder,
benchmarks/bootstrap.py --json) it writes the record kept under benchmarks/results/.

usage: python benchmarks/collect_run.py LOG --out OUT.json [--sessions 37,38] [--calibration C.json]
           [--metrics DIR] [--bootstrap B.json] [--command CMD] [--bootstrap-command CMD] [--note TEXT]
"""
import argparse
import json
import re
import sys
from pathlib import Path
from typing import List, Optional

ANSI = re.compile(r"\x1b\[[0-9;]*m")
ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$")
# wasabi wraps its messages at 80 columns, so a message's words may be split over lines
RESUMED = re.compile(r"Resumed\s+from\s+\S+\s+after\s+step\s+(\d+)")
STOPPED = re.compile(r"Stopped\s+after\s+step\s+(\d+)\s+\(([^)]*)\)")
MAX_MINUTES = re.compile(r"--max-minutes[ =](\S+)")
TIMED = {"Command being timed": "command", "Elapsed (wall clock) time (h:mm:ss or m:ss)": "wall",
         "Exit status": "exit", "Maximum resident set size (kbytes)": "peak_rss_kb"}


def read_log(path: Path) -> dict:
    """The pieces and validation rows of a training log (see the module's docstring).

    path (Path): The log. A piece starts at each line beginning with "=== " (the first piece also
        where the log has no such line before its first output).
    RETURNS (dict): "pieces": one dict per piece: marker (its "=== " line), resumed_after (step or None),
        until_step (step, "end" when the pipeline was saved, None while it runs or when it failed), why
        (the stop's reason), max_minutes, wall, exit, peak_rss_kb (None where /usr/bin/time printed none);
        "validation_rows": {step: {"token_macro_f", "ents_f"}} (fractions, as spaCy's scores).
    """
    pieces: List[dict] = []
    texts: List[List[str]] = []  # each piece's lines, read whole below (wasabi may wrap a message)
    rows = {}
    for number, raw in enumerate(path.read_text(encoding="utf8", errors="replace").splitlines(), start=1):
        line = ANSI.sub("", raw)
        if line.startswith("=== ") or not pieces:
            pieces.append({"marker": line.strip() if line.startswith("=== ") else None, "resumed_after": None,
                           "until_step": None, "why": None, "max_minutes": None, "wall": None, "exit": None,
                           "peak_rss_kb": None})
            texts.append([])
            if line.startswith("=== "):
                continue
        piece = pieces[-1]
        texts[-1].append(line)
        if (m := ROW.match(line)):
            step, ents_f, token_f = int(m.group(2)), float(m.group(4)), float(m.group(5))
            if ents_f > 100 or token_f > 100:
                raise ValueError(f"{path}, line {number}: a score above 100 in the row {line.strip()!r}")
            rows[step] = {"token_macro_f": round(token_f / 100, 4), "ents_f": round(ents_f / 100, 4)}
        else:
            key, _, value = line.strip().partition(": ")
            if key in TIMED:
                field = TIMED[key]
                if field == "command":
                    found = MAX_MINUTES.search(value)
                    piece["max_minutes"] = _number(found.group(1)) if found else None
                elif field == "wall":
                    piece[field] = value.strip()
                else:
                    try:
                        piece[field] = int(value)
                    except ValueError:
                        raise ValueError(f"{path}, line {number}: {key!r} is not a whole number: "
                                         f"{value.strip()!r}") from None
    for piece, lines in zip(pieces, texts):
        text = "\n".join(lines)
        if "Saved pipeline to output directory" in text:
            piece["until_step"] = "end"
        if (m := RESUMED.search(text)):
            piece["resumed_after"] = int(m.group(1))
        if (m := STOPPED.search(text)):
            piece["until_step"], piece["why"] = int(m.group(1)), " ".join(m.group(2).split())
    if not any(p["exit"] is not None or p["until_step"] is not None or p["resumed_after"] is not None
               for p in pieces):
        raise ValueError(f"{path}: no training piece found (no resume, stop or /usr/bin/time lines)")
    return {"pieces": pieces, "validation_rows": {str(k): rows[k] for k in sorted(rows)}}


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        return float(text)


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from None


def collect(log: Path, sessions: Optional[List[int]] = None, calibration: Optional[Path] = None,
            metrics: Optional[Path] = None, bootstrap: Optional[Path] = None, command: Optional[str] = None,
            bootstrap_command: Optional[str] = None, note: Optional[str] = None) -> dict:
    """The results record: {"train": {...}} plus whichever of the scores were given."""
    train = read_log(log)
    if sessions is not None:
        if len(sessions) != len(train["pieces"]):
            raise ValueError(f"--sessions gives {len(sessions)} sessions, but {log} has "
                             f"{len(train['pieces'])} pieces")
        for piece, session in zip(train["pieces"], sessions):
            piece["session"] = session
    record = {"train": {"command": command, **train, "note": note}}
    if calibration is not None:
        record["calibration"] = _json(calibration)
    if metrics is not None:
        record["test_token_report"] = _json(metrics / "token_report.json")
        record["test_entity_scores"] = _json(metrics / "entity_scores.json")
    if bootstrap is not None:
        record["bootstrap_test"] = _json(bootstrap)
        record["bootstrap_test_command"] = bootstrap_command
    return record


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("log", type=Path, help="the training log, all pieces appended")
    ap.add_argument("--out", type=Path, required=True, help="write the record here")
    ap.add_argument("--sessions", default=None, help="comma-separated session of each piece, in order")
    ap.add_argument("--calibration", type=Path, default=None, help="scripts/calibrate.py's --report file")
    ap.add_argument("--metrics", type=Path, default=None, help="scripts/evaluate.py's output folder")
    ap.add_argument("--bootstrap", type=Path, default=None, help="benchmarks/bootstrap.py's --json file")
    ap.add_argument("--command", default=None, help="the training command, as it should be recorded")
    ap.add_argument("--bootstrap-command", default=None, help="the bootstrap command, as it should be recorded")
    ap.add_argument("--note", default=None, help="machine and circumstances")
    args = ap.parse_args(argv)
    for path, what in [(args.log, "log"), (args.calibration, "--calibration"), (args.bootstrap, "--bootstrap")]:
        if path is not None and not path.is_file():
            ap.error(f"{what} {path} is not a file")
    if args.metrics is not None:
        for name in ("token_report.json", "entity_scores.json"):
            if not (args.metrics / name).is_file():
                ap.error(f"--metrics {args.metrics} has no {name} (scripts/evaluate.py writes it)")
    sessions = None
    if args.sessions is not None:
        try:
            sessions = [int(s) for s in args.sessions.split(",")]
        except ValueError:
            ap.error(f"--sessions must be comma-separated integers, got {args.sessions!r}")
    try:
        record = collect(args.log, sessions, args.calibration, args.metrics, args.bootstrap, args.command,
                         args.bootstrap_command, args.note)
    except ValueError as err:
        sys.exit(f"error: {err}")
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import write_json

    write_json(args.out, record)
    for piece in record["train"]["pieces"]:
        begun = "from the start" if piece["resumed_after"] is None else f"after {piece['resumed_after']}"
        print(f"piece {piece.get('session', '?')}: {begun} -> {piece['until_step']}"
              f", wall {piece['wall']}, exit {piece['exit']}, peak RSS {piece['peak_rss_kb']} kB")
    for step, row in record["train"]["validation_rows"].items():
        print(f"step {step}: token macro F {row['token_macro_f']:.4f}, ents F {row['ents_f']:.4f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
