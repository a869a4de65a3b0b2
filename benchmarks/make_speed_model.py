"""Train the speed benchmark's model and export it as a HF token-classification directory.

Every contender of benchmarks/speed.py must run the same weights, and the HF ones can only load
what BertForTokenClassification computes: so this trains ner_bert with the workflow's config
changed to a linear head without casing features (TokenClassifier.v1, LinearHead.v1), on the
demo slice (corpus/demo from `spacy project run convert-demo`), then runs export-hf.

usage: python benchmarks/make_speed_model.py OUT_DIR [--steps 600] [--work DIR]
"""
import argparse
import subprocess
import sys
from pathlib import Path

from spacy.util import load_config

ROOT = Path(__file__).parent.parent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--corpus", type=Path, default=ROOT / "corpus" / "demo")
    ap.add_argument("--work", type=Path, default=ROOT / "training" / "speed_model")
    args = ap.parse_args()
    for name in ("train.spacy", "dev.spacy"):
        if not (args.corpus / name).is_file():
            sys.exit(f"{args.corpus / name} not found: run `python -m spacy project run convert-demo` first")
    config = load_config(ROOT / "configs" / "minilm_cpu.cfg")
    model = config["components"]["ner_bert"]["model"]
    model["@architectures"] = "spacy-ner-bert.TokenClassifier.v1"
    model.pop("case_features", None)
    model["head"] = {"@architectures": "spacy-ner-bert.LinearHead.v1"}
    args.work.mkdir(parents=True, exist_ok=True)
    config_path = args.work / "config.cfg"
    config.to_disk(config_path)
    subprocess.run(
        [sys.executable, "-m", "spacy", "train", str(config_path), "--output", str(args.work),
         "--paths.train", str(args.corpus / "train.spacy"), "--paths.dev", str(args.corpus / "dev.spacy"),
         "--training.max_steps", str(args.steps), "--training.eval_frequency", str(args.steps),
         "--training.optimizer.learn_rate.warmup_steps", str(max(args.steps // 20, 1)),
         "--training.optimizer.learn_rate.total_steps", str(args.steps)],
        check=True,
    )
    subprocess.run([sys.executable, "-m", "spacy_ner_bert", "export-hf", str(args.work / "model-last"),
                    str(args.out_dir)], check=True)


if __name__ == "__main__":
    main()
