"""Training that can stop and go on: spaCy's training loop, with its whole state saved on the way.

`spacy train` cannot continue a run: stopped (a machine that goes away, a time limit), the hours
already spent are lost, and starting again from `model-last` gives another run (a fresh optimizer,
the warm-up again, another batch order). `train` here runs the same loop as `spacy train`
(spacy.training.loop.train and train_while_improving, which it follows step for step: the same
batches, updates, evaluations, `model-best` / `model-last` and console table) and every
`checkpoint_every` steps saves under `OUTPUT/checkpoint/` what the next step depends on:

- every parameter, the thinc layers' and the PyTorch encoder's (keyed by component and position);
- the optimizer's Adam moments, update counts and averages (thinc keys them by layer id, which
  changes from one process to the next: they are saved by component and position too);
- the step, epoch, evaluations so far (for `model-best` and patience), losses and words seen;
- the epoch's order of the training examples and how many of its batches were used, and the sha256
  of the training corpus's files (a resume on other data is refused);
- the random states: Python's, numpy's and torch's.

`train(..., resume=True)` builds the pipeline from the same config, puts the batch stream at the saved
place (the saved order, its used batches skipped), replays the schedules (learning rate, dropout) up to
the saved step, and loads the rest. On CPU the resumed run is the uninterrupted one: the same
parameters, bit for bit (tests/test_resume.py). On a GPU it cannot be bit-identical: cupy's generator
(the head's dropout masks) is reseeded from the seed and the step, and CUDA kernels are not
deterministic anyway (tests/test_gpu.py resumes a GPU checkpoint on the GPU and on the CPU).
`resume="auto"` (the command's `--auto-resume`, which the project workflow uses) continues a stopped
run if `OUTPUT` holds its checkpoint and otherwise starts the run, so rerunning an interrupted
`spacy project run train` goes on.

A run stops cleanly, saving a checkpoint first, after `max_minutes` or on SIGTERM / SIGINT (at the
end of the step in progress). Checkpoints are written to a temporary folder and swapped in, so a
kill during the write leaves the previous one. The checkpoint is removed when the run finishes.

Tail averaging (`average_from`, the command's `--average-from`): from that step on, every
`average_every` steps, the parameters are saved to `OUTPUT/snapshots/`; when the run finishes, the
mean of those snapshots and the final parameters is written as `OUTPUT/model-averaged` (one model,
the weights of the last stretch of the run averaged, as stochastic weight averaging does). Saving a
snapshot draws no random number, so the run itself (model-best, model-last) is the run without it.
"""
import hashlib
import itertools
import json
import os
import random
import shutil
import signal
import sys
from contextlib import nullcontext
from pathlib import Path
from timeit import default_timer as timer
from typing import IO, Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy
from spacy import util
from spacy.cli._util import setup_gpu
from spacy.language import Language
from spacy.errors import Errors
from spacy.schemas import ConfigSchemaTraining
from spacy.training.corpus import FILE_TYPE, walk_corpus
from spacy.training.initialize import init_nlp
from spacy.training.loop import (
    clean_output_dir,
    create_before_to_disk_callback,
    create_evaluation_callback,
    subdivide_batch,
    update_meta,
)
from thinc.api import Config, Model, Optimizer, constant, fix_random_seed, get_current_ops, set_gpu_allocator
from thinc.util import to_numpy

from .assets import sha256_of
from .encoder_params import unique_shims

CHECKPOINT = "checkpoint"
STATE_FILE = "state.pt"
PROGRESS_FILE = "progress.json"
CONFIG_FILE = "config.cfg"
SNAPSHOTS = "snapshots"
AVERAGED = "model-averaged"


class ResumeError(ValueError):
    """A run that cannot start or resume as asked; the message names the path or setting at fault."""


def checkpoint_path(output_path: Union[str, Path]) -> Path:
    return Path(output_path) / CHECKPOINT


