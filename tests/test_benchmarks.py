"""The benchmark scripts run end to end on a tiny model (what the speed script measures is not tested)."""
import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import spacy
import torch
from spacy.util import fix_random_seed
from spacy.tokens import DocBin
from spacy.training import Example
from transformers import AutoTokenizer, BertConfig, BertForTokenClassification
from util import TRAIN_DATA, make_examples, ner_config, trained_nlp

from spacy_ner_bert.calibrate import calibrate
from spacy_ner_bert.corpus import read_label_file, unannotated_copy
from spacy_ner_bert.decode import log_softmax
from spacy_ner_bert.scoring import score_examples

ROOT = Path(__file__).parent.parent
LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def run_speed(tiny_bert, tmp_path, *args: str) -> subprocess.CompletedProcess:
    """benchmarks/speed.py on a random tiny token classifier and 40 short texts (joined 4 to a doc)."""
    config = BertConfig.from_pretrained(tiny_bert, id2label=dict(enumerate(LABELS)),
                                        label2id={label: i for i, label in enumerate(LABELS)})
    torch.manual_seed(0)
    BertForTokenClassification(config).save_pretrained(tmp_path / "model")
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(tmp_path / "model")
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(["John Smith visited New York in March ."] * 20 + ["Obama met Putin ."] * 20))
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--model", str(tmp_path / "model"),
         "--texts", str(texts), "--join", "4", "--batch-size", "4", "--threads", "1",
         "--out", str(tmp_path / "results"), *args],
        capture_output=True, text=True,
    )


def test_speed_benchmark_runs(tiny_bert, tmp_path):
    run = run_speed(tiny_bert, tmp_path, "--contenders", "ner_bert,ner_bert_int8,ner_bert_bf16,hf,floor")
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((tmp_path / "results" / "speed_join4_n10.json").read_text())
    assert set(summary["results"]) == {"ner_bert", "ner_bert_int8", "ner_bert_bf16", "hf", "floor"}
    for result in summary["results"].values():
        assert result["words"] == 20 * 8 + 20 * 4 and result["words_per_s"] > 0
    for key in ("ner_bert_hf", "ner_bert_ner_bert_int8", "ner_bert_ner_bert_bf16", "ner_bert_bf16_hf"):
        assert 0.0 <= summary[f"entity_agreement_f1_{key}"] <= 1.0
    assert "ner_bert time / floor time" in run.stdout
    assert summary["gpu_id"] == -1 and "peak_gpu_mb" not in summary["results"]["ner_bert"]


@pytest.mark.parametrize("contender", ["ner_bert_int8", "ner_bert_bf16"])
def test_speed_benchmark_refuses_cpu_only_contenders_on_a_gpu(tiny_bert, tmp_path, contender):
    """int8 is torch's CPU-only dynamic quantization, bf16 its CPU autocast: asked for on a GPU, the
    script says which arguments clash before it loads anything (so this needs no GPU)."""
    run = run_speed(tiny_bert, tmp_path, "--contenders", f"ner_bert,{contender}", "--gpu-id", "0")
    assert run.returncode == 2
    assert contender in run.stderr and "--gpu-id is 0" in run.stderr and "--contenders" in run.stderr
    assert not (tmp_path / "results").exists()


def _speed_config(tiny_bert, path: Path, **training) -> Path:
    """A training config for ner_bert on the tiny BERT, batched by padded size, [training] updated by
    `training`, written to path."""
    nlp = spacy.blank("en")
    nlp.add_pipe("ner_bert", config=ner_config(tiny_bert))
    config = nlp.config
    config["training"]["batcher"] = {"@batchers": "spacy.batch_by_padded.v1", "size": 200, "buffer": 256,
                                     "discard_oversize": False, "get_length": None}
    config["training"].update(training)
    config.to_disk(path)
    return path


