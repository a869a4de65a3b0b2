"""`spacy_ner_bert.resume.train`: spacy train that stops with a checkpoint and resumes the same run."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import spacy
import torch
from spacy.tokens import DocBin

from spacy_ner_bert import resume
from spacy_ner_bert.resume import ResumeError, checkpoint_path, train

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "minilm_cpu.cfg"


@spacy.registry.callbacks("test_resume.signal_at.v1")
def signal_at(step: int):
    """A before_update callback that sends this process SIGTERM before `step`'s update."""
    def before_update(nlp, args):
        if args["step"] == step:
            os.kill(os.getpid(), signal.SIGTERM)

    return before_update


def overrides(tiny_bert, corpus, signal_step=-1, **extra):  # extra: more dot-key overrides
    """The workflow's config on the tiny BERT: ~5 batches an epoch, 3 epochs, validation every 4
    steps, dropout on (head and encoder), a learning rate that moves the weights."""
    settings = {
        "paths.train": str(corpus / "train.spacy"),
        "paths.dev": str(corpus / "dev.spacy"),
        "paths.encoder": tiny_bert,
        "training.eval_frequency": 4,
        "training.batcher.size": 30,
        "training.optimizer.learn_rate.warmup_steps": 3,
        "training.optimizer.learn_rate.total_steps": 20,
        "training.optimizer.learn_rate.initial_rate": 0.001,
        "training.before_update": {"@callbacks": "test_resume.signal_at.v1", "step": signal_step},
        # the tiny BERT has no dropout of its own: some, so the torch generator matters
        "components.ner_bert.model.tok2vec.transformer_config": {"hidden_dropout_prob": 0.1},
    }
    settings.update(extra)
    return settings


# TokenClassifier.v3 with spaCy's hash embeddings beside the encoder (its thinc tables and Maxout are
# checkpointed with the head, their Adam moments with the optimizer's)
FEATURES = {
    "components.ner_bert.model.@architectures": "spacy-ner-bert.TokenClassifier.v3",
    "components.ner_bert.model.features": {
        "@architectures": "spacy.MultiHashEmbed.v2", "width": 8, "attrs": ["NORM", "SHAPE"], "rows": [200, 50],
        "include_static_vectors": False,
    },
}


def weights(path):
    """Every parameter of the pipeline at `path`: the thinc layers' and the encoder's."""
    nlp = spacy.load(path)
    model = nlp.get_pipe("ner_bert").model
    found = {}
    for i, node in enumerate(model.walk()):
        for name in node.param_names:
            if node.has_param(name):
                found[f"node{i}.{name}"] = numpy.asarray(node.get_param(name))
        for shim in node.shims:
            for name, value in shim._model.state_dict().items():
                found[f"shim.{name}"] = value.numpy()
    return found


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not numpy.array_equal(wa[k], wb[k])]
    assert not different, f"{len(different)} of {len(wa)} parameters differ, e.g. {different[:3]}"


def saved_steps(monkeypatch):
    steps = []
    save = resume._save

    def spy(output_path, nlp, optimizer, progress, position):
        steps.append(progress["step"])
        return save(output_path, nlp, optimizer, progress, position)

    monkeypatch.setattr(resume, "_save", spy)
    return steps


def test_it_trains_as_spacy_train_does(tiny_bert, corpus, tmp_path):
    """The same loop as spacy train: the same batches, updates and draws, so the same parameters."""
    from spacy.cli.train import train as spacy_train

    settings = overrides(tiny_bert, corpus)
    spacy_train(CONFIG, tmp_path / "spacy", overrides=settings)
    assert train(CONFIG, tmp_path / "ours", overrides=settings) is True
    assert_same_weights(tmp_path / "spacy" / "model-last", tmp_path / "ours" / "model-last")
    assert_same_weights(tmp_path / "spacy" / "model-best", tmp_path / "ours" / "model-best")


