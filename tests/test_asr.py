"""Speech recognition: greedy CTC decoding and word timestamps on hand-made scores, error rates,
the connected-digit data builder (deterministic; its audio is the FSDD recordings), NeMo-style
manifests read by the one fine-tuning path (clear one-line errors), the CTC criterion's scoring,
and, with the bundled recogniser, transcripts of the example WAVs, ``reszoo predict`` rows and
short fine-tuning runs (one process and two under torchrun)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reszoo.finetune import DataError
from reszoo.speech.ctc import Token, error_rates, greedy_decode, greedy_tokens, word_timestamps

from conftest import need_data

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parent.parent
LABELS = [" ", "a", "b"]  # blank = 3
TASK = "automatic-speech-recognition"


def scores(path: list[int], symbols: int = 4) -> torch.Tensor:
    """Log-probabilities ``(frames, symbols)`` whose best symbol per frame is ``path``."""
    x = torch.full((len(path), symbols), math.log(0.1 / (symbols - 1)))
    x[torch.arange(len(path)), torch.tensor(path)] = math.log(0.9)
    return x


# frames:      0  1  2  3  4  5  6  7  8
PATH = [1, 1, 3, 1, 2, 2, 0, 3, 2]  # a a _ a b b ' ' _ b


def test_greedy_tokens_merge_repeats_and_drop_blanks() -> None:
    assert greedy_tokens(scores(PATH)) == [Token(1, 0, 2), Token(1, 3, 4), Token(2, 4, 6), Token(0, 6, 7), Token(2, 8, 9)]
    assert greedy_decode(scores(PATH)[None], None, LABELS) == ["aab b"]  # the blank between the a's keeps both


def test_greedy_decode_cuts_each_utterance_to_its_length() -> None:
    batch = torch.stack([scores(PATH), scores([3, 2, 2, 3, 3, 3, 3, 3, 1])])
    assert greedy_decode(batch, torch.tensor([4, 9]), LABELS) == ["aa", "ba"]
    assert greedy_decode(batch, torch.tensor([9, 3]), LABELS) == ["aab b", "b"]


def test_spaces_at_the_ends_and_runs_of_spaces_are_no_words() -> None:
    assert greedy_decode(scores([0, 1, 3, 0, 0, 3, 0, 2, 0])[None], None, LABELS) == ["a b"]
    assert greedy_decode(scores([3, 3, 3])[None], None, LABELS) == [""]


def test_word_timestamps_from_the_alignment() -> None:
    words = word_timestamps(greedy_tokens(scores(PATH)), LABELS, shift=0.02)
    assert words == [{"word": "aab", "start": 0.0, "end": 0.12}, {"word": "b", "start": 0.16, "end": 0.18}]


def test_decoding_refuses_scores_that_do_not_fit_the_vocabulary() -> None:
    with pytest.raises(ValueError, match="vocabulary of 3 symbols plus the blank"):
        greedy_decode(torch.zeros(1, 5, 3), None, LABELS)
    with pytest.raises(ValueError, match="expected .frames, symbols. scores"):
        greedy_tokens(torch.zeros(1, 5, 4))


# --------------------------------------------------------------------------- lexicon decoding

LEX_LABELS = [" ", "e", "n", "o", "r", "t", "h"]  # blank = 7


def spelt(text: str) -> torch.Tensor:
    """Scores whose best symbol per frame spells ``text`` ('-': the blank)."""
    return scores([7 if c == "-" else LEX_LABELS.index(c) for c in text], symbols=8)


def lexicon_text(text: str, words: list[str]) -> str:
    from reszoo.speech.lexicon import LexiconGraph, lexicon_tokens

    return " ".join("".join(LEX_LABELS[t.id] for t in lexicon_tokens(spelt(text), None, LexiconGraph(words, LEX_LABELS))).split())


def test_lexicon_decoding_spells_only_known_words() -> None:
    words = ["one", "three", "ten"]
    assert greedy_decode(spelt("o-n-ee")[None], None, LEX_LABELS) == ["one"]
    assert greedy_decode(spelt("tthhr-ee")[None], None, LEX_LABELS) == ["thre"]  # greedy: no such word
    assert lexicon_text("tthhr-ee", words) == "three"  # the best path that spells a word: one e frame becomes a blank
    assert lexicon_text("thr-ee-e", words) == "three"  # a repeated letter needs a blank between: here there is one
    assert lexicon_text("o-ne  t-en", words) == "one ten"
    assert lexicon_text("onenten", words) == "one ten"  # words that meet without a space frame still get one
    assert lexicon_text("-------", words) == ""  # silence: no word
    # the best path, not the most words: a weak middle frame does not invent a word
    assert lexicon_text("one-----", words) == "one"


def test_lexicon_tokens_keep_the_alignment_for_timestamps() -> None:
    from reszoo.speech.lexicon import LexiconGraph, lexicon_tokens

    tokens = lexicon_tokens(spelt("-one--ten-"), None, LexiconGraph(["one", "ten"], LEX_LABELS))
    words = word_timestamps(tokens, LEX_LABELS, shift=0.02)
    assert words == [{"word": "one", "start": 0.02, "end": 0.08}, {"word": "ten", "start": 0.12, "end": 0.18}]
    assert lexicon_tokens(spelt("-one--ten-"), 4, LexiconGraph(["one", "ten"], LEX_LABELS))[-1].end <= 4  # cut to length


@pytest.mark.parametrize("words, message", [
    (["one", "two"], r"lexicon word 'two' cannot be spelt with the model's symbols \(no 'w'\)"),
    (["one one"], "empty, or holds a space"),
    ([], "the lexicon is empty"),
])
def test_a_lexicon_that_cannot_be_spelt_is_refused(words: list[str], message: str) -> None:
    from reszoo.speech.lexicon import LexiconGraph

    with pytest.raises(ValueError, match=message):
        LexiconGraph(words, LEX_LABELS)


def test_error_rates_match_hand_counts() -> None:
    r = error_rates(["one two three", "four"], ["one too", "four five"])
    # words: "two"->"too" (sub), "three" deleted, "five" inserted: 3 errors over 4 reference words
    assert (r["word_errors"], r["words"], r["wer"]) == (3, 4, 0.75)
    assert r["chars"] == len("one two three") + len("four")
    with pytest.raises(ValueError, match="reference 0 is empty"):
        error_rates([" "], ["a"])
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        error_rates(["a", "b"], ["a"])


# --------------------------------------------------------------------------- the CTC criterion


def test_ctc_criterion_scores_greedy_transcripts() -> None:
    from reszoo.finetune.adapters import pad_targets
    from reszoo.speech.training import CTCLoss

    crit = CTCLoss()
    crit.set_labels(LABELS)
    log_probs = torch.stack([scores(PATH), scores([3, 2, 2, 3, 3, 3, 3, 3, 1])]).log_softmax(-1)
    target = pad_targets([[1, 1, 2, 0, 2], [2]])  # "aab b" (right), "b" (the decoder says "ba")
    assert target.tolist() == [[1, 1, 2, 0, 2], [2, -1, -1, -1, -1]]
    out = (log_probs, torch.tensor([9, 9]))
    counts = crit.counts(out, target)
    loss = torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), target.clamp(min=0), torch.tensor([9, 9]),
                                        torch.tensor([5, 1]), blank=3, reduction="none")
    assert counts[0].item() == pytest.approx(float(loss.sum()), rel=1e-6)
    assert counts[1:].tolist() == [1, 3, 1, 6, 2]  # "b" -> "ba": 1 word error of 3 words, 1 char error of 6
    assert float(crit(out, target)) == pytest.approx(float(loss.sum()) / 2, rel=1e-6)
    summary = crit.summarise(counts)
    assert summary["wer"] == pytest.approx(1 / 3) and summary["n"] == 2


# --------------------------------------------------------------------------- the connected-digit builder


def fsdd_recordings() -> list[dict]:
    from scripts.data import fsdd_recordings as read

    return read(need_data("fsdd/recordings").parent)


def test_builder_is_deterministic_and_prefix_stable() -> None:
    from scripts.connected_digits import plan

    recs = fsdd_recordings()
    a = plan(recs, "theo", "train", 20, seed=0)
    assert a == plan(recs, "theo", "train", 20, seed=0)
    assert plan(recs, "theo", "train", 5, seed=0) == a[:5]
    assert plan(recs, "theo", "train", 20, seed=1) != a
    for utt in a:
        assert 1 <= len(utt.recordings) <= 7 and len(utt.pauses_ms) == len(utt.recordings) + 1
        assert all(name.split("_")[1] == "theo" and 5 <= int(name.split("_")[2][:-4]) <= 49 for name in utt.recordings)
        assert 50 <= min(utt.pauses_ms) and max(utt.pauses_ms) <= 300
    test = plan(recs, "theo", "test", 20, seed=0)
    assert all(int(name.split("_")[2][:-4]) <= 4 for utt in test for name in utt.recordings)


def test_builder_audio_is_the_recordings_resampled_and_concatenated(tmp_path: Path) -> None:
    import soundfile
    import torchaudio.functional as AF

    from scripts.connected_digits import WORDS, RecordingCache, plan, render, write_manifest

    recs = fsdd_recordings()
    rec_dir = recs[0]["path"].parent
    utt = next(u for u in plan(recs, "jackson", "test", 10, seed=0) if len(u.recordings) >= 3)
    wave = render(utt, RecordingCache(rec_dir))
    pos = 0
    for pause, name in zip(utt.pauses_ms, (*utt.recordings, None), strict=True):
        gap = pause * 16
        assert not wave[pos:pos + gap].any()
        pos += gap
        if name is not None:
            data, rate = soundfile.read(str(rec_dir / name), dtype="float32")
            expected = AF.resample(torch.from_numpy(data), rate, 16_000).numpy()
            assert (wave[pos:pos + len(expected)] == expected).all()
            pos += len(expected)
    assert pos == len(wave)
    assert utt.text == " ".join(WORDS[int(n[0])] for n in utt.recordings)
    manifest = write_manifest([utt], RecordingCache(rec_dir), tmp_path / "audio", tmp_path / "m.jsonl")
    record = json.loads(manifest.read_text())
    written, rate = soundfile.read(str(tmp_path / record["audio_filepath"]), dtype="float32")
    assert rate == 16_000 and record["text"] == utt.text and record["duration"] == round(len(wave) / 16_000, 4)
    assert abs(written - wave).max() <= 1 / 32768 + 1e-7  # 16-bit PCM of the same samples


# --------------------------------------------------------------------------- manifests


def wav(path: Path, seconds: float = 0.3) -> Path:
    import numpy as np
    import soundfile

    t = np.arange(int(16_000 * seconds)) / 16_000
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), (0.3 * np.sin(2 * np.pi * 220 * t)).astype("float32"), 16_000)
    return path


def read(path: Path, classes=None):
    from reszoo.finetune.data import read_data

    return read_data(str(path), "speech", task=TASK, classes=classes)


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_recipe_smoke_runs_are_deterministic_and_publish_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """scripts/train_quartznet_fsdd.py end to end on a few utterances: the data is built from the
    FSDD recordings, both twins train through the one loop (with the recipe's SpecAugment), the
    same seed gives the same bytes, and nothing a smoke run does reaches weights/ or registry.yaml."""
    from scripts import train_quartznet_fsdd as recipe

    fsdd = need_data("fsdd/recordings").parent
    monkeypatch.setattr(recipe, "TRAIN_PER_SPEAKER", 3)
    monkeypatch.setattr(recipe, "TEST_PER_SPEAKER", 2)
    guarded = [ROOT / "registry.yaml", *sorted((ROOT / "weights" / "reszoo").glob("quartznet-fsdd-digits*/model.safetensors"))]
    assert len(guarded) == 3
    before = [_sha(p) for p in guarded]
    common = ["--folds", "george", "--data", str(fsdd), "--cache", str(tmp_path / "cache"), "--epochs", "1", "--limit", "6"]
    for out in ("a", "b"):
        assert recipe.main([*common, "--augment", "--out", str(tmp_path / out)]) == 0
    assert recipe.main([*common, "--variants", "residual", "--out", str(tmp_path / "c")]) == 0
    for variant in ("residual", "plain"):
        a, b = (tmp_path / out / "george" / variant for out in ("a", "b"))
        assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
        r = json.loads((a / "results.json").read_text())
        assert r["smoke"] is True and r["train_utterances"] == 6 and r["augment"] == recipe.AUGMENT
        assert r["sha256"] == _sha(a / "model.safetensors") and r["heldout_speaker"] == "george"
        assert sum(s["utterances"] for s in r["per_speaker"].values()) == 12 and 0 <= r["seen_wer"] and 0 <= r["unseen_wer"]
        assert "SpecAugment" in r["training"] and len(r["loss_per_epoch"]) == 1
        assert r["lexicon"] == recipe.DIGIT_WORDS and 0 <= r["seen_wer_lexicon"] and 0 <= r["unseen_wer_lexicon"]
        assert all(s["lexicon"]["utterances"] == 2 for s in r["per_speaker"].values())
    plain_run = json.loads((tmp_path / "c" / "george" / "residual" / "results.json").read_text())
    assert plain_run["augment"] is None and "no augmentation" in plain_run["training"]
    assert (tmp_path / "c" / "george" / "residual" / "model.safetensors").read_bytes() != (
        tmp_path / "a" / "george" / "residual" / "model.safetensors").read_bytes()  # the masks changed the training
    with pytest.raises(SystemExit, match="a smoke run .* cannot be registered"):
        recipe.register_from(tmp_path / "a")
    # measured again from the saved weights (no training): the same numbers, the same weights
    before_run = (tmp_path / "c" / "george" / "residual" / "results.json").read_text()
    assert recipe.main([*common, "--variants", "residual", "--out", str(tmp_path / "c"), "--reevaluate"]) == 0
    assert (tmp_path / "c" / "george" / "residual" / "results.json").read_text() == before_run
    for extra in (["--register"], ["--register", "--augment", "--epochs", str(recipe.EPOCHS), "--limit", "0"]):
        with pytest.raises(SystemExit) as exc:
            recipe.main([*common, *extra])
        assert exc.value.code == 2
    assert [_sha(p) for p in guarded] == before


def test_recipe_registers_one_recipe_only(tmp_path: Path) -> None:
    from scripts import train_quartznet_fsdd as recipe

    for variant, augment in (("residual", recipe.AUGMENT), ("plain", None)):  # the plain run without augmentation
        folder = tmp_path / "george" / variant
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"weights")
        (folder / "results.json").write_text(json.dumps(
            {"fold": "george", "variant": variant, "epochs": recipe.EPOCHS, "seed": 0, "augment": augment, "smoke": False,
             "weights_file": "model.safetensors", "sha256": _sha(folder / "model.safetensors"), "size": 7,
             "lexicon": recipe.DIGIT_WORDS, "seen_wer_lexicon": 0.01}))
    with pytest.raises(SystemExit, match="different seeds, epochs or augmentation"):
        recipe.register_from(tmp_path)
    results = tmp_path / "george" / "plain" / "results.json"
    results.write_text(json.dumps({k: v for k, v in json.loads(results.read_text()).items() if k != "lexicon"}))
    with pytest.raises(SystemExit, match=r"measured before the lexicon decoder \(george/plain\): measure them again"):
        recipe.register_from(tmp_path)


def test_manifest_paths_relative_to_the_manifest_or_absolute(tmp_path: Path) -> None:
    a, b = wav(tmp_path / "audio" / "a.wav"), wav(tmp_path / "b.wav")
    m = tmp_path / "sub" / "m.jsonl"
    m.parent.mkdir()
    m.write_text(json.dumps({"audio_filepath": "../audio/a.wav", "duration": 0.3, "text": "ab ba"}) + "\n\n"
                 + json.dumps({"audio_filepath": str(b), "text": "b"}) + "\n")
    data = read(m)
    assert data.items == [str(m.parent / "../audio/a.wav"), str(b)] and Path(data.items[0]).resolve() == a
    assert data.classes == (" ", "a", "b") and data.targets == [[1, 2, 0, 2, 1], [2]]
    assert read(m, classes=("b", "a", " ", "c")).targets == [[1, 0, 2, 0, 1], [0]]


@pytest.mark.parametrize("line, message", [
    ('{"audio_filepath": "missing.wav", "text": "a"}', r"m\.jsonl line 2: no audio file at .*missing\.wav"),
    ('{"audio_filepath": "a.wav", "text": "a"', r"m\.jsonl line 2: not valid JSON"),
    ('{"audio_filepath": "a.wav", "text": "  "}', r"m\.jsonl line 2: empty text"),
    ('{"audio_filepath": "a.wav"}', r"m\.jsonl line 2: no 'text' key"),
    ('["a.wav", "a"]', r"m\.jsonl line 2: expected a JSON object, got list"),
])
def test_manifest_errors_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    wav(tmp_path / "a.wav")
    m = tmp_path / "m.jsonl"
    m.write_text('{"audio_filepath": "a.wav", "text": "a"}\n' + line + "\n")
    with pytest.raises(DataError, match=message) as err:
        read(m)
    assert "\n" not in str(err.value)


def test_manifest_text_outside_the_vocabulary_is_refused(tmp_path: Path) -> None:
    wav(tmp_path / "a.wav")
    m = tmp_path / "m.jsonl"
    m.write_text('{"audio_filepath": "a.wav", "text": "ab!"}\n')
    with pytest.raises(DataError, match=r"line 1: character\(s\) '!' are not in the vocabulary"):
        read(m, classes=(" ", "a", "b"))
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="holds no manifest lines"):
        read(empty)


# --------------------------------------------------------------------------- the bundled recogniser

CONNECTED = sorted((ROOT / "examples" / "speech" / "connected").glob("*.wav"))


def spoken(path: Path) -> str:
    """The transcript an example's name holds: ``six-eight-eight_jackson.wav`` -> "six eight eight"."""
    return path.stem.split("_")[0].replace("-", " ")


@pytest.fixture(scope="module")
def recogniser() -> torch.nn.Module:
    import reszoo

    return reszoo.load("quartznet-fsdd-digits")


def test_bundled_recogniser_transcribes_the_examples_offline(hub, offline) -> None:
    import reszoo

    hub.reset_count()
    model = reszoo.load("quartznet-fsdd-digits")
    assert len(CONNECTED) == 4
    assert model.transcribe([str(p) for p in CONNECTED]) == [spoken(p) for p in CONNECTED]
    assert hub.request_count == 0


def test_the_recogniser_decodes_through_its_entrys_lexicon(recogniser) -> None:
    from reszoo.registry import RegistryError, parse_entry
    from reszoo.speech.ctc import lexicon_graph

    digits = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    assert list(recogniser.lexicon) == digits and recogniser.entry.runtime["lexicon"] == digits
    assert lexicon_graph(recogniser, None) is lexicon_graph(recogniser, True)  # built once, kept on the model
    assert lexicon_graph(recogniser, False) is None
    paths = [str(p) for p in CONNECTED]
    greedy, own, given = (recogniser.transcribe(paths, lexicon=x) for x in (False, None, digits))
    assert own == given and all(set(t.split()) <= set(digits) for t in own)
    assert recogniser.transcribe(paths[0], lexicon=["one"]) in ("", "one", *(" ".join(["one"] * k) for k in range(2, 9)))
    with pytest.raises(ValueError, match="lexicon must be a list of words"):
        recogniser.transcribe(paths[0], lexicon="one two")
    raw = {"name": "x", "domain": "speech", "task": TASK, "arch": "quartznet_small", "license": "mit",
           "runtime": {"lexicon": ["one", "two words"]}}
    with pytest.raises(RegistryError, match="lexicon.*expected a non-empty list of words"):
        parse_entry(raw)
    del greedy


def test_batching_does_not_change_a_transcript(recogniser) -> None:
    texts = recogniser.transcribe([str(p) for p in CONNECTED], batch_size=4)
    assert [recogniser.transcribe(str(p)) for p in CONNECTED] == texts


def test_word_timestamps_fall_on_the_digits_recordings(recogniser) -> None:
    """The example's README says which recordings and silences it is made of: each word must
    overlap its own recording and stay off its neighbours' (to within two output frames, 40 ms).
    CTC emits a letter where the model is sure of it, often late in its sound or just after it,
    so a word's end may run into the silence that follows."""
    import soundfile

    readme = (ROOT / "examples" / "speech" / "connected" / "README.md").read_text()
    for path in CONNECTED:
        line = next(x for x in readme.splitlines() if x.startswith(f"- `{path.name}`"))
        names = line.split("recordings ")[1].split(", silences")[0].split(", ")
        pauses = json.loads(line.split("silences ")[1].split(" ms")[0])
        fsdd = need_data("fsdd/recordings")
        spans, t = [], 0.0
        for pause, name in zip(pauses, names):
            t += pause / 1000
            seconds = soundfile.info(str(fsdd / name)).duration
            spans.append((t, t + seconds))
            t += seconds
        out = recogniser.transcribe(str(path), timestamps=True)
        assert out["text"] == spoken(path) and [w["word"] for w in out["words"]] == spoken(path).split()
        for k, (word, (start, end)) in enumerate(zip(out["words"], spans)):
            assert word["start"] < end and word["end"] > start, (path.name, word, (start, end))  # overlaps its own
            assert word["start"] >= (spans[k - 1][1] - 0.04 if k else 0.0), (path.name, word)
            assert word["end"] <= (spans[k + 1][0] + 0.04 if k + 1 < len(spans) else t + pauses[-1] / 1000 + 0.04), (path.name, word)


def test_predict_rows_and_cli(recogniser) -> None:
    import reszoo

    rows = list(reszoo.predict(recogniser, [str(p) for p in CONNECTED], batch_size=3))
    assert rows == [{"input": str(p), "text": spoken(p)} for p in CONNECTED]
    proc = subprocess.run([sys.executable, "-m", "reszoo.cli", "predict", "quartznet-fsdd-digits", *map(str, CONNECTED),
                           "--json"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == rows


# --------------------------------------------------------------------------- fine-tuning on manifests


@pytest.fixture(scope="module")
def manifests(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny connected-digit set: 6 training utterances of theo (takes 5-49), 3 validation ones (takes 0-4)."""
    from scripts.connected_digits import RecordingCache, plan, write_manifest

    recs = fsdd_recordings()
    cache = RecordingCache(recs[0]["path"].parent)
    root = tmp_path_factory.mktemp("manifests")
    train = write_manifest(plan(recs, "theo", "train", 6), cache, root / "audio", root / "train.jsonl")
    val = write_manifest(plan(recs, "theo", "test", 3), cache, root / "audio", root / "val.jsonl")
    return train, val


def test_ctc_finetuning_lowers_the_loss_and_reports_wer(manifests) -> None:
    import reszoo
    from scripts.connected_digits import VOCABULARY

    train, val = manifests
    result = reszoo.finetune("quartznet-fsdd-digits", str(train), str(val), pretrained=False, epochs=4, batch_size=3,
                             lr=3e-3, cpu=True, progress=False, seed=0)
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < losses[0]
    assert {"val_loss", "val_wer", "val_cer"} <= set(result.metrics) and result.metrics["val_n"] == 3
    assert tuple(result.model.labels) == VOCABULARY  # the text's own characters
    assert isinstance(result.model.transcribe(str(train.parent / json.loads(val.read_text().splitlines()[0])["audio_filepath"])), str)
    assert [m.metric for m in result.entry.metrics] == ["wer", "cer"]


def test_a_given_vocabulary_replaces_the_decoder_head(manifests) -> None:
    import reszoo
    from reszoo.finetune import OptionsError

    train, val = manifests
    letters = " abcdefghijklmnopqrstuvwxyz'"
    result = reszoo.finetune("quartznet-fsdd-digits", str(train), str(val), pretrained=False, epochs=1, batch_size=3,
                             cpu=True, progress=False, vocabulary=letters)
    assert "".join(result.model.labels) == letters
    assert result.model.decoder.decoder_layers[0].out_channels == len(letters) + 1  # + the blank
    with pytest.raises(DataError, match=r"train\.jsonl line 1: character\(s\) '.*' are not in the vocabulary \(' eino'\)"):
        reszoo.finetune("quartznet-fsdd-digits", str(train), pretrained=False, epochs=1, cpu=True, vocabulary=" eino")
    with pytest.raises(OptionsError, match="vocabulary is for sequence data"):
        reszoo.finetune("tdnn-fsdd-digits", [("a.wav", "0"), ("b.wav", "1")], vocabulary="ab", cpu=True)


def test_cli_finetune_on_manifests_saves_a_loadable_recogniser(manifests, tmp_path: Path) -> None:
    import reszoo
    from reszoo.cli import main as cli

    train, val = manifests
    out = tmp_path / "run"
    assert cli(["finetune", "quartznet-fsdd-digits", "--data", str(train), "--val", str(val), "--from-scratch",
                "--epochs", "1", "--batch-size", "3", "--out", str(out), "--cpu", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_train"] == 6 and summary["num_val"] == 3 and "val_wer" in summary
    model = reszoo.load(str(out))
    assert model.entry.task == TASK and "".join(model.labels) == "".join(summary["classes"])
    assert isinstance(model.transcribe(str(CONNECTED[0])), str)


def test_two_processes_finetune_a_recogniser(manifests, tmp_path: Path) -> None:
    """torchrun, 2 CPU processes (gloo): sequence targets are sharded and the WER is summed over both."""
    import os

    train, val = manifests
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "reszoo.cli",
           "finetune", "quartznet-fsdd-digits", "--data", str(train), "--val", str(val), "--from-scratch", "--epochs", "1",
           "--batch-size", "3", "--out", str(tmp_path / "ddp"), "--cpu", "--no-progress", "--batchnorm", "frozen"]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["val_n"] >= 3 and 0 <= summary["val_wer"]