def test_train_speed_times_both_modes_and_counts_the_run(tiny_bert, tmp_path, capsys):
    """train_speed times the thinc and fused updates and prices a whole run of the config at the fused
    rate: max_epochs passes of the batches the config's batcher makes (same-length docs, so the count
    does not depend on the shuffle), capped by max_steps; unbounded runs get no estimate."""
    from spacy.training.batchers import minibatch_by_padded_size

    speed = benchmark_module("train_speed")
    nlp = spacy.blank("en")
    docs = [ex.reference for ex in make_examples(nlp, [TRAIN_DATA[1]] * 20)]  # 6 words each
    DocBin(docs=docs).to_disk(tmp_path / "train.spacy")
    per_epoch = len(list(minibatch_by_padded_size(docs, size=13, buffer=256, discard_oversize=False)))
    assert per_epoch == 10  # 2 docs of 6 words per batch of 13 padded words
    config = _speed_config(tiny_bert, tmp_path / "c.cfg", max_epochs=2, max_steps=0)
    out = tmp_path / "speed.json"
    assert speed.main([str(config), str(tmp_path / "train.spacy"), "--encoder", tiny_bert, "--batch-size", "13",
                       "--steps", "3", "--warmup", "1", "--docs", "20", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["mode"] for r in result["results"]] == ["thinc", "fused"]
    assert all(r["step_ms"] > 0 and r["words_per_batch"] == 12 for r in result["results"])
    length = result["run_length"]
    assert (length["steps"], length["batches_per_epoch"], length["mode"]) == (2 * per_epoch, per_epoch, "fused")
    assert length["estimated_s"] == pytest.approx(2 * per_epoch * result["results"][1]["step_ms"] / 1000)
    assert "a run of the config: 20 steps (2 epochs x ~10 batches of 13 padded words) at the fused rate" \
        in capsys.readouterr().out

    args = argparse.Namespace(train=tmp_path / "train.spacy", encoder=tiny_bert, batch_size=13, overrides={})
    for training, steps in (({"max_epochs": 2, "max_steps": 7}, 7), ({"max_epochs": 0, "max_steps": 50}, 50),
                            ({"max_epochs": 0, "max_steps": 0}, None)):
        args.config = _speed_config(tiny_bert, tmp_path / "c.cfg", **training)
        assert speed.run_length(args)["steps"] == steps, training

    # spacy train's overrides reach the run's length (and the timed pipelines, built from the same dict),
    # and are printed and kept; the settings the script sets itself are refused by name.
    args.config = _speed_config(tiny_bert, tmp_path / "c.cfg", max_epochs=2, max_steps=0)
    assert speed.main([str(args.config), str(tmp_path / "train.spacy"), "--encoder", tiny_bert,
                       "--batch-size", "13", "--steps", "1", "--warmup", "0", "--docs", "20", "--json", str(out),
                       "--training.max_steps", "7", "--components.ner_bert.adversarial_epsilon=0.5"]) == 0
    result = json.loads(out.read_text())
    assert result["overrides"] == {"training.max_steps": 7, "components.ner_bert.adversarial_epsilon": 0.5}
    assert result["run_length"]["steps"] == 7
    printed = capsys.readouterr().out
    assert "--training.max_steps 7 --components.ner_bert.adversarial_epsilon 0.5" in printed
    assert "a run of the config: 7 steps (2 epochs x ~10 batches of 13 padded words, capped at max_steps 7)" in printed
    for bad, message in ((["--training.batcher.size", "50"], "--training.batcher.size is set by this script: "
                          "use --batch-size"),
                         (["--steps-per-epoch", "3"], "unrecognized argument --steps-per-epoch"),
                         (["--training.max_steps", "7", "9"], "unrecognized argument 9")):
        with pytest.raises(SystemExit):
            speed.main([str(args.config), str(tmp_path / "train.spacy"), *bad])
        assert message in capsys.readouterr().err, bad


def test_device_variants_apply_to_the_default_config(tiny_bert):
    """Each line of benchmarks/device/variants/*.txt overrides keys that exist in
    configs/minilm_cpu.cfg, with values the ner_bert factory and the train augmenter accept: a typo
    there would only show on the lent GPU machine, whose time is scarce."""
    import spacy
    from spacy.cli._util import parse_config_overrides

    files = sorted((ROOT / "benchmarks" / "device" / "variants").glob("*.txt"))
    assert files
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, *args = line.split()
            overrides = parse_config_overrides(args)
            overrides["paths.encoder"] = tiny_bert
            where = f"{path.name} line {number} ({name})"
            try:
                config = spacy.util.load_config(ROOT / "configs" / "minilm_cpu.cfg", overrides=overrides)
                spacy.util.load_model_from_config(config, auto_fill=False, validate=True)
                spacy.util.registry.resolve({"augmenter": config["corpora"]["train"]["augmenter"]}, validate=True)
            except Exception as err:  # the message names the file and line at fault
                raise AssertionError(f"{where}: {err}") from err


def test_bootstrap_benchmark_runs(tiny_bert, tmp_path):
    """benchmarks/bootstrap.py scores what evaluate scores; the same pipeline twice differs by exactly 0."""
    nlp = trained_nlp(tiny_bert, steps=15)
    nlp.to_disk(tmp_path / "model")
    gold = [eg.reference for eg in make_examples(nlp)]
    DocBin(docs=gold).to_disk(tmp_path / "gold.spacy")
    labels = ROOT / "configs" / "gmb_labels.txt"
    out = tmp_path / "boot.json"
    script = str(ROOT / "benchmarks" / "bootstrap.py")
    run = subprocess.run(
        [sys.executable, script, str(tmp_path / "gold.spacy"), str(labels), str(tmp_path / "model"),
         str(tmp_path / "model"), "--n", "50", "--json", str(out)],
        capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    expected = score_examples(
        [Example(p, g) for p, g in zip(nlp.pipe(unannotated_copy(d) for d in gold), gold)], read_label_file(labels)
    )["token"]["macro avg"]["f1-score"]
    first, second = result["models"]
    assert first["macro_f1"] == pytest.approx(expected, abs=1e-12) == second["macro_f1"]
    assert first["low"] <= first["macro_f1"] <= first["high"]
    assert (second["diff"], second["diff_low"], second["diff_high"], second["first_ahead"]) == (0.0, 0.0, 0.0, 0.0)
    assert result["docs"] == len(gold) and "rarest labels:" in run.stdout

    missing = subprocess.run([sys.executable, script, str(tmp_path / "gold.spacy"), str(labels),
                              str(tmp_path / "nope")], capture_output=True, text=True)
    assert missing.returncode == 2 and f"{tmp_path / 'nope'}: no such pipeline directory" in missing.stderr
    (tmp_path / "empty").mkdir()
    not_a_pipeline = subprocess.run([sys.executable, script, str(tmp_path / "gold.spacy"), str(labels),
                                     str(tmp_path / "empty")], capture_output=True, text=True)
    assert not_a_pipeline.returncode == 1 and not_a_pipeline.stderr.startswith(f"{tmp_path / 'empty'} on ")


def benchmark_module(name: str):
    """The script benchmarks/NAME.py, imported as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ensemble_pools_log_probabilities():
    ensemble = benchmark_module("ensemble")
    a = [numpy.array([[2.0, 0.0, -1.0]]), numpy.array([[0.0, 0.0, 0.0], [1.0, -numpy.inf, 0.0]])]
    b = [numpy.array([[0.0, 3.0, 0.0]]), numpy.array([[5.0, 0.0, 0.0], [0.0, 0.0, 0.0]])]
    pooled = ensemble.pool_log_probs([a, b])
    for doc_a, doc_b, doc in zip(a, b, pooled):
        by_hand = numpy.array([[(x - numpy.log(numpy.exp(row_a).sum()) + y - numpy.log(numpy.exp(row_b).sum())) / 2
                                for x, y in zip(row_a, row_b)] for row_a, row_b in zip(doc_a, doc_b)])
        by_hand -= numpy.log(numpy.exp(by_hand).sum(axis=1, keepdims=True))  # normalized again
        assert doc.shape == doc_a.shape and numpy.allclose(doc, by_hand)
        assert numpy.allclose(numpy.exp(doc).sum(axis=1), 1.0)
    # A tag one member forbids (-inf) stays forbidden; a single member pools to its own log-softmax.
    assert numpy.isneginf(pooled[1][1, 1]) and numpy.allclose(ensemble.pool_log_probs([a])[0], log_softmax(a[0]))
    with pytest.raises(ValueError, match="different shapes"):
        ensemble.pool_log_probs([a, b[:1]])
    with pytest.raises(ValueError, match="no ensemble members"):
        ensemble.pool_log_probs([])


@pytest.fixture(scope="module")
def two_pipelines(tiny_bert, tmp_path_factory):
    """A better and a worse trained pipeline on disk (strong/, weak/) and their gold docs (gold.spacy)."""
    path = tmp_path_factory.mktemp("two_pipelines")
    strong, weak = trained_nlp(tiny_bert, steps=15), trained_nlp(tiny_bert, steps=4)
    strong.to_disk(path / "strong")
    weak.to_disk(path / "weak")
    DocBin(docs=[eg.reference for eg in make_examples(strong)]).to_disk(path / "gold.spacy")
    return path, strong, weak


def test_ensemble_benchmark_runs(two_pipelines, tiny_bert, tmp_path):
    """Each pipeline's row is what calibrate + evaluate give it; a pipeline pooled with itself is that
    pipeline; the ensemble row is the pooled logits calibrated and scored; bad inputs name the culprit."""
    ensemble = benchmark_module("ensemble")
    data, strong, weak = two_pipelines
    gold = list(DocBin().from_disk(data / "gold.spacy").get_docs(strong.vocab))
    labels = ROOT / "configs" / "gmb_labels.txt"
    script = str(ROOT / "benchmarks" / "ensemble.py")

    def run(*models, extra=(), label_file=labels):
        return subprocess.run([sys.executable, script, str(data / "gold.spacy"), str(data / "gold.spacy"),
                               str(label_file), *map(str, models), "--n", "50", *extra], capture_output=True, text=True)

    def evaluated(nlp):  # the workflow's calibrate, then evaluate's figure
        tau, _ = calibrate(nlp, make_examples(nlp))
        pred = nlp.pipe(unannotated_copy(d) for d in gold)
        return tau, score_examples([Example(p, g) for p, g in zip(pred, gold)], read_label_file(labels))

    out = tmp_path / "ens.json"
    done = run(data / "strong", data / "weak", extra=("--json", str(out)))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    first, second, pooled = result["pipelines"]
    for row, nlp in ((first, strong), (second, weak)):
        tau, report = evaluated(nlp)
        assert row["tau"] == tau
        assert row["test_macro_f1"] == pytest.approx(report["token"]["macro avg"]["f1-score"], abs=1e-12)
        assert row["test_entity_f"] == pytest.approx(report["entity"]["f"], abs=1e-12)
    assert first["test_macro_f1"] != second["test_macro_f1"]
    # The ensemble row: both pipelines' logits pooled, tau chosen, scored (as the script's own parts do it).
    from spacy_ner_bert.calibrate import choose_tau
    from spacy_ner_bert.scoring import doc_iob_tags

    tags = strong.get_pipe("ner_bert").tags
    logits = [nlp.get_pipe("ner_bert").logits([unannotated_copy(d) for d in gold]) for nlp in (strong, weak)]
    pooled_logits = ensemble.pool_log_probs(logits)
    tau, _, bias = choose_tau(pooled_logits, [t for d in gold for t in doc_iob_tags(d)], tags)
    report, _ = ensemble.score(tags, pooled_logits, bias, gold, read_label_file(labels))
    assert (pooled["model"], pooled["tau"]) == ("ensemble of all", tau)
    assert pooled["test_macro_f1"] == pytest.approx(report["token"]["macro avg"]["f1-score"], abs=1e-12)
    mean_row = result["ensemble_minus"][-1]
    assert mean_row["diff"] == pytest.approx(pooled["test_macro_f1"] - (first["test_macro_f1"] + second["test_macro_f1"]) / 2)
    assert "mean of the pipelines" in done.stdout

    twice = run(data / "strong", data / "strong", extra=("--json", str(out)))
    assert twice.returncode == 0, twice.stderr[-3000:]
    a, b, both = json.loads(out.read_text())["pipelines"]
    assert a == b and {k: v for k, v in both.items() if k != "model"} == {k: v for k, v in a.items() if k != "model"}

    alone = run(data / "strong")
    assert alone.returncode == 2 and "two or more pipelines, got 1" in alone.stderr
    missing = run(data / "strong", tmp_path / "nope")
    assert missing.returncode == 2 and f"{tmp_path / 'nope'}: no such pipeline directory" in missing.stderr
    fix_random_seed(0)
    other = spacy.blank("en")
    other.add_pipe("ner_bert", config=ner_config(tiny_bert))
    other.initialize(lambda: make_examples(other, TRAIN_DATA[:2]))  # PER, LOC, TIME only
    other.to_disk(tmp_path / "other")
    mismatch = run(data / "strong", tmp_path / "other")
    assert mismatch.returncode == 1 and mismatch.stderr.startswith(f"{tmp_path / 'other'}: tags ")
    few = tmp_path / "few_labels.txt"
    few.write_text("O\nB-PER\nI-PER\n")
    unlisted = run(data / "strong", data / "strong", label_file=few)
    assert unlisted.returncode == 1 and unlisted.stderr.startswith(f"{data / 'strong'} on {data / 'gold.spacy'} and ")


def test_saved_logits_feed_calibration_cv(two_pipelines, tmp_path):
    """ensemble.py --save-logits writes each pipeline's logits as the pipeline computes them;
    calibration_cv.py reads them: its `none` row is the unbiased score, its `tau` bias is calibrate's
    choice on the whole validation file; bad logits files are named."""
    ensemble = benchmark_module("ensemble")
    data, strong, weak = two_pipelines
    gold = list(DocBin().from_disk(data / "gold.spacy").get_docs(strong.vocab))
    labels = ROOT / "configs" / "gmb_labels.txt"
    saved = tmp_path / "logits"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ensemble.py"), str(data / "gold.spacy"),
                           str(data / "gold.spacy"), str(labels), str(data / "strong"), str(data / "weak"),
                           "--n", "20", "--save-logits", str(saved)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    from spacy_ner_bert.calibrate import choose_tau
    from spacy_ner_bert.scoring import doc_iob_tags

    gold_tags = [t for d in gold for t in doc_iob_tags(d)]
    for i, nlp in enumerate((strong, weak)):
        tags, model, dev, test = ensemble.load_logits(saved / f"{i}.npz")
        want = nlp.get_pipe("ner_bert").logits([unannotated_copy(d) for d in gold])
        assert tags == list(nlp.get_pipe("ner_bert").tags.tags) and model == str(data / ("strong", "weak")[i])
        assert len(dev) == len(test) == len(want)
        assert all(numpy.allclose(a, b) and numpy.allclose(c, b) for a, b, c in zip(dev, want, test))

    cv_script = str(ROOT / "benchmarks" / "calibration_cv.py")
    out = tmp_path / "cv.json"
    cv = subprocess.run([sys.executable, cv_script, str(data / "gold.spacy"), str(data / "gold.spacy"),
                         str(saved / "0.npz"), str(saved / "1.npz"), "--repeats", "2", "--pool", "--json", str(out),
                         "--train", str(data / "gold.spacy"), "--crf"],
                        capture_output=True, text=True)
    assert cv.returncode == 0, cv.stderr[-3000:]
    rows = json.loads(out.read_text())["results"]
    assert [r["logits"] for r in rows] == [str(saved / "0.npz"), str(saved / "1.npz"), "pooled"]
    tags = strong.get_pipe("ner_bert").tags
    for row, nlp in zip(rows, (strong, weak)):
        logits = nlp.get_pipe("ner_bert").logits([unannotated_copy(d) for d in gold])
        _, table, bias = choose_tau(logits, gold_tags, tags)
        untouched = next(r["f"] for r in table if r["tau"] == 0.0)
        assert row["none"]["cv"] == pytest.approx(untouched) and row["none"]["test"] == pytest.approx(untouched)
        assert numpy.allclose(row["tau"]["bias"], bias)
        assert row["tau"]["test"] == pytest.approx(max(r["f"] for r in table))
        # A family with more free numbers fits the data it is fitted on at least as well.
        for family in ("per-tag", "tau+O", "tau+trans", "tau+crf"):
            assert row[family]["test"] >= row["tau"]["test"] - 1e-12
        assert row["tau+trans"]["lambda"] in (0.0, 0.25, 0.5, 1.0) and row["tau"]["lambda"] == 0.0
        assert row["tau+crf"]["lambda"] in (0.0, 1.0)
        steps, start = row["tau+crf"]["transitions"]
        assert numpy.shape(steps) == (len(tags), len(tags)) and numpy.shape(start) == (len(tags),)

    (tmp_path / "junk.npz").write_text("not numpy")
    junk = subprocess.run([sys.executable, cv_script, str(data / "gold.spacy"), str(data / "gold.spacy"),
                           str(tmp_path / "junk.npz")], capture_output=True, text=True)
    assert junk.returncode == 2 and f"{tmp_path / 'junk.npz'}: not a logits file" in junk.stderr
    DocBin(docs=gold[:-1]).to_disk(tmp_path / "fewer.spacy")
    fewer = subprocess.run([sys.executable, cv_script, str(tmp_path / "fewer.spacy"), str(data / "gold.spacy"),
                            str(saved / "0.npz")], capture_output=True, text=True)
    assert fewer.returncode == 2 and f"{saved / '0.npz'}: its dev logits do not match the docs of {tmp_path / 'fewer.spacy'}" in fewer.stderr


def test_calibration_cv_bigrams_and_unknown_train_tags(two_pipelines, tmp_path):
    """The tag-bigram prior is add-one smoothed counts of the gold sequences; a train file with a tag the
    logits do not have is named."""
    cv = benchmark_module("calibration_cv")
    trans, start = cv.bigram_log_probs([numpy.array([0, 1, 2]), numpy.array([0]), numpy.array([], dtype="int64")], 3)
    assert numpy.allclose(numpy.exp(start), [3 / 5, 1 / 5, 1 / 5])
    assert numpy.allclose(numpy.exp(trans), [[1 / 4, 2 / 4, 1 / 4], [1 / 4, 1 / 4, 2 / 4], [1 / 3, 1 / 3, 1 / 3]])

    data, strong, _ = two_pipelines
    saved = tmp_path / "logits"
    gold = list(DocBin().from_disk(data / "gold.spacy").get_docs(strong.vocab))
    pipe = strong.get_pipe("ner_bert")
    logits = pipe.logits([unannotated_copy(d) for d in gold])
    benchmark_module("ensemble").save_logits(saved / "0.npz", data / "strong", pipe.tags, logits, logits)
    nlp = spacy.blank("en")
    doc = nlp("Alice met Bob")
    doc.set_ents([spacy.tokens.Span(doc, 0, 1, label="FOO")])
    DocBin(docs=[doc]).to_disk(tmp_path / "foo.spacy")
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "calibration_cv.py"), str(data / "gold.spacy"),
                          str(data / "gold.spacy"), str(saved / "0.npz"), "--train", str(tmp_path / "foo.spacy")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and f"{tmp_path / 'foo.spacy'}: gold tags ['B-FOO'] are not among the logits' tags" in bad.stderr


def _valid_path(tags, n, rng):
    """A random tag sequence of length n that the IOB constraints allow."""
    while True:
        path = rng.integers(0, len(tags), n)
        if tags.is_valid(path):
            return path


def test_crf_loss_is_the_brute_force_likelihood_and_its_gradient():
    """crf.py's forward-backward equals summing over every valid path, and its gradients the
    finite differences of that sum."""
    import itertools

    from spacy_ner_bert.tags import IOBTags

    crf = benchmark_module("crf")
    tags = IOBTags.from_entity_types(["A", "B"])
    rng = numpy.random.default_rng(0)
    golds = [_valid_path(tags, n, rng) for n in (1, 3, 4, 2)]
    log_probs = [log_softmax(rng.normal(size=(len(g), len(tags)))) for g in golds]
    emit, gold, lengths = crf.pad_emissions(log_probs, golds, len(tags))
    trans, start, scale = rng.normal(size=(len(tags), len(tags))), rng.normal(size=len(tags)), 0.7
    loss, d_trans, d_start, d_scale = crf.crf_loss(emit, gold, lengths, tags, trans, start, scale)

    def score(lp, path):
        return start[path[0]] + scale * lp[numpy.arange(len(path)), path].sum() + sum(
            trans[a, b] for a, b in zip(path[:-1], path[1:]))

    want = 0.0
    for lp, g in zip(log_probs, golds):
        every = [score(lp, p) for p in itertools.product(range(len(tags)), repeat=len(lp)) if tags.is_valid(p)]
        want += numpy.logaddexp.reduce(every) - score(lp, g)
    assert loss == pytest.approx(want, rel=1e-9)
    eps = 1e-6
    for i, j in [(0, 0), (1, 3), (3, 3), (2, 4)]:  # O->O, B-A->I-A, I-A->I-A, B-B->I-B: all allowed
        bumped = trans.copy()
        bumped[i, j] += eps
        numeric = (crf.crf_loss(emit, gold, lengths, tags, bumped, start, scale)[0] - loss) / eps
        assert d_trans[i, j] == pytest.approx(numeric, abs=1e-4)
    assert d_trans[0, 3] == 0.0  # O -> I-A is forbidden: no gradient
    bumped = start.copy()
    bumped[1] += eps
    assert d_start[1] == pytest.approx((crf.crf_loss(emit, gold, lengths, tags, trans, bumped, scale)[0] - loss) / eps, abs=1e-4)
    numeric = (crf.crf_loss(emit, gold, lengths, tags, trans, start, scale + eps)[0] - loss) / eps
    assert d_scale == pytest.approx(numeric, abs=1e-4)


def test_fitted_transitions_decode_better_where_steps_carry_information():
    """Tags drawn from a sticky Markov chain, seen through noisy emissions: Viterbi with the fitted
    transitions recovers more of them than the IOB constraints alone; bad inputs are named."""
    from spacy_ner_bert.decode import decode_docs, viterbi_batch
    from spacy_ner_bert.tags import IOBTags

    crf = benchmark_module("crf")
    tags = IOBTags.from_entity_types(["A", "B"])
    n = len(tags)
    rng = numpy.random.default_rng(1)
    chain = numpy.full((n, n), 0.02)
    chain[0, 0], chain[1, 3], chain[2, 4], chain[3, 3], chain[4, 4] = 0.8, 0.9, 0.9, 0.6, 0.6
    chain = numpy.where(tags.allowed, chain, 0.0)
    chain /= chain.sum(axis=1, keepdims=True)

    def sample(count):
        golds, log_probs = [], []
        for _ in range(count):
            path = [0]
            for _ in range(rng.integers(5, 30)):
                path.append(rng.choice(n, p=chain[path[-1]]))
            path = numpy.array(path)
            logits = rng.normal(size=(len(path), n))
            logits[numpy.arange(len(path)), path] += 1.0
            golds.append(path)
            log_probs.append(log_softmax(logits))
        return golds, log_probs

    golds, log_probs = sample(300)
    trans, start, info = crf.fit_transitions(log_probs, golds, tags)
    assert info["iterations"] > 0 and info["scale"] > 0
    assert (trans[~tags.allowed] == 0).all() and trans[1, 3] > trans[1, 0]  # B-A -> I-A learned over B-A -> O
    test_golds, test_log_probs = sample(300)
    gold = numpy.concatenate(test_golds)
    plain = numpy.concatenate(decode_docs(test_log_probs, tags)[0])
    fitted = numpy.concatenate(viterbi_batch(test_log_probs, tags, trans, start))
    assert (fitted == gold).mean() > (plain == gold).mean() + 0.03

    with pytest.raises(ValueError, match="one gold path per doc: 2 docs, 1 paths"):
        crf.fit_transitions(log_probs[:2], golds[:1], tags)
    with pytest.raises(ValueError, match="doc 0: its gold tags are not a valid IOB sequence"):
        crf.fit_transitions(log_probs[:1], [numpy.full(len(golds[0]), 3)], tags)
    with pytest.raises(ValueError, match="doc 1: log-probabilities of shape"):
        crf.fit_transitions(log_probs[:2], [golds[0], golds[1][:-1]], tags)


def test_soup_averages_encoders(two_pipelines, tmp_path):
    """Each written pipeline holds the mean encoder and its own head; a pipeline souped with itself is itself."""
    path, strong, weak = two_pipelines
    script = [sys.executable, str(ROOT / "benchmarks" / "soup.py")]
    run = subprocess.run(script + [str(tmp_path / "soup"), str(path / "strong"), str(path / "weak")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    soup = benchmark_module("soup")
    states = [soup.encoder_module(spacy.load(path / n)).state_dict() for n in ("strong", "weak")]
    for i, original in enumerate((strong, weak)):
        written = spacy.load(tmp_path / "soup" / f"p{i}")
        got = soup.encoder_module(written).state_dict()
        for k, v in got.items():
            if v.is_floating_point():
                assert torch.allclose(v, (states[0][k] + states[1][k]) / 2, atol=1e-6)
        heads = [nlp.get_pipe("ner_bert").model.get_ref("head") for nlp in (written, original)]
        params = [[n.get_param(p) for n in h.walk() for p in n.param_names if n.has_param(p)] for h in heads]
        assert params[0] and all(numpy.array_equal(a, b) for a, b in zip(*params))
    same = soup.soup([states[0], states[0]])
    assert all(torch.equal(same[k], states[0][k]) for k in same)
    one = subprocess.run(script + [str(tmp_path / "x"), str(path / "strong")], capture_output=True, text=True)
    assert one.returncode == 2 and "two or more pipelines" in one.stderr
    missing = subprocess.run(script + [str(tmp_path / "x"), str(path / "strong"), str(tmp_path / "nope")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "nope: no such pipeline directory" in missing.stderr


def write_fake_gmb(path: Path, gold, train_copies: int, test_copies: int) -> None:
    """text_/labels_ train and dev files in NeMo's format: the gold docs' sentences, repeated."""
    from spacy_ner_bert.scoring import doc_iob_tags

    path.mkdir(parents=True, exist_ok=True)
    for split, copies in (("train", train_copies), ("dev", test_copies)):
        docs = [d for _ in range(copies) for d in gold]
        (path / f"text_{split}.txt").write_text("".join(" ".join(t.text for t in d) + "\n" for d in docs))
        (path / f"labels_{split}.txt").write_text("".join(" ".join(doc_iob_tags(d)) + "\n" for d in docs))


def test_context_blocks_keep_validation_sentences_out_of_training(tmp_path):
    ctx = benchmark_module("context_eval")
    sents = [([f"w{i}", "x"], ["O", "O"]) for i in range(7)]
    assert [list(b) for b in ctx.blocks_of(7, 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    groups = ctx.context_train_groups(sents, [1, 6], 3)
    assert [[s[0][0] for s in g] for g in groups] == [["w0", "w2"], ["w3", "w4", "w5"]]
    # Each block holding a wanted sentence is predicted whole; only the wanted sentences are scored.
    assert ctx.predict_blocks(sents, [1, 6], 3) == [
        (["w0", "x", "w1", "x", "w2", "x"], [(2, 4)]), (["w6", "x"], [(0, 2)])]
    assert ctx.predict_blocks(sents, [4, 5], 3) == [(["w3", "x", "w4", "x", "w5", "x"], [(2, 4), (4, 6)])]
    assert ctx.predict_blocks(sents, [4], 1) == [(["w4", "x"], [(0, 2)])]
    # The sentencizer's agreement with the blocks' sentences: a start missed, one added.
    blocks = [(["A", "b", ".", "C", "d", "e", "."], [(0, 3), (3, 7)]), (["F", "!", "g", "."], [(0, 4)])]
    assert ctx.sentencizer_agreement(blocks) == {"sentence_starts": 3, "found": 3, "extra": 1, "blocks": 2,
                                                 "blocks_split_exactly": 1}
    missed = [(["A", "b", "C", "d", "."], [(0, 2), (2, 5)])]
    assert ctx.sentencizer_agreement(missed)["found"] == 1
    # convert's split: the same sentences as the workflow's validation file holds.
    from spacy_ner_bert.corpus import split_train_dev

    assert ctx.held_out(7, 2, 0) == [i for i in range(7) if sents[i] in split_train_dev(sents, 2, 0)[1]]


def test_context_benchmark_runs(two_pipelines, tmp_path):
    """Sentence mode is what calibrate + evaluate give; context mode is the pipeline run on whole blocks
    with the chosen bias, scored on the wanted sentences only; with --sent-spans each sentence of a
    block gets exactly the logits it gets alone; --write-train leaves validation out."""
    from spacy.tokens import Doc

    from spacy_ner_bert.calibrate import log_prior
    from spacy_ner_bert.scoring import doc_iob_tags, token_report

    data, strong, _ = two_pipelines
    gold = list(DocBin().from_disk(data / "gold.spacy").get_docs(strong.vocab))
    gmb = tmp_path / "gmb"
    write_fake_gmb(gmb, gold, train_copies=4, test_copies=2)
    labels = ROOT / "configs" / "gmb_labels.txt"
    script = str(ROOT / "benchmarks" / "context_eval.py")

    def run(*args):
        return subprocess.run([sys.executable, script, *map(str, args)], capture_output=True, text=True)

    out = tmp_path / "ctx.json"
    done = run(gmb, labels, data / "strong", "--dev-size", 4, "--doc-sents", 3, "--sent-spans", "--json", out)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    row = result["pipelines"][0]
    assert "context_sentence_spans tau" in done.stdout and row["context_sentence_spans"]["test_macro_f1"] > 0
    n_test = len(gold) * 2  # every sentence ends with " .": the sentencizer splits the blocks exactly
    assert result["sentencizer_on_test_blocks"] == {
        "sentence_starts": n_test, "found": n_test, "extra": 0, "blocks": -(-n_test // 3),
        "blocks_split_exactly": -(-n_test // 3)}
    train = [d for _ in range(4) for d in gold]
    test = [d for _ in range(2) for d in gold]
    from spacy_ner_bert.corpus import split_train_dev

    dev_ids = split_train_dev(list(range(len(train))), 4, 0)[1]
    val = [train[i] for i in dev_ids]
    nlp = spacy.load(data / "strong")
    tau, _ = calibrate(nlp, [Example(d, d) for d in val])
    pred = nlp.pipe(unannotated_copy(d) for d in test)
    report = score_examples([Example(p, g) for p, g in zip(pred, test)], read_label_file(labels))
    sent = row["sentences"]
    assert sent["tau"] == tau
    assert sent["test_macro_f1"] == pytest.approx(report["token"]["macro avg"]["f1-score"], abs=1e-12)
    assert sent["test_entity"]["f"] == pytest.approx(report["entity"]["f"], abs=1e-12)

    ctx = row["context"]
    pipe = nlp.get_pipe("ner_bert")
    prior = log_prior([t for d in val for t in doc_iob_tags(d)], pipe.tags)
    pipe.set_tag_bias(None if ctx["tau"] == 0.0 else (-ctx["tau"] * prior).astype("float32").tolist())
    gold_tags, pred_tags = [], []
    for b in range(0, len(test), 3):
        block = test[b:b + 3]
        words = [t.text for d in block for t in d]
        doc = nlp(Doc(nlp.vocab, words=words, spaces=[True] * (len(words) - 1) + [False]))
        pred_tags += doc_iob_tags(doc)
        gold_tags += [t for d in block for t in doc_iob_tags(d)]
    by_hand = token_report(gold_tags, pred_tags, read_label_file(labels))
    assert ctx["test_macro_f1"] == pytest.approx(by_hand["macro avg"]["f1-score"], abs=1e-12)
    assert any(r["tau"] == ctx["tau"] and r["f"] == ctx["validation_macro_f1"] for r in ctx["validation_by_tau"])

    # Sentence spans: the sentencizer finds the gold sentences (each ends with " ."), and each sentence in
    # a block is encoded alone, so its logits are those of the sentence as its own doc (whole blocks: not).
    context_eval = benchmark_module("context_eval")
    sents = [([t.text for t in d], doc_iob_tags(d)) for d in test]
    blocks, singles = (context_eval.predict_blocks(sents, range(len(sents)), n) for n in (3, 1))
    alone = numpy.concatenate(context_eval.block_logits(nlp, singles))
    spans = context_eval.load_sentence_spans(data / "strong")
    assert numpy.allclose(numpy.concatenate(context_eval.block_logits(spans, blocks)), alone, atol=1e-5)
    assert not numpy.allclose(numpy.concatenate(context_eval.block_logits(nlp, blocks)), alone, atol=1e-3)

    written = run(gmb, labels, "--write-train", tmp_path / "ctx_corpus", "--dev-size", 4, "--doc-sents", 3)
    assert written.returncode == 0, written.stderr[-3000:]
    docs = list(DocBin().from_disk(tmp_path / "ctx_corpus" / "train.spacy").get_docs(strong.vocab))
    assert sum(len(list(d.sents)) for d in docs) == len(train) - 4 and max(len(list(d.sents)) for d in docs) <= 3
    assert [t for d in docs for t in doc_iob_tags(d)] == [
        t for i, d in enumerate(train) if i not in dev_ids for t in doc_iob_tags(d)]

    assert run(gmb, labels).returncode == 2
    one = run(gmb, labels, data / "strong", "--doc-sents", 1)
    assert one.returncode == 2 and "--doc-sents must be at least 2" in one.stderr
    missing = run(tmp_path / "nope", labels, data / "strong")
    assert missing.returncode == 2 and f"{tmp_path / 'nope'}: no such GMB folder" in missing.stderr
    big = run(gmb, labels, data / "strong", "--dev-size", 50)
    assert big.returncode == 1 and big.stderr.startswith(f"{gmb}: dev_size must be in")


def test_tapt_masks_whole_words_never_special_tokens(tiny_bert):
    import random

    tapt = benchmark_module("tapt")
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    items = tapt.encode(tok, [["Washington", "visited", "Moscow"], ["John", "Smith"]], 32)
    for _ in range(20):
        ids, attn, labels = tapt.mask_batch(items, [0, 1], tok, 0.5, random.Random(_), torch)
        for row, (pieces, word_of) in enumerate(items):
            assert attn[row].sum() == len(pieces)
            targets = {word_of[p] for p in range(len(pieces)) if labels[row, p] != -100}
            assert targets and -1 not in targets  # at least one word; [CLS] / [SEP] never
            for p, w in enumerate(word_of):  # a chosen word has all its wordpieces as targets
                assert (labels[row, p] != -100) == (w in targets)
                if labels[row, p] != -100:
                    assert labels[row, p] == pieces[p]
                elif p < len(pieces):
                    assert ids[row, p] == pieces[p]
    assert [len(b) for b in tapt.length_batches(items, 10, random.Random(0))] == [1, 1]


def test_tapt_writes_a_loadable_retrained_encoder(tiny_bert, tmp_path):
    """The written encoder loads as the component's encoder; its weights moved, the pooler did not."""
    from transformers import BertModel

    tapt = benchmark_module("tapt")
    nlp = spacy.blank("en")
    DocBin(docs=[nlp(text) for text, _ in TRAIN_DATA * 4]).to_disk(tmp_path / "train.spacy")
    out = tmp_path / "enc"
    argv = [str(tmp_path / "train.spacy"), str(out), "--encoder", tiny_bert, "--dev", str(tmp_path / "train.spacy"),
            "--head-steps", "2", "--steps", "3", "--batch-size", "200", "--lr", "1e-2", "--log-every", "1"]
    assert tapt.main(argv) == 0
    before, after = BertModel.from_pretrained(tiny_bert).state_dict(), BertModel.from_pretrained(out).state_dict()
    assert set(before) == set(after)
    assert not torch.equal(before["encoder.layer.0.attention.self.query.weight"],
                           after["encoder.layer.0.attention.self.query.weight"])
    assert torch.equal(before["pooler.dense.weight"], after["pooler.dense.weight"])
    assert AutoTokenizer.from_pretrained(out)("New York")["input_ids"] == AutoTokenizer.from_pretrained(tiny_bert)("New York")["input_ids"]
    doc = trained_nlp(str(out), steps=2)("Obama met Putin in Moscow .")  # spacy train takes it as --paths.encoder
    assert len(doc) == 6 and all(ent.label_ in {"PER", "LOC", "ORG", "TIME", "MISC"} for ent in doc.ents)
    # Bad inputs stop with the argument named, before anything is written.
    with pytest.raises(SystemExit):
        tapt.main(argv)  # out exists and is not empty
    err = tmp_path / "missing.spacy"
    with pytest.raises(SystemExit):
        tapt.main([str(err), str(tmp_path / "enc2"), "--encoder", tiny_bert])
    assert not (tmp_path / "enc2").exists()


def test_probe_scores_frozen_encoders(tiny_bert, tmp_path):
    probe = benchmark_module("probe")
    # macro F1 over all labels: a label never gold nor predicted counts 0, as the workflow's table.
    macro, per, acc = probe.macro_f1(numpy.array([0, 0, 1, 1]), numpy.array([0, 1, 1, 1]), ["O", "B-PER", "I-PER"])
    assert per == pytest.approx([2 / 3, 0.8, 0.0]) and macro == pytest.approx((2 / 3 + 0.8) / 3) and acc == 0.75
    nlp = spacy.blank("en")
    docs = [ex.reference for ex in make_examples(nlp)] * 3
    DocBin(docs=docs).to_disk(tmp_path / "train.spacy")
    (tmp_path / "labels.txt").write_text("\n".join(["O"] + [f"{p}-{t}" for t in ["PER", "LOC", "ORG", "TIME", "MISC"]
                                                             for p in "BI"]) + "\n")
    words, tags = probe.read_tagged(tmp_path / "train.spacy", 1)[0]
    assert words[:2] == ["John", "Smith"] and tags[:3] == ["B-PER", "I-PER", "O"]
    vectors, kept = probe.first_piece_vectors(tiny_bert, [words, ["Moscow"]])
    assert vectors.shape == (len(words) + 1, 32) and kept.all()
    out = tmp_path / "probe.json"
    args = [str(tmp_path / "train.spacy"), str(tmp_path / "train.spacy"), str(tmp_path / "labels.txt"), tiny_bert,
            "--iterations", "50", "--json", str(out)]
    assert probe.main(args) == 0
    result = json.loads(out.read_text())["results"][0]
    assert 0 < result["dev_token_macro_f1"] <= 1 and result["per_label_f1"]["B-PER"] > 0
    (tmp_path / "labels.txt").write_text("O\nB-PER\nI-PER\n")
    with pytest.raises(SystemExit):
        probe.main(args)  # LOC, ORG, TIME, MISC tags are not in the label file


PIECES_LOG = """=== start Thu Dec  3 15:43:33 UTC 2026 ===
\x1b[38;5;4m\u2139 Using CPU\x1b[0m
E    #       LOSS NER_BERT  ENTS_F  TOKEN_MACRO_F  SCORE 
---  ------  -------------  ------  -------------  ------
  0       0           2.36    1.44           2.98    0.03
  0    3900        1234.50   81.54          75.25    0.75
\x1b[38;5;3m\u26a0 Stopped after step 4210 (the 115-minute limit); checkpoint in
training/x/checkpoint: rerun\x1b[0m
\tCommand being timed: "python -m spacy_ner_bert train c.cfg --seed 3 --max-minutes 115 --auto-resume"
\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:56:02
\tMaximum resident set size (kbytes): 3395672
\tExit status: 3
=== resume Fri Dec  4 10:00:00 UTC 2026 ===
\x1b[38;5;4m\u2139 Resumed from training/a_long_output_folder_name/checkpoint after
step 4210 (epoch 0); 2 steps\x1b[0m
  1    7800         900.00   80.85          75.17    0.75
\x1b[38;5;2m\u2714 Saved pipeline to output directory\x1b[0m
training/x/model-last
\tCommand being timed: "python -m spacy_ner_bert train c.cfg --max-minutes=70.5 --auto-resume"
\tElapsed (wall clock) time (h:mm:ss or m:ss): 19:48.26
\tMaximum resident set size (kbytes): 3245252
\tExit status: 0
"""


def test_collect_run_reads_pieces_rows_and_scores(tmp_path, capsys):
    """collect_run splits the log at its "=== " lines and keeps each piece's resume and stop step, limit,
    wall time, exit status and RSS, and every validation row (scaled to fractions); scores are joined
    as read; a wrong session count, a log without pieces and a missing evaluate file are refused."""
    collect_run = benchmark_module("collect_run")
    log = tmp_path / "run.log"
    log.write_text(PIECES_LOG, encoding="utf8")
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "token_report.json").write_text('{"macro avg": {"f1-score": 0.75}}')
    (metrics / "entity_scores.json").write_text('{"f": 0.83}')
    (tmp_path / "cal.json").write_text('{"chosen_tau": -0.2}')
    out = tmp_path / "record.json"
    collect_run.main([str(log), "--out", str(out), "--sessions", "37,38", "--metrics", str(metrics),
                      "--calibration", str(tmp_path / "cal.json"), "--command", "CMD"])
    record = json.loads(out.read_text())
    first, second = record["train"]["pieces"]
    assert first == {"marker": "=== start Thu Dec  3 15:43:33 UTC 2026 ===", "resumed_after": None,
                     "until_step": 4210, "why": "the 115-minute limit", "max_minutes": 115, "wall": "1:56:02",
                     "exit": 3, "peak_rss_kb": 3395672, "session": 37}
    assert (second["resumed_after"], second["until_step"], second["max_minutes"], second["wall"],
            second["exit"], second["session"]) == (4210, "end", 70.5, "19:48.26", 0, 38)
    assert record["train"]["validation_rows"] == {
        "0": {"token_macro_f": 0.0298, "ents_f": 0.0144}, "3900": {"token_macro_f": 0.7525, "ents_f": 0.8154},
        "7800": {"token_macro_f": 0.7517, "ents_f": 0.8085}}
    assert record["train"]["command"] == "CMD" and record["calibration"] == {"chosen_tau": -0.2}
    assert record["test_token_report"]["macro avg"]["f1-score"] == 0.75 and record["test_entity_scores"]["f"] == 0.83
    printed = capsys.readouterr().out
    assert "bootstrap_test" not in record and "piece 38: after 4210 -> end" in printed
    assert "piece 37: from the start -> 4210" in printed

    with pytest.raises(ValueError, match="--sessions gives 1 sessions, but .* has 2 pieces"):
        collect_run.collect(log, sessions=[37])
    empty = tmp_path / "empty.log"
    empty.write_text("nothing here\n")
    with pytest.raises(ValueError, match="no training piece found"):
        collect_run.collect(empty)
    bad = tmp_path / "bad.log"
    bad.write_text(PIECES_LOG.replace("Exit status: 0", "Exit status: killed"), encoding="utf8")
    with pytest.raises(ValueError, match=r"bad.log, line 22: 'Exit status' is not a whole number: 'killed'"):
        collect_run.collect(bad)
    (metrics / "entity_scores.json").unlink()
    with pytest.raises(SystemExit):
        collect_run.main([str(log), "--out", str(out), "--metrics", str(metrics)])
    assert "has no entity_scores.json" in capsys.readouterr().err