@pytest.mark.parametrize(
    "extra",
    [{}, {"components.ner_bert.adversarial_epsilon": 0.0}, {"training.optimizer.use_averages": True}, FEATURES],
    ids=["default-fgm", "without-fgm", "averages", "lexical-features"],
)
def test_a_resumed_run_is_the_uninterrupted_run(tiny_bert, corpus, tmp_path, monkeypatch, capsys, extra):
    """Stopped by SIGTERM in its second epoch and resumed, a run ends with the very parameters (bit for
    bit) and the same best checkpoint as the run never stopped; checkpoints fall every
    `checkpoint_every` steps and when stopped, and go when the run ends."""
    straight = tmp_path / "straight"
    assert train(CONFIG, straight, overrides=overrides(tiny_bert, corpus, **extra), checkpoint_every=0) is True
    assert not checkpoint_path(straight).exists()
    straight_meta = json.loads((straight / "model-best" / "meta.json").read_text())

    steps = saved_steps(monkeypatch)
    handler = signal.getsignal(signal.SIGTERM)
    split = tmp_path / "split"
    settings = overrides(tiny_bert, corpus, signal_step=6, **extra)
    assert train(CONFIG, split, overrides=settings, checkpoint_every=4) is False
    assert steps == [3, 6]  # every 4 steps, then at the stop (SIGTERM before step 6: it ends step 6)
    printed = capsys.readouterr().out
    assert "Checkpoint after step 3 (epoch 0, " in printed and "Stopped after step 6 (signal SIGTERM)" in printed
    assert json.loads((checkpoint_path(split) / resume.PROGRESS_FILE).read_text())["step"] == 6
    assert (split / "model-best").is_dir()
    assert signal.getsignal(signal.SIGTERM) is handler  # put back once training returns

    assert train(CONFIG, split, overrides=settings, resume=True, checkpoint_every=4) is True
    assert steps[2:] == [7, 11, 15]  # 3 epochs of 6 batches: steps 0-17
    assert not checkpoint_path(split).exists()
    assert_same_weights(straight / "model-last", split / "model-last")
    assert_same_weights(straight / "model-best", split / "model-best")
    split_meta = json.loads((split / "model-best" / "meta.json").read_text())
    assert split_meta["performance"] == straight_meta["performance"]
    has_features = spacy.load(split / "model-last").get_pipe("ner_bert").model.has_ref("features")
    assert has_features is (extra is FEATURES)


def test_without_the_checkpoint_the_run_differs(tiny_bert, corpus, tmp_path):
    """The test above can fail: restarting from model-last (fresh optimizer, warm-up again) is
    another run. Here a resume whose optimizer moments are dropped ends elsewhere."""
    straight = tmp_path / "straight"
    train(CONFIG, straight, overrides=overrides(tiny_bert, corpus), checkpoint_every=0)
    split = tmp_path / "split"
    settings = overrides(tiny_bert, corpus, signal_step=6)
    train(CONFIG, split, overrides=settings, checkpoint_every=0)
    state_file = checkpoint_path(split) / resume.STATE_FILE
    state = torch.load(state_file, weights_only=False)
    state["optimizer"]["mom1"] = {k: numpy.zeros_like(v) for k, v in state["optimizer"]["mom1"].items()}
    torch.save(state, state_file)
    train(CONFIG, split, overrides=settings, resume=True)
    with pytest.raises(AssertionError, match="parameters differ"):
        assert_same_weights(straight / "model-last", split / "model-last")


def test_auto_resume_starts_the_run_or_continues_it(tiny_bert, corpus, tmp_path):
    """resume="auto" (the workflow's --auto-resume): with no checkpoint it starts the run; run again
    after a stop, it continues it to the uninterrupted run's parameters; finished, a rerun starts anew."""
    straight = tmp_path / "straight"
    train(CONFIG, straight, overrides=overrides(tiny_bert, corpus), checkpoint_every=0)
    split = tmp_path / "split"
    settings = overrides(tiny_bert, corpus, signal_step=6)
    assert train(CONFIG, split, overrides=settings, resume="auto", checkpoint_every=0) is False
    assert json.loads((checkpoint_path(split) / resume.PROGRESS_FILE).read_text())["step"] == 6
    assert train(CONFIG, split, overrides=settings, resume="auto", checkpoint_every=0) is True
    assert not checkpoint_path(split).exists()
    assert_same_weights(straight / "model-last", split / "model-last")
    assert_same_weights(straight / "model-best", split / "model-best")
    # finished: the same command starts a new run (stopped here at step 2)
    stopped_at_2 = overrides(tiny_bert, corpus, signal_step=2)
    assert train(CONFIG, split, overrides=stopped_at_2, resume="auto") is False
    assert json.loads((checkpoint_path(split) / resume.PROGRESS_FILE).read_text())["step"] == 2
    changed = overrides(tiny_bert, corpus, signal_step=2, **{"training.optimizer.learn_rate.initial_rate": 0.002})
    with pytest.raises(ResumeError, match=r"Cannot resume: the config differs .* or delete .*checkpoint to start"):
        train(CONFIG, split, overrides=changed, resume="auto")
    # a checkpoint from before a factory setting existed (here cpu_bf16) resumes at that setting's default,
    # and not at another value
    saved_config = checkpoint_path(split) / resume.CONFIG_FILE
    saved_config.write_text(saved_config.read_text().replace("cpu_bf16 = false\n", ""))
    assert "cpu_bf16" not in saved_config.read_text()
    with pytest.raises(ResumeError, match=r"components.ner_bert.cpu_bf16: '\(absent\)' in the checkpoint, True now"):
        train(CONFIG, split, overrides={**stopped_at_2, "components.ner_bert.cpu_bf16": True}, resume="auto")
    assert train(CONFIG, split, overrides=stopped_at_2, resume="auto") is True
    with pytest.raises(ResumeError, match="resume must be True, False or 'auto', not 'yes'"):
        train(CONFIG, split, overrides=settings, resume="yes")


