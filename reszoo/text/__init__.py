"""Text domain: residual Transformer encoders (BERT family) with their own tokenizers.

The domain contract of :mod:`reszoo.domains`: ``models.py`` (the encoders), ``convert.py``
(transformers' BERT layout), ``preprocess.py`` (the repo's ``tokenizer.json``, read by
``prepare``), ``predict.py`` (similarity, classes or masked tokens), ``finetune.py`` (token
batches). Light on import: ``tokenizers`` is imported when a tokenizer is read, transformers never.
"""

from __future__ import annotations

from ..domains import Domain, FinetuneSpec, Table, lazy_exports
from .predict import predict

DOMAIN = Domain(
    name="text",
    title="text",
    package=__name__,
    # every attention (fused q/k/v, output) and feed-forward linear of each layer
    lora_targets=r"layers\.\d+\.(attn\.fn\.(qkv|proj)|ffn\.fn\.(fc1|fc2))",
    finetune=FinetuneSpec(
        task="text-classification",
        data=Table(text_column="text", label_column="label"),
        adapter="reszoo.text.finetune:TextAdapter",
        usage='probs = model(**model.preprocess(["a text to classify"])).softmax(-1)\n'
              'print(model.labels[int(probs.argmax())])',
    ),
)

_EXPORTS = {
    "EncoderConfig": "models",
    "TextEncoder": "models",
    "ConversionError": "convert",
    "TextPreprocess": "preprocess",
    "aux_files": "preprocess",
    "build_preprocess": "preprocess",
    "check_texts": "preprocess",
    "prepare": "preprocess",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["DOMAIN", "predict", *_EXPORTS]
