"""Inference for text models: what ``reszoo predict`` and ``reszoo export`` do with them.

Every row has ``input`` (the text as given, or ``FILE:LINE`` for a row of a table) and ``text``:

* classifier: ``{input, text, rank, label, prob}``, the ``top_k`` labels of each text;
* masked LM: ``{input, text, position, rank, label, prob}``, the ``top_k`` tokens (``label``) for
  each ``[MASK]`` (its token ``position``);
* sentence embedding: ``{input, text, embedding}``, or with a ``reference`` text
  ``{input, text, reference, score}`` (cosine similarity).

An argument naming an existing file is read as a table of texts: a CSV/TSV with a header line
(the column ``column``, default ``text``), JSON lines (objects with that key, or strings) or plain
text (each non-blank line); any other argument is a text.

Light on import (torch is imported when predicting): the package re-exports :func:`predict`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..predict import Options, Task, classify_rows, domain_predict, embedding_rows
from ..rows import read_table

if TYPE_CHECKING:
    from ..export import ExportSpec

# A literal text this looks like is taken for a file name that is missing, not embedded.
_FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".txt")


def _model(model: Any) -> Any:
    from .models import TextEncoder

    if not isinstance(model, TextEncoder):
        raise TypeError(f"expected a reszoo TextEncoder, got {type(model).__name__}")
    return model


def _expander(column: str | None) -> Any:
    from ..errors import InputError
    from . import DOMAIN

    column = column or DOMAIN.finetune.data.text_column  # the column fine-tuning reads texts from: "text"

    def expand(arg: str) -> Any:
        if "\n" in arg or len(arg) > 4096:
            return None  # a text, not a path
        path = Path(arg)
        try:
            if path.is_file():
                return read_table(path, column)
            if path.is_dir():
                return [(arg, InputError(f"{arg}: a folder; give texts, or files of texts (CSV/TSV/JSONL/plain lines)"))]
        except (OSError, ValueError):  # a text no file system takes for a name (a NUL byte in it)
            return None
        if path.suffix.lower() in _FILE_SUFFIXES and not any(c.isspace() for c in arg):
            return [(arg, InputError(f"{arg}: no such file (a text that is a file name: put it in a file of texts)"))]
        return None

    return expand


def task(model: Any, options: Options) -> Task:
    """How ``model`` predicts: texts tokenized in the loader, padded per batch, run in batches."""
    import torch

    from ..errors import InputError
    from .preprocess import TextInputError, TextTypeError, _is_blank, check_texts

    model = _model(model)
    pre = model._preprocess()
    device = model.embeddings.word.weight.device
    mask_id = pre.token_id("[MASK]") if model.mlm is not None and model.head is None else None

    def read(value: Any, index: int) -> tuple[str, list[int], list[int]]:
        if not isinstance(value, str):
            raise TextTypeError(f"expected a text, got a {type(value).__name__} ({value!r:.60})")
        if _is_blank(value):
            raise TextInputError("the text is empty or blank: it has no printable character")
        text = value
        encoding = pre.tokenize([text])[0]
        if mask_id is not None and mask_id not in encoding.ids:
            raise TextInputError("fill-mask: the text contains no [MASK] token")
        return text, list(encoding.ids), list(encoding.type_ids)

    def collate(samples: list[tuple[str, list[int], list[int]]]) -> tuple[list[str], dict[str, torch.Tensor]]:
        length = max(len(ids) for _, ids, _ in samples)
        ids = torch.full((len(samples), length), pre.pad_id, dtype=torch.long)
        mask = torch.zeros((len(samples), length), dtype=torch.long)
        types = torch.zeros((len(samples), length), dtype=torch.long)
        for row, (_, token_ids, type_ids) in enumerate(samples):
            ids[row, :len(token_ids)] = torch.tensor(token_ids)
            mask[row, :len(token_ids)] = 1
            types[row, :len(type_ids)] = torch.tensor(type_ids)
        batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return [text for text, _, _ in samples], {k: v.to(device) for k, v in batch.items()}

    def with_text(texts: list[str], groups: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
        return [[{"text": text, **row} for row in group] for text, group in zip(texts, groups, strict=True)]

    if options.reference is not None and (model.head is not None or model.mlm is not None):
        raise InputError("reference= applies to sentence-embedding models; this text model has a classifier or "
                         "masked-LM head")
    if model.head is not None:
        labels = getattr(model, "labels", None) or [str(i) for i in range(model.num_classes)]

        def run(batch: Any) -> list[list[dict[str, Any]]]:
            texts, inputs = batch
            return with_text(texts, classify_rows(model(**inputs).softmax(-1), labels, options.top_k))

        fields: tuple[str, ...] = ("input", "text", "rank", "label", "prob")
    elif model.mlm is not None:

        def run(batch: Any) -> list[list[dict[str, Any]]]:
            texts, inputs = batch
            probs = model(**inputs).float().softmax(-1)
            groups = []
            for row in range(len(texts)):
                group = []
                for pos in (inputs["input_ids"][row] == mask_id).nonzero()[:, 0].tolist():
                    top = probs[row, pos].topk(options.top_k)
                    group += [{"position": pos, "rank": r, "label": pre.id_to_token(int(i)), "prob": round(float(p), 6)}
                              for r, (p, i) in enumerate(zip(top.values, top.indices, strict=True), start=1)]
                groups.append(group)
            return with_text(texts, groups)

        fields = ("input", "text", "position", "rank", "label", "prob")
    else:
        reference = None
        if options.reference is not None:
            ref = check_texts([options.reference])[0]
            reference = (ref, model.encode([ref], normalize=True)[0])

        def run(batch: Any) -> list[list[dict[str, Any]]]:
            texts, inputs = batch
            states = model.forward_features(inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"])
            return with_text(texts, embedding_rows(model.pool(states, inputs["attention_mask"]), reference))

        fields = ("input", "text", "reference", "score") if reference else ("input", "text", "embedding")
    return Task(fields=fields, read=read, collate=collate, run=run, kind="text", expand=_expander(options.column))


def predict(model: Any, inputs: list[Any], top_k: int = 5, **options: Any) -> list[dict[str, Any]]:
    """Rows for every text (see :func:`reszoo.predict`, whose options this takes), as a list."""
    return domain_predict(task, model, inputs, top_k, **options)


def export_spec(model: Any) -> ExportSpec:
    """``forward(input_ids, attention_mask, token_type_ids)``, traced with a padded batch (the mask
    is applied in the exported graph whatever the batch: see ``TextEncoder.forward_features``);
    batch and sequence length are dynamic."""
    import torch

    from ..export import ExportSpec

    model = _model(model)
    device = model.embeddings.word.weight.device
    pre = getattr(model, "preprocess", None)
    texts = ["The quick brown fox jumps over the lazy dog near the river bank.", "A short one.",
             "Where is my card?", "Résumé of the meeting: two decisions, one open question, and lunch."]
    if getattr(pre, "tokenizer", None) is not None:
        def batch(chosen: list[str]) -> dict[str, torch.Tensor]:
            return pre(chosen, device=device)
    else:  # a model without its tokenizer: token ids drawn at random, padded the same way
        def batch(chosen: list[str]) -> dict[str, torch.Tensor]:
            gen = torch.Generator().manual_seed(len(chosen))
            lengths = [min(2 + len(t.split()), model.cfg.max_position) for t in chosen]
            ids = torch.randint(1, model.cfg.vocab_size, (len(chosen), max(lengths)), generator=gen)
            mask = (torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]).long()
            return {"input_ids": (ids * mask).to(device), "attention_mask": mask.to(device),
                    "token_type_ids": torch.zeros_like(ids).to(device)}
    outputs = ("logits",) if model.head is not None or model.mlm is not None else ("embedding",)
    axes = {0: "batch", 1: "length"}
    return ExportSpec(module=model, example=batch(texts[:2]), checks=[batch(texts[2:]), batch(texts[:3]), batch(texts[3:])],
                      outputs=outputs, dynamic={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes})
