"""Time nlp.update steps of a training config on this machine (used to size GPU runs)."""
import sys
import time
from itertools import islice

import spacy
from spacy.training import Corpus
from spacy.util import load_config, load_model_from_config, minibatch
from thinc.api import require_gpu

import spacy_ner_bert  # noqa: F401

config_path, train_path, encoder, n_steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
on_gpu = "--cpu" not in sys.argv
if on_gpu:
    require_gpu(0)
config = load_config(config_path, overrides={"paths.encoder": encoder, "paths.train": train_path, "paths.dev": train_path})
nlp = load_model_from_config(config, auto_fill=True)
examples = list(islice(Corpus(train_path)(nlp), 4000))
optimizer = nlp.initialize(lambda: examples[:200])
batches = list(minibatch(examples, size=32))
for b in batches[:5]:
    nlp.update(b, sgd=optimizer)
start = time.perf_counter()
for b in islice(batches[5:], n_steps):
    nlp.update(b, sgd=optimizer, drop=0.1)
if on_gpu:
    spacy.util.get_current_ops().xp.cuda.Device().synchronize()
print(f"STEPS_PER_S {n_steps / (time.perf_counter() - start):.3f}")
