"""Entry points: every registered name resolves after install, without importing the package."""
import configparser
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from spacy.util import registry

SETUP_CFG = Path(__file__).parent.parent / "setup.cfg"


def declared(group):
    parser = configparser.ConfigParser()
    parser.read(SETUP_CFG)
    lines = parser["options.entry_points"][group].strip().splitlines()
    return [line.split("=")[0].strip() for line in lines]


def test_entry_points_installed():
    """What setup.cfg declares is what the installed distribution exposes."""
    for group in ("spacy_factories", "spacy_architectures", "spacy_scorers", "spacy_augmenters"):
        installed = {ep.name for ep in entry_points(group=group) if ep.value.startswith("spacy_ner_bert")}
        assert installed == set(declared(group)), f"reinstall the package: {group} differs"


@pytest.mark.parametrize(
    "group,table", [("spacy_architectures", "architectures"), ("spacy_scorers", "scorers"), ("spacy_augmenters", "augmenters")]
)
def test_every_registered_name_is_declared(group, table):
    """Whatever the package registers is in setup.cfg, so spaCy finds it without the import."""
    import spacy_ner_bert  # noqa: F401  (registers its functions)

    registered = {name for name in getattr(registry, table).get_all() if name.startswith("spacy-ner-bert.")}
    assert registered == set(declared(group))


@pytest.mark.parametrize("name", declared("spacy_architectures"))
def test_architecture_resolves(name):
    assert callable(registry.architectures.get(name))


@pytest.mark.parametrize("name", declared("spacy_scorers"))
def test_scorer_resolves(name):
    assert callable(registry.scorers.get(name)())


@pytest.mark.parametrize("name", declared("spacy_augmenters"))
def test_augmenter_resolves(name):
    assert callable(registry.augmenters.get(name)(level=0.5))


def test_factory_in_fresh_interpreter(tiny_bert):
    """spaCy finds `ner_bert` through its entry point: the script never imports our package."""
    script = (
        "import sys, spacy\n"
        "nlp = spacy.blank('en')\n"
        f"ner = nlp.add_pipe('ner_bert', config={{'model': {{'tok2vec': {{'name': {tiny_bert!r}}}}}}})\n"
        "assert 'spacy_ner_bert' in sys.modules\n"
        "print(type(ner).__name__, nlp.pipe_names)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "NERBert ['ner_bert']"