def train(
    config_path: Union[str, Path],
    output_path: Union[str, Path],
    *,
    overrides: Optional[Dict[str, Any]] = None,
    use_gpu: int = -1,
    resume: Union[bool, str] = False,
    checkpoint_every: int = 1000,
    max_minutes: Optional[float] = None,
    average_from: Optional[int] = None,
    average_every: int = 1000,
    stdout: Optional[IO] = None,
    stderr: Optional[IO] = None,
) -> bool:
    """Train the pipeline of `config_path` as `spacy train` does, into `output_path`, saving a
    checkpoint every `checkpoint_every` steps (0: only when stopped early).

    config_path: The training config. overrides: spacy train's `--section.key` overrides (dot keys).
    output_path: The output folder (model-best, model-last, checkpoint).
    use_gpu: GPU id, -1 for CPU. resume: True: continue the run whose checkpoint is in `output_path`;
        "auto": continue it if there is one, else start the run (a workflow that reruns the same command).
    max_minutes: stop (with a checkpoint) after the first step that ends past this many minutes.
    average_from, average_every: tail averaging (None: off): snapshots after step `average_from` and
        every `average_every` steps after it; `model-averaged` = their mean with the final parameters.
    stdout, stderr: where the console table and messages go (default: sys.stdout, sys.stderr).
    RETURNS (bool): True when the run finished, False when it stopped early with a checkpoint.
    """
    config_path, output_path = Path(config_path), Path(output_path)
    if resume not in (True, False, "auto"):
        raise ResumeError(f"resume must be True, False or 'auto', not {resume!r}")
    if checkpoint_every < 0:
        raise ResumeError(f"checkpoint_every must be 0 or more, not {checkpoint_every}")
    if max_minutes is not None and max_minutes <= 0:
        raise ResumeError(f"max_minutes must be more than 0, not {max_minutes}")
    if average_from is not None and average_from < 0:
        raise ResumeError(f"average_from must be 0 or more, not {average_from}")
    if average_every < 1:
        raise ResumeError(f"average_every must be 1 or more, not {average_every}")
    if not config_path.is_file():
        raise ResumeError(f"{config_path}: config file not found")
    config = util.load_config(config_path, overrides=dict(overrides or {}), interpolate=False)
    saved = _find_checkpoint(output_path)
    if resume is True:
        if saved is None:
            raise ResumeError(f"{checkpoint_path(output_path)}: no checkpoint to resume (train without --resume to start the run)")
    elif resume is False and saved is not None:
        raise ResumeError(
            f"{saved} holds the checkpoint of an unfinished run: continue it with --resume, "
            "or delete it (or choose another output folder) to start a new run"
        )
    output_path.mkdir(parents=True, exist_ok=True)
    setup_gpu(use_gpu)
    nlp = init_nlp(config, use_gpu=use_gpu)
    averaging = None if average_from is None else {"from": average_from, "every": average_every}
    if saved is not None:
        _check_same_config(nlp.config, saved)
        _check_same_averaging(averaging, saved)
    return _train(nlp, output_path, saved, use_gpu, checkpoint_every, max_minutes, averaging,
                  stdout or sys.stdout, stderr or sys.stderr)


