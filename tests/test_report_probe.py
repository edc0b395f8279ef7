"""The probe's report: its numbers in an audit report that carries it and in its own PDF/A-3b.

The probe document is real: a TorchScript model that reads the tag's corner, built not trained,
is probed on a small phantom cohort. Its own report and an audit report that embeds it (the audit
fixture of test_report.py plus "probe") are rendered once per module; the edge cases (a CPU
fall-back, a null AUC, a sex-only probe) are variations of the same document.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import re
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from pypdf import PdfReader
from torch import nn

from audit.confounders.tag import DEFAULTS as TAG_DEFAULTS
from audit.confounders.tag import tag_box
from audit.data.synthetic import PhantomSettings, make_phantom_cohort
from audit.probe.cohort import select_images
from audit.probe.decide import ProbeThresholds
from audit.probe.pipeline import ProbeRequest, run_probe
from audit.probe.preprocess import Preprocessor, resolve_input, resolve_normalization
from audit.probe.runner import ModelOptions, open_runner
from audit.report.pdfa import sha256_hex
from audit.report.probe_context import MAX_WORST_CASES, probe_context
from audit.report.render import render_html, render_pdf, render_report
from audit.resolve.confounders import resolve_confounders
from audit.schema import results_bytes, validate_probe_results, validate_results

AUDIT_FIXTURE = Path(__file__).parent / "data" / "report_results.json"
EPOCH = "1700000000"
SIZE = 64
PATIENTS = 40  # 83 images: the tag fails with flips, the rest are inconclusive
TITLE = "Counterfactual probe of the model as shipped"


class TagCorner(nn.Module):
    """Two class logits from the mean input over the tag's box: it reads the tag, nothing else."""

    def __init__(self) -> None:
        super().__init__()
        x0, y0, x1, y1 = tag_box((SIZE, SIZE), TAG_DEFAULTS)
        mask = torch.zeros(SIZE, SIZE)
        mask[y0 - 1 : y1 + 1, x0 - 1 : x1 + 1] = 1.0
        self.register_buffer("mask", mask / mask.sum())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = 4.0 * (x.mean(1) * self.mask).sum((1, 2))
        return torch.stack([-logit / 2, logit / 2], 1)


def _model_file(folder: Path) -> Path:
    path = folder / "tag-reader.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(TagCorner().eval(), torch.zeros(1, 3, SIZE, SIZE)), path)
    return path


def _probe(path: Path, confounders: tuple[str, ...], **thresholds) -> dict:
    cohort = make_phantom_cohort(PhantomSettings(n_patients=PATIENTS, image_size=SIZE, seed=3))
    runner = open_runner(ModelOptions(path, "cpu", trust_code=True))
    spec = resolve_input(runner.declared, path.name, input_size=SIZE)
    prep = Preprocessor(spec, resolve_normalization("imagenet", None, None, spec.channels))
    resolved = resolve_confounders(confounders, {}, cohort.modality, seed=0, work_size=SIZE)
    request = ProbeRequest(
        runner, prep, cohort, select_images(cohort, None, None, 0), resolved,
        ProbeThresholds(n_resamples=200, **thresholds), batch_size=32,
        command=f"medaudit probe {path.name} --synthetic --trust-code",
        model_sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
    )  # fmt: skip
    results = run_probe(request)
    validate_probe_results(results)
    return results


@dataclass(frozen=True)
class Rendered:
    results: dict
    payload: bytes
    reader: PdfReader
    pages: list[str]

    @property
    def text(self) -> str:
        return " ".join(self.pages)


def _read(results: dict, pdf: bytes, payload: bytes) -> Rendered:
    reader = PdfReader(io.BytesIO(pdf))
    pages = [re.sub(r"\s+", " ", page.extract_text()) for page in reader.pages]
    return Rendered(results, payload, reader, pages)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return _model_file(tmp_path_factory.mktemp("probe-model"))


@pytest.fixture(scope="module")
def probe_doc(model_file) -> dict:
    return _probe(model_file, ("tag", "denoise", "noise", "sex"))


@pytest.fixture(scope="module")
def standalone(probe_doc, tmp_path_factory) -> Rendered:
    payload = results_bytes(probe_doc)
    target = tmp_path_factory.mktemp("probe-report") / "report.pdf"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", EPOCH)
        render_report(probe_doc, target, results_json=payload)
    return _read(probe_doc, target.read_bytes(), payload)


@pytest.fixture(scope="module")
def audit_with_probe(probe_doc) -> Rendered:
    results = json.loads(AUDIT_FIXTURE.read_bytes())
    results["probe"] = probe_doc
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", EPOCH)
        pdf = render_pdf(results)
    return _read(results, pdf, results_bytes(results))


