"""thinc's Adam update of the encoder's PyTorch parameters, done by torch's fused Adam kernel.

spaCy trains with a thinc Optimizer, and thinc's PyTorchShim hands it the encoder's ~100 parameter
tensors one at a time, each updated by a few numpy (or cupy) passes. For MiniLM at batches of ~100
padded words on 2 CPU threads that update was more than half of a training step
(`benchmarks/train_speed.py`, BENCHMARKS.md "Training speed"). `finish_update` here does the same
update for all of a shim's tensors in one call of torch's fused Adam kernel:

- the hyperparameters are the optimizer's current ones, read at every step, so its schedules apply;
- the moments and step counts are the optimizer's own (`mom1`, `mom2`, `nr_update`, under thinc's
  keys `(shim.id, parameter name)`), viewed as torch tensors without a copy, so either path can take
  over from the other mid-training;
- thinc's semantics are kept: each tensor's gradient clipped to norm `grad_clip` on its own; L2
  either added to the gradient before clipping or, with `L2_is_weight_decay`, decoupled weight decay;
  eps added to sqrt(mom2) before the bias correction (torch adds it after, so the kernel is given
  eps / sqrt(1 - b2^t)); learning-rate factors (`EncoderLRScale`'s) scale the decay too.

One difference remains: thinc decays the weights after the Adam step, the kernel before it, so the
two differ by lr x L2 x the step (about 1e-6 of the step at lr 1e-4, L2 0.01), and both round
differently: a training run takes another path, as another seed would.

The thinc layers' parameters (the head) are updated by the optimizer as before. Where the fused
update does not apply (not thinc's Adam; parameter averages or RAdam; a shim with an active grad
scaler, i.e. mixed precision; parameters that are not float32), thinc's own update runs.
"""
import math
from typing import Dict, Optional, Tuple

from thinc.api import Model, Optimizer
from thinc.util import torch2xp, xp2torch

from .encoder_params import EncoderLRScale, unique_shims

Key = Tuple[int, str]


def applies(optimizer) -> bool:
    """Whether `optimizer` is an update the fused kernel can do: thinc's Adam without averages or RAdam."""
    return (
        isinstance(optimizer, Optimizer)
        and optimizer.averages is None
        and not optimizer.use_radam
        and optimizer.b1 > 0.0
        and optimizer.b2 > 0.0
    )


def finish_update(model: Model, optimizer: Optimizer, scales: Optional[Dict[Key, float]] = None) -> None:
    """Update `model`'s parameters as `model.finish_update(optimizer)` does (with `EncoderLRScale(optimizer,
    scales)` when `scales` are given), the PyTorch shims' in the fused kernel where it applies.

    model (Model): The thinc model, PyTorch shims included.
    optimizer (Optimizer): The training optimizer; see `applies`.
    scales (Optional[Dict[Key, float]]): Learning-rate factors by parameter key (others: 1).
    """
    scales = scales or {}
    per_key = EncoderLRScale(optimizer, scales) if scales else optimizer
    fused = applies(optimizer)
    for shim in unique_shims(model):
        if not (fused and _update_shim(shim, optimizer, scales)):
            shim.finish_update(per_key)
    for node in model.walk():
        for name in node.param_names:
            if node.has_grad(name):
                param, _ = per_key((node.id, name), node.get_param(name), node.get_grad(name))
                node.set_param(name, param)


def _update_shim(shim, optimizer: Optimizer, scales: Dict[Key, float]) -> bool:
    """The fused update of one shim's parameters; False (nothing done) where it does not apply."""
    import torch
    from torch.optim.adam import adam

    module = getattr(shim, "_model", None)
    scaler = getattr(shim, "_grad_scaler", None)
    if not isinstance(module, torch.nn.Module) or getattr(scaler, "_enabled", False):
        return False
    params = [(name, p) for name, p in module.named_parameters() if p.grad is not None and p.numel()]
    if any(p.dtype != torch.float32 or p.grad.dtype != torch.float32 for _, p in params):
        return False
    if not params:
        return True
    weights = [p for _, p in params]
    grads = [p.grad for p in weights]
    b1, b2, eps = optimizer.b1, optimizer.b2, optimizer.eps
    with torch.no_grad():
        if optimizer.L2 and not optimizer.L2_is_weight_decay:
            torch._foreach_add_(grads, weights, alpha=optimizer.L2)
        if optimizer.grad_clip:
            # thinc: if ||g|| >= clip: g *= clip / ||g||, each tensor on its own
            norms = torch.stack(torch._foreach_norm(grads))
            torch._foreach_mul_(grads, list(torch.clamp(optimizer.grad_clip / norms, max=1.0).unbind(0)))
        groups: Dict[Tuple[float, int], list] = {}
        for name, p in params:
            key = (shim.id, name)
            optimizer.nr_update[key] += 1
            mom1, mom2 = _moment(optimizer.mom1, key, p), _moment(optimizer.mom2, key, p)
            groups.setdefault((scales.get(key, 1.0), optimizer.nr_update[key]), []).append((p, mom1, mom2))
        decay = optimizer.L2 if optimizer.L2_is_weight_decay else 0.0
        for (scale, step), members in groups.items():
            ps, m1, m2 = (list(x) for x in zip(*members))
            # the kernel adds 1 to each step count before using it
            steps = list(torch.full((len(ps),), float(step - 1), device=ps[0].device).unbind(0))
            adam(
                ps, [p.grad for p in ps], m1, m2, [], steps, fused=True, decoupled_weight_decay=True,
                amsgrad=False, beta1=b1, beta2=b2, lr=optimizer.learn_rate * scale, weight_decay=decay,
                eps=eps / math.sqrt(1.0 - b2**step), maximize=False,
            )
        torch._foreach_zero_(grads)
    return True


def _moment(store: Dict[Key, object], key: Key, param):
    """The optimizer's moment array for `key` (created as thinc creates it: float32 zeros, 1-D), as a
    torch view shaped like `param`."""
    import torch

    if key not in store:
        store[key] = torch2xp(torch.zeros(param.numel(), dtype=torch.float32, device=param.device))
    return xp2torch(store[key], device=param.device).view(param.shape)
