"""`medaudit probe`: a model that reads the tag is flagged, one that ignores it passes, through ONNX
Runtime and PyTorch alike, and every bad model file or flag is one line and exit code 2.

The test models are built, not trained: a fixed "convolution" with an image-sized kernel averages
one region of the input, and the logit is a fixed function of that average. One looks at the
tag's corner, the other only at the image centre, which no tag reaches.
"""

from __future__ import annotations

import csv
import json
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from torch import nn

from audit import cli
from audit.confounders.tag import DEFAULTS as TAG_DEFAULTS
from audit.confounders.tag import tag_box
from audit.data.synthetic import PhantomSettings, make_phantom_cohort
from audit.errors import UsageError
from audit.probe.cohort import select_images
from audit.probe.decide import ProbeThresholds
from audit.probe.measures import flip_rate, mean_shift
from audit.probe.pipeline import ProbeRequest, run_probe
from audit.probe.preprocess import (
    DeclaredInput,
    Preprocessor,
    resolve_input,
    resolve_normalization,
)
from audit.probe.runner import ModelOptions, OnnxRunner, TorchRunner, open_runner
from audit.probe.scores import choose_activation, choose_score, to_scores
from audit.resolve.confounders import resolve_confounders
from audit.schema import validate_probe_results

SIZE = 64
PATIENTS = 60


class RegionScore(nn.Module):
    """logit = gain * (mean input over a fixed box - offset), as one or two class logits."""

    def __init__(self, box: tuple[int, int, int, int], *, two_class: bool) -> None:
        super().__init__()
        x0, y0, x1, y1 = box
        mask = torch.zeros(SIZE, SIZE)
        mask[y0:y1, x0:x1] = 1.0 / ((y1 - y0) * (x1 - x0))
        self.register_buffer("mask", mask)
        self.two_class = two_class

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = 4.0 * (x.mean(1) * self.mask).sum((1, 2))
        if self.two_class:
            return torch.stack([-logit / 2, logit / 2], 1)
        return logit[:, None]


def tag_reader() -> nn.Module:
    x0, y0, x1, y1 = tag_box((SIZE, SIZE), TAG_DEFAULTS)
    return RegionScore((x0 - 1, y0 - 1, x1 + 1, y1 + 1), two_class=True).eval()


def centre_reader() -> nn.Module:
    q = SIZE // 4
    return RegionScore((q, q, SIZE - q, SIZE - q), two_class=False).eval()


def export(model: nn.Module, folder: Path, name: str, batch: int | None = None) -> Path:
    path = folder / f"{name}.onnx"
    dynamic = None if batch else {"image": {0: "batch"}, "logits": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, torch.zeros(batch or 1, 3, SIZE, SIZE), path, input_names=["image"],
            output_names=["logits"], dynamic_axes=dynamic, dynamo=False,
        )  # fmt: skip
    return path


def script(model: nn.Module, folder: Path, name: str) -> Path:
    path = folder / f"{name}.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(model, torch.zeros(1, 3, SIZE, SIZE)), path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {
        "tag.onnx": export(tag_reader(), folder, "tag"),
        "tag.pt": script(tag_reader(), folder, "tag"),
        "centre.onnx": export(centre_reader(), folder, "centre"),
        "centre.pt": script(centre_reader(), folder, "centre"),
        "tag-batch4.onnx": export(tag_reader(), folder, "tag-batch4", batch=4),
    }


@pytest.fixture(scope="module")
def cohort():
    return make_phantom_cohort(PhantomSettings(n_patients=PATIENTS, image_size=SIZE, seed=3))


def probe(
    path: Path, cohort, confounders=("tag",), device="cpu", *, placebo=False,
    normalize="imagenet", **thresholds,
) -> dict:  # fmt: skip
    runner = open_runner(ModelOptions(path, device, trust_code=True))
    spec = resolve_input(runner.declared, path.name, input_size=SIZE)
    prep = Preprocessor(spec, resolve_normalization(normalize, None, None, spec.channels))
    selection = select_images(cohort, None, None, 0)
    resolved = resolve_confounders(confounders, {}, cohort.modality, seed=0, work_size=SIZE)
    request = ProbeRequest(
        runner, prep, cohort, selection, resolved,
        ProbeThresholds(n_resamples=500, **thresholds), batch_size=16, placebo=placebo,
    )  # fmt: skip
    results = run_probe(request)
    validate_probe_results(results)
    return results


def row(results: dict, name: str) -> dict:
    return next(r for r in results["confounders"] if r["name"] == name)


# ------------------------------------------------------------------ the probe's central promise


