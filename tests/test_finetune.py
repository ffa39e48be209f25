"""Fine-tuning (reszoo.finetune, ``reszoo finetune``): real runs on tiny models of each domain.

A temporary registry holds tiny image, text and speech models whose "pretrained" weights are a
seeded random init in a mirror folder, so every run goes through reszoo.load, the domain's own
preprocessing and tokenizer, accelerate and the saved Hub format, in seconds. Covered: the
result loads and predicts like the trained model, the card names base model and dataset and
carries the measured metrics, an interrupted run resumed equals an uninterrupted one bit for
bit, two gloo processes (torchrun) equal one process with the same global batch, and every
kind of bad input gets its own message and exit status with nothing on disk lost.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import reszoo
from helpers import write_tones
from reszoo.cli import main as cli_main
from reszoo.finetune import OptionsError, RunInUseError

ROOT = Path(__file__).resolve().parent.parent

_REGISTRY = """\
models:
  - name: tiny-image
    domain: image
    task: image-classification
    arch: resnet_mnist
    arch_args: {layers: [1, 1], widths: [8, 16], strides: [2, 2], stem_width: 8, drop_rate: 0.2}
    weights: {repo: test/tiny-image, file: model.safetensors, revision: null, sha256: null, pin_note: "test weights, made by the test"}
    preprocess: {size: 28, resize: 28, crop: center, interpolation: bilinear, mean: [0.5], std: [0.25], channels: 1}
    labels: ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
    license: mit
    dataset: synthetic
  - name: tiny-image-nodrop
    domain: image
    task: image-classification
    arch: resnet_mnist
    arch_args: {layers: [1, 1], widths: [8, 16], strides: [2, 2], stem_width: 8}
    weights: {repo: test/tiny-image, file: model.safetensors, revision: null, sha256: null, pin_note: "test weights, made by the test"}
    preprocess: {size: 28, resize: 28, crop: center, interpolation: bilinear, mean: [0.5], std: [0.25], channels: 1}
    labels: ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
    license: mit
  - name: tiny-text
    domain: text
    task: sentence-similarity
    arch: transformer_encoder
    arch_args: {vocab_size: 32, hidden_size: 16, num_layers: 1, num_heads: 2, intermediate_size: 32, max_position: 32, pooling: mean, normalize: true}
    weights: {repo: test/tiny-text, file: model.safetensors, revision: null, sha256: null, pin_note: "test weights, made by the test"}
    preprocess: {tokenizer: {file: tokenizer.json}, max_length: 16}
    license: apache-2.0
    # Facts of the base's own training: a fine-tuned model's card must not state them as its own.
    metrics:
      - {dataset: base-corpus, split: test, metric: accuracy, value: 87.654, source: {kind: measured, script: base.py}}
    dataset: [base-corpus]
    tags: [keyword-spotting, base-tag]
    limitations: "BASE-LIMITATION: only the base corpus."
    paper: {title: "A Tiny Paper", url: "https://example.org/tiny"}
    extra: {max_tokens: 256, train_seconds: 291, epochs: 20, residual_vs_plain: {residual: 0.9933, plain: 0.9876}}
  - name: tiny-speech
    domain: speech
    task: audio-classification
    arch: tdnn_small
    arch_args: {num_classes: 3, input_size: 40, channels: [16, 16, 16, 48], kernel_sizes: [5, 3, 3, 1], dilations: [1, 2, 3, 1], attention_channels: 8, se_channels: 8, embed_dim: 16}
    weights: {repo: test/tiny-speech, file: model.safetensors, revision: null, sha256: null, pin_note: "test weights, made by the test"}
    preprocess: {kind: fbank, sample_rate: 16000, n_mels: 40}
    labels: ["a", "b", "c"]
    license: mit
