"""A killed audit resumes: no finished run lost or redone, and deterministic runs agree exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torchvision
from audit_checks import assert_finished


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(1)
    paths = []
    for name in ("user.pt", "reference.pt"):
        path = folder / name
        torch.save(torchvision.models.resnet18().state_dict(), path)
        paths.append(path)
    return paths[0], paths[1]


def audit_command(user: Path, reference: Path, out: Path, cache: Path) -> list[str]:
    return [
        sys.executable, "-m", "audit", "--quiet", "check", str(user), "--modality", "cxr",
        "--synthetic", "--reference", str(reference), "--out", str(out), "--cache-dir", str(cache),
        "--confounders", "tag", "--levels", "0,0.5,1", "--folds", "1", "--epochs", "2",
        "--max-steps", "2", "--batch-size", "8", "--input-size", "32", "--image-size", "32",
        "--synthetic-patients", "40", "--resamples", "100", "--deterministic",
    ]  # fmt: skip


def finished_runs(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}


def comparable(results: dict) -> dict:
    return {"auc": results["auc"], "verdict": results["verdict"], "runs": results["runs"]}


def strip_timings(results: dict) -> dict:
    out = comparable(results)
    out["runs"] = [{k: v for k, v in run.items() if k != "seconds"} for run in out["runs"]]
    return out


def test_sigkill_mid_audit_then_resume_loses_and_redoes_nothing(checkpoints, tmp_path) -> None:
    user, reference = checkpoints
    out, cache = tmp_path / "out", tmp_path / "cache"
    process = subprocess.Popen(audit_command(user, reference, out, cache))
    deadline = time.monotonic() + 240
    while len(finished_runs(out)) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    if process.poll() is not None:
        pytest.skip("the audit finished before it could be killed (machine too fast)")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = finished_runs(out)
    assert 2 <= len(before) < 6
    killed = json.loads((out / "results.json").read_text())
    assert killed["kind"] == "in_progress" and killed["verdict"] is None, "no verdict while killed"

    done = subprocess.run(
        audit_command(user, reference, out, cache), capture_output=True, text=True
    )
    assert_finished(done.returncode, out)
    after = finished_runs(out)
    assert len(after) == 6
    assert {name: after[name] for name in before} == before, "finished runs were redone"
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["status"]["runs_reused"] == len(before)

    straight = tmp_path / "straight"
    done = subprocess.run(
        audit_command(user, reference, straight, cache), capture_output=True, text=True
    )
    assert_finished(done.returncode, straight)
    uninterrupted = json.loads((straight / "results.json").read_text())
    assert strip_timings(resumed) == strip_timings(uninterrupted)


def test_deterministic_mode_fixes_the_cublas_workspace_before_any_run(monkeypatch) -> None:
    """cuBLAS reads CUBLAS_WORKSPACE_CONFIG when its first handle is made; a user's value stays."""
    from audit.train.device import set_determinism

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        set_determinism(True)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert torch.are_deterministic_algorithms_enabled()
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
        set_determinism(True)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    finally:
        set_determinism(False)
    assert not torch.are_deterministic_algorithms_enabled()