@pytest.mark.parametrize("suffix", [".onnx", ".pt"])
def test_the_tag_reader_is_flagged_and_the_centre_reader_passes(files, cohort, suffix) -> None:
    flagged = probe(files[f"tag{suffix}"], cohort)
    passed = probe(files[f"centre{suffix}"], cohort)
    tag = row(flagged, "tag")
    assert flagged["verdict"]["overall"] == "fail" and tag["verdict"] == "fail"
    assert tag["mean_shift"]["ci_low"] > 0.05 and tag["flip_rate"]["n_flipped"] > 10
    assert tag["worst_cases"][0]["case_id"].startswith("C")
    centre = row(passed, "tag")
    assert passed["verdict"]["overall"] == "pass" and centre["verdict"] == "pass"
    assert centre["mean_shift"]["estimate"] == 0.0 and centre["flip_rate"]["n_flipped"] == 0
    assert centre["worst_cases"] == []  # nothing moved


def test_onnx_runtime_and_pytorch_give_the_same_numbers(files, cohort) -> None:
    names = ("tag", "denoise", "noise", "sex")
    by_ort = probe(files["tag.onnx"], cohort, names)
    by_torch = probe(files["tag.pt"], cohort, names)
    assert by_ort["model"]["runtime"]["providers_used"] == ["CPUExecutionProvider"]
    assert by_torch["model"]["runtime"]["backend"] == "torch"
    assert by_ort["thresholds"]["operating_threshold"] == pytest.approx(
        by_torch["thresholds"]["operating_threshold"], abs=1e-6
    )
    for a, b in zip(by_ort["confounders"], by_torch["confounders"], strict=True):
        assert a["verdict"] == b["verdict"], a["name"]
        if a["kind"] == "pixel":
            for key in ("estimate", "ci_low", "ci_high"):
                assert a["mean_shift"][key] == pytest.approx(b["mean_shift"][key], abs=1e-5)
            assert a["flip_rate"]["n_flipped"] == b["flip_rate"]["n_flipped"]
            # AUCs are rank statistics: float rounding may reorder a near-tie, one pair of many.
            assert a["auc"]["diff"] == pytest.approx(b["auc"]["diff"], abs=1e-3)
        else:
            assert a["auc_gap"]["estimate"] == pytest.approx(b["auc_gap"]["estimate"], abs=1e-3)


def test_a_fixed_batch_model_is_padded_and_scores_the_same(files, cohort) -> None:
    fixed = probe(files["tag-batch4.onnx"], cohort)
    dynamic = probe(files["tag.onnx"], cohort)
    assert fixed["model"]["input"]["fixed_batch"] == 4
    for key in ("estimate", "ci_low", "ci_high"):
        assert row(fixed, "tag")["mean_shift"][key] == pytest.approx(
            row(dynamic, "tag")["mean_shift"][key], abs=1e-6
        )


def test_sex_is_compared_by_subgroup_and_gates_only_when_declared(files, cohort) -> None:
    reported = probe(files["centre.onnx"], cohort, ("tag", "sex"))
    sex = row(reported, "sex")
    assert sex["verdict"] == "not-gated" and reported["verdict"]["gated"] == ["tag"]
    assert {"F", "M"} <= set(sex["groups"]) and sex["groups"]["F"]["auc"] is not None
    assert sex["groups"]["F"]["n"] + sex["groups"]["M"]["n"] == reported["data"]["n_images"]
    gated = probe(files["centre.onnx"], cohort, ("tag", "sex"), max_sex_auc_gap=0.5)
    assert row(gated, "sex")["gated"] and row(gated, "sex")["verdict"] != "not-gated"


# ------------------------------------------------------------------------- the command line


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def common(tmp_path: Path) -> list[str]:
    """Without the PDF (tests/test_report_probe.py reads it): results.json and junit.xml."""
    return ["--modality", "cxr", "--out", str(tmp_path / "out"), "--cache-dir",
            str(tmp_path / "cache"), "--resamples", "500", "--no-report"]  # fmt: skip


def synthetic(tmp_path: Path) -> list[str]:
    return [*common(tmp_path), "--synthetic", "--synthetic-patients", str(PATIENTS)]


