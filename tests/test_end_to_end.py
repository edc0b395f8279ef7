"""A tiny `medaudit check --synthetic` end to end on the CPU: schema, store reuse, partial files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from audit_checks import WORKING_TRAINING, assert_finished, working_manifest
from model_builders import tiny_checkpoints

from audit import cli
from audit.schema import validate_results


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    user = folder / "user_resnet18.pt"
    torch.save(torchvision.models.resnet18(num_classes=1000).state_dict(), user)
    reference = folder / "reference_resnet18.pt"
    torch.save(torchvision.models.resnet18(num_classes=1000).state_dict(), reference)
    return user, reference


def check_args(user: Path, reference: Path, out: Path, cache: Path) -> list[str]:
    return [
        "--quiet", "check", str(user), "--modality", "cxr", "--synthetic",
        "--reference", str(reference), "--out", str(out), "--cache-dir", str(cache),
        "--confounders", "tag", "--levels", "0,1", "--folds", "1", "--epochs", "1",
        "--max-steps", "1", "--batch-size", "8", "--input-size", "32", "--image-size", "32",
        "--synthetic-patients", "40", "--resamples", "100",
    ]  # fmt: skip


def test_a_one_step_audit_finishes_every_run_and_is_incomplete_by_its_controls(
    checkpoints, tmp_path
) -> None:
    """One optimiser step on 40 phantom patients is no experiment: exit 4, never a verdict."""
    user, reference = checkpoints
    out, cache = tmp_path / "out", tmp_path / "cache"
    code = cli.main(check_args(user, reference, out, cache))
    assert code == 4
    results = assert_finished(code, out)
    validate_results(results)
    assert results["illustrative"] is True
    assert results["controls"]["failed"] == ["training", "clean_auc"]
    assert "single optimiser step" in results["status"]["reason"]
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF")
    junit = (out / "junit.xml").read_text()
    assert 'errors="1"' in junit and "The experiment did not work" in junit


def working_args(out: Path, cache: Path, models: Path, data: Path) -> list[str]:
    """A working experiment in miniature, one fold: the controls hold, the interval lacks the
    run variance."""
    args = [
        "--quiet", "check", str(models / "user.pt"), "--modality", "cxr", "--data", str(data),
        "--reference", str(models / "reference.pt"), "--out", str(out), "--cache-dir",
        str(cache), "--confounders", "tag", "--levels", "0,1", *WORKING_TRAINING,
    ]  # fmt: skip
    args[args.index("--folds") + 1] = "1"
    return args


def test_check_runs_end_to_end_and_reuses_finished_runs(tmp_path) -> None:
    models = tmp_path / "models"
    tiny_checkpoints(models)
    data = working_manifest(tmp_path / "data").parent
    out, cache = tmp_path / "out", tmp_path / "cache"
    code = cli.main(working_args(out, cache, models, data))
    results = assert_finished(code, out)
    validate_results(results)
    assert results["status"] == {
        "complete": True, "reason": None, "runs_total": 4, "runs_done": 4, "runs_reused": 0,
        "runs_failed": 0,
    }  # fmt: skip
    assert results["controls"]["passed"] is True
    assert results["budget"]["tier"] == "reduced" and results["budget"]["runs"] == 4
    assert "1 fold(s) (the study: 5)" in results["budget"]["deviations"]
    assert {m["role"] for m in results["models"]} == {"user", "reference"}
    no_trust = {"trust_code": False, "trust_pickle": False}
    assert all(m["trust_flags"] == no_trust for m in results["models"])
    test_split = results["data"]["splits"]["test"]
    assert sum(test_split["by_sex"].values()) == test_split["cases"]
    assert test_split["patients"] == test_split["cases"]  # one image per patient
    row = results["verdict"]["per_confounder"][0]
    assert results["verdict"]["measure"] == "reliance_gap" and row["gated"] is True
    assert row["reliance"]["n_patients"] == test_split["patients"]  # every test patient counts
    assert row["reliance"]["n_folds"] == 1 and not row["reliance"]["runs_variance_available"]
    assert "with a single fold the training variance is unknown" in row["reason"]
    assert row["verdict"] != "pass", "one fold cannot see training variance; never a pass"
    assert row["shortcut_gap"]["ci_low"] <= row["shortcut_gap"]["estimate"]
    assert results["verdict"]["overall"] in ("fail", "inconclusive")
    assert results["gate"]["inconclusive_counted_as"] is None
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF")
    assert (out / "junit.xml").is_file()
    assert not any(cache.rglob("*")) or not str(cache).startswith(str(out))

    run_files = sorted((out / "runs").glob("*.json"))
    assert len(run_files) == 4
    stamps = {p.name: p.stat().st_mtime_ns for p in run_files}

    code = cli.main(working_args(out, cache, models, data))
    again = assert_finished(code, out)
    assert again["status"]["runs_reused"] == 4
    assert {p.name: p.stat().st_mtime_ns for p in run_files} == stamps
    assert again["auc"] == results["auc"]

    # --inconclusive-exit 0: the same verdict, recorded with what inconclusive counts as
    code = cli.main([*working_args(out, cache, models, data), "--inconclusive-exit", "0"])
    lenient = json.loads((out / "results.json").read_text())
    overall = lenient["verdict"]["overall"]
    assert overall == results["verdict"]["overall"]
    assert lenient["gate"]["inconclusive_exit"] == 0
    assert lenient["gate"]["inconclusive_counted_as"] == "pass"
    assert code == lenient["gate"]["exit_code"] == {"fail": 1, "inconclusive": 0}[overall]


def test_a_partial_run_file_is_redone(checkpoints, tmp_path) -> None:
    user, reference = checkpoints
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert_finished(cli.main(check_args(user, reference, out, cache)), out)
    victim = sorted((out / "runs").glob("*.json"))[0]
    victim.write_text(victim.read_text()[: len(victim.read_text()) // 2])
    results = assert_finished(cli.main(check_args(user, reference, out, cache)), out)
    assert results["status"]["runs_reused"] == 3
    assert results["status"]["runs_done"] == 4
    json.loads(victim.read_text())  # rewritten whole


def test_report_re_renders_from_results_alone(checkpoints, tmp_path) -> None:
    """`--no-report` (a GPU node without WeasyPrint) writes no PDF; `report` makes it later."""
    from pypdf import PdfReader

    user, reference = checkpoints
    out = tmp_path / "out"
    args = [*check_args(user, reference, out, tmp_path / "cache"), "--no-report"]
    out.mkdir()
    (out / "report.pdf").write_bytes(b"%PDF- an earlier audit's report")
    assert_finished(cli.main(args), out)
    assert (out / "junit.xml").is_file() and not (out / "report.pdf").exists()
    target = tmp_path / "again.pdf"
    assert cli.main(["report", str(out / "results.json"), "--out", str(target)]) == 0
    pages = [page.extract_text() for page in PdfReader(target).pages]
    assert all("SYNTHETIC DATA" in page for page in pages), "every page carries the mark"
    assert "Illustrative: synthetic data" in pages[0]
    assert "Shortcut-susceptibility audit" in pages[0]


def test_two_cpu_workers_give_the_same_results_as_one(checkpoints, tmp_path) -> None:
    user, reference = checkpoints
    outputs = []
    for devices in ("cpu", "cpu,cpu"):
        out = tmp_path / devices.replace(",", "-")
        args = [*check_args(user, reference, out, tmp_path / "cache"), "--device", devices]
        outputs.append(assert_finished(cli.main([*args, "--deterministic"]), out))
    assert outputs[0]["auc"] == outputs[1]["auc"]
    assert outputs[0]["controls"] == outputs[1]["controls"]
    assert outputs[0]["verdict"] == outputs[1]["verdict"]


def test_check_audits_a_resnet50_against_the_official_radimagenet_layout(tmp_path) -> None:
    """The protocol's pair: a torchvision ResNet50 state_dict against a RadImageNet file."""
    torch.manual_seed(2)
    user = tmp_path / "imagenet_resnet50.pt"
    torch.save(torchvision.models.resnet50().state_dict(), user)
    official = torch.nn.Sequential(*list(torchvision.models.resnet50().children())[:9])
    reference = tmp_path / "RadImageNet_resnet50.pt"
    torch.save({f"backbone.{k}": v for k, v in official.state_dict().items()}, reference)
    out = tmp_path / "out"
    args = check_args(user, reference, out, tmp_path / "cache")
    args[args.index("--max-steps") + 1] = "1"
    results = assert_finished(cli.main(args), out)
    models = {m["role"]: m for m in results["models"]}
    assert (models["user"]["arch"], models["user"]["format"]) == ("resnet50", "state_dict")
    assert models["reference"]["format"] == "radimagenet-official"
    assert models["reference"]["preprocessing"] == "radimagenet"
    normalisations = {
        json.loads((p).read_text())["spec"]["role"]: json.loads(p.read_text())["spec"]["train"][
            "normalize"
        ]
        for p in (out / "runs").glob("*.json")
    }
    assert normalisations == {"user": "imagenet", "reference": "radimagenet"}
