"""The spaCy project `demo` chain end to end, on a tiny synthetic GMB zip with the tiny encoder."""
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from spacy_ner_bert.resume import _find_checkpoint

ROOT = Path(__file__).parent.parent
NEMO_LABELS = (ROOT / "configs" / "gmb_labels.txt").read_text().split()

PEOPLE = ["John", "Mary", "Obama", "Putin", "Merkel"]
PLACES = ["Paris", "London", "Moscow", "Baghdad", "Berlin"]
COUNTRIES = ["Iraq", "Iran", "China", "France"]
DAYS = ["Monday", "Friday", "March"]


def synthetic_sentence(rng):
    p, c, d = rng.choice(PEOPLE), rng.choice(COUNTRIES), rng.choice(DAYS)
    words = [p, "met", "the", "United", "Nations", "in", rng.choice(PLACES), ",", c, "on", d, "."]
    tags = ["B-PER", "O", "O", "B-ORG", "I-ORG", "O", "B-LOC", "O", "B-GPE", "O", "B-TIME", "O"]
    return " ".join(words), " ".join(tags)


def make_zip(folder: Path, n_train: int, n_dev: int) -> str:
    rng = random.Random(0)
    name = "gmb_v_2.2.0_clean"
    path = folder / f"{name}.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for split, n in (("train", n_train), ("dev", n_dev)):
            rows = [synthetic_sentence(rng) for _ in range(n)]
            zf.writestr(f"{name}/text_{split}.txt", "".join(t + "\n" for t, _ in rows))
            zf.writestr(f"{name}/labels_{split}.txt", "".join(lab + "\n" for _, lab in rows))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    proj = tmp_path_factory.mktemp("project")
    for item in ("project.yml", "configs", "scripts"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, proj / item)
    data = tmp_path_factory.mktemp("data")
    return proj, data, make_zip(data, n_train=260, n_dev=60)


def run_project(proj: Path, command: str, *overrides: str):
    args = [sys.executable, "-m", "spacy", "project", "run", command, str(proj), *overrides]
    return subprocess.run(args, capture_output=True, text=True, cwd=proj, timeout=600)


def demo_overrides(project, tiny_bert, **demo_vars: str):
    """--vars for a demo run on the synthetic zip and the tiny BERT; `demo_vars` set or replace vars."""
    _, data, sha = project
    values = {"encoder": tiny_bert, "data_dir": str(data), "data_sha256": sha, "demo_train_limit": "200",
              "demo_dev_size": "20", "demo_test_limit": "40", "demo_max_steps": "2", "demo_eval_frequency": "1",
              **demo_vars}
    return [arg for name, value in values.items() for arg in (f"--vars.{name}", value)]


def test_demo_workflow(project, tiny_bert):
    proj = project[0]
    overrides = demo_overrides(project, tiny_bert, vis_docs="5")
    out = run_project(proj, "demo", *overrides)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # the NeMo-format table is printed, and NeMo's published row beside ours
    assert "O (label_id: 0)" in out.stdout and "I-TIME (label_id: 12)" in out.stdout
    assert "NeMo ner_en_bert (pub.)" in out.stdout

    report = json.loads((proj / "metrics/demo/token_report.json").read_text())
    rows = [k for k in report if k not in ("accuracy", "macro avg", "weighted avg")]
    assert rows == NEMO_LABELS
    assert report["macro avg"]["support"] == 40 * 12
    for row in rows:
        assert set(report[row]) == {"precision", "recall", "f1-score", "support"}
    calibration = json.loads((proj / "metrics/demo/calibration.json").read_text())
    assert calibration["chosen_tau"] in [row["tau"] for row in calibration["table"]]
    entity = json.loads((proj / "metrics/demo/entity_scores.json").read_text())
    assert set(entity) == {"p", "r", "f", "per_type"}
    html = (proj / "visualize/demo.html").read_text()
    assert html.count('class="entities"') == 5
    sdists = list((proj / "packages/demo").glob("*/dist/*.tar.gz"))
    assert len(sdists) == 1, "spacy package built nothing"
    check_package_installs(sdists[0], proj.parent / "site")

    # A second run skips every step whose deps and outputs are unchanged.
    again = run_project(proj, "demo", *overrides)
    assert again.returncode == 0
    assert again.stdout.count("Skipping") >= 4, again.stdout[-2000:]