def test_cli_exit_codes_and_outputs(files, tmp_path, capsys) -> None:
    with_report = [a for a in synthetic(tmp_path) if a != "--no-report"]
    code, out, _ = run_cli(["probe", str(files["tag.onnx"]), *with_report,
                            "--confounders", "tag,sex"], capsys)  # fmt: skip
    assert code == 1
    assert "illustrative: synthetic data" in out and "FAIL" in out
    assert (tmp_path / "out" / "report.pdf").read_bytes().startswith(b"%PDF")
    again = tmp_path / "again.pdf"
    assert cli.main(["report", str(tmp_path / "out" / "results.json"), "--out", str(again)]) == 0
    assert again.read_bytes().startswith(b"%PDF"), "`medaudit report` re-renders a probe too"
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["kind"] == "probe" and results["illustrative"] is True
    assert str(tmp_path) not in json.dumps(results)  # file names only, never paths
    suite = ET.parse(tmp_path / "out" / "junit.xml").getroot()
    assert suite.get("failures") == "1" and suite.get("skipped") == "1"  # tag fails, sex reported
    code, out, _ = run_cli(["probe", str(files["centre.pt"]), *synthetic(tmp_path),
                            "--confounders", "tag", "--trust-code", "--input-size", "64"],
                           capsys)  # fmt: skip
    assert code == 0 and "PASS" in out


def test_an_inconclusive_verdict_uses_the_declared_exit_code(files, tmp_path, capsys) -> None:
    # Ten images cannot show a flip rate below 1 %: neither pass nor fail can be proven.
    argv = ["probe", str(files["centre.onnx"]), *synthetic(tmp_path), "--confounders", "tag",
            "--max-images", "10", "--max-flip-rate", "0.01"]  # fmt: skip
    assert run_cli(argv, capsys)[0] == 3
    assert run_cli([*argv, "--inconclusive-exit", "1"], capsys)[0] == 1


def one_line_error(argv: list[str], capsys, *needles: str) -> str:
    code, _, err = run_cli(argv, capsys)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("medaudit: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_a_wrong_input_size_says_what_the_model_expects(files, tmp_path, capsys) -> None:
    argv = ["probe", str(files["tag.onnx"]), *synthetic(tmp_path), "--input-size", "48"]
    one_line_error(argv, capsys, "64x64", "--input-size 48", "pass --input-size 64")
    argv = ["probe", str(files["tag.onnx"]), *synthetic(tmp_path), "--channels", "1"]
    one_line_error(argv, capsys, "3 channel(s)")
    argv = ["probe", str(files["tag.pt"]), *synthetic(tmp_path), "--trust-code"]
    one_line_error(argv, capsys, "rejected an input of shape [2, 3, 224, 224]", "--input-size")


def test_damaged_onnx_files_are_one_line_exit_2(files, tmp_path, capsys) -> None:
    data = files["tag.onnx"].read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    one_line_error(["probe", str(truncated), *synthetic(tmp_path)], capsys, "truncated.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01not a model at all" * 10)
    one_line_error(["probe", str(garbage), *synthetic(tmp_path)], capsys, "garbage.onnx")
    missing = tmp_path / "missing.onnx"
    one_line_error(["probe", str(missing), *synthetic(tmp_path)], capsys, "not found")


def external_copy(source: Path, folder: Path, location: str) -> Path:
    """The model with its weights in an external file, its location rewritten to ``location``."""
    folder.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(source))
    path = folder / "external.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="weights.bin",
                    size_threshold=0)  # fmt: skip
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(model, str(path))
    return path


def test_external_data_must_stay_in_the_model_folder(files, tmp_path, capsys) -> None:
    inside = external_copy(files["centre.onnx"], tmp_path / "ok", "weights.bin")
    assert OnnxRunner(ModelOptions(inside, "cpu")).notes[-1] == "external data: weights.bin"
    (tmp_path / "secret.bin").write_bytes((tmp_path / "ok" / "weights.bin").read_bytes())
    for location in ("../secret.bin", str(tmp_path / "secret.bin")):
        escaped = external_copy(files["centre.onnx"], tmp_path / "bad", location)
        one_line_error(["probe", str(escaped), *synthetic(tmp_path)], capsys,
                       "outside the model's folder")  # fmt: skip
    (tmp_path / "bad" / "weights.bin").write_bytes(b"")  # truncated external data
    broken = external_copy(files["centre.onnx"], tmp_path / "bad", "weights.bin")
    (tmp_path / "bad" / "weights.bin").write_bytes(b"\x00" * 4)
    one_line_error(["probe", str(broken), *synthetic(tmp_path)], capsys, "truncated copy")


