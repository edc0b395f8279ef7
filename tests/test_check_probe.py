"""`check --probe`: the training-free probe runs first, lands in every output and gates the exit."""

from __future__ import annotations

import contextlib
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
import torchvision
from audit_checks import assert_finished, working_manifest
from model_builders import tiny_checkpoints

from audit import cli
from audit.commands import _exit_code
from audit.schema import validate_results

PROBE_KEYS = ("mean_shift", "flip_rate", "auc", "groups", "auc_gap", "verdict", "placebo")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    whole = torchvision.models.resnet18(num_classes=1)
    paths = {"user": folder / "user.pt", "reference": folder / "reference.pt",
             "backbone": folder / "backbone.pt"}  # fmt: skip
    torch.save(whole.state_dict(), paths["user"])
    _, paths["reference"] = tiny_checkpoints(folder / "tiny")  # learns separable images fast
    torch.save({k: v for k, v in whole.state_dict().items() if not k.startswith("fc.")},
               paths["backbone"])  # fmt: skip
    paths["data"] = working_manifest(folder / "data", n=160, sex=True).parent
    return paths


def common(models: dict[str, Path]) -> list[str]:
    """Separable images with a sex column: the audit's experiment works (its controls hold),
    so the gate combines a real verdict with the probe's."""
    return [
        "--modality", "cxr", "--data", str(models["data"]), "--image-size", "16",
        "--input-size", "16", "--resamples", "200", "--confounders", "tag,sex", "--device", "cpu",
    ]  # fmt: skip


def check(models: dict[str, Path], model: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--quiet", "check", str(model), *common(models), "--reference", str(models["reference"]),
        "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
        "--levels", "0,1", "--folds", "1", "--epochs", "6", "--batch-size", "16", "--lr", "3e-4",
        "--probe",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def audited(models, tmp_path_factory) -> tuple[int, str, Path]:
    """One `check --probe` run shared by the tests that read its outputs."""
    folder = tmp_path_factory.mktemp("audited")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli.main(check(models, models["user"], folder, "--placebo"))
    return code, printed.getvalue(), folder


def test_check_probe_embeds_the_probe_a_standalone_run_gives(models, audited) -> None:
    code, printed, tmp_path = audited
    results = assert_finished(code, tmp_path / "out")
    assert results["controls"]["passed"], results["controls"]["reason"]
    validate_results(results)
    embedded = results["probe"]
    assert embedded["kind"] == "probe" and results["status"]["complete"]
    assert [r["name"] for r in embedded["confounders"]] == ["tag", "sex"]
    assert "excess_flip_rate" in embedded["confounders"][0]["placebo"]  # --placebo reached it
    assert code == _exit_code(results, 3)
    gate = results["gate"]
    assert gate["audit"] == results["verdict"]["overall"]
    assert gate["probe"] == embedded["verdict"]["overall"]
    worst = next(v for v in ("fail", "inconclusive", "pass") if v in (gate["audit"], gate["probe"]))
    assert gate["overall"] == worst and code == {"pass": 0, "fail": 1, "inconclusive": 3}[worst]
    from pypdf import PdfReader

    page_one = PdfReader(tmp_path / "out" / "report.pdf").pages[0].extract_text()
    assert f"take the worse of the two: {worst.upper()}" in " ".join(page_one.split())
    assert "probe (training-free" in printed and "gate:" in printed

    standalone = [
        "--quiet", "probe", str(models["user"]), *common(models), "--out", str(tmp_path / "probe"),
        "--cache-dir", str(tmp_path / "cache"), "--placebo",
    ]  # fmt: skip
    assert cli.main(standalone) in (0, 1, 3)
    alone = json.loads((tmp_path / "probe" / "results.json").read_text())
    assert embedded["data"]["manifest_hash"] == alone["data"]["manifest_hash"]
    assert embedded["model"]["preprocessing"] == alone["model"]["preprocessing"]
    for ours, theirs in zip(embedded["confounders"], alone["confounders"], strict=True):
        assert {k: ours.get(k) for k in PROBE_KEYS} == {k: theirs.get(k) for k in PROBE_KEYS}

    suite = ET.parse(tmp_path / "out" / "junit.xml").getroot()
    probe_cases = [c for c in suite if c.get("classname") == "medaudit.probe"]
    assert [c.get("name") for c in probe_cases] == ["tag", "sex"]
    assert suite.get("tests") == str(len(list(suite)))
    failed = sum(1 for c in suite for child in c if child.tag == "failure")
    assert suite.get("failures") == str(failed)


def test_a_backbone_without_its_classifier_fails_before_any_run(models, tmp_path, capsys) -> None:
    code = cli.main(check(models, models["backbone"], tmp_path))
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("medaudit: error: --probe:") and len(err.splitlines()) == 1
    assert "classifier" in err
    assert not (tmp_path / "out" / "runs").exists()


def _results(audit: str, probe: str | None) -> dict:
    from audit.pipeline import _gate

    probe_doc = None if probe is None else {"verdict": {"overall": probe}}
    return {"status": {"complete": True}, "verdict": {"overall": audit},
            "gate": _gate(audit, probe_doc, 3)}  # fmt: skip


@pytest.mark.parametrize(
    ("audit", "probe", "expected"),
    [("pass", None, 0), ("pass", "pass", 0), ("pass", "fail", 1), ("fail", "pass", 1),
     ("pass", "inconclusive", 3), ("inconclusive", "fail", 1)],
)  # fmt: skip
def test_the_exit_code_is_the_worse_of_audit_and_probe(audit, probe, expected) -> None:
    assert _exit_code(_results(audit, probe), 3) == expected


def test_an_embedded_probe_is_held_to_the_probe_schema(audited) -> None:
    import jsonschema

    results = json.loads((audited[2] / "out" / "results.json").read_text())
    del results["probe"]["model"]
    with pytest.raises(jsonschema.ValidationError):
        validate_results(results)


def test_probe_flags_without_probe_and_a_sex_only_probe_fail_before_any_image(
    models, tmp_path, capsys
) -> None:
    argv = [a for a in check(models, models["user"], tmp_path) if a != "--probe"]
    assert cli.main([*argv, "--max-shift", "0.1"]) == 2
    assert "--max-shift set(s) the probe: add --probe" in capsys.readouterr().err
    sex_only = [*check(models, models["user"], tmp_path), "--confounders", "sex"]
    assert cli.main(sex_only) == 2
    err = capsys.readouterr().err
    assert err.startswith("medaudit: error: --probe: sex alone is reported, not gated")
    assert cli.main([*check(models, models["user"], tmp_path), "--probe-images", "-1"]) == 2
    assert "--probe-images -1" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists(), "nothing was decoded"


def test_a_model_built_for_one_size_is_probed_at_it() -> None:
    """torchvision's ViT takes only its own image size: the probe scores the model as it ships."""
    from types import SimpleNamespace

    from audit.probe.assemble import native_input_size

    vit_runner = SimpleNamespace(module=torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=1, num_heads=1, hidden_dim=8, mlp_dim=8))  # fmt: skip
    cnn_runner = SimpleNamespace(module=torchvision.models.resnet18())
    assert native_input_size(vit_runner) == 32
    assert native_input_size(cnn_runner) is None, "a CNN takes the audit's input size"
    assert native_input_size(SimpleNamespace()) is None, "an ONNX session has no module"
