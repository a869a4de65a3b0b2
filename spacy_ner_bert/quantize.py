"""Opt-in CPU fast path: dynamic int8 quantization of the encoder's Linear layers."""
import warnings

from spacy.language import Language


def quantize_int8(nlp: Language, component: str = "ner_bert") -> None:
    """Quantize the encoder of `component` to int8 (torch dynamic quantization), in place.

    Every torch Linear of the encoder then runs with int8 weights and activations quantized on
    the fly; the head and the decoding are unchanged. CPU only. The pipeline can still predict,
    but not train or be saved (save the full-precision pipeline and quantize after loading).
    Its cost in accuracy is measured in BENCHMARKS.md; it is off unless this is called.

    nlp (Language): A pipeline with an initialized ner_bert component (not on GPU, its encoder not
        in bfloat16: cpu_bf16).
    component (str): The component's name.
    """
    import torch
    from thinc.api import NumpyOps

    from .pipe import get_ner_bert

    pipe = get_ner_bert(nlp, component)
    if not isinstance(pipe.model.ops, NumpyOps):
        raise ValueError("[ner_bert] int8 quantization runs on CPU only; this pipeline is on GPU")
    encoder = pipe.encoder()
    if encoder is None:
        raise ValueError(f"[ner_bert] {component!r} has no encoder of its own (it listens to a shared transformer)")
    if encoder.attrs.get("cpu_autocast") is not None:
        raise ValueError(
            f"[ner_bert] {component!r} runs its encoder in bfloat16 (cpu_bf16 = true), which int8 "
            "quantization cannot run under: load the pipeline with it off, e.g. spacy.load(path, "
            f"config={{'components': {{{component!r}: {{'cpu_bf16': False}}}}}}), then quantize"
        )
    shim = encoder.layers[0].shims[0]
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, which is not a dependency.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize", category=UserWarning)
        quantized = torch.ao.quantization.quantize_dynamic(shim._model.eval(), {torch.nn.Linear}, dtype=torch.qint8)
    shim._model = quantized
    shim._hfmodel.transformer = quantized
    pipe.quantized = True
