"""Raw text to model input, with the tokenizer that ships in the model's own Hub repo.

Registry ``preprocess`` of a text entry::

    preprocess:
      tokenizer: {file: tokenizer.json}   # + repo/revision when not the weights' repo
      max_length: 256                     # longer texts are truncated (documented in docs/text.md)

Tokenization is the Hugging Face ``tokenizers`` library (the Rust "fast" tokenizer that
transformers and sentence-transformers use) reading the repo's ``tokenizer.json``: reszoo has
no WordPiece of its own. Two settings of that file are replaced, because they are per-use choices
and not part of the vocabulary: padding (reszoo pads each batch to its longest text, not to a
fixed 128) and the truncation length (``max_length`` of the registry entry's ``preprocess``).

Over-long texts are truncated on the right to ``max_length`` tokens, ``[CLS]`` and ``[SEP]``
included (what sentence-transformers does); ``truncate=False`` makes them an error instead.
Empty or blank strings, non-strings and an empty list are errors (:class:`TextInputError`). Blank
means no printable character after Unicode (NFKC) normalisation: only spaces, control or format
characters (NUL, BEL, zero-width spaces, ...); a text the tokenizer reduces to no token at all
(e.g. only combining accents, which BERT's normaliser strips) is refused the same way.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import InputError

__all__ = ["TextInputError", "TextPreprocess", "TextTypeError", "aux_files", "build_preprocess", "check_texts", "prepare",
           "tokenizer_spec"]


class TextInputError(InputError):
    """A text input cannot be used: no texts, a blank text, a text too long with ``truncate=False``."""


class TextTypeError(TextInputError, TypeError):
    """A text input is not a string (also a ``TypeError``)."""


def _is_blank(text: str) -> bool:
    """No printable character: only whitespace, control, format (zero-width) or unassigned code points."""
    return not any(ch.isprintable() and not ch.isspace() for ch in unicodedata.normalize("NFKC", text))


def check_texts(texts: Any) -> list[str]:
    """``texts`` as a non-empty list of non-blank strings, or a clear :class:`TextInputError`."""
    if isinstance(texts, str):
        texts = [texts]
    elif not isinstance(texts, Sequence) or isinstance(texts, bytes | bytearray):
        raise TextTypeError(f"expected a string or a list of strings, got {type(texts).__name__}")
    if len(texts) == 0:
        raise TextInputError("no texts given: expected a string or a non-empty list of strings")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TextTypeError(f"text #{i} is a {type(text).__name__} ({text!r:.60}), expected a string")
        if _is_blank(text):
            raise TextInputError(f"text #{i} is empty or blank ({text!r:.40}): it has no printable character (only spaces, "
                                 "control or format characters); every text needs at least one")
    return list(texts)


class TextPreprocess:
    """Callable: ``texts -> {"input_ids", "attention_mask", "token_type_ids"}`` (``[B, L]`` int64).

    ``tokenizer`` names the file (and optionally another ``repo``/``revision``) it is read from;
    it is fetched by :meth:`load` (``reszoo.load`` does that through the domain's ``prepare``), or
    given directly with :meth:`from_file`.
    """

    def __init__(self, *, max_length: int, tokenizer_file: str = "tokenizer.json", repo: str | None = None,
                 revision: str | None = None) -> None:
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"max_length must be an integer >= 2 (room for [CLS] and [SEP]), got {max_length!r}")
        self.max_length = max_length
        self.tokenizer_file = tokenizer_file
        self.repo = repo
        self.revision = revision
        self.tokenizer: Any = None  # tokenizers.Tokenizer once loaded
        self.path: Path | None = None  # the file it was read from
        self.pad_id = 0

    def __repr__(self) -> str:
        where = f"{self.repo}/{self.tokenizer_file}" if self.repo else self.tokenizer_file
        state = "loaded" if self.tokenizer is not None else "not loaded"
        return f"TextPreprocess({where}, max_length={self.max_length}, {state})"

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, max_length: int) -> TextPreprocess:
        """A preprocess reading a local ``tokenizer.json``."""
        pre = cls(max_length=max_length, tokenizer_file=Path(path).name)
        pre.set_tokenizer_file(path)
        return pre

    def load(self, *, mirror: str | os.PathLike[str] | None = None) -> TextPreprocess:
        """Fetch the tokenizer file (mirror, Hub cache or Hub, at the pinned revision) and read it."""
        if self.repo is None:
            raise RuntimeError(f"{self!r}: no repo to fetch {self.tokenizer_file!r} from")
        from ..hub import fetch_file

        self.set_tokenizer_file(fetch_file(self.repo, self.tokenizer_file, revision=self.revision, mirror=mirror))
        return self

    def set_tokenizer_file(self, path: str | os.PathLike[str]) -> None:
        from tokenizers import Tokenizer

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        tok = Tokenizer.from_file(str(path))
        padding = tok.padding  # read the pad id from the file before switching its fixed padding off
        pad_id = padding["pad_id"] if padding else tok.token_to_id("[PAD]")
        if pad_id is None:
            raise ValueError(f"{path}: the tokenizer names no padding token (no padding section and no [PAD])")
        tok.no_padding()
        tok.enable_truncation(max_length=self.max_length)
        self.tokenizer, self.pad_id, self.path = tok, int(pad_id), path

    def with_max_length(self, max_length: int) -> TextPreprocess:
        """A copy truncating at ``max_length`` tokens (same tokenizer file, read again if loaded)."""
        new = TextPreprocess(max_length=max_length, tokenizer_file=self.tokenizer_file, repo=self.repo, revision=self.revision)
        if self.path is not None:
            new.set_tokenizer_file(self.path)
        return new

    def _tok(self) -> Any:
        if self.tokenizer is None:
            raise RuntimeError(f"{self!r}: the tokenizer is not loaded (call .load(), or load the model with reszoo.load)")
        return self.tokenizer

    # ------------------------------------------------------------------ text -> ids

    def tokenize(self, texts: str | Sequence[str], *, truncate: bool = True) -> list[Any]:
        """One ``tokenizers.Encoding`` per text (special tokens added, truncated, unpadded)."""
        texts = check_texts(texts)
        encodings = self._tok().encode_batch(texts)
        # Only special tokens left: the tokenizer's normaliser dropped every character.
        empty = [i for i, e in enumerate(encodings) if all(e.special_tokens_mask)]
        if empty:
            raise TextInputError(f"text #{empty[0]} ({texts[empty[0]]!r:.40}) has no token after the tokenizer's "
                                 "normalisation (it holds only characters the tokenizer drops, such as accents or control "
                                 "characters); every text needs at least one")
        if not truncate:
            long = [i for i, e in enumerate(encodings) if e.overflowing]
            if long:
                raise TextInputError(f"text(s) #{', #'.join(map(str, long[:10]))} are longer than max_length="
                                     f"{self.max_length} tokens; shorten them or pass truncate=True to cut them there")
        return encodings

    def collate(self, encodings: Sequence[Any], *, device: torch.device | str | None = None) -> dict[str, Tensor]:
        """Pad encodings to the longest one; int64 tensors ``[B, L]``."""
        length = max(len(e.ids) for e in encodings)
        ids = torch.full((len(encodings), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encodings), length), dtype=torch.long)
        types = torch.zeros((len(encodings), length), dtype=torch.long)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = torch.tensor(enc.ids)
            mask[row, :n] = 1
            types[row, :n] = torch.tensor(enc.type_ids)
        batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {k: v.to(device) for k, v in batch.items()} if device is not None else batch

    def __call__(self, texts: str | Sequence[str], *, truncate: bool = True,
                 device: torch.device | str | None = None) -> dict[str, Tensor]:
        """Model input for ``texts``: ``model(**model.preprocess(texts))``."""
        return self.collate(self.tokenize(texts, truncate=truncate), device=device)

    # ------------------------------------------------------------------ ids -> text

    def token_id(self, token: str) -> int:
        tid = self._tok().token_to_id(token)
        if tid is None:
            raise KeyError(f"token {token!r} is not in the vocabulary")
        return int(tid)

    def id_to_token(self, token_id: int) -> str:
        return self._tok().id_to_token(int(token_id))

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok().decode(list(ids), skip_special_tokens=True)


# --------------------------------------------------------------------------- the domain contract


def tokenizer_spec(entry: Any) -> tuple[str, str | None, str | None]:
    """(file, repo, revision) of an entry's tokenizer; repo/revision default to the weights'."""
    spec = entry.preprocess.get("tokenizer", {"file": "tokenizer.json"})
    if isinstance(spec, str):
        spec = {"file": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("file"), str):
        raise ValueError(f"{entry.name}: preprocess.tokenizer must be a file name or {{file, repo?, revision?}}, got {spec!r}")
    weights = entry.weights
    if "repo" in spec:
        return spec["file"], spec["repo"], spec.get("revision")
    return spec["file"], weights.repo if weights else None, weights.revision if weights else None


def build_preprocess(entry: Any) -> TextPreprocess:
    """The entry's :class:`TextPreprocess` (its tokenizer is read by :func:`prepare`)."""
    max_length = entry.preprocess.get("max_length")
    if max_length is None:
        raise ValueError(f"{entry.name}: preprocess.max_length is required for text models")
    file, repo, revision = tokenizer_spec(entry)
    return TextPreprocess(max_length=max_length, tokenizer_file=file, repo=repo, revision=revision)


def aux_files(entry: Any) -> list[tuple[str, str | None, str]]:
    """``(repo, revision, file)`` of the tokenizer, which ``prepare`` reads besides the weights."""
    file, repo, revision = tokenizer_spec(entry)
    return [(repo, revision, file)] if repo else []


def prepare(model: Any, entry: Any, *, mirror: str | os.PathLike[str] | None = None) -> None:
    """Read the tokenizer (same mirror/cache/Hub lookup as the weights) so ``model.encode`` works."""
    pre = getattr(model, "preprocess", None)
    if not isinstance(pre, TextPreprocess):
        pre = model.preprocess = build_preprocess(entry)
    if pre.tokenizer is None:
        pre.load(mirror=mirror)
