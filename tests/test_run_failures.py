"""One run's unexpected error fails that run only: the others finish and are kept, and the
audit reports what is missing (exit 4, no verdict) instead of losing everything to a traceback."""

from __future__ import annotations

import json

import torch
import torchvision

from audit import cli
from audit.run import cells as runner


def test_an_unexpected_error_in_one_run_keeps_every_other_run(tmp_path, monkeypatch, capsys):
    torch.manual_seed(1)
    user, reference = tmp_path / "user.pt", tmp_path / "reference.pt"
    for path in (user, reference):
        torch.save(torchvision.models.resnet18().state_dict(), path)
    real = runner.fine_tune

    def flaky(spec, backbone, cell_data, device):
        if spec.role == "reference" and spec.level == 0.5:
            raise KeyError("a plugin's missing key")  # neither RuntimeError nor ValueError
        return real(spec, backbone, cell_data, device)

    monkeypatch.setattr(runner, "fine_tune", flaky)
    out = tmp_path / "out"
    code = cli.main([
        "--quiet", "check", str(user), "--modality", "cxr", "--synthetic", "--reference",
        str(reference), "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
        "--confounders", "tag", "--levels", "0,0.5", "--folds", "1", "--epochs", "1",
        "--max-steps", "1", "--batch-size", "8", "--input-size", "32", "--image-size", "32",
        "--synthetic-patients", "30", "--resamples", "100", "--no-report", "--device", "cpu",
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 4, err
    assert "Traceback" not in err
    assert len(list((out / "runs").glob("*.json"))) == 3  # the three other runs are kept
    results = json.loads((out / "results.json").read_text())
    assert results["status"]["runs_failed"] == 1 and results["verdict"] is None
    assert 'KeyError: "a plugin\'s missing key"' in err  # the reason, in the log
