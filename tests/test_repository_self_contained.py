"""The repository speaks for itself: no tracked file points at notes that live outside it.

A user or contributor has the clone and nothing else, so the code and docs state the facts
themselves instead of citing design notes kept beside the repository during development.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BINARY_SUFFIXES = {".png", ".jpg", ".jpeg", ".pdf", ".whl", ".npz", ".npy", ".pt", ".onnx", ".dcm"}
# Built from pieces so that this file does not match itself.
NEEDLES = ("../" + "shared", "PROTOCOL" + ".md", "DESIGN" + ".md", "STYLE" + ".md")


def tracked_text_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout of the repository")
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    files = []
    for name in filter(None, listed.split("\0")):
        path = ROOT / name
        if path.suffix.lower() not in BINARY_SUFFIXES and path.is_file():
            files.append(path)
    return files


def test_no_tracked_file_points_outside_the_repository() -> None:
    found = []
    for path in tracked_text_files():
        data = path.read_bytes()
        if b"\0" in data:  # binary, whatever its name
            continue
        text = data.decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            name = path.relative_to(ROOT)
            found += [f"{name}:{number}: {needle}" for needle in NEEDLES if needle in line]
    message = "state the fact instead of pointing outside the repository:\n" + "\n".join(found)
    assert not found, message
