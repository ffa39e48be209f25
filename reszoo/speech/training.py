"""Training pieces of the speech domain: the AAM-softmax and CTC losses, SpecAugment, and the equal error rate.

- :class:`AAMSoftmaxLoss`: additive angular margin softmax (ArcFace), the loss ECAPA-TDNN speaker
  models are trained with, on cosine logits (a :class:`CosineHead`); :class:`AAMSoftmax` is the
  two together, on embeddings. ``reszoo.finetune(..., criterion="aam-softmax")`` names the loss
  (:data:`CRITERIA`), and the loop gives the model the cosine head it scores (``AAMSoftmaxLoss.head``).
- :class:`CTCLoss`: connectionist temporal classification for recognisers (blank last, NeMo's
  ``mean_batch`` reduction), which also scores a validation split by greedy decoding (WER, CER):
  ``criterion="ctc"``, the default of recognisers' fine-tuning.
- :func:`spec_augment` (one utterance) and :class:`SpecAugment` (a padded batch, as the
  fine-tuning loop's ``augment=`` hook): a random crop in time, frequency masks, a time mask.
- :func:`eer` and :func:`pair_scores`: verification trials of every pair of embeddings, and the
  equal error rate with the threshold it is reached at.

numpy is imported where used (the EER): the rest needs torch only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .preprocess import pad_features

__all__ = ["AAMSoftmax", "AAMSoftmaxLoss", "CRITERIA", "CTCLoss", "CosineHead", "SpecAugment", "SpectrogramAugmentation", "aam_softmax_loss", "eer",
           "pair_scores", "spec_augment"]


# --------------------------------------------------------------------------- AAM-softmax


def aam_softmax_loss(cosine: Tensor, target: Tensor, *, margin: float = 0.2, scale: float = 30.0) -> Tensor:
    """Cross-entropy of ``scale * cos(theta + margin)`` for the true class, ``scale * cos(theta)``
    for the others: the true class must win by an angular margin, which makes same-speaker
    embeddings cluster tightly (cosine scoring then separates speakers)."""
    cos = cosine.clamp(-1 + 1e-7, 1 - 1e-7)
    theta = torch.acos(cos)
    logits = torch.where(F.one_hot(target, cos.shape[1]).bool(), torch.cos(theta + margin), cos)
    return F.cross_entropy(scale * logits, target)


class CosineHead(nn.Module):
    """Class scores as cosines between the embedding and one learned direction per class."""

    def __init__(self, embed_dim: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, embed_dim) * 0.01)

    def forward(self, emb: Tensor) -> Tensor:
        return F.linear(F.normalize(emb), F.normalize(self.weight))


class AAMSoftmaxLoss(nn.Module):
    """:func:`aam_softmax_loss` as a criterion ``(cosine logits, target) -> loss`` (no parameters).

    ``head``: the head whose outputs it scores; ``reszoo.finetune`` builds the model's new head
    this way (a linear head's logits are no cosines)."""

    head = CosineHead

    def __init__(self, margin: float = 0.2, scale: float = 30.0) -> None:
        super().__init__()
        self.margin, self.scale = margin, scale

    def forward(self, cosine: Tensor, target: Tensor) -> Tensor:
        return aam_softmax_loss(cosine, target, margin=self.margin, scale=self.scale)


class AAMSoftmax(CosineHead):
    """A cosine head and the AAM-softmax loss together: ``(embeddings, target) -> loss``; its
    class directions train with the model and are dropped afterwards (the model keeps the embedding)."""

    def __init__(self, embed_dim: int, num_classes: int, margin: float = 0.2, scale: float = 30.0) -> None:
        super().__init__(embed_dim, num_classes)
        self.margin, self.scale = margin, scale

    def forward(self, emb: Tensor, target: Tensor) -> Tensor:  # type: ignore[override]
        return aam_softmax_loss(super().forward(emb), target, margin=self.margin, scale=self.scale)


# --------------------------------------------------------------------------- CTC


class CTCLoss(nn.Module):
    """CTC loss of a recogniser's ``(log_probs (batch, frames, symbols + 1), out_lengths)``
    against transcripts padded with -1 ``(batch, longest)`` (reszoo.finetune's sequence targets),
    the blank last; summed over the batch and divided by its size (NeMo's ``mean_batch``).
    Impossible alignments (a transcript longer than the frames) count zero, as NeMo's
    ``zero_infinity``.

    As the fine-tuning loop's sequence criterion it also scores validation batches
    (:meth:`counts`, :meth:`summarise`): greedy transcripts against the references, word and
    character error rates over the split (``labels``: the vocabulary, set by the loop)."""

    monitor = "wer"
    metric_labels = {"wer": "WER (%)", "cer": "CER (%)"}

    def __init__(self) -> None:
        super().__init__()
        self.labels: list[str] | None = None

    def set_labels(self, labels: Any) -> None:
        self.labels = list(labels)

    @staticmethod
    def _parts(outputs: tuple[Tensor, Tensor], target: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        log_probs, out_lengths = outputs
        target_lengths = (target >= 0).sum(-1)
        return log_probs, out_lengths, target.clamp(min=0), target_lengths

    def per_utterance(self, outputs: tuple[Tensor, Tensor], target: Tensor) -> Tensor:
        log_probs, out_lengths, targets, target_lengths = self._parts(outputs, target)
        return F.ctc_loss(log_probs.float().transpose(0, 1), targets, out_lengths, target_lengths,
                          blank=log_probs.shape[-1] - 1, reduction="none", zero_infinity=True)

    def forward(self, outputs: tuple[Tensor, Tensor], target: Tensor) -> Tensor:
        return self.per_utterance(outputs, target).sum() / target.shape[0]

    def counts(self, outputs: tuple[Tensor, Tensor], target: Tensor) -> Tensor:
        """``[loss sum, word errors, reference words, character errors, reference characters, utterances]``."""
        from .ctc import error_counts, greedy_decode

        if self.labels is None:
            raise RuntimeError("CTCLoss.counts needs the vocabulary: set_labels(labels) first")
        hyps = greedy_decode(outputs[0].float().cpu(), outputs[1].cpu(), self.labels)
        refs = ["".join(self.labels[i] for i in row if i >= 0) for row in target.tolist()]
        refs = [" ".join(r.split()) for r in refs]
        c = error_counts(refs, hyps)
        loss = float(self.per_utterance(outputs, target).double().sum())
        return torch.tensor([loss, c["word_errors"], c["words"], c["char_errors"], c["chars"], target.shape[0]],
                            dtype=torch.float64)

    @staticmethod
    def summarise(counts: Tensor) -> dict[str, Any]:
        loss, word_errors, words, char_errors, chars, n = counts.tolist()
        return {"loss": loss / max(n, 1), "wer": word_errors / max(words, 1), "cer": char_errors / max(chars, 1),
                "n": int(n)}


# Named criteria of the speech domain, for reszoo.finetune(criterion=NAME): factories of a
# callable (logits, target) -> loss.
CRITERIA: dict[str, Callable[[], Callable[[Any, Tensor], Tensor]]] = {"aam-softmax": AAMSoftmaxLoss, "ctc": CTCLoss}


# --------------------------------------------------------------------------- SpecAugment


class Random(Protocol):
    """What :func:`spec_augment` draws from: numpy's Generator API (``uniform``, ``integers``)."""

    def uniform(self, low: float, high: float) -> float: ...

    def integers(self, low: int, high: int) -> int: ...


class TorchRandom:
    """numpy's ``uniform``/``integers`` drawn from torch's global CPU RNG (seeded by the run,
    saved in its checkpoints), so an augmentation in the fine-tuning loop resumes exactly."""

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand(()))

    def integers(self, low: int, high: int) -> int:
        return int(torch.randint(low, high, ()))


def spec_augment(f: Tensor, rng: Random, *, keep: tuple[float, float] = (0.85, 1.0), freq_masks: int = 2,
                 max_freq_width: int = 10, time_mask_divisor: int = 10) -> Tensor:
    """One utterance's features ``(frames, bins)``, augmented: a random crop keeping 85-100% of the
    frames (at least 8), two frequency masks (up to 10 bins each) and one time mask (up to a
    tenth of the kept frames), masks set to zero. ``f`` is changed in place where not cropped away."""
    frames, bins = f.shape
    kept = max(8, int(frames * rng.uniform(*keep)))
    start = int(rng.integers(0, frames - kept + 1))
    f = f[start:start + kept]
    for _ in range(freq_masks):
        width = int(rng.integers(0, max_freq_width + 1))
        lo = int(rng.integers(0, bins - width + 1))
        f[:, lo:lo + width] = 0.0
    width = int(rng.integers(0, max(1, kept // time_mask_divisor) + 1))
    lo = int(rng.integers(0, kept - width + 1))
    f[lo:lo + width] = 0.0
    return f


class SpecAugment:
    """:func:`spec_augment` over a padded batch ``{"feats": (batch, frames, bins), "lengths":
    relative lengths}`` (the speech adapter's), re-padded to the new longest utterance; for
    ``reszoo.finetune(..., augment=SpecAugment())``. Draws from torch's RNG (:class:`TorchRandom`)."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.rng = TorchRandom()

    def __call__(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        feats, lengths = inputs["feats"], inputs["lengths"]
        frames = feats.shape[1]
        kept = [spec_augment(feats[i, : max(1, round(float(lengths[i]) * frames))].clone(), self.rng, **self.options)
                for i in range(feats.shape[0])]
        out, rel = pad_features(kept, dtype=lengths.dtype, device=lengths.device)
        return {**inputs, "feats": out, "lengths": rel}


class SpectrogramAugmentation:
    """NeMo's ``SpectrogramAugmentation`` for recogniser batches ``{"feats": (batch, n_mels,
    frames), "lengths": frame counts}``: ``freq_masks`` bands of up to ``freq_width`` mel bins
    and ``time_masks`` spans of up to ``time_width`` of each utterance's frames, set to zero;
    for ``reszoo.finetune(..., augment=SpectrogramAugmentation())``. Draws from torch's RNG
    (seeded by the run, saved in its checkpoints)."""

    def __init__(self, freq_masks: int = 2, freq_width: int = 15, time_masks: int = 2, time_width: float = 0.05) -> None:
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_width = time_masks, time_width

    def __repr__(self) -> str:
        return (f"SpectrogramAugmentation(freq_masks={self.freq_masks}, freq_width={self.freq_width}, "
                f"time_masks={self.time_masks}, time_width={self.time_width})")

    def __call__(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        feats = inputs["feats"].clone()
        bins = feats.shape[1]
        for i, length in enumerate(inputs["lengths"].tolist()):
            for _ in range(self.freq_masks):
                width = int(torch.randint(0, self.freq_width + 1, ()))
                lo = int(torch.randint(0, max(1, bins - width + 1), ()))
                feats[i, lo:lo + width, :] = 0.0
            most = max(1, int(self.time_width * length))
            for _ in range(self.time_masks):
                width = int(torch.randint(0, most + 1, ()))
                lo = int(torch.randint(0, max(1, length - width + 1), ()))
                feats[i, :, lo:lo + width] = 0.0
        return {**inputs, "feats": feats}


# --------------------------------------------------------------------------- equal error rate


def pair_scores(embeddings: Tensor, speakers: Any) -> tuple[Any, Any]:
    """Cosine scores and same-speaker flags (numpy arrays) of every pair ``i < j`` of embeddings."""
    import numpy as np

    emb = F.normalize(embeddings.float())
    sim = (emb @ emb.T).cpu().numpy()
    spk = np.asarray(speakers)
    iu = np.triu_indices(len(spk), k=1)
    return sim[iu], (spk[:, None] == spk[None, :])[iu]


def eer(scores: Any, targets: Any) -> tuple[float, float]:
    """Equal error rate (a fraction) of verification ``scores`` (higher: same speaker) against
    ``targets`` (True: a same-speaker trial), and the score threshold where false accepts equal
    false rejects."""
    import numpy as np

    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets).astype(bool)
    if targets.all() or not targets.any():
        raise ValueError("eer needs both same-speaker and different-speaker trials")
    order = np.argsort(scores)
    s, t = scores[order], targets[order]
    n_target, n_non = t.sum(), (~t).sum()
    # Threshold just above s[i]: rejected = everything up to i.
    frr = np.cumsum(t) / n_target
    far = 1.0 - np.cumsum(~t) / n_non
    i = int(np.argmin(np.abs(frr - far)))
    threshold = float((s[i] + s[min(i + 1, len(s) - 1)]) / 2)
    return float((frr[i] + far[i]) / 2), threshold