def _pixel_numbers(row: dict) -> list[str]:
    """What the section must show of one pixel confounder, formatted as the report formats it."""
    shift, flips, auc = row["mean_shift"], row["flip_rate"], row["auc"]
    return [
        f"{shift['estimate']:+.3f}",
        f"[{shift['ci_low']:+.3f}, {shift['ci_high']:+.3f}]",
        f"{flips['estimate']:.3f}",
        f"[{flips['ci_low']:.3f}, {flips['ci_high']:.3f}]",
        f"{flips['n_flipped']} of {flips['n']}",
        f"{flips['to_positive']} to positive {flips['to_negative']} to negative",
        f"{auc['clean']:.3f} \u2192 {auc['confounded']:.3f}",
        f"p = {auc['p_value']:.3f}",
        f"{row['p_fail_adjusted']:.3f} / {row['p_pass_adjusted']:.3f}",
    ]


def _sex_numbers(row: dict) -> list[str]:
    gap = row["auc_gap"]
    numbers = [f"{gap['estimate']:+.3f}", f"[{gap['ci_low']:+.3f}, {gap['ci_high']:+.3f}]"]
    numbers += [f"{row['groups'][sex]['auc']:.3f}" for sex in ("F", "M")]
    return numbers


def _assert_probe_numbers(rendered: Rendered, probe: dict) -> None:
    text, upper = rendered.text, rendered.text.upper()
    for row in probe["confounders"]:
        numbers = _pixel_numbers(row) if row["kind"] == "pixel" else _sex_numbers(row)
        for number in numbers:
            assert number in text, f"{row['name']}: {number} missing from the PDF"
        word = "REPORTED, NOT GATED" if row["verdict"] == "not-gated" else row["verdict"].upper()
        assert f"{row['name'].upper()}: {word}" in upper, row["name"]
    assert f"Overall probe verdict: {probe['verdict']['overall'].upper()}" in text
    assert probe["model"]["sha256"] in text and probe["data"]["manifest_hash"] in text


# --------------------------------------------------------------------------------- the fixture


def test_the_probe_document_is_real(probe_doc) -> None:
    rows = {r["name"]: r for r in probe_doc["confounders"]}
    assert probe_doc["verdict"]["overall"] == "fail" and rows["tag"]["verdict"] == "fail"
    assert rows["tag"]["flip_rate"]["n_flipped"] > 0 and rows["tag"]["auc"] is not None
    assert rows["sex"]["verdict"] == "not-gated"
    results = json.loads(AUDIT_FIXTURE.read_bytes())
    results["probe"] = probe_doc
    validate_results(results)


# ------------------------------------------------------------------------- the audit report


def test_the_audit_report_shows_every_probe_number(audit_with_probe) -> None:
    _assert_probe_numbers(audit_with_probe, audit_with_probe.results["probe"])


def test_the_probe_section_follows_the_confounders_and_page_one_points_to_it(
    audit_with_probe,
) -> None:
    pages = audit_with_probe.pages
    start = next(i for i, page in enumerate(pages) if page.startswith(TITLE))
    last_confounder = max(i for i, page in enumerate(pages) if "Results: sex" in page)
    limitations = next(i for i, page in enumerate(pages) if page.startswith("Limitations"))
    assert last_confounder < start < limitations
    assert "Counterfactual probe (training-free): FAIL" in pages[0]
    assert f"page {start + 1}." in pages[0], "page 1 names the probe section's page"
    for page in pages:
        assert f"audit {audit_with_probe.results['audit_id']}" in page


def test_the_audit_report_without_a_probe_has_no_probe_section() -> None:
    html = render_html(json.loads(AUDIT_FIXTURE.read_bytes()), rendered_utc="2024-01-01T00:00:00Z")
    assert "Counterfactual probe" not in html and "probe-section" not in html


# ----------------------------------------------------------------------- the standalone report


def test_the_standalone_report_shows_every_probe_number(standalone) -> None:
    _assert_probe_numbers(standalone, standalone.results)
    text = standalone.text
    assert text.startswith("Counterfactual shortcut probe")
    assert "What the verdict means" in standalone.pages[0]
    assert "What it does not mean" in standalone.pages[0]
    assert standalone.results["command"] in text and "Environment and provenance" in text


def test_every_standalone_page_carries_probe_id_hash_and_mark(standalone) -> None:
    sha, total = sha256_hex(standalone.payload), len(standalone.pages)
    for number, page in enumerate(standalone.pages, start=1):
        assert f"probe {standalone.results['probe_id']}" in page
        assert f"results.json SHA-256 {sha}" in page
        assert f"page {number} of {total}" in page
        assert "SYNTHETIC DATA" in page


