"""Connected spoken digits from FSDD: the TIDIGITS task, remade from real recordings.

An utterance is 1-7 digits said by ONE speaker, each digit one of that speaker's FSDD recordings
(8 kHz), resampled to 16 kHz and concatenated with short silences: 50-200 ms before the first
and after the last digit, 50-300 ms between digits. Its transcript is the digits as words
("three one four"); recognisers spell them with :data:`VOCABULARY` (the letters of the ten
digit words and the space), as NeMo's character models spell English.

Everything is a function of the seed: utterance ``i`` of ``(split, speaker)`` draws from its own
``random.Random`` seeded by ``f"connected-digits/{seed}/{split}/{speaker}/{i}"``, so a set is the
same whatever else was built, and a bigger set starts with the smaller one. ``split`` is FSDD's
official one: ``train`` draws from takes 5-49, ``test`` from takes 0-4 (never trained on).

    python -m scripts.connected_digits OUT --train 600 --test 200   # WAVs + NeMo manifests per speaker

    python -m scripts.connected_digits --examples examples/speech/connected   # the bundled examples

writes ``OUT/<split>/<speaker>/<id>.wav`` (16-bit PCM, 16 kHz) and ``OUT/<split>-<speaker>.jsonl``
(NeMo manifests: ``audio_filepath`` relative to the manifest, ``duration``, ``text``).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scripts.data import FSDD_SPEAKERS, fsdd_recordings

__all__ = ["RATE", "SPLITS", "Utterance", "VOCABULARY", "WORDS", "build", "plan", "render", "write_manifest"]

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
VOCABULARY = tuple(sorted(set("".join(WORDS)) | {" "}))  # " " first, then the 15 letters
RATE = 16_000
SPLITS = {"train": range(5, 50), "test": range(0, 5)}  # FSDD's official split, by take index
MAX_DIGITS = 7
EDGE_MS = (50, 200)  # silence before the first digit and after the last
GAP_MS = (50, 300)  # silence between digits


@dataclass(frozen=True)
class Utterance:
    """One connected-digit utterance: which recordings, in order, and the silences around them
    (``pauses_ms[k]`` before recording ``k``; the last one after the last recording)."""

    id: str
    speaker: str
    recordings: tuple[str, ...]  # FSDD file names, e.g. "3_theo_12.wav"
    pauses_ms: tuple[int, ...]  # len(recordings) + 1

    @property
    def digits(self) -> list[int]:
        return [int(name.split("_")[0]) for name in self.recordings]

    @property
    def text(self) -> str:
        return " ".join(WORDS[d] for d in self.digits)


def _takes(recordings: Iterable[dict[str, Any]], speaker: str, split: str) -> dict[int, list[str]]:
    """``{digit: file names}`` of ``speaker``'s takes in ``split``, sorted."""
    index = FSDD_SPEAKERS.index(speaker)
    out: dict[int, list[str]] = {d: [] for d in range(10)}
    for r in recordings:
        if r["speaker"] == index and r["index"] in SPLITS[split]:
            out[r["digit"]].append(r["name"])
    return {d: sorted(names) for d, names in out.items()}