def _train(nlp: Language, output_path: Path, saved: Optional[Path], use_gpu: int, checkpoint_every: int,
           max_minutes: Optional[float], averaging: Optional[Dict[str, int]], stdout: IO, stderr: IO) -> bool:
    """spacy.training.loop.train and train_while_improving in one, with checkpoints."""
    from wasabi import Printer

    msg = Printer(no_print=True)
    config = nlp.config.interpolate()
    seed = config["training"]["seed"]
    if seed is not None:
        fix_random_seed(seed)
    allocator = config["training"]["gpu_allocator"]
    if use_gpu >= 0 and allocator:
        set_gpu_allocator(allocator)
    T = util.registry.resolve(config["training"], schema=ConfigSchemaTraining)
    train_corpus, dev_corpus = util.resolve_dot_names(config, [T["train_corpus"], T["dev_corpus"]])
    optimizer = T["optimizer"]
    before_to_disk = create_before_to_disk_callback(T["before_to_disk"])
    before_update = T["before_update"]
    frozen, annotating = T["frozen_components"], T["annotating_components"]
    eval_frequency, patience, max_steps = T["eval_frequency"], T["patience"], T["max_steps"]
    dropouts = constant(T["dropout"]) if isinstance(T["dropout"], float) else T["dropout"]
    batches = _Batches(nlp, train_corpus, T["batcher"], T["max_epochs"])
    evaluate = create_evaluation_callback(nlp, dev_corpus, T["score_weights"])

    def save_model(is_best: bool) -> None:  # spaCy's save_checkpoint
        with nlp.use_params(optimizer.averages):
            before_to_disk(nlp).to_disk(output_path / "model-last")
        if is_best:
            if (output_path / "model-best").exists():
                shutil.rmtree(output_path / "model-best")
            shutil.copytree(output_path / "model-last", output_path / "model-best")

    progress: Dict[str, Any] = {"step": -1, "epoch": 0, "results": [], "losses": {}, "words": 0, "seconds": 0}
    if saved is None:
        clean_output_dir(output_path)
        for stale in (output_path / SNAPSHOTS, output_path / AVERAGED):
            if stale.exists():  # another run's: never averaged into this one
                shutil.rmtree(stale)
    else:
        progress = _restore(saved, nlp, optimizer, batches, dropouts, seed)
    stdout.write(msg.info(f"Pipeline: {nlp.pipe_names}") + "\n")
    if saved is not None:
        stdout.write(msg.info(f"Resumed from {saved} after step {progress['step']} (epoch {progress['epoch']}); "
                              f"learn rate now {optimizer.learn_rate}") + "\n")
    else:
        stdout.write(msg.info(f"Initial learn rate: {optimizer.learn_rate}") + "\n")
    with nlp.select_pipes(disable=frozen):
        log_step, finalize_logger = T["logger"](nlp, stdout, stderr)

    stop_requested: List[str] = []
    handlers = _on_stop_signals(stop_requested)
    start = timer()
    results: List[Tuple[float, int]] = [tuple(r) for r in progress["results"]]
    losses: Dict[str, float] = progress["losses"]
    words_seen, step, epoch = progress["words"], progress["step"], progress["epoch"]
    finished = True
    try:
        for epoch, batch in batches:
            step += 1
            if before_update:
                before_update(nlp, {"step": step, "epoch": epoch})
            dropout = next(dropouts)
            for subbatch in subdivide_batch(batch, T["accumulate_gradient"]):
                nlp.update(subbatch, drop=dropout, losses=losses, sgd=False, exclude=frozen, annotates=annotating)
            for name, proc in nlp.pipeline:
                if (name not in frozen and getattr(proc, "is_trainable", False)
                        and proc.model not in (True, False, None)):
                    proc.finish_update(optimizer)
            optimizer.step_schedules()
            is_best: Optional[bool] = None
            score, other_scores = None, None
            if not step % eval_frequency:
                with nlp.use_params(optimizer.averages) if optimizer.averages else nullcontext():
                    score, other_scores = evaluate()
                results.append((score, step))
                is_best = score == max(results)[0]
            words_seen += sum(len(eg) for eg in batch)
            info = {
                "epoch": epoch, "step": step, "score": score, "other_scores": other_scores, "losses": losses,
                "checkpoints": results, "seconds": progress["seconds"] + int(timer() - start), "words": words_seen,
            }
            if is_best is not None:
                with nlp.select_pipes(disable=frozen):
                    update_meta(T, nlp, info)
                save_model(is_best)
                info["output_path"] = str(output_path / "model-last")
            log_step(info if is_best is not None else None)
            if is_best is not None:
                losses = {}
            best_step = -max((r_score, -r_step) for r_score, r_step in results)[1]
            if patience and (step - best_step) >= patience:
                break
            if max_steps and step >= max_steps:
                break
            if averaging and step >= averaging["from"] and not (step - averaging["from"]) % averaging["every"]:
                _save_snapshot(output_path, nlp, step)
            out_of_time = max_minutes is not None and timer() - start >= 60.0 * max_minutes
            if stop_requested or out_of_time or (checkpoint_every and not (step + 1) % checkpoint_every):
                state = {"step": step, "epoch": epoch, "results": results, "losses": losses,
                         "words": words_seen, "seconds": info["seconds"], "learn_rate": optimizer.learn_rate,
                         "averaging": averaging}
                where = _save(output_path, nlp, optimizer, state, batches.position())
                if stop_requested or out_of_time:
                    why = f"signal {stop_requested[0]}" if stop_requested else f"the {max_minutes:g}-minute limit"
                    stdout.write(msg.warn(f"Stopped after step {step} ({why}); checkpoint in {where}: "
                                          "the same command with --resume or --auto-resume continues") + "\n")
                    finished = False
                    break
                stdout.write(msg.info(f"Checkpoint after step {step} (epoch {epoch}, {info['seconds']} s): {where}") + "\n")
    finally:
        _restore_signal_handlers(handlers)
        finalize_logger()
        save_model(False)
    if finished:
        if optimizer.averages:
            nlp.use_params(optimizer.averages)
        for path in (checkpoint_path(output_path), *_spares(output_path)):
            if path.exists():
                shutil.rmtree(path)
        stdout.write(msg.good("Saved pipeline to output directory", output_path / "model-last") + "\n")
        if averaging:
            _write_averaged(output_path, nlp, step, before_to_disk, stdout, msg)
    return finished


