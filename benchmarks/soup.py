"""Average the ner_bert encoders of several trained pipelines (a uniform "model soup").

Each pipeline is written again to OUT/p<i> with the averaged encoder and its own head, so that
benchmarks/ensemble.py can score the soup with each head alone and with the heads pooled. The
pipelines must share one encoder architecture. Prints each encoder's relative L2 distance to the
average (how far apart the fine-tuned encoders ended up).

usage: python benchmarks/soup.py OUT MODEL MODEL [MODEL ...]
"""
import argparse
import sys
from pathlib import Path


def encoder_module(nlp, component: str = "ner_bert"):
    """The torch module of the component's own encoder."""
    from spacy_ner_bert.pipe import get_ner_bert

    encoder = get_ner_bert(nlp, component).encoder()
    if encoder is None:
        raise ValueError(f"{component} listens to a shared transformer: it has no encoder of its own")
    return next(node for node in encoder.walk() if node.shims).shims[0]._model  # the HF model's PyTorch shim


def soup(state_dicts):
    """The mean of floating-point tensors key by key; other tensors (ids, buffers) from the first."""
    keys = set(state_dicts[0])
    for i, sd in enumerate(state_dicts[1:], start=1):
        if set(sd) != keys or any(sd[k].shape != state_dicts[0][k].shape for k in keys):
            raise ValueError(f"pipeline {i}'s encoder differs in architecture from pipeline 0's")
    return {k: (sum(sd[k].double() for sd in state_dicts) / len(state_dicts)).to(v.dtype)
            if v.is_floating_point() else v for k, v in state_dicts[0].items()}


def relative_distance(sd, avg) -> float:
    num = sum(float(((sd[k].double() - avg[k].double()) ** 2).sum()) for k in avg if avg[k].is_floating_point())
    den = sum(float((avg[k].double() ** 2).sum()) for k in avg if avg[k].is_floating_point())
    return (num / den) ** 0.5


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="directory to write p0, p1, ... into")
    ap.add_argument("models", type=Path, nargs="+", help="trained pipeline directories (two or more)")
    args = ap.parse_args(argv)
    if len(args.models) < 2:
        ap.error(f"a soup needs two or more pipelines, got {len(args.models)}")
    for model in args.models:
        if not model.exists():
            ap.error(f"{model}: no such pipeline directory")

    import spacy

    try:
        nlps = [spacy.load(m) for m in args.models]
        modules = [encoder_module(nlp) for nlp in nlps]
        states = [m.state_dict() for m in modules]
        avg = soup(states)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for i, (model, nlp, module, state) in enumerate(zip(args.models, nlps, modules, states)):
        print(f"{model}: relative L2 distance to the average {relative_distance(state, avg):.4f}")
        module.load_state_dict(avg)
        nlp.to_disk(args.out / f"p{i}")
    print(f"wrote {args.out}/p0 ... p{len(nlps) - 1}: the averaged encoder with each pipeline's head")
    return 0


if __name__ == "__main__":
    sys.exit(main())