def plan(recordings: Sequence[dict[str, Any]], speaker: str, split: str, count: int, seed: int = 0) -> list[Utterance]:
    """The first ``count`` utterances of ``speaker`` in ``split`` (``recordings``: ``scripts.data.fsdd_recordings()``)."""
    if speaker not in FSDD_SPEAKERS:
        raise ValueError(f"unknown speaker {speaker!r}; FSDD speakers: {', '.join(FSDD_SPEAKERS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    takes = _takes(recordings, speaker, split)
    missing = [d for d, names in takes.items() if not names]
    if missing:
        raise ValueError(f"{speaker} has no {split} recordings of digit(s) {missing}")
    out = []
    for i in range(count):
        rng = random.Random(f"connected-digits/{seed}/{split}/{speaker}/{i}")
        n = rng.randint(1, MAX_DIGITS)
        names = tuple(rng.choice(takes[rng.randrange(10)]) for _ in range(n))
        pauses = (rng.randint(*EDGE_MS), *(rng.randint(*GAP_MS) for _ in range(n - 1)), rng.randint(*EDGE_MS))
        out.append(Utterance(f"{split}-{speaker}-{i:05d}", speaker, names, pauses))
    return out


class RecordingCache:
    """FSDD recordings read once and resampled to 16 kHz (float32), by file name."""

    def __init__(self, recordings_dir: Path) -> None:
        self.dir = Path(recordings_dir)
        self._waves: dict[str, np.ndarray] = {}

    def __call__(self, name: str) -> np.ndarray:
        wave = self._waves.get(name)
        if wave is None:
            import soundfile
            import torch
            import torchaudio.functional as AF

            data, rate = soundfile.read(str(self.dir / name), dtype="float32")
            wave = AF.resample(torch.from_numpy(data), rate, RATE).numpy() if rate != RATE else data
            self._waves[name] = wave
        return wave


def render(utt: Utterance, recording: RecordingCache) -> np.ndarray:
    """The utterance's 16 kHz waveform (float32): silences and the resampled recordings, concatenated."""
    parts: list[np.ndarray] = []
    for pause, name in zip(utt.pauses_ms, (*utt.recordings, None), strict=True):
        parts.append(np.zeros(pause * RATE // 1000, dtype=np.float32))
        if name is not None:
            parts.append(recording(name))
    return np.concatenate(parts)


def write_manifest(utts: Sequence[Utterance], recording: RecordingCache, out: Path, manifest: Path) -> Path:
    """Write ``utts`` as 16-bit 16 kHz WAVs under ``out`` and their NeMo manifest ``manifest``
    (paths relative to it); files already there are kept (the same seed writes the same audio)."""
    import soundfile

    manifest.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for utt in utts:
        path = out / utt.speaker / f"{utt.id}.wav"
        wave = render(utt, recording)
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(str(path), wave, RATE, subtype="PCM_16")
        lines.append(json.dumps({"audio_filepath": str(path.relative_to(manifest.parent)),
                                 "duration": round(len(wave) / RATE, 4), "text": utt.text}))
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest


def build(out: Path, *, train: int, test: int, seed: int = 0, data: Path | None = None,
          speakers: Sequence[str] = FSDD_SPEAKERS) -> dict[tuple[str, str], Path]:
    """Every speaker's ``train`` and ``test`` sets under ``out``; ``{(split, speaker): manifest}``."""
    recordings = fsdd_recordings(data)
    recording = RecordingCache(recordings[0]["path"].parent)
    manifests = {}
    for split, count in (("train", train), ("test", test)):
        for speaker in speakers:
            utts = plan(recordings, speaker, split, count, seed)
            manifests[split, speaker] = write_manifest(utts, recording, out / split, out / f"{split}-{speaker}.jsonl")
    return manifests


EXAMPLE_SPEAKERS = ("jackson", "lucas", "nicolas", "theo")  # seen by the published model (george held out)
EXAMPLES_README = """# Connected-digit examples

Utterances of connected spoken digits made by `scripts/connected_digits.py` (`python -m
scripts.connected_digits --examples examples/speech/connected`): for each of {speakers}, the
first utterance of 3 digits in the test split (seed 0), i.e. FSDD recordings of takes 0-4 (FSDD's
official test takes, which no reszoo model trained on), resampled to 16 kHz and joined by
silences. 16-bit PCM WAV, 16 kHz. The name is the transcript (words joined by `-`) and the speaker.

{listing}

Made from the Free Spoken Digit Dataset (FSDD), repository `Jakobovski/free-spoken-digit-dataset`
at commit `26eb9aaf76e81b692f806f9140c2d2777410d7a1`. License: Creative Commons
Attribution-ShareAlike 4.0 International (CC BY-SA 4.0). Credit: the Free Spoken Digit Dataset and
its contributors, https://github.com/Jakobovski/free-spoken-digit-dataset.

    reszoo predict quartznet-fsdd-digits examples/speech/connected/*.wav
"""


def write_examples(out: Path, data: Path | None = None, seed: int = 0) -> list[Path]:
    """The bundled examples: per speaker of :data:`EXAMPLE_SPEAKERS`, the first 3-digit test
    utterance, as ``<words joined by ->_<speaker>.wav`` with a README listing what each is made of."""
    import soundfile

    recordings = fsdd_recordings(data)
    recording = RecordingCache(recordings[0]["path"].parent)
    out.mkdir(parents=True, exist_ok=True)
    written, lines = [], []
    for speaker in EXAMPLE_SPEAKERS:
        utt = next(u for u in plan(recordings, speaker, "test", 100, seed) if len(u.recordings) == 3)
        path = out / f"{utt.text.replace(' ', '-')}_{speaker}.wav"
        soundfile.write(str(path), render(utt, recording), RATE, subtype="PCM_16")
        written.append(path)
        lines.append(f"- `{path.name}`: {utt.id}, recordings {', '.join(utt.recordings)}, silences {list(utt.pauses_ms)} ms")
    (out / "README.md").write_text(EXAMPLES_README.format(speakers=", ".join(EXAMPLE_SPEAKERS), listing="\n".join(lines)),
                                   encoding="utf-8")
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.connected_digits", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, nargs="?", help="where to write the data set")
    p.add_argument("--examples", type=Path, default=None, help="write the bundled examples into this folder instead")
    p.add_argument("--train", type=int, default=600, help="utterances per speaker from the train takes (5-49)")
    p.add_argument("--test", type=int, default=200, help="utterances per speaker from the test takes (0-4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=None, help="FSDD folder holding recordings/ (default ../shared/data/fsdd)")
    args = p.parse_args(argv)
    if args.examples is not None:
        for path in write_examples(args.examples, args.data, args.seed):
            print(path)
        return 0
    if args.out is None:
        p.error("give OUT (the data set's folder) or --examples DIR")
    try:
        manifests = build(args.out, train=args.train, test=args.test, seed=args.seed, data=args.data)
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from None
    print(f"{len(manifests)} manifests under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