def _snapshot_file(output_path: Path, step: int) -> Path:
    return output_path / SNAPSHOTS / f"step-{step:07d}.pt"


def _save_snapshot(output_path: Path, nlp: Language, step: int) -> None:
    """Save every parameter after `step` (written aside, then renamed: a kill leaves no half file)."""
    import torch

    final = _snapshot_file(output_path, step)
    final.parent.mkdir(exist_ok=True)
    tmp = final.with_suffix(".tmp")
    torch.save(_params(nlp), tmp)
    os.replace(tmp, final)


def snapshot_steps(output_path: Union[str, Path]) -> List[int]:
    """The steps whose snapshots `output_path` holds, in order."""
    folder = Path(output_path) / SNAPSHOTS
    return sorted(int(p.stem.split("-")[1]) for p in folder.glob("step-*.pt")) if folder.is_dir() else []


def average_params(params: Iterator[Dict[str, Any]]) -> Dict[str, Any]:
    """The mean of parameter sets (as `_params` gives them), accumulated in float64; integer
    tensors (e.g. BERT's position ids buffer) are taken from the last set, as they never train."""
    import torch

    total: Dict[str, Any] = {}
    count = 0
    for one in params:
        count += 1
        for where, values in one.items():
            into = total.setdefault(where, {})
            for name, value in values.items():
                if isinstance(value, torch.Tensor) and not value.is_floating_point():
                    into[name] = value
                elif name in into:
                    into[name] += value.double() if isinstance(value, torch.Tensor) else value
                else:  # a float64 copy, never the set's own array
                    into[name] = (value.to(torch.float64, copy=True) if isinstance(value, torch.Tensor)
                                  else numpy.array(value, dtype="float64"))
    if not count:
        raise ResumeError("no parameters to average")
    for values in total.values():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                values[name] = (value / count).float() if value.is_floating_point() else value
            else:
                values[name] = (value / count).astype("float32")
    return total


def _write_averaged(output_path: Path, nlp: Language, last_step: int, before_to_disk, stdout: IO, msg) -> None:
    """model-averaged: the snapshots' mean with the final parameters (unless the last step was one)."""
    import torch

    steps = snapshot_steps(output_path)
    if not steps:
        stdout.write(msg.warn(f"No snapshot to average: the run ended at step {last_step}, before "
                              f"--average-from; {AVERAGED} not written") + "\n")
        return
    final = _params(nlp)
    with_final = steps[-1] != last_step
    used = steps + ([last_step] if with_final else [])
    sets = (torch.load(_snapshot_file(output_path, s), weights_only=False) for s in steps)
    averaged = average_params(itertools.chain(sets, [final] if with_final else []))
    target = output_path / AVERAGED
    _load_params(nlp, averaged)
    try:
        if target.exists():
            shutil.rmtree(target)
        before_to_disk(nlp).to_disk(target)
        (target / "averaged_steps.json").write_text(json.dumps({"steps": used}), encoding="utf8")
    finally:
        _load_params(nlp, final)
    stdout.write(msg.good(f"Saved the mean of the parameters after steps {used[0]}..{used[-1]} "
                          f"({len(used)} sets)", target) + "\n")


def _check_same_averaging(averaging: Optional[Dict[str, int]], saved: Path) -> None:
    """Refuse a resume whose tail averaging differs from the run's (its snapshots would not fit)."""
    before = json.loads((saved / PROGRESS_FILE).read_text(encoding="utf8")).get("averaging")
    if before != averaging:
        def show(a):
            return "off" if not a else f"--average-from {a['from']} --average-every {a['every']}"
        raise ResumeError(f"{saved} was saved with tail averaging {show(before)}, not {show(averaging)}: "
                          "resume with the run's own settings")


def _on_stop_signals(flag: List[str]) -> Dict[int, Any]:
    """Turn SIGTERM and SIGINT into a request to stop after the current step (main thread only)."""
    def request(signum, frame):
        if flag:  # a second signal: stop now, without a checkpoint
            raise KeyboardInterrupt
        flag.append(signal.Signals(signum).name)

    handlers = {}
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            handlers[signum] = signal.signal(signum, request)
    except ValueError:  # not the main thread: signals keep their handlers
        pass
    return handlers


