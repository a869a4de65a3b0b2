"""The PyTorch encoder's parameters inside a thinc model, and a learning rate of their own.

thinc's optimizer updates a PyTorch shim's parameters under the keys `(shim.id, parameter name)`
(PyTorchShim.finish_update) and the thinc layers' (our head's) under `(node.id, name)`. One
optimizer, one learning rate: `EncoderLRScale` passes every call on, multiplying the encoder's
`lr_scale`, so the encoder can train slower than the freshly initialized head. (The encoder's
`grad_factor` cannot do this: Adam divides each step by the gradient's own scale.)
"""
from typing import Iterator, Set, Tuple

from thinc.api import Model, Optimizer


def torch_parameters(model: Model) -> Iterator[Tuple[Tuple[int, str], object]]:
    """Each PyTorch parameter held by a shim under `model`, once, with its optimizer key.

    model (Model): A thinc model whose nodes may hold PyTorch shims.
    YIELDS (Tuple[Tuple[int, str], torch.nn.Parameter]): `((shim.id, name), parameter)`.
    """
    import torch

    seen = set()
    for node in model.walk():
        for shim in node.shims:
            torch_model = getattr(shim, "_model", None)
            if not isinstance(torch_model, torch.nn.Module) or shim.id in seen:
                continue
            seen.add(shim.id)
            for name, param in torch_model.named_parameters():
                yield (shim.id, name), param


class EncoderLRScale:
    """An optimizer that is `optimizer` with the learning rate of the keys in `encoder_keys`
    multiplied by `scale` (Adam's weight decay too, which thinc scales by the same lr_scale).

    optimizer (Optimizer): The training optimizer; its state (moments, averages, schedules) is
        the one updated.
    encoder_keys (Set[Tuple[int, str]]): The encoder parameters' keys (see torch_parameters).
    scale (float): The encoder's learning rate as a fraction of the optimizer's.
    """

    def __init__(self, optimizer: Optimizer, encoder_keys: Set[Tuple[int, str]], scale: float) -> None:
        self.optimizer = optimizer
        self.encoder_keys = encoder_keys
        self.scale = scale

    def __call__(self, key, weights, gradient, *, lr_scale: float = 1.0):
        if key in self.encoder_keys:
            lr_scale = lr_scale * self.scale
        return self.optimizer(key, weights, gradient, lr_scale=lr_scale)
