"""CTC recognisers' outputs to text: greedy (or lexicon) decoding, word timestamps, ``transcribe``, WER/CER.

A CTC model gives per-frame log-probabilities over its vocabulary (``model.labels``) plus a
blank, the **last** index (NeMo's convention). Greedy decoding takes the best symbol of each
frame, merges repeats and drops blanks ("--hh-e-ll-ll-oo" -> "hello"), as NeMo's
``GreedyCTCInfer`` does. Each emitted symbol keeps the frames it spans, so a word's start and
end come from the alignment: frame index x the encoder's frame shift (the front end's hop x the
encoder's stride), in seconds.

Error rates are computed with ``jiwer`` (word and character edit distances over the whole set,
as NeMo and Hugging Face's ``evaluate`` report them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["Token", "error_counts", "error_rates", "frame_shift", "greedy_decode", "greedy_tokens", "lexicon_graph",
           "transcribe", "word_timestamps"]


@dataclass(frozen=True)
class Token:
    """One emitted symbol: its id and the output frames its run spans (``start`` inclusive, ``end`` exclusive)."""

    id: int
    start: int
    end: int


def greedy_tokens(log_probs: Tensor, length: int | None = None, blank: int | None = None) -> list[Token]:
    """Greedy CTC decoding of one utterance's ``(frames, symbols + 1)`` scores (the first
    ``length`` frames): the best symbol per frame, repeats merged, blanks dropped."""
    if log_probs.dim() != 2:
        raise ValueError(f"expected (frames, symbols) scores, got shape {tuple(log_probs.shape)}")
    blank = log_probs.shape[-1] - 1 if blank is None else blank
    best = log_probs[: length if length is not None else log_probs.shape[0]].argmax(-1).tolist()
    tokens: list[Token] = []
    prev, start = None, 0
    for t, s in enumerate([*best, None]):  # a sentinel closes the last run
        if s != prev:
            if prev is not None and prev != blank:
                tokens.append(Token(prev, start, t))
            prev, start = s, t
    return tokens


def greedy_decode(log_probs: Tensor, lengths: Tensor | Sequence[int] | None, labels: Sequence[str]) -> list[str]:
    """Greedy CTC transcripts of a batch ``(batch, frames, len(labels) + 1)`` (blank last), each
    utterance cut to its ``lengths`` (output frames)."""
    _check_vocabulary(log_probs, labels)
    out = []
    for i in range(log_probs.shape[0]):
        n = int(lengths[i]) if lengths is not None else None
        out.append(_text(greedy_tokens(log_probs[i], n, blank=len(labels)), labels))
    return out


def _check_vocabulary(log_probs: Tensor, labels: Sequence[str]) -> None:
    if log_probs.dim() != 3 or log_probs.shape[-1] != len(labels) + 1:
        raise ValueError(f"scores of shape {tuple(log_probs.shape)} do not fit a vocabulary of {len(labels)} symbols "
                         "plus the blank (expected (batch, frames, symbols + 1))")


def _text(tokens: Sequence[Token], labels: Sequence[str]) -> str:
    # Spaces at the ends and runs of spaces carry no word; NeMo strips them the same way.
    return " ".join("".join(labels[t.id] for t in tokens).split())


def word_timestamps(tokens: Sequence[Token], labels: Sequence[str], shift: float, space: str = " ") -> list[dict[str, Any]]:
    """Words of a decoded utterance with ``start``/``end`` in seconds: from the first frame of
    the word's first symbol to the end of its last (frames x ``shift`` seconds)."""
    words: list[dict[str, Any]] = []
    current: list[Token] = []
    for tok in [*tokens, None]:
        if tok is None or labels[tok.id] == space:
            if current:
                words.append({"word": "".join(labels[t.id] for t in current),
                              "start": round(current[0].start * shift, 3), "end": round(current[-1].end * shift, 3)})
            current = []
        else:
            current.append(tok)
    return words


def frame_shift(model: Any, frames: int, out_frames: int) -> float:
    """Seconds between the encoder's output frames: the front end's hop times the encoder's
    stride (``model.stride`` when it says, else the ratio of input to output frames)."""
    pre = model.preprocess
    hop_ms = getattr(getattr(pre, "cfg", None), "hop_ms", None)
    if hop_ms is None:
        raise TypeError(f"{type(pre).__name__} does not say its hop (cfg.hop_ms); word timestamps need it")
    hop = hop_ms / 1000
    stride = getattr(model, "stride", None) or max(1, round(frames / max(1, out_frames)))
    return float(hop) * int(stride)