def _restore_signal_handlers(handlers: Dict[int, Any]) -> None:
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


# --- what is saved -------------------------------------------------------------------------------


def _layers(nlp: Language) -> Iterator[Tuple[str, object, bool]]:
    """(position key, node or shim, is_shim) for every layer of every component, each once."""
    seen = set()
    for name, proc in nlp.pipeline:
        model = getattr(proc, "model", None)
        if not isinstance(model, Model):
            continue
        for i, node in enumerate(model.walk()):
            if node.id not in seen:
                seen.add(node.id)
                yield f"{name}/node{i}", node, False
        for j, shim in enumerate(unique_shims(model)):
            if ("shim", shim.id) not in seen:
                seen.add(("shim", shim.id))
                yield f"{name}/shim{j}", shim, True


def _param_keys(nlp: Language) -> Dict[Tuple[int, str], Tuple[str, str]]:
    """thinc's optimizer keys, (layer id, parameter name) with this process's ids, mapped to
    (position, parameter name), which the next process can find. Nodes and shims number their ids
    apart, so the parameter name tells them apart."""
    import torch

    keys: Dict[Tuple[int, str], Tuple[str, str]] = {}
    for where, layer, is_shim in _layers(nlp):
        if is_shim:
            module = getattr(layer, "_model", None)
            names = [n for n, _ in module.named_parameters()] if isinstance(module, torch.nn.Module) else []
        else:
            names = list(layer.param_names)
        for name in names:
            if (layer.id, name) in keys:
                raise ResumeError(f"cannot checkpoint: two layers share the optimizer key {(layer.id, name)}")
            keys[(layer.id, name)] = (where, name)
    return keys


def _params(nlp: Language) -> Dict[str, Any]:
    import torch

    params = {}
    for where, layer, is_shim in _layers(nlp):
        if is_shim:
            module = getattr(layer, "_model", None)
            if isinstance(module, torch.nn.Module):
                params[where] = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
        else:
            params[where] = {n: to_numpy(layer.get_param(n)) for n in layer.param_names if layer.has_param(n)}
    return params


def _load_params(nlp: Language, params: Dict[str, Any]) -> None:
    import torch

    ops = get_current_ops()
    layers = {where: (layer, is_shim) for where, layer, is_shim in _layers(nlp)}
    if set(params) != set(layers):
        extra, missing = sorted(set(params) - set(layers)), sorted(set(layers) - set(params))
        raise ResumeError(f"the checkpoint's layers are not this pipeline's (only in the checkpoint: {extra[:5]}; "
                          f"only in the pipeline: {missing[:5]})")
    for where, values in params.items():
        layer, is_shim = layers[where]
        if is_shim:
            module = layer._model
            with torch.no_grad():
                module.load_state_dict(values)
        else:
            for n, value in values.items():
                layer.set_param(n, ops.asarray(value))


def _optimizer_state(nlp: Language, optimizer: Optimizer) -> Dict[str, Any]:
    keys = _param_keys(nlp)

    def translate(store):
        out = {}
        for key, value in store.items():
            if key not in keys:
                raise ResumeError(
                    f"cannot checkpoint: the optimizer holds state for {key!r}, a parameter outside this "
                    "pipeline's components"
                )
            out[keys[key]] = to_numpy(value) if hasattr(value, "shape") else value
        return out

    return {
        "mom1": translate(optimizer.mom1),
        "mom2": translate(optimizer.mom2),
        "nr_update": translate(optimizer.nr_update),
        "last_seen": translate(optimizer.last_seen),
        "averages": None if optimizer.averages is None else translate(optimizer.averages),
    }


def _load_optimizer_state(nlp: Language, optimizer: Optimizer, state: Dict[str, Any]) -> None:
    ops = get_current_ops()
    keys = {pos: key for key, pos in _param_keys(nlp).items()}

    def translate(store, arrays):
        out = {}
        for pos, value in store.items():
            if pos not in keys:
                raise ResumeError(f"the checkpoint's optimizer state names a parameter this pipeline lacks: {pos}")
            out[keys[pos]] = ops.asarray(value) if arrays else value
        return out

    if (state["averages"] is None) != (optimizer.averages is None):
        raise ResumeError("the checkpoint's optimizer and this config's disagree on use_averages")
    optimizer.mom1 = translate(state["mom1"], True)
    optimizer.mom2 = translate(state["mom2"], True)
    optimizer.nr_update.clear()
    optimizer.nr_update.update(translate(state["nr_update"], False))
    optimizer.last_seen.clear()
    optimizer.last_seen.update(translate(state["last_seen"], False))
    if state["averages"] is not None:
        optimizer.averages = translate(state["averages"], True)


