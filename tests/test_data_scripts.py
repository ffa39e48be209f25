"""scripts/get_data.py: the data sets come from their pinned public sources, in the layout tests read."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, need_data


def test_get_data_builds_fsdd_from_a_checkout_byte_for_byte(tmp_path: Path) -> None:
    recordings = need_data("fsdd/recordings")
    checkout = tmp_path / "free-spoken-digit-dataset"
    checkout.mkdir()
    (checkout / "recordings").symlink_to(recordings)
    out = tmp_path / "data"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "get_data.py"), "fsdd", "--source", str(checkout), "--to", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "3000 wav files" in proc.stdout
    names = sorted(p.name for p in recordings.glob("*.wav"))
    match, mismatch, errors = filecmp.cmpfiles(recordings, out / "fsdd" / "recordings", names, shallow=False)
    assert len(match) == 3000 and not mismatch and not errors


def test_get_data_refuses_a_wrong_checkout(tmp_path: Path) -> None:
    (tmp_path / "recordings").mkdir()
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "get_data.py"), "fsdd", "--source", str(tmp_path), "--to", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "expected 3000 wav files, found 0" in proc.stderr
