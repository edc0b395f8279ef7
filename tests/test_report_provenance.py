"""Provenance for the reproducibility section: read without running git or any other program."""

from __future__ import annotations

import json

from audit.run.provenance import checkout_commit, environment_details, library_versions

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_environment_details_name_libraries_hardware_and_determinism() -> None:
    details = environment_details()
    assert {"python", "libraries", "tool_commit", "hardware", "determinism"} <= set(details)
    assert details["libraries"]["numpy"]
    assert details["hardware"]["cpu_count"] >= 1
    assert "torch_deterministic_algorithms" in details["determinism"]
    json.dumps(details, allow_nan=False)  # ready for results.json


def test_absent_libraries_are_left_out() -> None:
    assert library_versions(("numpy", "no-such-distribution-medaudit")).keys() == {"numpy"}


def test_commit_is_read_from_a_branch_a_packed_ref_or_a_detached_head(tmp_path) -> None:
    git = tmp_path / "repo" / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    inner = tmp_path / "repo" / "audit"
    inner.mkdir()
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "refs" / "heads" / "main").write_text(COMMIT + "\n")
    assert checkout_commit(inner) == COMMIT
    (git / "refs" / "heads" / "main").unlink()
    (git / "packed-refs").write_text(f"# pack-refs with: peeled\n{COMMIT} refs/heads/main\n")
    assert checkout_commit(inner) == COMMIT
    (git / "HEAD").write_text(COMMIT.replace("0", "f") + "\n")
    assert checkout_commit(inner) == COMMIT.replace("0", "f")


def test_a_broken_checkout_gives_no_commit(tmp_path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/missing\n")
    assert checkout_commit(tmp_path) is None
    (tmp_path / ".git" / "HEAD").write_text("not a commit\n")
    assert checkout_commit(tmp_path) is None
