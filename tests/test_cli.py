"""The command line: listing, info, cards, errors as one line with a non-zero status."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import reszoo
from reszoo.cli import main as cli


def test_list_filters_and_json(capsys):
    assert cli(["list", "resnet*", "--domain", "image"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["name", "domain", "task"]
    names = [line.split()[0] for line in out[1:]]
    assert names == reszoo.list_models("resnet*", domain="image") and "resnet50-imagenet" in names
    assert cli(["list", "--json", "--domain", "text"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == set(reszoo.list_models(domain="text"))
    assert all(r["domain"] == "text" and "weights" in r for r in rows)


def test_info_and_card(capsys):
    assert cli(["info", "resnet50-imagenet", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["weights"]["sha256"] == "773525d5821de224f8f30c33377b7a795d7863e08522698200d3217d3f2a41bb"
    assert data["weights"]["revision"] == "93271f4677dbf7b4d7f7e7d9d7811bd66c327e56"
    assert cli(["card", "resnet50-imagenet"]) == 0
    assert "library_name: reszoo" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["info", "resnet50-imagnet"], "did you mean 'resnet50-imagenet'"),
        (["card", "nope"], "unknown model 'nope'"),
        (["list", "--domain", "text", "--task", "x"], None),
    ],
)
def test_errors_are_one_line_with_status_1(argv, needle, capsys):
    status = cli(argv)
    err = capsys.readouterr().err
    if needle is None:
        assert status == 0
        return
    assert status == 1
    assert err.startswith("reszoo: error: ") and needle in err and err.count("\n") == 1


def test_console_script_usage_errors_exit_2():
    out = subprocess.run([sys.executable, "-m", "reszoo.cli", "frobnicate"], capture_output=True, text=True)
    assert out.returncode == 2 and "invalid choice" in out.stderr
    out = subprocess.run([sys.executable, "-m", "reszoo.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"reszoo {reszoo.__version__}"