def test_bad_starts_are_refused_and_lose_nothing(tiny_bert, corpus, tmp_path):
    out = tmp_path / "run"
    settings = overrides(tiny_bert, corpus, signal_step=2)
    with pytest.raises(ResumeError, match=r"run/checkpoint: no checkpoint to resume"):
        train(CONFIG, out, overrides=settings, resume=True)
    assert train(CONFIG, out, overrides=settings, checkpoint_every=0) is False
    saved = (checkpoint_path(out) / resume.STATE_FILE).read_bytes()
    with pytest.raises(ResumeError, match="unfinished run: continue it with --resume"):
        train(CONFIG, out, overrides=settings)
    changed = dict(settings, **{"training.optimizer.learn_rate.initial_rate": 0.002})
    with pytest.raises(ResumeError, match=r"differs .* at training\.optimizer\.learn_rate\.initial_rate: 0\.001 in "
                                          r"the checkpoint, 0\.002 now"):
        train(CONFIG, out, overrides=changed, resume=True)
    assert (checkpoint_path(out) / resume.STATE_FILE).read_bytes() == saved
    # another training corpus: refused before any step, model-last untouched
    full = (corpus / "train.spacy").read_bytes()
    last = (out / "model-last" / "ner_bert" / "model").read_bytes()
    DocBin(docs=list(DocBin().from_bytes(full).get_docs(spacy.blank("en").vocab))[:15]).to_disk(corpus / "train.spacy")
    with pytest.raises(ResumeError, match="trained on 20 examples, the training corpus now has 15"):
        train(CONFIG, out, overrides=settings, resume=True)
    assert (out / "model-last" / "ner_bert" / "model").read_bytes() == last
    # the same number of examples, other content (the docs reordered): refused too
    DocBin(docs=list(DocBin().from_bytes(full).get_docs(spacy.blank("en").vocab))[::-1]).to_disk(corpus / "train.spacy")
    with pytest.raises(ResumeError, match=r"the training corpus \(.*train\.spacy\) has changed since the run started"):
        train(CONFIG, out, overrides=settings, resume=True)
    assert (out / "model-last" / "ner_bert" / "model").read_bytes() == last
    (corpus / "train.spacy").write_bytes(full)
    for bad, message in (({"checkpoint_every": -1}, "checkpoint_every must be 0 or more"),
                         ({"max_minutes": 0}, "max_minutes must be more than 0")):
        with pytest.raises(ResumeError, match=message):
            train(CONFIG, out, overrides=settings, resume=True, **bad)
    with pytest.raises(ResumeError, match="nope.cfg: config file not found"):
        train(tmp_path / "nope.cfg", out, overrides=settings, resume=True)
    # a kill between the two renames of a swap leaves checkpoint.old, which is complete: it is used
    os.replace(checkpoint_path(out), tmp_path / "run" / "checkpoint.old")
    assert train(CONFIG, out, overrides=settings, resume=True) is True
    assert not any(p.name.startswith("checkpoint") for p in out.iterdir())


