"""CTC decoding constrained to a word list: the best path that spells a sequence of known words.

Greedy decoding may spell a word that does not exist ("seve", "eigt"); for a closed vocabulary
(digits, commands) the transcript should be a sequence of the vocabulary's words, as a grammar
decoder of the TIDIGITS task gives. :func:`lexicon_tokens` finds the single best frame alignment
(Viterbi, max over paths) through the CTC topology of a word loop: each word's characters with
optional blanks between them (mandatory between repeated characters), words separated by an
optional space, blanks anywhere between words. It returns the same :class:`~reszoo.speech.ctc.Token`
list as greedy decoding (plus a zero-length space token where two words meet without a space frame),
so transcripts and word timestamps are made the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .ctc import Token

__all__ = ["LexiconGraph", "lexicon_tokens"]

NEG = float("-inf")


class LexiconGraph:
    """The word loop's states (each with the symbol it emits, or the blank) and allowed transitions."""

    def __init__(self, words: Sequence[str], labels: Sequence[str], space: str = " ") -> None:
        words = list(dict.fromkeys(words))
        if not words:
            raise ValueError("the lexicon is empty: give at least one word")
        index = {c: i for i, c in enumerate(labels)}
        blank = len(labels)
        for w in words:
            if not w or space in w or any(c not in index for c in w):
                missing = sorted({c for c in w if c not in index})
                raise ValueError(f"lexicon word {w!r} cannot be spelt with the model's symbols"
                                 + (f" (no {', '.join(map(repr, missing))})" if missing else " (empty, or holds a space)"))
        has_space = space in index
        symbols: list[int] = []
        edges: list[tuple[int, int]] = []

        def state(symbol: int) -> int:
            symbols.append(symbol)
            edges.append((len(symbols) - 1, len(symbols) - 1))  # every state may last several frames
            return len(symbols) - 1

        start_blank = state(blank)
        word_starts: list[int] = []
        word_ends: list[int] = []  # states after which a word is complete
        # a word-end state -> the symbol it last emitted (None after its blank: any word may follow)
        last_symbol: dict[int, str | None] = {}
        for w in words:
            chars = [state(index[c]) for c in w]
            blanks = [state(blank) for _ in w]
            for i, (c, b) in enumerate(zip(chars, blanks)):
                edges.append((c, b))
                if i + 1 < len(w):
                    edges.append((b, chars[i + 1]))
                    if w[i + 1] != w[i]:  # CTC: a repeated symbol needs a blank between
                        edges.append((c, chars[i + 1]))
            word_starts.append(chars[0])
            word_ends += [chars[-1], blanks[-1]]
            last_symbol |= {chars[-1]: w[-1], blanks[-1]: None}
        separators: list[int] = []
        if has_space:
            sp = state(index[space])
            sp_blank = state(blank)
            edges += [(sp, sp_blank)]
            separators = [sp, sp_blank]
            for end in word_ends:
                edges.append((end, sp))
        for start, w in zip(word_starts, words):
            edges.append((start_blank, start))
            for end in word_ends:
                if last_symbol[end] != w[0]:  # "two one": fine; "one eight" needs a blank or space before the e
                    edges.append((end, start))
            for s in separators:
                edges.append((s, start))
        self.symbols = torch.tensor(symbols)
        allowed = torch.full((len(symbols), len(symbols)), NEG)
        for a, b in edges:
            allowed[a, b] = 0.0
        self.allowed = allowed
        self.initial = torch.full((len(symbols),), NEG)
        self.initial[[start_blank, *word_starts]] = 0.0
        self.final = torch.full((len(symbols),), NEG)
        self.final[[start_blank, *word_ends, *separators]] = 0.0
        self.blank = blank
        # where a path goes straight from one word to the next, the transcript still needs the space
        self.space = index.get(space)
        self.word_starts, self.word_ends = frozenset(word_starts), frozenset(word_ends)


def lexicon_tokens(log_probs: Tensor, length: int | None, graph: LexiconGraph) -> list[Token]:
    """The best path of one utterance's ``(frames, symbols + 1)`` scores through ``graph``, as tokens."""
    if log_probs.dim() != 2 or log_probs.shape[-1] != graph.blank + 1:
        raise ValueError(f"expected (frames, {graph.blank + 1}) scores, got shape {tuple(log_probs.shape)}")
    scores = log_probs[: length if length is not None else log_probs.shape[0]].float().cpu()
    if scores.shape[0] == 0:
        return []
    emit = scores[:, graph.symbols]  # (frames, states)
    best = graph.initial + emit[0]
    back = []
    for t in range(1, emit.shape[0]):
        step = best[:, None] + graph.allowed  # (from, to)
        best, arg = step.max(0)
        best = best + emit[t]
        back.append(arg)
    end = int((best + graph.final).argmax())
    path = [end]
    for arg in reversed(back):
        path.append(int(arg[path[-1]]))
    path.reverse()
    tokens: list[Token] = []
    start = 0
    for t in range(1, len(path) + 1):
        if t == len(path) or path[t] != path[start]:
            symbol = int(graph.symbols[path[start]])
            if symbol != graph.blank:
                tokens.append(Token(symbol, start, t))
            if t < len(path) and graph.space is not None and path[start] in graph.word_ends and path[t] in graph.word_starts:
                tokens.append(Token(graph.space, t, t))  # two words with no space frame between them
            start = t
    return tokens