"""
_WORDS = ["card", "lost", "stolen", "refund", "late", "money", "where", "is", "my", "the", "please", "help", "atm",
          "fee", "charged", "twice", "pin", "blocked", "transfer", "pending"]


def _tokenizer_json(path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {tok: i for i, tok in enumerate(specials + _WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.save(str(path))


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Iterator[Path]:
    """RESZOO_REGISTRY/RESZOO_MIRROR pointing at tiny models with seeded random weights (for the
    module; one torch thread: tiny models on a shared machine)."""
    root = tmp_path_factory.mktemp("zoo")
    (root / "registry.yaml").write_text(_REGISTRY)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RESZOO_REGISTRY", str(root / "registry.yaml"))
        env.setenv("RESZOO_MIRROR", str(root / "mirror"))
        yield _fill_zoo(root)


def _fill_zoo(root: Path) -> Path:
    (root / "mirror/test/tiny-text").mkdir(parents=True)
    _tokenizer_json(root / "mirror/test/tiny-text/tokenizer.json")
    for i, name in enumerate(("tiny-image", "tiny-text", "tiny-speech")):
        torch.manual_seed(i)
        model = reszoo.load(name, pretrained=False)
        folder = root / "mirror" / "test" / name
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    return root


def _squares(folder: Path, per_class: int, seed: int, classes: int = 4) -> Path:
    """28x28 noise over a class-specific texture (horizontal, vertical, diagonal stripes, dots):
    learnable in a few steps by convolutions and global pooling."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    patterns = [yy % 4 < 2, xx % 4 < 2, (xx + yy) % 4 < 2, (xx % 4 < 2) & (yy % 4 < 2)]
    for c in range(classes):
        (folder / f"class-{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shift = rng.randint(0, 4, size=2)
            pattern = np.roll(patterns[c], tuple(shift), axis=(0, 1))
            img = (rng.randint(0, 80, size=(28, 28)) + 150 * pattern).astype(np.uint8)
            Image.fromarray(img).save(folder / f"class-{c}" / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def squares(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("squares")
    _squares(root / "train", 16, seed=0)  # 64 images: 4 global batches of 16
    _squares(root / "test", 8, seed=1)
    return root


def _intents(path: Path, n: int = 24, header: str = "label\ttext", extra: str = "") -> Path:
    """A TSV of two intents whose words the tiny tokenizer knows."""
    rng = np.random.RandomState(0)
    topics = {"lost_card": ["lost", "stolen", "card", "blocked"], "refund": ["refund", "money", "charged", "twice"]}
    lines = [header]
    for i in range(n):
        label = "lost_card" if i % 2 else "refund"
        words = list(rng.choice(topics[label], 3)) + list(rng.choice(["where", "is", "my", "the", "please"], 2))
        lines.append(f"{label}\t{' '.join(words)}{extra}")
    path.write_text("\n".join(lines) + "\n")
    return path


_TORCHRUN_2 = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "reszoo.cli"]


def _subprocess_env() -> dict[str, str]:
    """This checkout's reszoo first, in a child process (the zoo fixture's registry and mirror come along)."""
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


@contextmanager
def _held_lock(folder: Path) -> Iterator[int]:
    """``folder`` locked by another process, as a run in progress holds it; yields that process's pid."""
    code = ("import sys; from pathlib import Path; from reszoo.finetune.runlock import RunLock; "
            "lock = RunLock(Path(sys.argv[1])); lock.acquire(); print('locked', flush=True); sys.stdin.read(); "
            "lock.release()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=_subprocess_env())
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield proc.pid
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def _files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


# --------------------------------------------------------------------------- end to end


def test_image_folder_end_to_end_saves_loads_and_pushes(zoo: Path, squares: Path, tmp_path: Path, hub) -> None:
    train = tmp_path / "train"
    import shutil

    shutil.copytree(squares / "train", train)
    (train / "class-0" / "broken.png").write_bytes(b"not a png")  # unreadable: skipped and counted
    out = tmp_path / "run"
    result = reszoo.finetune("tiny-image", train, test_data=squares / "test", out=out, epochs=3, batch_size=8,
                             lr=0.02, warmup=0.0, progress=False, dataset_name="squares", push_to="acme/squares")
    assert result.completed
    m = result.metrics
    assert m["skipped"] == {"train": 1, "validation": 0, "test": 0}
    assert (m["num_train"], m["num_val"], m["num_test"]) == (56, 8, 32)  # 10% stratified hold-out, then the bad file
    assert m["test_accuracy"] >= 0.5, m  # chance is 0.25: it learned something
    assert m["classes"] == ["class-0", "class-1", "class-2", "class-3"]

    loaded = reszoo.load(str(out))
    assert loaded.labels == ("class-0", "class-1", "class-2", "class-3")
    entry = loaded.entry
    assert entry.arch_args["num_classes"] == 4 and entry.base_model == "tiny-image"
    assert entry.dataset == ("squares",) and entry.task == "image-classification"
    by_split = {(x.split, x.metric): x for x in entry.metrics}
    assert by_split[("test", "accuracy")].value == pytest.approx(100 * m["test_accuracy"], abs=1e-3)
    assert by_split[("test", "accuracy")].source.measured and by_split[("test", "accuracy")].source.script == "reszoo finetune"
    x = torch.stack([loaded.preprocess(p)[0] for p in sorted((squares / "test" / "class-2").glob("*.png"))])
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model(x))

    card = (out / "README.md").read_text()
    assert "base_model: test/tiny-image" in card and "- squares" in card and "fine-tuned from" in card
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records] == ["start", "epoch", "epoch", "epoch", "summary"]
    assert all("train_loss" in r and "val_accuracy" in r and r["samples_per_s"] > 0 for r in records[1:4])
    assert json.loads((out / "summary.json").read_text())["test_accuracy"] == m["test_accuracy"]

    assert m["pushed"]["repo"] == "acme/squares"
    pulled = reszoo.load("hf://acme/squares")
    with torch.no_grad():
        assert torch.equal(pulled(x), loaded(x))
    assert pulled.labels == loaded.labels


def test_resume_continues_exactly(zoo: Path, squares: Path, tmp_path: Path) -> None:
    """3 epochs straight == 1 epoch, stop, resume 2 epochs: bit for bit (dropout, shuffling,
    gradient accumulation, schedule and optimizer state all depend on the restored state).
    The first part is started with --overwrite and --stop-after-epoch 1: options of that
    invocation, which the resumed one must neither refuse (overwrite) nor obey again (stop)."""
    common = dict(epochs=3, batch_size=8, grad_accum=2, lr=0.02, val_split=0.0, progress=False, log_every=1)
    reszoo.finetune("tiny-image", squares / "train", out=tmp_path / "straight", **common)
    first = reszoo.finetune("tiny-image", squares / "train", out=tmp_path / "resumed", stop_after_epoch=1,
                            overwrite=True, **common)
    assert not first.completed and not (tmp_path / "resumed" / "model.safetensors").exists()
    saved = json.loads((tmp_path / "resumed" / "run.json").read_text())["options"]
    assert not {"overwrite", "stop_after_epoch", "resume", "out", "progress"} & set(saved)
    assert saved["epochs"] == 3 and saved["log_every"] == 1  # what defines and records the run is kept
    # Resume from the run folder alone: model options and data come from run.json.
    rc = cli_main(["finetune", "tiny-image", "--out", str(tmp_path / "resumed"), "--resume", "--no-progress"])
    assert rc == 0
    summary = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert summary["epochs_run"] == 3 and not summary["stopped_early"]
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run differs from the uninterrupted one"
    base = reszoo.load("tiny-image", num_classes=4).state_dict()
    assert not torch.equal(a["layer1.0.conv1.weight"], base["layer1.0.conv1.weight"])  # it did train

    def losses(folder: Path) -> list[tuple[str, int, float]]:
        lines = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
        return [(r["event"], r["step"], r.get("loss", r.get("train_loss"))) for r in lines if r["event"] in ("step", "epoch")]

    assert losses(tmp_path / "straight") == losses(tmp_path / "resumed")


def test_two_processes_equal_one_with_the_same_global_batch(zoo: Path, tmp_path: Path) -> None:
    """torchrun, 2 CPU processes (gloo), 8 per process == 1 process with 16: frozen BN statistics
    and no dropout, so per-process batch statistics cannot differ; the data are sharded.

    The command is docs/finetune.md's (`torchrun --standalone --nproc_per_node 2 -m reszoo.cli
    finetune NAME --data D --out R --cpu`), with validation data (the default hold-out), whose
    best epoch every process reloads at the end."""
    data = _squares(tmp_path / "data", 18, seed=0)  # 72 images: a 10% hold-out leaves 64, 4 global batches of 16
    common = ["--epochs", "2", "--lr", "0.02", "--batchnorm", "frozen", "--log-sample-ids", "--no-progress"]
    cmd = [*_TORCHRUN_2, "finetune", "tiny-image-nodrop", "--data", str(data), "--out", str(tmp_path / "ddp"), "--cpu",
           "--batch-size", "8", *common]
    proc = subprocess.run(cmd, env=_subprocess_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout and "best epoch" in proc.stdout
    assert cli_main(["finetune", "tiny-image-nodrop", "--data", str(data), "--out", str(tmp_path / "one"), "--cpu",
                     "--batch-size", "16", *common]) == 0
    ddp_summary, one_summary = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("ddp", "one"))
    assert ddp_summary["num_val"] == one_summary["num_val"] == 8 and ddp_summary["num_train"] == 64
    assert ddp_summary["best_epoch"] == one_summary["best_epoch"]
    assert ddp_summary["val_accuracy"] == one_summary["val_accuracy"]

    ddp, one = _weights(tmp_path / "ddp"), _weights(tmp_path / "one")
    base = reszoo.load("tiny-image-nodrop", num_classes=4).state_dict()
    assert (ddp["fc.weight"] - base["fc.weight"]).abs().max() > 1e-2  # both trained
    for key in ddp:
        assert torch.allclose(ddp[key].double(), one[key].double(), atol=1e-5, rtol=1e-5), key

    ids = [json.loads(x) for x in (tmp_path / "ddp" / "sample_ids.jsonl").read_text().splitlines()]
    single = {r["epoch"]: r["ids"] for r in (json.loads(x) for x in (tmp_path / "one" / "sample_ids.jsonl").read_text().splitlines())}
    for epoch in (1, 2):
        r0, r1 = ([r["ids"] for r in ids if r["epoch"] == epoch and r["rank"] == k][0] for k in (0, 1))
        assert len(r0) == len(r1) == 32 and not set(r0) & set(r1)  # each process its own half
        assert sorted(r0 + r1) == list(range(64))
        for step in range(4):  # global step k: the same 16 examples as the single process's batch k
            assert sorted(r0[8 * step:8 * step + 8] + r1[8 * step:8 * step + 8]) == sorted(single[epoch][16 * step:16 * step + 16])
    assert single[1] != single[2]  # reshuffled each epoch


def test_a_locked_run_folder_stops_every_process_at_once(zoo: Path, squares: Path, tmp_path: Path) -> None:
    """Under torchrun only the main process takes the lock; the other one learns from it, so both
    exit with one message (none waits at a barrier for the other), and nothing is written."""
    cmd = [*_TORCHRUN_2, "finetune", "tiny-image", "--data", str(squares / "train"), "--out", str(tmp_path / "run"),
           "--cpu", "--no-progress"]
    with _held_lock(tmp_path / "run") as holder:
        proc = subprocess.run(cmd, env=_subprocess_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and re.search(r"exitcode\s*:\s*73\b", proc.stderr), proc.stderr[-3000:]
    assert proc.stderr.count(f"is in use by another run (pid {holder})") == 1, proc.stderr[-3000:]
    assert not (tmp_path / "run").exists()  # the other run's folder, empty but for its lock, went with it


def test_text_tsv_with_named_columns_and_a_headless_base(zoo: Path, tmp_path: Path) -> None:
    data = _intents(tmp_path / "intents.tsv", header="intent\tquery\tother", extra="\tx")
    with data.open("a") as f:
        f.write("refund\t\tx\n")  # an empty text: a malformed row, skipped and counted
    out = tmp_path / "run"
    rc = cli_main(["finetune", "tiny-text", "--data", str(data), "--out", str(out), "--label-column", "intent",
                   "--text-column", "query", "--epochs", "2", "--lr", "0.01", "--head-lr", "0.05", "--batch-size", "8",
                   "--max-length", "12",
                   "--no-progress"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"] == ["lost_card", "refund"] and summary["skipped"]["train"] == 1
    written = json.loads((out / "run.json").read_text())["written"]  # what --overwrite may remove
    assert {"model.safetensors", "config.json", "README.md"} <= set(written) and all((out / w).exists() for w in written)
    assert summary["dataset"] == "intents" and summary["num_train"] + summary["num_val"] == 24
    model = reszoo.load(str(out))
    assert model.entry.task == "text-classification" and model.entry.preprocess["max_length"] == 12
    assert model.entry.arch_args["num_classes"] == 2 and model.entry.base_model == "tiny-text"
    assert "lr 0.01 (new head 0.05)" in model.entry.recipe
    backbone = reszoo.load("tiny-text").state_dict()
    tuned = model.state_dict()
    assert set(tuned) - set(backbone) == {"head.weight", "head.bias"}  # the base had no head: one was added
    with torch.no_grad():
        logits = model(**model.preprocess(["where is my refund", "my card is lost"]))
    assert logits.shape == (2, 2)


def test_audio_folder_with_an_unreadable_file(zoo: Path, tmp_path: Path) -> None:
    write_tones(tmp_path / "audio", per_class=6)
    (tmp_path / "audio" / "high" / "bad.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    out = tmp_path / "run"
    result = reszoo.finetune("tiny-speech", tmp_path / "audio", out=out, epochs=1, batch_size=4, val_split=0.2,
                             progress=False)
    assert result.metrics["skipped"]["train"] == 1 and result.metrics["classes"] == ["high", "low"]
    model = reszoo.load(str(out))
    assert model.labels == ("high", "low") and model.entry.base_model == "tiny-speech"
    assert model.classify(str(tmp_path / "audio" / "low" / "0.wav"), top_k=1)[0][0] in ("high", "low")
    rc = cli_main(["finetune", "tiny-speech", "--data", str(tmp_path / "audio"), "--out", str(tmp_path / "strict"),
                   "--on-bad-file", "error", "--no-progress"])
    assert rc == 65 and not (tmp_path / "strict").exists()


def test_freeze_backbone_trains_the_head_only(zoo: Path, squares: Path, tmp_path: Path) -> None:
    result = reszoo.finetune("tiny-image", squares / "train", epochs=1, batch_size=16, freeze_backbone=True,
                             lr=0.05, progress=False)
    assert result.out is None  # no out=: nothing written
    base = reszoo.load("tiny-image").state_dict()
    tuned = result.model.state_dict()
    changed = {k for k in tuned if k in base and tuned[k].shape == base[k].shape and not torch.equal(tuned[k], base[k])}
    assert changed == set(), f"frozen backbone changed: {sorted(changed)}"  # BN running stats included
    assert tuned["fc.weight"].shape == (4, 16)


def test_early_stopping_keeps_the_best_epoch_and_stays_stopped(zoo: Path, squares: Path, tmp_path: Path) -> None:
    # lr so small, and BN statistics frozen, that validation accuracy cannot change after epoch 1
    out = tmp_path / "run"
    result = reszoo.finetune("tiny-image-nodrop", squares / "train", out=out, epochs=6, early_stopping=2, lr=1e-12,
                             batchnorm="frozen", batch_size=16, progress=False)
    m = result.metrics
    assert (m["epochs_run"], m["stopped_early"], m["best_epoch"]) == (3, True, 1)
    assert [r["epoch"] for r in result.history] == [1, 2, 3] and result.history[0].get("best")
    again = reszoo.finetune("tiny-image-nodrop", squares / "train", out=out, resume=True, progress=False)
    assert again.metrics["epochs_run"] == 3 and again.metrics["train_seconds"] == 0  # nothing left to train


def test_warmup_then_cosine_schedule() -> None:
    from reszoo.finetune.options import FinetuneOptions
    from reszoo.finetune.loop import _schedule

    factor, warmup = _schedule(FinetuneOptions(warmup=0.1, min_lr_ratio=0.1), total_steps=100)
    values = [factor(step) for step in range(100)]
    assert warmup == 10 and values[:10] == pytest.approx([(i + 1) / 11 for i in range(10)])
    assert values[10] == pytest.approx(1.0) and values[55] == pytest.approx(0.1 + 0.9 * 0.5)  # half-way down
    assert all(a >= b for a, b in zip(values[10:], values[11:], strict=False)) and values[-1] == pytest.approx(0.1, abs=1e-3)
    factor, warmup = _schedule(FinetuneOptions(warmup=5, schedule="constant"), total_steps=100)
    assert warmup == 5 and factor(4) == pytest.approx(5 / 6) and factor(99) == 1.0


# --------------------------------------------------------------------------- data


def test_validation_split_is_seeded_and_stratified() -> None:
    from reszoo.finetune.data import read_data, split_validation

    pairs = [(f"text {i}", "abc"[i % 3]) for i in range(30)] + [("lonely", "d")]
    data = read_data(pairs, "text")
    train, val = split_validation(data, 0.2, seed=7)
    train2, val2 = split_validation(data, 0.2, seed=7)
    _, val3 = split_validation(data, 0.2, seed=8)
    assert val.items == val2.items and train.items == train2.items and val.items != val3.items
    assert val.counts() == {"a": 2, "b": 2, "c": 2, "d": 0}  # a class's only example stays in train
    assert sorted(train.items + val.items) == sorted(data.items)


def test_csv_with_quoting_and_a_custom_delimiter(tmp_path: Path) -> None:
    from reszoo.finetune.data import read_data

    csv_file = tmp_path / "d.csv"
    csv_file.write_text('text,label\n"hello, world",greet\n"she said ""bye""",leave\nhi,greet\n')
    data = read_data(str(csv_file), "text")
    assert data.items == ["hello, world", 'she said "bye"', "hi"] and data.classes == ("greet", "leave")
    assert data.targets == [0, 1, 0]
    semi = tmp_path / "d.txt"
    semi.write_text("label;text\na;x y\nb;z\n")
    assert read_data(str(semi), "text", delimiter=";").items == ["x y", "z"]


# --------------------------------------------------------------------------- bad input


def _run(*args: str) -> int:
    return cli_main(["finetune", *args, "--no-progress"])


def test_bad_image_folders(zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run("tiny-image", "--data", str(empty), "--out", str(tmp_path / "o1")) == 65
    assert "expected one subfolder per class" in capsys.readouterr().err

    _squares(tmp_path / "one-empty", 2, seed=0, classes=2)
    (tmp_path / "one-empty" / "class-9").mkdir()
    assert _run("tiny-image", "--data", str(tmp_path / "one-empty"), "--out", str(tmp_path / "o2")) == 65
    assert "'class-9'" in capsys.readouterr().err

    _squares(tmp_path / "single", 3, seed=0, classes=1)
    assert _run("tiny-image", "--data", str(tmp_path / "single"), "--out", str(tmp_path / "o3")) == 65
    assert "only one class ('class-0')" in capsys.readouterr().err

    _squares(tmp_path / "broken", 2, seed=0, classes=2)
    for c in (0, 1):
        (tmp_path / "broken" / f"class-{c}" / "0.png").write_bytes(b"\x89PNG truncated")
    assert _run("tiny-image", "--data", str(tmp_path / "broken"), "--out", str(tmp_path / "o4"), "--on-bad-file", "error") == 65
    err = capsys.readouterr().err
    assert "2 unreadable file(s)" in err and "class-0/0.png" in err and "--on-bad-file skip" in err
    # skipped instead, but then class-1 has no readable example left: a class with no examples
    (tmp_path / "broken" / "class-1" / "1.png").write_bytes(b"")
    assert _run("tiny-image", "--data", str(tmp_path / "broken"), "--out", str(tmp_path / "o5"), "--val-split", "0") == 65
    assert "no usable examples" in (err := capsys.readouterr().err) and "'class-1'" in err
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 6))


def test_bad_tables(zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d.tsv"
    data.write_text("intent\tutterance\nrefund\tmy money\nlost\tmy card\n")
    assert _run("tiny-text", "--data", str(data), "--out", str(tmp_path / "o")) == 65
    err = capsys.readouterr().err
    assert "no column(s) 'label', 'text'" in err and "'intent', 'utterance'" in err and "--label-column" in err

    data.write_text("label\ttext\nrefund\tmy money\nrefund\twhere is my refund\n")
    assert _run("tiny-text", "--data", str(data), "--out", str(tmp_path / "o")) == 65
    assert "only one class ('refund')" in capsys.readouterr().err

    val = tmp_path / "v.tsv"
    data.write_text("label\ttext\nrefund\tmy money\nlost\tmy card\n")
    val.write_text("label\ttext\nfee\tatm fee\n")
    assert _run("tiny-text", "--data", str(data), "--val", str(val), "--out", str(tmp_path / "o")) == 65
    assert "'fee'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_existing_out_is_never_clobbered(zoo: Path, squares: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    args = ["tiny-image", "--data", str(squares / "train"), "--epochs", "1", "--batch-size", "16"]
    assert _run(*args, "--out", str(out)) == 0
    before = _files(out)
    assert _run(*args, "--out", str(out)) == 73
    assert "--resume" in capsys.readouterr().err and _files(out) == before

    # a different option on --resume: refused, nothing changed
    assert _run(*args, "--out", str(out), "--resume", "--lr", "0.5") == 75
    assert "lr=0.5" in capsys.readouterr().err and _files(out) == before

    # --overwrite with bad data: the data error comes first, the old run stays
    assert _run("tiny-image", "--data", str(tmp_path / "missing"), "--out", str(out), "--overwrite") == 65
    assert _files(out) == before

    # a folder with someone else's files
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert _run(*args, "--out", str(other)) == 73
    assert "not empty" in capsys.readouterr().err
    assert _run(*args, "--out", str(other), "--overwrite") == 0  # only a run's own files are written/removed
    assert (other / "notes.txt").read_text() == "mine" and (other / "model.safetensors").is_file()

    assert _run(*args, "--out", str(tmp_path / "nothing"), "--resume") == 75
    assert "nothing to resume" in capsys.readouterr().err


def test_a_second_run_into_a_locked_folder_fails_at_once(zoo: Path, squares: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """While a run holds the folder, another fails at once with one line naming its pid, and
    nothing of either is mixed: not a first run, not --resume, not --overwrite."""
    out = tmp_path / "run"
    args = ["tiny-image", "--data", str(squares / "train"), "--epochs", "1", "--batch-size", "16"]
    with _held_lock(out) as holder:  # a run that is still starting: nothing but the lock in the folder yet
        assert _run(*args, "--out", str(out)) == 73
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"run folder {out} is in use by another run (pid {holder})" in err
    assert not out.exists()  # the folder the other run made for its lock went with it
    assert _run(*args, "--out", str(out)) == 0
    before = _files(out)
    with _held_lock(out) as holder:
        for extra in ([], ["--resume"], ["--overwrite"]):
            assert _run(*args, "--out", str(out), *extra) == 73
            assert f"is in use by another run (pid {holder})" in capsys.readouterr().err
        with pytest.raises(RunInUseError):
            reszoo.finetune("tiny-image", squares / "train", out=out, overwrite=True, progress=False)
    assert _files(out) == before
    assert _run(*args, "--out", str(out), "--overwrite") == 0  # released: the folder is usable again


def test_out_overlapping_the_data_is_refused(zoo: Path, squares: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(squares / "train", data)
    before = _files(data)
    for out, relation in ((data, "is"), (data / "run", "lies inside"), (data / "class-0", "lies inside")):
        assert _run("tiny-image", "--data", str(data), "--out", str(out)) == 2
        assert f"--out {out} {relation} the --data {data}" in capsys.readouterr().err
    # the data inside the run folder; and the test data as the run folder
    assert _run("tiny-image", "--data", str(data), "--out", str(tmp_path)) == 2
    assert "holds the --data" in capsys.readouterr().err
    assert _run("tiny-image", "--data", str(data), "--test", str(squares / "test"), "--out", str(squares / "test")) == 2
    assert "is the --test" in capsys.readouterr().err
    text = _intents(tmp_path / "d.tsv")
    with pytest.raises(OptionsError, match="holds the --data"):
        reszoo.finetune("tiny-text", text, out=tmp_path)
    assert _files(data) == before  # not a file added (no lock either)


def _bomb_png(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A 45-byte PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_is_an_unreadable_file(zoo: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    data = _squares(tmp_path / "data", 3, seed=0, classes=2)
    _bomb_png(data / "class-1" / "bomb.png")
    result = reszoo.finetune("tiny-image", data, epochs=1, batch_size=8, val_split=0.0, progress=False)
    assert result.metrics["skipped"]["train"] == 1 and result.metrics["num_train"] == 6
    err = capsys.readouterr().err
    assert "bomb.png (" in err and "decompression bomb" in err  # the skipped file, named, and why
    assert _run("tiny-image", "--data", str(data), "--out", str(tmp_path / "strict"), "--on-bad-file", "error") == 65
    err = capsys.readouterr().err
    assert "1 unreadable file(s)" in err and "class-1/bomb.png" in err and err.count("\n") == 1
    assert not (tmp_path / "strict").exists()


def _predict(target: str, texts: list[str]) -> torch.Tensor:
    model = reszoo.load(target)
    with torch.no_grad():
        return model(**model.preprocess(texts))


def test_a_text_model_from_its_folder_saves_and_pushes_with_its_tokenizer(zoo: Path, tmp_path: Path, hub) -> None:
    """The tokenizer of a model loaded from a folder is that folder's: save_pretrained and push
    copy it from there (not from a Hub repo named after the folder), and so does a fine-tune
    of the folder's model."""
    out = tmp_path / "run"
    assert _run("tiny-text", "--data", str(_intents(tmp_path / "d.tsv")), "--out", str(out), "--epochs", "1") == 0
    texts = ["where is my refund", "my card is lost please help"]
    expected = _predict(str(out), texts)

    copy = reszoo.save_pretrained(reszoo.load(str(out)), tmp_path / "copies" / "intents")
    assert (copy / "tokenizer.json").read_bytes() == (out / "tokenizer.json").read_bytes()
    assert torch.equal(_predict(str(copy), texts), expected)

    assert cli_main(["push", str(out), "acme/intents"]) == 0
    assert torch.equal(_predict("hf://acme/intents", texts), expected)
    from reszoo.hub import fetch_file

    card = fetch_file("acme/intents", "README.md").read_text()
    assert "reszoo predict hf://acme/intents INPUT" in card and 'reszoo.load("hf://acme/intents")' in card
    assert str(out) not in card

    again = tmp_path / "again"  # a fine-tune whose base is the folder: its tokenizer comes along
    assert _run(str(out), "--data", str(tmp_path / "d.tsv"), "--out", str(again), "--epochs", "1") == 0
    assert (again / "tokenizer.json").read_bytes() == (out / "tokenizer.json").read_bytes()
    assert _predict(str(again), texts).shape == (2, 2)


def test_the_card_of_a_finetuned_model_states_its_own_run(zoo: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Its metrics, epochs, data, time and max length, not the base's (tiny-text's registry entry
    has metrics, extra facts, tags and limitations of its own training); every command and
    snippet it shows works for the folder."""
    out = tmp_path / "run"
    assert _run("tiny-text", "--data", str(_intents(tmp_path / "intents.tsv")), "--out", str(out), "--epochs", "2",
                "--max-length", "12", "--val-split", "0.25") == 0
    summary = json.loads((out / "summary.json").read_text())
    card = (out / "README.md").read_text()
    metadata, body = card.split("\n---\n", 1)

    own = next(m for m in reszoo.load(str(out)).entry.metrics if m.metric == "accuracy")
    assert own.value == pytest.approx(100 * summary["val_accuracy"], abs=1e-3)
    assert f"value: {own.value}" in metadata and "- intents" in metadata and "base_model: test/tiny-text" in metadata
    facts = dict(re.findall(r"^\| ([a-z_ ]+) \| (.+) \|$", body, flags=re.M))
    assert facts["epochs"] == "2" and facts["train examples"] == str(summary["num_train"]) == "18"
    assert facts["validation examples"] == "6" and facts["trained on"] == "intents"
    assert float(facts["wall seconds"]) > 0 and facts["license"] == "apache-2.0"
    assert "| `max_length` | `12` |" in body
    for base_fact in ("87.65", "256", "291", "| epochs | 20", "0.9933", "0.9876", "keyword-spotting", "base-tag",
                      "BASE-LIMITATION", "base-corpus", "residual vs plain"):
        assert base_fact not in card, base_fact
    assert "A Tiny Paper" in body  # the architecture's paper still applies
    assert "reszoo info" not in card  # not a registry name: `reszoo info` cannot show it

    # Every command and snippet shown works, run from another folder than the one the run started in.
    monkeypatch.chdir(tmp_path / "..")
    (hint,) = re.findall(r"`(reszoo predict [^`]+)`", body)
    argv = shlex.split(hint.replace("INPUT...", "'where is my card'"))[1:]
    capsys.readouterr()
    assert cli_main(argv) == 0
    assert re.search(r"(lost_card|refund)\s+[01]\.\d+", capsys.readouterr().out)
    (snippet,) = re.findall(r"```python\n(.*?)```", body, flags=re.S)
    exec(compile(snippet, "card-snippet", "exec"), {})
    assert capsys.readouterr().out.strip() in ("lost_card", "refund")


def test_cli_module_is_light_and_finetune_stays_callable() -> None:
    # The core CLI imports reszoo.finetune.cli to build its parser: no torch, no accelerate there.
    # Importing the subpackage binds the module to reszoo.finetune; it must still be the function.
    code = ("import sys, argparse, reszoo, reszoo.finetune.cli as c; "
            "c.add_parser(argparse.ArgumentParser().add_subparsers()); "
            "assert 'torch' not in sys.modules and 'accelerate' not in sys.modules, sorted(sys.modules); "
            "assert callable(reszoo.finetune), type(reszoo.finetune); print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


# --------------------------------------------------------------------------- the one training loop


def _square_tensors(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The squares' textures as an in-memory uint8 batch (N, 1, 28, 28) and their class ids."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    patterns = [yy % 4 < 2, xx % 4 < 2, (xx + yy) % 4 < 2, (xx % 4 < 2) & (yy % 4 < 2)]
    images, labels = [], []
    for c in range(4):
        for _ in range(n_per_class):
            pattern = np.roll(patterns[c], tuple(rng.randint(0, 4, size=2)), axis=(0, 1))
            images.append((rng.randint(0, 80, size=(28, 28)) + 150 * pattern).astype(np.uint8))
            labels.append(c)
    return torch.from_numpy(np.stack(images)).unsqueeze(1), torch.tensor(labels)


def _normalise(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.float() / 255 - 0.5) / 0.25 for k, v in inputs.items()}


class _Jitter:
    """A train-time augmentation that counts its batches (noise from torch's RNG)."""

    def __init__(self) -> None:
        self.batches = 0

    def __call__(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.batches += 1
        return {k: v + 0.1 * torch.randn_like(v) for k, v in inputs.items()}


_TENSOR_RUN = dict(pretrained=False, epochs=2, batch_size=16, optimizer="sgd", lr=0.05, weight_decay=5e-4,
                   schedule="onecycle", warmup=0.3, val_split=0.25, progress=False)


def test_tensor_data_from_scratch_with_sgd_onecycle_and_augmentation(zoo: Path) -> None:
    from reszoo.finetune.batches import TensorData

    x, y = _square_tensors(16, seed=0)
    test_x, test_y = _square_tensors(4, seed=1)
    classes = ("h", "v", "d", "dots")
    runs = []
    for _ in range(2):
        jitter = _Jitter()
        result = reszoo.finetune("tiny-image-nodrop", TensorData(x, y, classes, transform=_normalise, name="squares"),
                                 test_data=TensorData(test_x, test_y, classes, transform=_normalise),
                                 augment=jitter, **_TENSOR_RUN)
        runs.append(result)
        assert jitter.batches == 2 * 3  # training batches only: 48 rows in batches of 16, two epochs
    m = runs[0].metrics
    assert (m["num_train"], m["num_val"], m["num_test"], m["dataset"]) == (48, 16, 16, "squares")
    assert 0 <= m["test_accuracy"] <= 1 and "test_loss" in m and runs[0].model.labels == classes
    recipe = runs[0].entry.recipe
    assert "SGD (Nesterov momentum 0.9), lr 0.05" in recipe and "one-cycle" in recipe and "_Jitter" in recipe
    first, second = runs[0].model.state_dict(), runs[1].model.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)  # seeded: device-side shuffles and noise included


def test_tensor_data_resumes_exactly_and_needs_its_callables_again(zoo: Path, tmp_path: Path) -> None:
    from reszoo.finetune import ResumeError
    from reszoo.finetune.batches import TensorData

    x, y = _square_tensors(8, seed=0)
    data = TensorData(x, y, transform=_normalise)
    whole = reszoo.finetune("tiny-image", data, out=tmp_path / "whole", augment=_Jitter(), **_TENSOR_RUN)
    cut = dict(out=tmp_path / "cut", augment=_Jitter())
    first = reszoo.finetune("tiny-image", data, stop_after_epoch=1, **cut, **_TENSOR_RUN)
    assert not first.completed
    saved = json.loads((tmp_path / "cut" / "run.json").read_text())["options"]
    assert saved["augment"] == "callable:test_finetune._Jitter" and saved["optimizer"] == "sgd"
    with pytest.raises(ResumeError, match="augment=test_finetune._Jitter.*pass the same again"):
        reszoo.finetune("tiny-image", data, out=tmp_path / "cut", resume=True, progress=False)
    done = reszoo.finetune("tiny-image", data, out=tmp_path / "cut", resume=True, augment=_Jitter(), progress=False)
    assert done.completed and done.metrics["epochs_run"] == 2
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)  # dropout, noise and shuffles restored from the checkpoint
    assert whole.metrics["val_accuracy"] == done.metrics["val_accuracy"]


def test_tensor_data_is_checked(zoo: Path) -> None:
    from reszoo.finetune import DataError
    from reszoo.finetune.batches import TensorData

    x, y = _square_tensors(2, seed=0)
    with pytest.raises(DataError, match="8 targets but inputs of .*7"):
        TensorData(x[:7], y)
    with pytest.raises(DataError, match="class ids from 0 to 3, but 2 classes"):
        TensorData(x, y, classes=("a", "b"))
    with pytest.raises(DataError, match="test data: give it as TensorData"):
        reszoo.finetune("tiny-image", TensorData(x, y), test_data=[("a.png", "0")], progress=False)


def test_length_grouped_batches() -> None:
    from reszoo.finetune.batches import LengthGroupedBatchSampler

    lengths = [(i * 7) % 23 + 1 for i in range(103)]
    sampler = LengthGroupedBatchSampler(lengths, 8, pool=4, seed=0)
    batches = sampler.batches()
    assert len(batches) == len(sampler) == 13 and sorted(i for b in batches for i in b) == list(range(103))
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded < 0.8 * len(batches) * 8 * max(lengths)  # far less padding than batches of the longest
    assert sampler.batches() == batches  # a function of seed + epoch alone
    sampler.set_epoch(1)
    assert sampler.batches() != batches


def test_by_length_is_the_one_length_batching() -> None:
    """Fine-tuning's sampler and TextEncoder.encode cut batches of similar lengths with the same helper:
    stable (equal lengths keep their order) shortest or longest first."""
    from reszoo._batching import by_length

    lengths = [3, 1, 3, 2, 1, 3]
    assert by_length(range(6), lengths, 4) == [[1, 4, 3, 0], [2, 5]]
    assert by_length(range(6), lengths, 4, longest_first=True) == [[0, 2, 5, 3], [1, 4]]
    assert by_length([5, 2, 0], lengths, 2) == [[5, 2], [0]]  # only the indices given, in their order on ties


def test_length_grouping_and_frozen_parts_on_text(zoo: Path, tmp_path: Path) -> None:
    data = _intents(tmp_path / "intents.tsv", n=32)
    result = reszoo.finetune("tiny-text", str(data), epochs=1, batch_size=8, lr=0.01, group_by_length=2,
                             freeze=["embeddings"], val_split=0, progress=False)
    base = reszoo.load("tiny-text").state_dict()
    tuned = result.model.state_dict()
    frozen = [k for k in base if k.startswith("embeddings.")]
    assert frozen and all(torch.equal(tuned[k], base[k]) for k in frozen)
    assert any(not torch.equal(tuned[k], base[k]) for k in base if not k.startswith("embeddings."))
    assert "but embeddings (frozen)" in result.entry.recipe and "grouped by length" in result.entry.recipe
    with pytest.raises(OptionsError, match="freeze: no parameter of TextEncoder is named 'embedings'"):
        reszoo.finetune("tiny-text", str(data), epochs=1, freeze=["embedings"], progress=False)


def test_criterion_hook_callable_and_named(zoo: Path, squares: Path) -> None:
    from reszoo.finetune.loop import resolve_criterion
    from reszoo.finetune.options import FinetuneOptions
    from reszoo.speech.training import AAMSoftmaxLoss

    seen = []

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(logits.shape))
        return torch.nn.functional.cross_entropy(logits, target)

    result = reszoo.finetune("tiny-image", squares / "train", epochs=1, batch_size=16, val_split=0, criterion=loss,
                             progress=False)
    assert seen == [(16, 4)] * 4 and "loss callable:" not in result.entry.recipe and "test_finetune" in result.entry.recipe
    assert isinstance(resolve_criterion(FinetuneOptions(criterion="aam-softmax"), "speech"), AAMSoftmaxLoss)
    with pytest.raises(OptionsError, match="criterion 'aam-softmax': the image domain provides no named criteria"):
        reszoo.finetune("tiny-image", squares / "train", epochs=1, criterion="aam-softmax", progress=False)


def _padded_utterances(n: int) -> tuple[torch.Tensor, list[int]]:
    """``n`` random feature matrices of distinct lengths (12 to 11 + n frames, 40 bins), zero-padded into one tensor."""
    gen = torch.Generator().manual_seed(0)
    frames = (12 + torch.randperm(n, generator=gen)).tolist()
    feats = torch.zeros(n, max(frames), 40)
    for i, f in enumerate(frames):
        feats[i, :f] = torch.randn(f, 40, generator=gen)
    return feats, frames


class _Unpad:
    """Cut a batch of padded rows to its longest (SpeechAdapter's batch), noting each batch's lengths."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __call__(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        frames = inputs["frames"]
        self.batches.append(frames.tolist())
        longest = int(frames.max())
        return {"feats": inputs["feats"][:, :longest], "lengths": frames.float() / longest}


def test_tensor_rows_grouped_by_length_and_the_criterions_cosine_head(zoo: Path, tmp_path: Path) -> None:
    from reszoo.finetune.batches import LengthGroupedBatchSampler, TensorData
    from reszoo.speech.training import CosineHead

    feats, frames = _padded_utterances(24)
    unpad = _Unpad()
    data = TensorData({"feats": feats, "frames": torch.tensor(frames)}, [i % 3 for i in range(24)], ("a", "b", "c"),
                      transform=unpad, lengths=frames)
    result = reszoo.finetune("tiny-speech", data, pretrained=False, epochs=1, batch_size=4, group_by_length=2,
                             val_split=0, criterion="aam-softmax", progress=False)
    # The loop's batches are the length-grouping sampler's, rows picked from the padded tensor.
    expected = [[frames[i] for i in batch] for batch in LengthGroupedBatchSampler(frames, 4, pool=2, seed=0).batches()]
    assert unpad.batches == expected
    # AAM-softmax scores cosines: the loop gave the model the criterion's head, not a linear one.
    assert isinstance(result.model.head, CosineHead) and "CosineHead(16, 3) head for the criterion" in result.metrics["head"]
    with pytest.raises(OptionsError, match="CosineHead head, which reszoo's saved format cannot rebuild"):
        reszoo.finetune("tiny-speech", data, pretrained=False, epochs=1, val_split=0, criterion="aam-softmax",
                        out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "run.json").exists()
    with pytest.raises(OptionsError, match=r"group_by_length groups rows by their lengths: give TensorData\(lengths="):
        reszoo.finetune("tiny-speech", TensorData({"feats": feats, "frames": torch.tensor(frames)}, [i % 3 for i in range(24)],
                                                  transform=unpad), group_by_length=2, val_split=0, progress=False)


def test_bf16_support_follows_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    from reszoo.finetune import loop

    monkeypatch.setattr(loop, "_cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert loop.bf16_supported("cpu") is True
    monkeypatch.setattr(loop, "_cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert loop.bf16_supported("cpu") is False
    assert loop.bf16_supported("meta") is False


def test_one_process_runs_fine_tunes_of_different_precisions(zoo: Path) -> None:
    """accelerate keeps a process-wide state; a second run with another precision must not fail
    (a notebook, or a script that compares recipes, runs several)."""
    from reszoo.finetune.batches import TensorData

    feats, frames = _padded_utterances(8)
    data = TensorData({"feats": feats, "frames": torch.tensor(frames)}, [i % 2 for i in range(8)], ("a", "b"),
                      transform=_Unpad())
    runs = [reszoo.finetune("tiny-speech", data, pretrained=False, epochs=1, batch_size=4, val_split=0, progress=False,
                            mixed_precision=precision) for precision in ("bf16", "no", "bf16")]
    assert [r.metrics["mixed_precision"] for r in runs] == ["bf16", "no", "bf16"]


def test_deterministic_pools_on_cuda_only() -> None:
    from reszoo.finetune.model import deterministic_pools

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.AdaptiveAvgPool2d(2))
    x = torch.randn(2, 1, 8, 8)
    before = model(x)
    was = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        assert deterministic_pools(model, torch.device("cpu")) == 0  # CPU pooling is deterministic already
        assert deterministic_pools(model, torch.device("cuda")) == 1  # only the global one
        torch.use_deterministic_algorithms(False)
    finally:
        torch.use_deterministic_algorithms(was)
    assert type(model[1]).__name__ == "_MeanPool" and type(model[2]) is torch.nn.AdaptiveAvgPool2d
    torch.testing.assert_close(model(x), before)