def _pdfaid(xmp: bytes) -> dict[str, str]:
    """The PDF/A identification in the XMP metadata, as attributes or elements."""
    ns = "{http://www.aiim.org/pdfa/ns/id/}"
    found = {}
    for element in ET.fromstring(xmp.split(b"?>", 1)[1].rsplit(b"<?xpacket", 1)[0]).iter():
        found.update((k.removeprefix(ns), v) for k, v in element.attrib.items() if k.startswith(ns))
        if element.tag.startswith(ns):
            found[element.tag.removeprefix(ns)] = element.text or ""
    return found


def test_the_standalone_report_is_pdfa_3b_with_results_json_embedded(standalone) -> None:
    root = standalone.reader.trailer["/Root"]
    assert _pdfaid(root["/Metadata"].get_object().get_data()) == {"part": "3", "conformance": "B"}
    assert standalone.reader.attachments["results.json"] == [standalone.payload]
    specs = [spec.get_object() for spec in root["/AF"]]
    assert [s["/UF"] for s in specs] == ["results.json"]
    assert specs[0]["/AFRelationship"] == "/Data"
    assert f"probe {standalone.results['probe_id']}" in specs[0]["/Desc"]


def test_worst_cases_show_ids_and_scores_at_most_ten(probe_doc, standalone) -> None:
    section = probe_context(probe_doc)
    tag = next(r for r in probe_doc["confounders"] if r["name"] == "tag")
    shown = next(w for w in section["worst"] if w["name"] == "tag")["cases"]
    assert 0 < len(shown) <= MAX_WORST_CASES
    assert [c["case_id"] for c in shown] == [c["case_id"] for c in tag["worst_cases"]][:10]
    first = tag["worst_cases"][0]
    expected = f"{first['case_id']} {'pos' if first['label'] else 'neg'} {first['clean']:.3f}"
    assert f"{expected} \u2192 {first['confounded']:.3f}" in standalone.text


# ------------------------------------------------------------------------------- edge cases


def test_a_fall_back_to_the_cpu_is_a_visible_warning(probe_doc, standalone) -> None:
    assert "fell back to the CPU" not in standalone.text
    fallen = copy.deepcopy(probe_doc)
    fallen["model"]["runtime"].update(
        backend="onnxruntime", providers_requested=["CUDAExecutionProvider", "CPUExecutionProvider"],
        providers_used=["CPUExecutionProvider"], fell_back_to_cpu=True,
    )  # fmt: skip
    validate_probe_results(fallen)
    html = render_html(fallen, rendered_utc="2024-01-01T00:00:00Z")
    warnings_shown = re.findall(r'<div class="warning">(.*?)</div>', html, re.S)
    assert len(warnings_shown) == 2, "on page one and in the probe section"
    assert "fell back to the CPU" in warnings_shown[0]
    assert "Requested CUDAExecutionProvider, CPUExecutionProvider" in warnings_shown[0]
    audit = json.loads(AUDIT_FIXTURE.read_bytes())
    audit["probe"] = fallen
    assert "fell back to the CPU" in render_html(audit, rendered_utc="2024-01-01T00:00:00Z")


def test_a_null_auc_renders_as_not_available(probe_doc) -> None:
    degenerate = copy.deepcopy(probe_doc)
    for row in degenerate["confounders"]:
        if row["kind"] == "pixel":
            row["auc"] = None
    validate_probe_results(degenerate)
    reader = PdfReader(io.BytesIO(render_pdf(degenerate)))
    text = re.sub(r"\s+", " ", " ".join(p.extract_text() for p in reader.pages))
    assert "a class has < 2 images" in text
    tag = degenerate["confounders"][0]
    assert f"[{tag['mean_shift']['ci_low']:+.3f}, {tag['mean_shift']['ci_high']:+.3f}]" in text


def test_a_sex_only_probe_renders(model_file) -> None:
    sex_only = _probe(model_file, ("sex",), max_sex_auc_gap=0.5)
    row = sex_only["confounders"][0]
    assert row["gated"] and row["verdict"] != "not-gated"
    reader = PdfReader(io.BytesIO(render_pdf(sex_only)))
    text = re.sub(r"\s+", " ", " ".join(p.extract_text() for p in reader.pages))
    assert "gated against \u00b10.5" in text and "Results per pixel confounder" not in text
    for number in _sex_numbers(row):
        assert number in text
    assert f"Overall probe verdict: {sex_only['verdict']['overall'].upper()}" in text
