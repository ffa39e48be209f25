"""Fine-tuning batches of texts: the model's tokenizer (``model.preprocess.tokenize``, truncated to
``max_length``) per item, padded per batch to its longest text by ``model.preprocess.collate``
(named by ``DOMAIN.finetune``; see reszoo/finetune/adapters.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from ..finetune.adapters import Adapter
from ..finetune.options import DataError, FinetuneOptions

if TYPE_CHECKING:
    from ..registry import Weights

__all__ = ["TextAdapter"]


class TextAdapter(Adapter):
    def __init__(self, model: nn.Module, opts: FinetuneOptions | None = None) -> None:
        super().__init__(model, opts)
        pre = self.preprocess
        if not hasattr(pre, "tokenize") or not hasattr(pre, "collate"):
            raise DataError(f"{type(model).__name__}.preprocess has no tokenize/collate; load the model with reszoo.load")
        if getattr(pre, "tokenizer", None) is None:
            pre.load()
        max_length = self.opts.max_length
        if max_length is not None and max_length != pre.max_length:
            # The option overrides the entry's truncation length; the saved entry records it.
            pre.max_length = max_length
            pre.tokenizer.enable_truncation(max_length=max_length)

    def encode(self, item: Any) -> Any:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"expected a non-empty text, got {item!r:.60}")
        return self.preprocess.tokenize([item])[0]

    def collate(self, encoded: Sequence[Any]) -> dict[str, Tensor]:
        return self.preprocess.collate(list(encoded))

    def saved_preprocess(self, preprocess: dict[str, Any], weights: Weights | None) -> dict[str, Any]:
        """The tokenizer pinned to where the base model was loaded from (``weights``: a registry
        repo and revision, an ``hf://`` repo at its commit, or a saved folder): an entry reads it
        from its weights' repo, which the new model's folder or Hub repo is not until
        save_pretrained copies it there. ``max_length``: the option's, where given."""
        preprocess = dict(preprocess)
        spec = preprocess.get("tokenizer", {"file": "tokenizer.json"})
        spec = {"file": spec} if isinstance(spec, str) else dict(spec)
        if "repo" not in spec and weights is not None:
            spec["repo"] = weights.repo
            if weights.revision:
                spec["revision"] = weights.revision
        preprocess["tokenizer"] = spec
        if self.opts.max_length is not None:
            preprocess["max_length"] = self.opts.max_length
        return preprocess