def test_a_crafted_external_data_offset_or_location_is_bad_input(files, tmp_path, capsys) -> None:
    """Exit 2 with one line, not an internal error: an offset that is not a number, a location
    thousands of characters long."""
    path = external_copy(files["centre.onnx"], tmp_path / "crafted", "weights.bin")
    model = onnx.load(str(path), load_external_data=False)
    entry = model.graph.initializer[0].external_data.add()
    entry.key, entry.value = "offset", "abc"
    onnx.save_model(model, str(path))
    one_line_error(["probe", str(path), *synthetic(tmp_path)], capsys, "expected a whole number")
    long_name = external_copy(files["centre.onnx"], tmp_path / "long", "w" * 5000)
    one_line_error(["probe", str(long_name), *synthetic(tmp_path)], capsys, "5000 characters")


def test_untrusted_code_and_missing_data_are_refused(files, tmp_path, capsys) -> None:
    one_line_error(["probe", str(files["tag.pt"]), *synthetic(tmp_path)], capsys, "--trust-code")
    code, _, err = run_cli(["probe", str(files["tag.onnx"]), *common(tmp_path)], capsys)
    assert code == 2 and "--data" in err and "--synthetic" in err


def test_a_manifest_data_set_is_probed_with_data(files, tmp_path, capsys) -> None:
    phantoms = make_phantom_cohort(PhantomSettings(n_patients=20, image_size=SIZE, seed=1))
    folder = tmp_path / "export-DOE_JOHN_19650101"  # a folder name that identifies someone
    folder.mkdir()
    rows = []
    for i, (case, image) in enumerate(zip(phantoms.cases, phantoms.images, strict=True)):
        Image.fromarray(image).save(folder / f"{i}.png")
        rows.append({"path": f"{i}.png", "label": case.label, "patient_id": case.patient_key,
                     "sex": case.sex})  # fmt: skip
    with open(folder / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    argv = ["probe", str(files["tag.onnx"]), *common(tmp_path), "--data", str(folder),
            "--confounders", "tag"]  # fmt: skip
    code, out, _ = run_cli(argv, capsys)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert code == 1 and results["illustrative"] is False and "illustrative" not in out
    assert results["data"]["source"] == "manifest" and results["data"]["n_images"] == len(rows)
    assert "DOE_JOHN" not in json.dumps(results) and "--data '<data>'" in results["command"]


# -------------------------------------------------------------------- PyTorch state_dicts


def test_a_torchvision_state_dict_keeps_its_head_and_matches_its_onnx_export(tmp_path) -> None:
    from torchvision import models

    torch.manual_seed(0)
    model = models.resnet18(weights=None, num_classes=3).eval()
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}},
               tmp_path / "r18.pt")  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 3, 32, 32), tmp_path / "r18.onnx",
                          dynamic_axes={"input": {0: "b"}}, input_names=["input"],
                          dynamo=False)  # fmt: skip
    batch = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    by_torch = TorchRunner(ModelOptions(tmp_path / "r18.pt", "cpu"))
    by_ort = OnnxRunner(ModelOptions(tmp_path / "r18.onnx", "cpu"))
    assert by_torch.arch == "resnet18" and by_torch.format == "state_dict"
    np.testing.assert_allclose(by_torch.run(batch)[0], by_ort.run(batch)[0], atol=1e-4)
    torch.save({k: v for k, v in model.state_dict().items() if not k.startswith("fc.")},
               tmp_path / "backbone.pt")  # fmt: skip
    with pytest.raises(UsageError, match="without its classifier"):
        TorchRunner(ModelOptions(tmp_path / "backbone.pt", "cpu"))


# ----------------------------------------------------------------------------- small parts


def test_input_resolution_fills_what_the_model_leaves_open() -> None:
    dynamic = DeclaredInput("x", ("batch", 3, "h", "w"))
    assert resolve_input(dynamic, "m", input_size=96).height == 96
    assert resolve_input(dynamic, "m").height == 224
    nhwc = resolve_input(DeclaredInput("x", (1, 128, 128, 1)), "m")
    assert (nhwc.layout, nhwc.channels, nhwc.batch, nhwc.shape(2)) == (
        "NHWC",
        1,
        1,
        (2, 128, 128, 1),
    )
    with pytest.raises(UsageError, match="not an image batch"):
        resolve_input(DeclaredInput("x", ("batch", 10)), "m")
    with pytest.raises(UsageError, match="0-1 scale"):
        resolve_normalization(None, "123.7", "58.4", 3)
    gray = resolve_normalization(None, "0.5", "0.25", 1)
    assert (gray.name, gray.mean, gray.std) == ("custom", (0.5,), (0.25,))


