"""reszoo/speech/training.py: the AAM-softmax loss, SpecAugment and the equal error rate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reszoo.speech.training import (
    CRITERIA,
    AAMSoftmax,
    AAMSoftmaxLoss,
    CosineHead,
    SpecAugment,
    aam_softmax_loss,
    eer,
    pair_scores,
    spec_augment,
)


def test_aam_softmax_is_cross_entropy_of_scaled_cosines_with_a_margin_on_the_target() -> None:
    cosine = torch.tensor([[0.8, 0.1, -0.3], [0.2, 0.5, 0.4]])
    target = torch.tensor([0, 2])
    expected = cosine.clone()
    for i, t in enumerate(target):
        expected[i, t] = math.cos(math.acos(float(cosine[i, t])) + 0.2)
    torch.testing.assert_close(aam_softmax_loss(cosine, target), F.cross_entropy(30.0 * expected, target))
    # the margin makes the same scores cost more; no margin is plain scaled softmax
    assert aam_softmax_loss(cosine, target) > aam_softmax_loss(cosine, target, margin=0.0)
    torch.testing.assert_close(aam_softmax_loss(cosine, target, margin=0.0), F.cross_entropy(30.0 * cosine, target))
    assert isinstance(CRITERIA["aam-softmax"](), AAMSoftmaxLoss)


def test_aam_softmax_on_embeddings_trains_its_class_directions() -> None:
    torch.manual_seed(0)
    criterion = AAMSoftmax(8, 3)
    emb = torch.randn(6, 8, requires_grad=True)
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    loss = criterion(emb, target)
    loss.backward()
    assert criterion.weight.grad is not None and emb.grad is not None and loss.item() > 0
    head = CosineHead(8, 3)
    with torch.no_grad():
        cos = head(torch.randn(4, 8))
    assert cos.shape == (4, 3) and float(cos.abs().max()) <= 1 + 1e-6


def test_spec_augment_crops_and_masks_one_utterance() -> None:
    f = torch.ones(100, 80)
    out = spec_augment(f.clone(), np.random.default_rng(0))
    assert 85 <= out.shape[0] <= 100 and out.shape[1] == 80
    assert (out == 0).any() and (out == 1).any()  # masked bins/frames, the rest kept
    again = spec_augment(f.clone(), np.random.default_rng(0))
    assert torch.equal(out, again)  # a function of the generator alone


def test_spec_augment_on_a_padded_batch_repads_and_keeps_relative_lengths() -> None:
    feats = torch.zeros(3, 50, 40)
    lengths = torch.tensor([1.0, 0.6, 0.4])
    for i, n in enumerate((50, 30, 20)):
        feats[i, :n] = 1.0
    torch.manual_seed(0)
    out = SpecAugment()({"feats": feats, "lengths": lengths, "other": torch.ones(1)})
    frames = out["feats"].shape[1]
    assert frames <= 50 and float(out["lengths"].max()) == 1.0 and "other" in out
    for i, rel in enumerate(out["lengths"].tolist()):
        kept = round(rel * frames)
        assert kept <= (50, 30, 20)[i] and (out["feats"][i, kept:] == 0).all()  # padding stays zero
    torch.manual_seed(0)
    again = SpecAugment()({"feats": feats, "lengths": lengths})
    assert torch.equal(out["feats"], again["feats"])  # torch's RNG: seeded, so a resumed run repeats it


def test_eer_and_pair_scores() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1])
    same = np.array([True, True, True, False, False, False])
    rate, threshold = eer(scores, same)
    assert rate == 0.0 and 0.3 <= threshold <= 0.7  # separable: no error at the threshold
    rate, _ = eer(scores, ~same)
    assert rate == 1.0  # inverted scores: every decision wrong
    with pytest.raises(ValueError, match="both same-speaker and different-speaker"):
        eer(scores, np.ones(6, dtype=bool))
    emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    pair, flags = pair_scores(emb, [0, 0, 1, 1])
    assert len(pair) == len(flags) == 6 and flags.sum() == 2
    assert eer(pair, flags)[0] == 0.0