def _rng_state(gpu: int) -> Dict[str, Any]:
    import torch

    state = {"python": random.getstate(), "numpy": numpy.random.get_state(), "torch": torch.get_rng_state()}
    if gpu >= 0 and torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def _save(output_path: Path, nlp: Language, optimizer: Optimizer, progress: Dict[str, Any],
          position: Dict[str, Any]) -> Path:
    """Write the checkpoint to a fresh folder, then swap it in for the previous one."""
    import torch

    final = checkpoint_path(output_path)
    tmp, old = _spares(output_path)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    torch.save(
        {"params": _params(nlp), "optimizer": _optimizer_state(nlp, optimizer),
         "rng": _rng_state(_gpu_in_use()), "batches": position},
        tmp / STATE_FILE,
    )
    (tmp / CONFIG_FILE).write_text(nlp.config.to_str(), encoding="utf8")
    (tmp / PROGRESS_FILE).write_text(json.dumps(progress, indent=1), encoding="utf8")
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)
    return final


def _gpu_in_use() -> int:
    from thinc.api import CupyOps

    return 0 if isinstance(get_current_ops(), CupyOps) else -1


def _spares(output_path: Path) -> Tuple[Path, Path]:
    final = checkpoint_path(output_path)
    return final.with_name(final.name + ".tmp"), final.with_name(final.name + ".old")


def _find_checkpoint(output_path: Path) -> Optional[Path]:
    """The complete checkpoint in `output_path`: checkpoint/, or checkpoint.old/ where a kill fell
    between the two renames of a swap. checkpoint.tmp/ is never complete."""
    final = checkpoint_path(output_path)
    _, old = _spares(output_path)
    for path in (final, old):
        if all((path / name).is_file() for name in (STATE_FILE, PROGRESS_FILE, CONFIG_FILE)):
            return path
    return None


def _check_same_config(config: Config, saved: Path) -> None:
    """Refuse to resume under another config (`config`: the pipeline's, filled by init_nlp, as the
    checkpoint saved it): name each setting that differs."""
    then = util.load_config(saved / CONFIG_FILE, interpolate=False)
    a, b = _flatten(then.interpolate()), _flatten(config.interpolate())
    # A setting a newer package added is absent from an older checkpoint: at its factory default it is
    # the run's old behaviour, not a change.
    defaults = _factory_defaults(config)
    differ = sorted(
        k for k in set(a) | set(b)
        if a.get(k, "(absent)") != b.get(k, "(absent)") and not (k not in a and k in defaults and defaults[k] == b[k])
    )
    if differ:
        shown = "; ".join(f"{k}: {a.get(k, '(absent)')!r} in the checkpoint, {b.get(k, '(absent)')!r} now"
                          for k in differ[:8])
        more = f" and {len(differ) - 8} more" if len(differ) > 8 else ""
        raise ResumeError(
            f"Cannot resume: the config differs from the one the run started with ({saved / CONFIG_FILE}) at "
            f"{shown}{more}. Resume with the same config and overrides, or delete {saved} to start a new run."
        )


def _factory_defaults(config: Config) -> Dict[str, Any]:
    """Each component's factory defaults, flattened as `_flatten` names the config's settings."""
    defaults = {}
    for name, component in config.get("components", {}).items():
        factory = component.get("factory")
        if factory and Language.has_factory(factory):
            meta = Language.get_factory_meta(factory)
            defaults.update(_flatten(dict(meta.default_config), f"components.{name}."))
    return defaults