def test_the_score_is_chosen_by_output_and_column() -> None:
    outputs = [("logits", (2, 14)), ("probs", (2, 14)), ("flag", (2,))]
    assert choose_score("logits:3", outputs, "m").column == 3
    assert choose_score("1:0", outputs, "m").output_name == "probs"
    assert choose_score("flag", outputs, "m").column is None
    with pytest.raises(UsageError, match="14 columns"):
        choose_score(None, outputs, "m")
    with pytest.raises(UsageError, match="its outputs are 0: logits"):
        choose_score("scores", outputs, "m")
    two = choose_score(None, [("out", (2, 2))], "m")
    assert two.column == 1
    raw = np.array([[0.0, 2.0], [1.0, -1.0]])
    activation = choose_activation("auto", raw, two)
    assert activation.name == "softmax"
    np.testing.assert_allclose(to_scores(raw, two, activation), 1 / (1 + np.exp([-2.0, 2.0])))
    with pytest.raises(UsageError, match="`activation` sigmoid"):
        choose_activation("auto", np.full((2, 14), 3.0), choose_score("logits:3", outputs, "m"))


def test_flip_interval_and_p_values_agree() -> None:
    clean = np.linspace(0, 1, 200)
    moved = clean.copy()
    moved[:40] += 0.6  # 40 of 200 decisions cross 0.5 at most... count them exactly
    flips = flip_rate(clean, moved, 0.5, 0.95)
    expected = int(np.sum((clean >= 0.5) != (moved >= 0.5)))
    assert flips.n_flipped == expected and flips.to_negative == 0
    # The exact interval excludes a rate exactly when the two-sided p-value is below alpha.
    for rate in (
        flips.ci_low - 1e-4,
        flips.ci_low + 1e-4,
        flips.ci_high - 1e-4,
        flips.ci_high + 1e-4,
    ):
        outside = not flips.ci_low <= rate <= flips.ci_high
        p = 2 * min(flips.p_above(rate), flips.p_below(rate))
        assert outside == (p < 0.05), rate


def test_no_shift_gives_a_zero_interval() -> None:
    y = np.array([0, 1] * 20)
    scores = np.linspace(0, 1, 40)
    shift = mean_shift(y, scores, scores, n_resamples=200, seed=0, confidence=0.95)
    assert (shift.estimate, shift.ci_low, shift.ci_high) == (0.0, 0.0, 0.0)


def test_a_pickled_whole_module_loads_only_when_trusted(files, tmp_path) -> None:
    torch.save(tag_reader(), tmp_path / "whole.pt")
    with pytest.raises(UsageError, match="`trust_pickle`"):
        TorchRunner(ModelOptions(tmp_path / "whole.pt", "cpu"))
    runner = TorchRunner(ModelOptions(tmp_path / "whole.pt", "cpu", trust_pickle=True))
    batch = np.random.default_rng(1).standard_normal((3, 3, SIZE, SIZE)).astype(np.float32)
    expected = OnnxRunner(ModelOptions(files["tag.onnx"], "cpu")).run(batch)[0]
    assert runner.format == "pickled-module"
    np.testing.assert_allclose(runner.run(batch)[0], expected, atol=1e-5)


def test_a_report_that_cannot_be_rendered_keeps_the_verdicts_exit_code(
    files, tmp_path, capsys, monkeypatch
) -> None:
    """A GPU node without WeasyPrint's libraries: one warning, results kept, exit code the verdict's."""
    from audit.report import render

    def broken(*args, **kwargs):
        raise OSError("cannot load library 'libpango-1.0-0'")

    monkeypatch.setattr(render, "render_report", broken)
    argv = ["probe", str(files["tag.onnx"]), *synthetic(tmp_path), "--confounders", "tag"]
    code, _, err = run_cli([a for a in argv if a != "--no-report"], capsys)
    assert code == 1
    assert "report.pdf not written (cannot load library 'libpango-1.0-0')" in err
    assert (tmp_path / "out" / "results.json").is_file()
    assert not (tmp_path / "out" / "report.pdf").exists()


def test_a_threshold_that_leaves_every_decision_on_one_side_is_refused(files, tmp_path, capsys):
    argv = ["probe", str(files["tag.onnx"]), *synthetic(tmp_path), "--confounders", "tag"]
    one_line_error([*argv, "--threshold", "nan"], capsys, "--threshold nan", "finite")
    one_line_error([*argv, "--threshold", "2"], capsys, "--threshold 2", "outside (0, 1)")
    # raw scores the user keeps as they are: any finite threshold is theirs to choose
    code, out, _ = run_cli([*argv, "--activation", "none", "--threshold", "0.3"], capsys)
    assert code in (0, 1, 3) and "given (--threshold)" in out
