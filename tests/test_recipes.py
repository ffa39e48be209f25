"""The recipes under scripts/ (a package): shared data loading, and the resnet-mnist recipe on the
one training loop, whose smoke runs never touch weights/ or registry.yaml."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scripts import data
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
