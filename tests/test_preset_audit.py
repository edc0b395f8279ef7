"""`check --protocol source-matters`: the study's own image lists decide every split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from audit_checks import assert_finished
from test_data_builders import make_preset_tree

from audit import cli


def test_audit_on_the_study_lists_uses_their_folds_and_sex_pools(tmp_path: Path) -> None:
    make_preset_tree(tmp_path / "nih")
    torch.manual_seed(0)
    for name in ("u.pt", "r.pt"):
        torch.save(torchvision.models.resnet18().state_dict(), tmp_path / name)
    out = tmp_path / "out"
    code = cli.main([
        "--quiet", "check", str(tmp_path / "u.pt"), "--modality", "cxr", "--data",
        str(tmp_path / "nih"), "--protocol", "source-matters", "--reference", str(tmp_path / "r.pt"),
        "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--confounders", "tag,sex",
        "--levels", "0,1", "--epochs", "1", "--max-steps", "1", "--batch-size", "16",
        "--input-size", "32", "--image-size", "32", "--resamples", "100",
    ])  # fmt: skip
    results = assert_finished(code, out)
    assert results["status"]["runs_total"] == 2 * 2 * 5 * 2  # the study's five folds
    assert results["data"]["split_source"].startswith("study lists")
    splits = results["data"]["splits"]  # the first confounder's (tag: chest14 lists)
    assert splits["test"]["cases"] == 83
    assert len(splits["folds"]) == 5
    assert sum(splits["folds"][0][part]["cases"] for part in ("train", "val")) == 331 - 83
    assert set(results["auc"]["sex"]["user"]) == {"ood"}, "the study's sex test set is o.o.d. only"
    assert set(results["auc"]["tag"]["user"]) == {"ood", "iid", "clean"}
    runs = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    sex_ood = {
        len(r["result"]["case_ids"]["ood"]) for r in runs if r["result"]["confounder"] == "sex"
    }
    assert sex_ood == {400}, "200 male positives + 200 female negatives"
    train = results["protocol"]["train"]
    assert (train["head"], train["bn_momentum"], train["adam_eps"], train["patience"]) == (
        "softmax2", 0.01, 1e-7, 30,
    ), "the study's training values under the protocol"  # fmt: skip
    assert not any("head" in d or "momentum" in d for d in results["budget"]["deviations"])
    from audit.analysis.study_auc import study_auc

    for run in runs:  # the study's AUC of every run, computed from its own scores
        result = run["result"]
        for name, value in result["study_auc"].items():
            expected = study_auc(result["labels"][name], result["scores"][name])
            assert value == pytest.approx(expected, nan_ok=True)
    assert set(results["study_auc"]["tag"]["user"]) == {"ood", "iid", "clean"}
    from pypdf import PdfReader

    text = " ".join(page.extract_text() for page in PdfReader(out / "report.pdf").pages)
    assert "The study's AUC, to set beside the paper's figures" in " ".join(text.split())