def test_the_command_stops_at_its_time_limit_and_resumes(tiny_bert, corpus, tmp_path):
    """`python -m spacy_ner_bert train`: exit 3 with a checkpoint at --max-minutes, 0 when resumed to the end."""
    settings = overrides(tiny_bert, corpus)
    settings.pop("training.before_update")
    args = [sys.executable, "-m", "spacy_ner_bert", "train", str(CONFIG), "--output", str(tmp_path / "run")]
    for key, value in settings.items():
        args += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    first = subprocess.run(args + ["--max-minutes", "0.0001"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert first.returncode == 3, first.stderr[-2000:]
    assert "Stopped after step 0 (the 0.0001-minute limit)" in first.stdout
    second = subprocess.run(args + ["--resume"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "Resumed from" in second.stdout and "after step 0" in second.stdout
    again = subprocess.run(args + ["--resume"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert again.returncode == 1 and "no checkpoint to resume" in again.stderr
    both = subprocess.run(args + ["--resume", "--auto-resume"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert both.returncode == 1 and "--resume and --auto-resume: give one of them" in both.stderr


def params_of(path):
    """Every parameter of the pipeline at `path`, keyed as the trainer's snapshots key them."""
    return resume._params(spacy.load(path))


def test_tail_averaging_writes_the_mean_and_leaves_the_run_as_it_was(tiny_bert, corpus, tmp_path, capsys):
    """model-averaged holds the mean of the snapshots and the final parameters; model-best and
    model-last are those of the run without averaging (a snapshot draws no random number)."""
    settings = overrides(tiny_bert, corpus)
    train(CONFIG, tmp_path / "plain", overrides=settings, checkpoint_every=0)
    run = tmp_path / "avg"
    assert train(CONFIG, run, overrides=settings, checkpoint_every=0, average_from=10, average_every=3) is True
    assert_same_weights(tmp_path / "plain" / "model-last", run / "model-last")
    assert_same_weights(tmp_path / "plain" / "model-best", run / "model-best")
    assert resume.snapshot_steps(run) == [10, 13, 16]  # 3 epochs of 6 batches: steps 0-17
    assert "after steps 10..17 (4 sets)" in capsys.readouterr().out
    assert_averaged_is_the_mean(run, [10, 13, 16], 17)


def assert_averaged_is_the_mean(run, snapshots, last):
    """`run`'s model-averaged holds the mean of its snapshots after steps `snapshots` and of its final
    parameters (model-last, after step `last`), the snapshots differ, and it loads and predicts."""
    averaged_dir = run / resume.AVERAGED
    assert json.loads((averaged_dir / "averaged_steps.json").read_text())["steps"] == snapshots + [last]
    sets = [torch.load(resume._snapshot_file(run, s), weights_only=False) for s in snapshots]
    sets.append(params_of(run / "model-last"))
    averaged = params_of(averaged_dir)
    assert averaged.keys() == sets[0].keys()
    moved = 0
    for where, values in averaged.items():
        for name, value in values.items():
            stack = numpy.stack([numpy.asarray(one[where][name], dtype="float64") for one in sets])
            integer = isinstance(value, torch.Tensor) and not value.is_floating_point()
            expected = stack[-1] if integer else stack.mean(axis=0)  # integer buffers never train
            numpy.testing.assert_allclose(numpy.asarray(value, dtype="float64"), expected, rtol=1e-5, atol=1e-6,
                                          err_msg=f"{where} {name}")
            moved += not numpy.allclose(stack[-1], stack[0])
    assert moved > 10  # the snapshots differ: the mean is not any one of them
    nlp = spacy.load(averaged_dir)
    assert nlp("Peter lives in Berlin .").ents is not None


def test_tail_averaging_survives_a_stop_and_its_settings_must_match(tiny_bert, corpus, tmp_path):
    """Stopped after a snapshot and resumed, the run averages the same parameters as the straight run;
    a resume with other averaging settings is refused, naming both; a new run drops old snapshots."""
    settings = overrides(tiny_bert, corpus)
    straight = tmp_path / "straight"
    train(CONFIG, straight, overrides=settings, checkpoint_every=0, average_from=10, average_every=3)
    split = tmp_path / "split"
    stopping = overrides(tiny_bert, corpus, signal_step=12)
    assert train(CONFIG, split, overrides=stopping, checkpoint_every=0, average_from=10, average_every=3) is False
    assert resume.snapshot_steps(split) == [10]
    with pytest.raises(ResumeError, match=r"tail averaging --average-from 10 --average-every 3, not off"):
        train(CONFIG, split, overrides=stopping, resume=True)
    with pytest.raises(ResumeError, match=r"--average-every 3, not --average-from 10 --average-every 4"):
        train(CONFIG, split, overrides=stopping, resume=True, average_from=10, average_every=4)
    assert train(CONFIG, split, overrides=stopping, resume=True, average_from=10, average_every=3) is True
    assert_same_weights(straight / resume.AVERAGED, split / resume.AVERAGED)

    assert train(CONFIG, split, overrides=settings, checkpoint_every=0) is True  # a new run, no averaging
    assert resume.snapshot_steps(split) == [] and not (split / resume.AVERAGED).exists()


def test_tail_averaging_past_the_end_or_bad_settings(tiny_bert, corpus, tmp_path, capsys):
    settings = overrides(tiny_bert, corpus)
    assert train(CONFIG, tmp_path / "late", overrides=settings, checkpoint_every=0, average_from=500) is True
    assert "No snapshot to average: the run ended at step 17" in capsys.readouterr().out
    assert not (tmp_path / "late" / resume.AVERAGED).exists() and (tmp_path / "late" / "model-last").is_dir()
    with pytest.raises(ResumeError, match="average_every must be 1 or more, not 0"):
        train(CONFIG, tmp_path / "bad", overrides=settings, average_from=1, average_every=0)
    with pytest.raises(ResumeError, match="average_from must be 0 or more, not -1"):
        train(CONFIG, tmp_path / "bad", overrides=settings, average_from=-1)
