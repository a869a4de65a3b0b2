"""Score a trained pipeline on the test DocBin: NeMo's token-level report + entity-level P/R/F."""
import json
from pathlib import Path

import spacy
import typer
from spacy.tokens import DocBin
from spacy.training import Example
from wasabi import msg

from spacy_ner_bert.corpus import read_label_file, unannotated_copy
from spacy_ner_bert.scoring import format_nemo_comparison, format_token_report, score_examples


def main(
    model: Path = typer.Argument(..., help="Trained pipeline directory"),
    test_path: Path = typer.Argument(..., help="Test .spacy file"),
    labels_file: Path = typer.Argument(..., help="Report rows, one label per line (label_ids.csv)"),
    output_dir: Path = typer.Argument(..., help="Where token_report.json/.txt and entity_scores.json go"),
    gpu_id: int = typer.Option(-1, help="GPU id, -1 for CPU"),
    batch_size: int = typer.Option(64, help="Docs per batch"),
    int8: bool = typer.Option(False, "--int8", help="Quantize the encoder to int8 first (CPU fast path)"),
    bf16: bool = typer.Option(False, "--bf16", help="Run the encoder in bfloat16 on CPU (ner_bert's cpu_bf16 = true)"),
):
    """Each word is labeled by the prediction for its first wordpiece (the doc's tokens are the words)."""
    if int8 and gpu_id >= 0:
        msg.fail("--int8 runs on CPU only: drop --gpu-id", exits=1)
    if bf16 and gpu_id >= 0:
        msg.fail("--bf16 is CPU autocast, which does nothing on a GPU: drop --gpu-id", exits=1)
    if bf16 and int8:
        msg.fail("--bf16 and --int8 cannot be combined (int8 quantization cannot run under bfloat16 autocast)", exits=1)
    if gpu_id >= 0:
        spacy.require_gpu(gpu_id)
    nlp = spacy.load(model, config={"components": {"ner_bert": {"cpu_bf16": True}}} if bf16 else {})
    if bf16:
        msg.info("Encoder under CPU autocast in bfloat16 (cpu_bf16 = true)")
    if int8:
        from spacy_ner_bert import quantize_int8

        quantize_int8(nlp)
        msg.info("Encoder quantized to int8 (dynamic)")
    labels = read_label_file(labels_file)
    gold_docs = list(DocBin().from_disk(test_path).get_docs(nlp.vocab))
    msg.info(f"Scoring {len(gold_docs):,} docs ({sum(len(d) for d in gold_docs):,} words) from {test_path}")
    predicted = list(nlp.pipe((unannotated_copy(d) for d in gold_docs), batch_size=batch_size))
    scores = score_examples([Example(p, g) for p, g in zip(predicted, gold_docs)], labels)
    output_dir.mkdir(parents=True, exist_ok=True)
    table = format_token_report(scores["token"], labels)
    (output_dir / "token_report.json").write_text(json.dumps(scores["token"], indent=2))
    (output_dir / "token_report.txt").write_text(table + "\n")
    (output_dir / "entity_scores.json").write_text(json.dumps(scores["entity"], indent=2))
    msg.divider("Token-level report (NeMo format; each word by its first wordpiece)")
    print(table)
    msg.divider("Beside NeMo's published ner_en_bert (GMB dev split)")
    print(format_nemo_comparison(scores["token"]))
    msg.divider("Entity-level (spaCy)")
    ent = scores["entity"]
    print(f"{'ALL':<6} P {ent['p']:.4f}  R {ent['r']:.4f}  F {ent['f']:.4f}")
    for label, s in ent["per_type"].items():
        print(f"{label:<6} P {s['p']:.4f}  R {s['r']:.4f}  F {s['f']:.4f}")
    msg.good(f"Wrote {output_dir}/token_report.json, token_report.txt, entity_scores.json")


if __name__ == "__main__":
    typer.run(main)
