"""JUnit XML and exit codes for each verdict, and an incomplete audit that never passes."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
import torch
import torchvision

from audit import cli
from audit.analysis.verdict import exit_code_for
from audit.report.junit import junit_tree


def results_with(verdicts: dict[str, str], complete: bool = True) -> dict:
    rows = [
        {"confounder": name, "verdict": v, "reason": f"{name} is {v}"}
        for name, v in verdicts.items()
    ]
    overall = (
        "fail"
        if "fail" in verdicts.values()
        else ("inconclusive" if "inconclusive" in verdicts.values() else "pass")
    )
    return {
        "status": {"complete": complete},
        "verdict": {"overall": overall, "per_confounder": rows} if complete else None,
    }


@pytest.mark.parametrize(
    ("verdicts", "failures", "skipped", "code"),
    [
        ({"tag": "pass", "sex": "pass"}, 0, 0, 0),
        ({"tag": "fail", "sex": "pass"}, 1, 0, 1),
        ({"tag": "inconclusive", "sex": "pass"}, 0, 1, 3),
        ({"tag": "fail", "sex": "inconclusive"}, 1, 1, 1),
    ],
)
def test_junit_and_exit_code_follow_the_verdict(verdicts, failures, skipped, code) -> None:
    results = results_with(verdicts)
    suite = ET.fromstring(ET.tostring(junit_tree(results)))
    assert suite.get("tests") == str(len(verdicts))
    assert suite.get("failures") == str(failures)
    assert suite.get("skipped") == str(skipped)
    assert suite.get("errors") == "0"
    names = [case.get("name") for case in suite.iter("testcase")]
    assert names == list(verdicts)
    assert exit_code_for(results["verdict"]["overall"]) == code


def test_inconclusive_exit_code_can_be_remapped() -> None:
    assert exit_code_for("inconclusive", 1) == 1
    assert exit_code_for("pass", 1) == 0


def test_incomplete_audit_is_an_error_case() -> None:
    suite = junit_tree(results_with({}, complete=False))
    assert suite.get("errors") == "1"
    assert suite.find("testcase/error") is not None


def test_an_audit_with_a_failed_run_exits_4(tmp_path, monkeypatch) -> None:
    from audit.run import cells as runner

    torch.manual_seed(0)
    for name in ("u.pt", "r.pt"):
        torch.save(torchvision.models.resnet18().state_dict(), tmp_path / name)
    real = runner.fine_tune
    calls = {"n": 0}

    def flaky(spec, backbone, data, device):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(spec, backbone, data, device)

    monkeypatch.setattr(runner, "fine_tune", flaky)
    out = tmp_path / "out"
    code = cli.main([
        "--quiet", "check", str(tmp_path / "u.pt"), "--modality", "cxr", "--synthetic",
        "--reference", str(tmp_path / "r.pt"), "--out", str(out), "--cache-dir", str(tmp_path / "c"),
        "--confounders", "tag", "--levels", "0,1", "--folds", "1", "--epochs", "1", "--max-steps", "1",
        "--batch-size", "8", "--input-size", "32", "--image-size", "32", "--synthetic-patients", "40",
    ])  # fmt: skip
    assert code == 4
    results = json.loads((out / "results.json").read_text())
    assert results["status"]["complete"] is False and results["status"]["runs_failed"] == 1
    assert results["verdict"] is None
    suite = ET.parse(out / "junit.xml").getroot()
    assert suite.get("errors") == "1"