def check_package_installs(sdist: Path, target: Path):
    """The packaged pipeline pip-installs and spacy.load()s it by name, in a fresh interpreter."""
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(sdist)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr[-2000:]
    name = sdist.name[: -len("-0.1.0.tar.gz")]
    script = f"import spacy; nlp = spacy.load({name!r}); print(nlp.pipe_names, nlp.meta['requirements'])"
    env = {**__import__("os").environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd="/", timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("]")[0] == "['ner_bert'" and "spacy-ner-bert>=" in out.stdout


def test_assets_wrong_checksum(project, tiny_bert):
    proj, data, _ = project
    out = run_project(proj, "assets", "--vars.data_dir", str(data), "--vars.data_sha256", "beef" * 16,
                      "--vars.data_zip", "gmb_v_2.2.0_clean.zip", "--vars.data_url", "none")
    assert out.returncode != 0
    assert f"expected {'beef' * 16}" in out.stderr and "gmb_v_2.2.0_clean.zip: sha256 is" in out.stderr


def test_assets_missing_says_where_it_looked(project, tmp_path):
    proj, _, sha = project
    out = run_project(proj, "assets", "--vars.data_dir", str(tmp_path), "--vars.data_sha256", sha,
                      "--vars.data_zip", "other.zip", "--vars.data_url", "none")
    assert out.returncode != 0
    assert str(tmp_path / "other.zip") in out.stderr and "not found" in out.stderr



@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stopped_train_goes_on_when_run_again(project, tiny_bert, signum):
    """The workflow trains with --auto-resume. Stopped by Ctrl-C or SIGTERM (sent to the process group,
    as a terminal or a job scheduler does), `train-demo` leaves a checkpoint, and running the command
    again continues the run to its end. (On Ctrl-C, weasel kills the command a moment later, so the
    checkpoint may be the last periodic one, vars.checkpoint_every.)"""
    proj = project[0]
    overrides = demo_overrides(project, tiny_bert, demo_max_steps="100", demo_eval_frequency="10",
                               demo_batch_size="30", checkpoint_every="5")
    for command in ("assets", "convert-demo"):
        assert run_project(proj, command, *overrides).returncode == 0
    shutil.rmtree(proj / "training" / "demo", ignore_errors=True)
    args = [sys.executable, "-m", "spacy", "project", "run", "train-demo", str(proj), *overrides]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=proj,
                             start_new_session=True)
    deadline = time.time() + 300
    while not (proj / "training/demo/checkpoint/progress.json").exists():  # the first one: after step 4
        assert first.poll() is None and time.time() < deadline, "train-demo ended before it could be stopped"
        time.sleep(0.05)
    os.killpg(first.pid, signum)
    out, err = first.communicate(timeout=300)
    assert first.returncode != 0
    saved = _find_checkpoint(proj / "training/demo")  # checkpoint/, or checkpoint.old/ if killed mid-swap
    progress = json.loads((saved / "progress.json").read_text())
    assert 4 <= progress["step"] < 99, out[-2000:]
    again = run_project(proj, "train-demo", *overrides)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    said = " ".join(again.stdout.split())
    where = saved.relative_to(proj)
    assert f"Resumed from {where} after step {progress['step']} " in said, said[-2000:]
    assert not (proj / "training/demo/checkpoint").exists()
    meta = json.loads((proj / "training/demo/model-last/meta.json").read_text())
    assert meta["performance"]  # the run's evaluations reached the saved pipeline
