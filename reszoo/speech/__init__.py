"""Speech: ECAPA-TDNN speaker embeddings and small residual conv-TDNN classifiers.

The domain contract of :mod:`reszoo.domains`: ``models.py`` (ECAPA-TDNN), ``convert.py``
(SpeechBrain checkpoints, NeMo ``.nemo`` archives), ``preprocess.py`` (the fbank front end, or
``melspec.py``'s NeMo log-mel front end for recognisers), ``predict.py`` (classes or
speaker verification), ``finetune.py`` (padded feature batches); ``audio.py`` reads and
resamples audio. Light on import: torchaudio and soundfile are imported by the functions that
read, resample or featurise audio. See docs/speech.md.
"""

from __future__ import annotations

from ..domains import ClassFolders, Domain, FinetuneSpec, Manifest, RuntimeSetting, is_number, lazy_exports
from .predict import predict

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff"})

def _lexicon_problem(value: object) -> str | None:
    ok = (isinstance(value, list) and 0 < len(value) <= 100_000
          and all(isinstance(w, str) and w and not any(c.isspace() for c in w) for w in value))
    return None if ok else "expected a non-empty list of words (strings without spaces)"


DOMAIN = Domain(
    name="speech",
    title="speech",
    package=__name__,
    # The 1x1 TDNN convolutions of every SE-Res2Net block and of the multi-layer aggregation. The
    # stem and the Res2Net convolutions are dilated and reflect-padded, which peft's LoRA
    # convolution does not reproduce (reszoo.lora refuses such layers).
    lora_targets=r"blocks\.\d+\.(tdnn1|tdnn2)\.conv|mfa\.conv",
    # Attentive pooling reads this convolution's weight directly (to save a concatenation), so a
    # LoRA wrapper there would be bypassed.
    lora_exclude=r"pool\.tdnn\.conv",
    finetune=FinetuneSpec(
        task="audio-classification",
        data=ClassFolders(AUDIO_EXTENSIONS, kind="audio"),
        adapter="reszoo.speech.finetune:SpeechAdapter",
        usage='print(model.classify("clip.wav", top_k=3))   # [(label, probability), ...]',
    ),
    # Recognisers train on NeMo-style manifests of audio files and transcripts, with CTC.
    finetune_tasks={"automatic-speech-recognition": FinetuneSpec(
        task="automatic-speech-recognition",
        data=Manifest(AUDIO_EXTENSIONS, kind="audio", path_key="audio_filepath", text_key="text"),
        adapter="reszoo.speech.finetune:RecognitionAdapter",
        usage='print(model.transcribe("clip.wav"))   # the text',
        criterion="ctc",
    )},
    runtime={"verify_threshold": RuntimeSetting(
        "the cosine score at or above which `model.verify` says 'same speaker'",
        lambda v: None if is_number(v) and -1 <= v <= 1 else "expected a cosine score in [-1, 1]",
        legacy="extra"),
        "lexicon": RuntimeSetting(
            "the words a recogniser's transcripts spell (`model.transcribe` decodes the best path through them; "
            "absent: greedy decoding)", _lexicon_problem)},
)

_EXPORTS = {
    "ECAPATDNN": "models",
    "ConversionError": "convert",
    "DEFAULT_VERIFY_THRESHOLD": "preprocess",
    "FbankConfig": "preprocess",
    "SpeechPreprocess": "preprocess",
    "build_preprocess": "preprocess",
    "prepare": "preprocess",
    "AudioError": "audio",
    "MelConfig": "melspec",
    "MelPreprocess": "melspec",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["DOMAIN", "AUDIO_EXTENSIONS", "predict", *_EXPORTS]
