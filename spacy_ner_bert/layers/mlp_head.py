"""NeMo's token-classification head: dropout, then (N-1) x [Linear H->H, activation], Linear H->tags."""
from typing import Callable, Dict

from thinc.api import Dropout, Gelu, Linear, Model, Relu, chain, get_width
from thinc.types import Floats2d

# Each is a Linear layer fused with its activation (params W: out x in, b), as thinc builds them.
ACTIVATIONS: Dict[str, Callable[..., Model]] = {"relu": Relu, "gelu": Gelu}


def mlp_head(num_fc_layers: int, activation: str, dropout: float) -> Model[Floats2d, Floats2d]:
    """NeMo's `TokenClassifier` MLP, with parameters laid out like torch's Linear (W: out x in).

    num_fc_layers (int): Number of Linear layers (1 = a single Linear to the tags).
    activation (str): Activation between layers: relu or gelu.
    dropout (float): Dropout on the encoder output, before the first Linear (as NeMo).
    RETURNS (Model[Floats2d, Floats2d]): Maps token vectors to tag logits; widths set at init.
    """
    if num_fc_layers < 1:
        raise ValueError(f"[ner_bert] num_fc_layers must be at least 1, got {num_fc_layers}.")
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"[ner_bert] Unknown head activation {activation!r}; choose one of {sorted(ACTIVATIONS)}."
        )
    layers = [Dropout(dropout)]
    hidden = []
    for _ in range(num_fc_layers - 1):
        fc = ACTIVATIONS[activation]()
        hidden.append(fc)
        layers.append(fc)
    layers.append(Linear())
    inner = chain(*layers)
    return Model(
        "ner_bert_mlp_head",
        forward,
        init=init,
        layers=[inner],
        refs={f"fc{i}": fc for i, fc in enumerate(hidden)},
        attrs={"num_fc_layers": num_fc_layers, "activation": activation},
        dims={"nO": None, "nI": None},
    )


def forward(model: Model, X: Floats2d, is_train: bool):
    return model.layers[0](X, is_train)


def init(model: Model, X=None, Y=None) -> None:
    # Hidden layers are H -> H like NeMo's, so their width comes from the input.
    width = get_width(X) if X is not None else model.maybe_get_dim("nI")
    if width is not None:
        model.set_dim("nI", width)
        for i in range(model.attrs["num_fc_layers"] - 1):
            fc = model.get_ref(f"fc{i}")
            for dim in ("nI", "nO"):
                if not fc.has_dim(dim):
                    fc.set_dim(dim, width)
    model.layers[0].initialize(X=X, Y=Y)
    if model.layers[0].has_dim("nO"):
        model.set_dim("nO", model.layers[0].get_dim("nO"))
