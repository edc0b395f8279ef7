"""No stale green: while a run is unfinished, --out says so, and one --out takes one run at a time."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from audit_checks import WORKING_TRAINING, assert_finished, working_manifest
from model_builders import tiny_checkpoints

from audit import cli, pipeline
from audit.run.out_folder import claim_out_folder


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Two tiny models and separable images: the earlier audit is a green one."""
    folder = tmp_path_factory.mktemp("models")
    return (*tiny_checkpoints(folder), working_manifest(folder / "data").parent)


def check_args(models: tuple[Path, Path, Path], out: Path, cache: Path) -> list[str]:
    user, reference, data = models
    return [
        "--quiet", "check", str(user), "--modality", "cxr", "--data", str(data), "--reference",
        str(reference), "--out", str(out), "--cache-dir", str(cache), "--confounders", "tag",
        "--levels", "0,1", *WORKING_TRAINING,
    ]  # fmt: skip


def _junit_errors(path: Path) -> int:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    return sum(int(s.get("errors", 0)) for s in suites)


def test_a_crashed_audit_leaves_no_earlier_green_behind(models, tmp_path, monkeypatch) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert_finished(cli.main(check_args(models, out, cache)), out)
    assert json.loads((out / "results.json").read_text())["status"]["complete"]
    (out / "report.pdf").write_bytes(b"%PDF- the earlier audit's report")

    def crash(*args, **kwargs):
        raise RuntimeError("the machine went away")

    monkeypatch.setattr(pipeline, "execute", crash)
    assert cli.main([*check_args(models, out, cache), "--seed", "1"]) == 4
    results = json.loads((out / "results.json").read_text())
    assert results["kind"] == "in_progress" and results["verdict"] is None
    assert results["status"] == {"complete": False, "in_progress": True}
    assert results["thresholds"]["margin"] == 0.05
    assert _junit_errors(out / "junit.xml") == 1, "CI shows the unfinished audit as an error"
    assert not (out / "report.pdf").exists()
    code = cli.main(["report", str(out / "results.json"), "--out", str(tmp_path / "r.pdf")])
    assert code == 2 and not (tmp_path / "r.pdf").exists()


def test_a_second_run_into_a_busy_out_folder_is_refused(models, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    with claim_out_folder(out, "medaudit check (the first)", "audit"):
        code = cli.main(check_args(models, out, tmp_path / "cache"))
    err = capsys.readouterr().err
    assert code == 2 and "another medaudit run is writing to this --out folder" in err
    assert "Traceback" not in err
    with claim_out_folder(out, "medaudit check (later)", "audit"):  # released: free again
        pass


def test_an_out_that_is_a_file_is_refused_before_any_work(models, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    out.write_text("not a folder")
    assert cli.main(check_args(models, out, tmp_path / "cache")) == 2
    assert "--out names a file" in capsys.readouterr().err
