"""Inference for speech models: what ``reszoo predict`` and ``reszoo export`` do with them.

Recognisers (CTC, ``task: automatic-speech-recognition``) give ``{input, text}``, the transcript
(greedy, or spelling the words of the model's ``lexicon`` where its entry has one), batched with
padding (the model masks padded frames, so batching does not change a transcript). Classifiers give rows ``{input, rank, label, prob}``, the top classes of each recording (as for
images). Embedding models give ``{input, embedding}``, or with a ``reference`` recording the
verification rows ``{input, reference, score, match, threshold}`` (cosine score, and whether it
reaches the model's ``verify_threshold``). Inputs: audio files, folders of them (searched
recursively), waveforms as ``(tensor or array, sample_rate)``.

Recordings are decoded and featurised in the loader's workers; the model runs on recordings of
equal length together, each alone otherwise: padding would change the convolutions' edges,
and so the numbers.

Light on import (torch is imported when predicting): the package re-exports :func:`predict`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..predict import Options, Task, classify_rows, describe, domain_predict, embedding_rows

if TYPE_CHECKING:
    import torch

    from ..export import ExportSpec


def _by_length(model: Any, feats: list[torch.Tensor], forward: Any) -> torch.Tensor:
    """``forward`` over ``feats`` (each ``(frames, n_mels)``), recordings of one length batched together."""
    import torch

    param = next(model.parameters())
    out: list[Any] = [None] * len(feats)
    lengths: dict[int, list[int]] = {}
    for i, f in enumerate(feats):
        lengths.setdefault(f.shape[0], []).append(i)
    for idx in lengths.values():
        result = forward(torch.stack([feats[i] for i in idx]).to(param.device, param.dtype)).float()
        for j, i in enumerate(idx):
            out[i] = result[j]
    return torch.stack(out)


def is_recogniser(model: Any) -> bool:
    """A CTC recogniser: its entry's task says so (or, without an entry, it has ``transcribe``)."""
    entry = getattr(model, "entry", None)
    if entry is not None:
        return entry.task == "automatic-speech-recognition"
    return callable(getattr(model, "transcribe", None))