def _flatten(section: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    flat = {}
    for key, value in section.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _restore(saved: Path, nlp: Language, optimizer: Optimizer, batches: "_Batches", dropouts, seed) -> Dict[str, Any]:
    """Bring the fresh run to the saved step: the batch stream to its place, the schedules replayed,
    the rest loaded."""
    import torch

    progress = json.loads((saved / PROGRESS_FILE).read_text(encoding="utf8"))
    state = torch.load(saved / STATE_FILE, map_location="cpu", weights_only=False)
    batches.start_at(state["batches"], saved)
    for _ in range(progress["step"] + 1):
        next(dropouts)
        optimizer.step_schedules()
    if not numpy.isclose(optimizer.learn_rate, progress["learn_rate"], rtol=1e-6, atol=0.0):
        raise ResumeError(f"{saved}: the learning rate after the replay ({optimizer.learn_rate}) is not the run's "
                          f"({progress['learn_rate']})")
    _load_params(nlp, state["params"])
    _load_optimizer_state(nlp, optimizer, state["optimizer"])
    random.setstate(state["rng"]["python"])
    numpy.random.set_state(state["rng"]["numpy"])
    torch.set_rng_state(state["rng"]["torch"])
    if "torch_cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["torch_cuda"])
    if _gpu_in_use() >= 0:
        import cupy

        cupy.random.seed((seed or 0) * 1_000_003 + progress["step"])
    return progress


class _Batches:
    """spacy.training.loop.create_train_batches (the same batches, the same draws from `random`), able
    to say where it is and to start there.

    The order of an epoch cannot be replayed from the seed: Python's `random` is also drawn from
    during training (spacy-transformers flips a coin per forward pass), so it is saved. spaCy shuffles
    the example list in place each epoch; shuffling a list of positions instead makes the same swaps.
    """

    def __init__(self, nlp: Language, corpus, batcher, max_epochs: int):
        self.nlp, self.corpus, self.batcher, self.max_epochs = nlp, corpus, batcher, max_epochs
        self.epoch, self.index, self.order = 0, 0, None
        self._skip, self._resumed, self._examples, self._digest = 0, False, None, None

    def start_at(self, position: Dict[str, Any], saved: Path) -> None:
        """Start where `position` says; the corpus is read now, so a wrong one is refused before training."""
        self.epoch, self._skip, self.order = position["epoch"], position["index"], position["order"]
        self._resumed = True
        if self.max_epochs >= 0 and len(self._read()) != len(self.order):
            raise ResumeError(
                f"{saved}: the run trained on {len(self.order)} examples, the training corpus now has "
                f"{len(self._read())}: resume with the same data"
            )
        then, now = position.get("corpus_sha256"), self.digest()  # absent in checkpoints before it was saved
        if then is not None and now is not None and then != now:
            raise ResumeError(
                f"{saved}: the training corpus ({self.corpus.path}) has changed since the run started "
                f"(sha256 {then[:12]}... then, {now[:12]}... now): resume with the same data"
            )

    def position(self) -> Dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index, "order": None if self.order is None else list(self.order),
                "corpus_sha256": self.digest()}

    def digest(self) -> Optional[str]:
        """sha256 of the training corpus's files (a spaCy Corpus: its .spacy file or folder), computed
        once; None for a reader without files."""
        if self._digest is None and isinstance(getattr(self.corpus, "path", None), Path):
            files = walk_corpus(self.corpus.path, FILE_TYPE) if self.corpus.path.exists() else []
            if files:
                sha = hashlib.sha256()
                for path in files:  # each file's name and sha256, so a renamed or changed file counts
                    sha.update(f"{path.relative_to(self.corpus.path)}\0{sha256_of(path)}\n".encode())
                self._digest = sha.hexdigest()
        return self._digest

    def _read(self) -> List[Any]:
        if self._examples is None:
            self._examples = list(self.corpus(self.nlp))
            if not self._examples:
                raise ValueError(Errors.E986)
        return self._examples

    def __iter__(self):
        return self._batches()

    def _batches(self):
        examples: List[Any] = []
        if self.max_epochs >= 0:
            examples = self._read()
            if self.order is None:
                self.order = list(range(len(examples)))
        resumed = self._resumed
        while self.max_epochs < 1 or self.epoch != self.max_epochs:
            if self.max_epochs >= 0:
                if not resumed:
                    random.shuffle(self.order)
                epoch_examples = [examples[i] for i in self.order]
            else:
                epoch_examples = self.corpus(self.nlp)
            skip = self._skip if resumed else 0
            resumed = False
            self.index = 0
            for batch in self.batcher(epoch_examples):
                self.index += 1
                if self.index <= skip:
                    continue
                yield self.epoch, batch
            self.epoch += 1
