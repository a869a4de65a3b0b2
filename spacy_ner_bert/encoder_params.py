"""The PyTorch encoder's parameters inside a thinc model, and a learning rate of their own.

thinc's optimizer updates a PyTorch shim's parameters under the keys `(shim.id, parameter name)`
(PyTorchShim.finish_update) and the thinc layers' (our head's) under `(node.id, name)`. One
optimizer, one learning rate: `EncoderLRScale` passes every call on, multiplying the encoder's
`lr_scale`, so the encoder can train slower than the freshly initialized head, and its lower layers
slower than its top (layer-wise decay). (The encoder's `grad_factor` cannot do this: Adam divides
each step by the gradient's own scale.)
"""
import re
from typing import Dict, Iterable, Iterator, Tuple

from thinc.api import Model, Optimizer

_LAYER = re.compile(r"(?:^|\.)layers?\.(\d+)\.")
_EMBEDDINGS = re.compile(r"(?:^|\.)embeddings?\.")


def unique_shims(model: Model) -> Iterator[object]:
    """Each shim under `model`, once (nodes can share one)."""
    seen = set()
    for node in model.walk():
        for shim in node.shims:
            if shim.id not in seen:
                seen.add(shim.id)
                yield shim


def torch_parameters(model: Model) -> Iterator[Tuple[Tuple[int, str], object]]:
    """Each PyTorch parameter held by a shim under `model`, once, with its optimizer key.

    model (Model): A thinc model whose nodes may hold PyTorch shims.
    YIELDS (Tuple[Tuple[int, str], torch.nn.Parameter]): `((shim.id, name), parameter)`.
    """
    import torch

    for shim in unique_shims(model):
        torch_model = getattr(shim, "_model", None)
        if isinstance(torch_model, torch.nn.Module):
            for name, param in torch_model.named_parameters():
                yield (shim.id, name), param


def scale_gradients(model: Model, factor: float) -> None:
    """Multiply every gradient accumulated under `model` by `factor`: its thinc layers' and its
    PyTorch shims' parameters'.

    model (Model): A thinc model, possibly holding PyTorch shims.
    factor (float): The multiplier.
    """
    import torch

    for node in model.walk():
        for name in node.param_names:
            if node.has_grad(name):
                node.set_grad(name, node.get_grad(name) * factor)
    with torch.no_grad():
        for _, param in torch_parameters(model):
            if param.grad is not None:
                param.grad.mul_(factor)


def layer_lr_scales(names: Iterable[str], decay: float) -> Dict[str, float]:
    """Layer-wise learning-rate decay: each encoder parameter's factor, by its name.

    The top transformer layer keeps the rate; each layer below gets `decay` times the one above
    it, and the embeddings `decay` times the lowest layer. Parameters in no numbered layer and
    not in the embeddings (a pooler) keep the rate.

    names (Iterable[str]): The encoder's parameter names (HF: "encoder.layer.3.output.dense.weight",
        "embeddings.word_embeddings.weight", ...).
    decay (float): The factor per layer, in (0, 1].
    RETURNS (Dict[str, float]): The factor of each name.
    RAISES (ValueError): If decay < 1 and no name has a layer number.
    """
    names = list(names)
    if decay == 1.0:
        return {name: 1.0 for name in names}
    layers = {name: int(m.group(1)) for name in names if (m := _LAYER.search(name))}
    if not layers:
        raise ValueError(
            f"[ner_bert] encoder_lr_decay = {decay} needs numbered layers in the encoder's "
            f"parameter names ('...layer.N...'), found none among {len(names)} parameters "
            f"(e.g. {names[:3]}): set encoder_lr_decay = 1.0."
        )
    top = max(layers.values())
    scales = {}
    for name in names:
        if name in layers:
            scales[name] = decay ** (top - layers[name])
        elif _EMBEDDINGS.search(name):
            scales[name] = decay ** (top + 1)
        else:
            scales[name] = 1.0
    return scales


class EncoderLRScale:
    """An optimizer that is `optimizer` with the learning rate of each key in `scales`
    multiplied by its factor (Adam's weight decay too, which thinc scales by the same lr_scale).

    optimizer (Optimizer): The training optimizer; its state (moments, averages, schedules) is
        the one updated.
    scales (Dict[Tuple[int, str], float]): The encoder parameters' keys (see torch_parameters)
        and each one's fraction of the optimizer's learning rate; other keys keep the rate.
    """

    def __init__(self, optimizer: Optimizer, scales: Dict[Tuple[int, str], float]) -> None:
        self.optimizer = optimizer
        self.scales = scales

    def __call__(self, key, weights, gradient, *, lr_scale: float = 1.0):
        factor = self.scales.get(key)
        if factor is not None:
            lr_scale = lr_scale * factor
        return self.optimizer(key, weights, gradient, lr_scale=lr_scale)