def _recognition_task(model: Any, options: Options) -> Task:
    """Transcripts: log-mel features read in the loader's workers, padded batches, greedy CTC."""
    import torch

    from ..errors import InputError
    from . import AUDIO_EXTENSIONS
    from .ctc import decode_batch, lexicon_graph

    if options.reference is not None:
        raise InputError("reference= applies to embedding (speaker) models; this speech model is a recogniser")
    preprocess, labels = model.preprocess, list(model.labels)
    graph = lexicon_graph(model, None)  # the model's own decoding: its lexicon, or greedy

    def read(value: Any, index: int) -> torch.Tensor:
        feats, lengths = preprocess(value)
        return feats[0, :, : int(lengths[0])]  # (n_mels, frames)

    def collate(feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = torch.tensor([f.shape[-1] for f in feats], dtype=torch.long)
        batch = torch.zeros(len(feats), feats[0].shape[0], int(lengths.max()))
        for i, f in enumerate(feats):
            batch[i, :, : f.shape[-1]] = f
        return batch, lengths

    def run(batch: tuple[torch.Tensor, torch.Tensor]) -> list[list[dict[str, Any]]]:
        feats, lengths = batch
        param = next(model.parameters())
        with torch.inference_mode():
            log_probs, out_lengths = model(feats.to(param.device, param.dtype), lengths.to(param.device))
        return [[{"text": text}] for text in decode_batch(model, log_probs, out_lengths, lengths, labels, False, graph)]

    return Task(fields=("input", "text"), read=read, collate=collate, run=run, extensions=AUDIO_EXTENSIONS, kind="audio")


def task(model: Any, options: Options) -> Task:
    """How ``model`` predicts: features in the loader, classes or embeddings in batches."""
    from ..errors import InputError
    from . import AUDIO_EXTENSIONS
    from .preprocess import DEFAULT_VERIFY_THRESHOLD

    preprocess = getattr(model, "preprocess", None)
    if preprocess is None:
        raise ValueError("model has no .preprocess; load it with reszoo.load(name) or set model.preprocess")

    def read(value: Any, index: int) -> torch.Tensor:
        return preprocess(value)

    common = dict(read=read, extensions=AUDIO_EXTENSIONS, kind="audio")
    if is_recogniser(model):
        return _recognition_task(model, options)
    if getattr(model, "head", None) is not None:
        if options.reference is not None:
            raise InputError("reference= applies to embedding (speaker) models; this speech model is a classifier")
        labels = getattr(model, "labels", None)

        def run(feats: list[torch.Tensor]) -> list[list[dict[str, Any]]]:
            return classify_rows(_by_length(model, feats, model).softmax(-1), labels, options.top_k)

        return Task(fields=("input", "rank", "label", "prob"), run=run, **common)
    reference = None
    if options.reference is not None:
        reference = (describe(options.reference), _by_length(model, [read(options.reference, 0)], model.forward_embedding)[0])
    threshold = float(getattr(model, "verify_threshold", DEFAULT_VERIFY_THRESHOLD))

    def run(feats: list[torch.Tensor]) -> list[list[dict[str, Any]]]:
        return embedding_rows(_by_length(model, feats, model.forward_embedding), reference, threshold)

    fields = ("input", "reference", "score", "match", "threshold") if reference else ("input", "embedding")
    return Task(fields=fields, run=run, **common)


def predict(model: Any, inputs: list[Any], top_k: int = 5, **options: Any) -> list[dict[str, Any]]:
    """Rows for every recording (see :func:`reszoo.predict`, whose options this takes), as a list."""
    return domain_predict(task, model, inputs, top_k, **options)


def export_spec(model: Any) -> ExportSpec:
    """``forward(feats, lengths)``: features ``(batch, frames, n_mels)`` and relative lengths
    (1.0: the whole padded length), traced with a padded batch of two synthetic recordings;
    batch and frames are dynamic. The fbank front end stays in Python (``model.preprocess``)."""
    import torch

    from ..export import ExportSpec, synthetic_waveform

    preprocess = getattr(model, "preprocess", None)
    if preprocess is None:
        raise ValueError("model has no .preprocess; load it with reszoo.load(name) or set model.preprocess")
    param = next(model.parameters())
    rate = preprocess.cfg.sample_rate
    if is_recogniser(model):
        return _recogniser_export_spec(model, preprocess, param, rate)

    def batch(seconds: list[float], seed: int) -> dict[str, torch.Tensor]:
        waves = [(synthetic_waveform(s, rate, seed + i), rate) for i, s in enumerate(seconds)]
        feats, lengths = preprocess.batch(waves)
        return {"feats": feats.to(param.device, param.dtype), "lengths": lengths.to(param.device, param.dtype)}

    output = "logits" if getattr(model, "head", None) is not None else "embedding"
    axes = {"feats": {0: "batch", 1: "frames"}, "lengths": {0: "batch"}}
    return ExportSpec(module=model, example=batch([1.0, 0.7], 0), checks=[batch([0.6, 1.2, 0.9], 5), batch([0.8], 9)],
                      outputs=(output,), dynamic=axes)


def _recogniser_export_spec(model: Any, preprocess: Any, param: Any, rate: int) -> ExportSpec:
    """A CTC recogniser's ``forward(feats, lengths) -> (log_probs, out_lengths)``: log-mel features
    ``(batch, n_mels, frames)`` and each recording's frame count, traced on a padded batch (batch and
    frames dynamic); the greedy decoding and the front end stay in Python."""
    from ..export import ExportSpec, synthetic_waveform

    def batch(seconds: list[float], seed: int) -> dict[str, Any]:
        waves = [(synthetic_waveform(s, rate, seed + i), rate) for i, s in enumerate(seconds)]
        feats, lengths = preprocess.batch(waves)
        return {"feats": feats.to(param.device, param.dtype), "lengths": lengths.to(param.device)}

    axes = {"feats": {0: "batch", 2: "frames"}, "lengths": {0: "batch"}}
    return ExportSpec(module=model, example=batch([1.0, 0.7], 0), checks=[batch([0.6, 1.2, 0.9], 5), batch([0.8], 9)],
                      outputs=("log_probs", "out_lengths"), dynamic=axes)
