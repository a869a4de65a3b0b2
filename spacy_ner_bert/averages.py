"""Parameter averages (`Adam(use_averages=True)`) for the PyTorch encoder inside a thinc model.

thinc's optimizer keeps the averages of a PyTorch shim's parameters under the keys
`(shim.id, parameter name)` (PyTorchShim.finish_update), but PyTorchShim.use_params only looks for
keys `"pytorch_{shim.id}_{name}"`, so under `nlp.use_params(optimizer.averages)`, which `spacy train`
uses to evaluate and to save model-best, the thinc layers (our head) switched to their averages while
the encoder kept its current weights: a mismatched model. `torch_averages` swaps the encoder's
parameters for their averages too, and puts them back afterwards.
"""
import contextlib
from typing import Dict, Iterator, List, Tuple

from thinc.api import Model, xp2torch

from .encoder_params import torch_parameters


@contextlib.contextmanager
def torch_averages(model: Model, params: Dict) -> Iterator[int]:
    """Within the block, every PyTorch parameter under `model` that has an average in `params`
    (key `(shim.id, name)`) holds that average; the current values come back on exit.

    model (Model): A thinc model whose nodes may hold PyTorch shims.
    params (Dict): The optimizer's averages (`optimizer.averages`).
    YIELDS (int): How many PyTorch parameters were swapped.
    """
    saved: List[Tuple[object, object]] = []
    try:
        if params:
            import torch

            with torch.no_grad():
                for key, param in torch_parameters(model):
                    average = params.get(key)
                    if average is None:
                        continue
                    saved.append((param, param.data.clone()))
                    param.data.copy_(xp2torch(average, device=param.device).to(param.dtype))
        yield len(saved)
    finally:
        for param, data in saved:
            param.data.copy_(data)