def transcribe(model: Any, audio: Any, *, batch_size: int = 16, timestamps: bool = False,
               lexicon: Sequence[str] | bool | None = None) -> Any:
    """Text of one input (a path, or ``(waveform, sample_rate)``), or a list of texts of a list
    of inputs; inputs are featurised by ``model.preprocess`` and run ``batch_size`` at a time
    (padding is masked, so batching does not change a transcript).

    Decoding: greedy, or the best path that spells words of a ``lexicon``
    (:mod:`reszoo.speech.lexicon`). ``lexicon=None`` uses the model's own (``model.lexicon``, from
    its entry's ``runtime``; greedy where it has none), ``False`` forces greedy decoding, a list of
    words restricts the transcripts to them.

    With ``timestamps=True`` each result is ``{"text", "words": [{"word", "start", "end"}]}``
    (seconds from the start of the audio)."""
    single = not isinstance(audio, list)
    inputs = [audio] if single else audio
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    labels = list(model.labels)
    graph = lexicon_graph(model, lexicon)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    results: list[Any] = []
    try:
        for i in range(0, len(inputs), batch_size):
            feats, lengths = model.preprocess.batch(inputs[i:i + batch_size])
            with torch.inference_mode():
                log_probs, out_lengths = model(feats.to(device), lengths.to(device))
            results += decode_batch(model, log_probs, out_lengths, lengths, labels, timestamps, graph)
    finally:
        model.train(was_training)
    return results[0] if single else results


def lexicon_graph(model: Any, lexicon: Sequence[str] | bool | None) -> Any:
    """The decoding graph :func:`transcribe` uses (see its ``lexicon``); None for greedy decoding.
    A model's own graph is built once and kept on it."""
    from .lexicon import LexiconGraph

    if lexicon is False:
        return None
    if lexicon is None or lexicon is True:
        words = getattr(model, "lexicon", None)
        if lexicon is True and not words:
            raise ValueError("lexicon=True: this model has no lexicon of its own; pass a list of words")
        if not words:
            return None
        cached = getattr(model, "_lexicon_graph", None)
        if cached is None or cached[0] != tuple(words):
            cached = (tuple(words), LexiconGraph(words, list(model.labels)))
            model._lexicon_graph = cached
        return cached[1]
    if isinstance(lexicon, str) or not all(isinstance(w, str) for w in lexicon):
        raise ValueError(f"lexicon must be a list of words, True, False or None; got {lexicon!r:.80}")
    return LexiconGraph(list(lexicon), list(model.labels))


def decode_batch(model: Any, log_probs: Tensor, out_lengths: Tensor, in_lengths: Tensor, labels: Sequence[str],
                 timestamps: bool, graph: Any = None) -> list[Any]:
    """Transcripts (or ``{"text", "words"}`` with timestamps) of a batch of a model's outputs,
    greedy or (``graph``, a :class:`~reszoo.speech.lexicon.LexiconGraph`) spelling its words."""
    from .lexicon import lexicon_tokens

    _check_vocabulary(log_probs, labels)
    log_probs = log_probs.float().cpu()
    out = []
    for j in range(log_probs.shape[0]):
        if graph is not None:
            tokens = lexicon_tokens(log_probs[j], int(out_lengths[j]), graph)
        else:
            tokens = greedy_tokens(log_probs[j], int(out_lengths[j]), blank=len(labels))
        text = _text(tokens, labels)
        if timestamps:
            shift = frame_shift(model, int(in_lengths[j]), int(out_lengths[j]))
            out.append({"text": text, "words": word_timestamps(tokens, labels, shift)})
        else:
            out.append(text)
    return out


def error_counts(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, int]:
    """Word and character edit operations of ``hyps`` against ``refs`` (jiwer): errors and reference lengths."""
    import jiwer

    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("no references to score")
    empty = [i for i, r in enumerate(refs) if not r.strip()]
    if empty:
        raise ValueError(f"reference {empty[0]} is empty; error rates are relative to the reference length")
    w = jiwer.process_words(list(refs), list(hyps))
    c = jiwer.process_characters(list(refs), list(hyps))
    return {"word_errors": w.substitutions + w.deletions + w.insertions, "words": w.hits + w.substitutions + w.deletions,
            "char_errors": c.substitutions + c.deletions + c.insertions, "chars": c.hits + c.substitutions + c.deletions}


def error_rates(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, float]:
    """Word and character error rates (fractions) of ``hyps`` against ``refs`` over the whole set,
    with the counts they come from."""
    counts = error_counts(refs, hyps)
    return {"wer": counts["word_errors"] / counts["words"], "cer": counts["char_errors"] / counts["chars"], **counts}
