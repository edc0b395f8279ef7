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


def results_v1(verdicts: dict[str, str]) -> dict:
    """A schema-1 verdict: the reliance gap gated, "not gated" for a confounder shown only."""
    rows = [
        {
            "confounder": name, "kind": "sampling" if name == "sex" else "pixel",
            "gated": v != "not gated", "verdict": v, "reason": f"{name} is {v}", "margin": 0.05,
            "reliance": None, "p_fail": None, "p_pass": None, "p_fail_adjusted": None,
            "shortcut_gap": None, "clean_gap": None, "breaking_point": None,
        }
        for name, v in verdicts.items()
    ]  # fmt: skip
    gated = [v for v in verdicts.values() if v != "not gated"]
    overall = "fail" if "fail" in gated else ("inconclusive" if "inconclusive" in gated else "pass")
    return {
        "schema_version": "1",
        "status": {"complete": True},
        "verdict": {"measure": "reliance_gap", "overall": overall, "per_confounder": rows},
    }


@pytest.mark.parametrize(
    ("verdicts", "failures", "skipped"),
    [
        ({"tag": "pass", "sex": "not gated"}, 0, 1),
        ({"tag": "fail", "sex": "not gated"}, 1, 1),
        ({"tag": "inconclusive", "noise": "pass", "sex": "not gated"}, 0, 2),
    ],
)
def test_schema_1_rows_each_get_a_case_and_not_gated_is_skipped(verdicts, failures, skipped):
    suite = ET.fromstring(ET.tostring(junit_tree(results_v1(verdicts))))
    assert (suite.get("tests"), suite.get("failures")) == (str(len(verdicts)), str(failures))
    assert (suite.get("skipped"), suite.get("errors")) == (str(skipped), "0")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert list(cases) == list(verdicts)
    for name, verdict in verdicts.items():
        case, reason = cases[name], f"{name} is {verdict}"
        if verdict == "pass":
            assert list(case) == [], "a pass is a plain passing test case"
        elif verdict == "fail":
            assert case.find("failure").get("message") == reason
        elif verdict == "inconclusive":
            assert case.find("skipped").get("message") == f"inconclusive: {reason}"
        else:
            assert case.find("skipped").get("message") == reason, "not gated: the reason"
            assert case.find("failure") is None


def test_the_report_fixture_gives_its_verdicts_in_junit() -> None:
    from pathlib import Path

    results = json.loads((Path(__file__).parent / "data" / "report_results.json").read_text())
    suite = junit_tree(results)
    rows = {r["confounder"]: r for r in results["verdict"]["per_confounder"]}
    for case in suite.iter("testcase"):
        row = rows[case.get("name")]
        assert case.get("classname") == "medaudit.shortcut"
        if row["verdict"] == "inconclusive":
            assert case.find("skipped").get("message") == "inconclusive: " + row["reason"]
        else:
            assert row["verdict"] == "pass" and list(case) == []
    assert suite.get("tests") == str(len(rows))


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
