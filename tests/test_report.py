"""The PDF report: complete, every verdict number shown, archival (PDF/A-3b), reproducible.

One module-scoped render of a real quick-demo results.json (tests/data/report_results.json,
rebuilt by tests/data/make_report_results.py) serves most tests; content checks that need no PDF
use the HTML, which is much faster.
"""

from __future__ import annotations

import copy
import io
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest
from pypdf import PdfReader
from pypdf.generic import IndirectObject

from audit.report.formatting import NOT_RECORDED
from audit.report.pdfa import render_time, sha256_hex
from audit.report.render import render_html, render_pdf, render_report
from audit.schema import results_bytes, validate_results

FIXTURE = Path(__file__).parent / "data" / "report_results.json"
EPOCH = "1700000000"  # 2023-11-14T22:13:20Z
SECTIONS = (
    "Shortcut-susceptibility audit",
    "Scope and intended use",
    "Model provenance",
    "Data provenance",
    "Protocol",
    "Confounders",
    "Results: tag (annotation confounder)",
    "Results: sex (patient confounder)",
    "Example: without and with the confounder",
    "AUC against correlation level",
    "Paired statistics per level",
    "Limitations",
    "Reproducibility",
    "Library versions",
    "Hardware",
    "Determinism settings",
    "Glossary",
)


@dataclass(frozen=True)
class Rendered:
    results: dict
    payload: bytes
    pdf: bytes
    again: bytes
    reader: PdfReader
    pages: list[str]

    @property
    def text(self) -> str:
        return " ".join(self.pages)


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


@pytest.fixture(scope="module")
def rendered() -> Rendered:
    payload = FIXTURE.read_bytes()
    results = json.loads(payload)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", EPOCH)
        pdf = render_pdf(results, results_json=payload)
        again = render_pdf(results, results_json=payload)
    reader = PdfReader(io.BytesIO(pdf))
    pages = [_flat(page.extract_text()) for page in reader.pages]
    return Rendered(results, payload, pdf, again, reader, pages)


def _verdict_numbers(row: dict) -> list[str]:
    gap = row["gap"]
    numbers = [f"{gap[k]:+.3f}" for k in ("estimate", "ci_low", "ci_high")]
    for key in ("per_level_gap", "per_level_ci_low", "per_level_ci_high"):
        numbers += [f"{v:+.3f}" for v in gap[key]]
    numbers += [f"{row[k]:.3f}" for k in ("p_fail", "p_pass", "p_fail_adjusted", "p_pass_adjusted")]
    numbers += [f"{row['margin']:+.3f}", str(gap["n_resamples"]), str(gap["seed"])]
    numbers += [str(gap["n_positive"]), str(gap["n_negative"]), f"{gap['confidence'] * 100:g} %"]
    numbers += [f"{lv:g}" for lv in row["counted_levels"]]
    if row["breaking_point"] is not None:
        numbers.append(f"p = {row['breaking_point']:g}")
    return numbers


def test_fixture_is_valid_results() -> None:
    validate_results(json.loads(FIXTURE.read_text(encoding="utf-8")))


def test_every_number_of_the_verdict_appears_in_the_pdf(rendered) -> None:
    verdict = rendered.results["verdict"]
    assert verdict["per_confounder"], "the fixture must carry a verdict"
    for row in verdict["per_confounder"]:
        for number in _verdict_numbers(row):
            assert number in rendered.text, f"{row['confounder']}: {number} missing from the PDF"


def test_page_one_answers_on_its_own(rendered) -> None:
    page = rendered.pages[0]
    r = rendered.results
    assert f"Overall verdict: {r['verdict']['overall'].upper()}" in page
    for row in r["verdict"]["per_confounder"]:
        gap = row["gap"]
        assert row["confounder"] in page
        assert f"[{gap['ci_low']:+.3f}, {gap['ci_high']:+.3f}]" in page
        assert f"{gap['estimate']:+.3f}" in page
        assert row["verdict"].upper() in page.upper()
        assert f"{row['p_fail_adjusted']:.3f} / {row['p_pass_adjusted']:.3f}" in page
    for model in r["models"]:
        assert model["display_name"] in page
    for expected in (r["data"]["manifest_hash"], r["created_utc"], "budget quick"):
        assert expected in page
    assert "What the verdict means" in page and "What it does not mean" in page
    assert "not the shipped" in page or "shipped model's behaviour" in page
    assert "Illustrative: synthetic data" in page


def test_every_section_is_present(rendered) -> None:
    for title in SECTIONS:
        assert title in rendered.text, f"section {title!r} missing"


def test_every_page_carries_the_mark_audit_id_hash_and_page_number(rendered) -> None:
    sha = sha256_hex(rendered.payload)
    total = len(rendered.pages)
    assert total >= 5
    for number, page in enumerate(rendered.pages, start=1):
        assert "SYNTHETIC DATA" in page
        assert f"audit {rendered.results['audit_id']}" in page
        assert f"results.json SHA-256 {sha}" in page
        assert f"page {number} of {total}" in page


def test_filled_optional_fields_are_shown(rendered) -> None:
    text = rendered.text
    assert "0.412" in text, "DeLong p-values of the statistics block"
    assert "0" * 40 in text, "tool commit"
    assert "weasyprint 70.0" in text
    assert "2026-01-01T00:00:00Z" in text, "audit start time"
    assert "none (no code in the checkpoint was run)" in text


def _pdfaid(xmp: bytes) -> dict[str, str]:
    ns = "{http://www.aiim.org/pdfa/ns/id/}"
    found = {}
    for element in ET.fromstring(xmp.split(b"?>", 1)[1].rsplit(b"<?xpacket", 1)[0]).iter():
        for key, value in element.attrib.items():
            if key.startswith(ns):
                found[key.removeprefix(ns)] = value
        if element.tag.startswith(ns):
            found[element.tag.removeprefix(ns)] = element.text or ""
    return found


def test_pdf_identifies_as_pdfa_3b_with_an_output_intent(rendered) -> None:
    root = rendered.reader.trailer["/Root"]
    xmp = root["/Metadata"].get_object().get_data()
    assert _pdfaid(xmp) == {"part": "3", "conformance": "B"}
    intents = root["/OutputIntents"]
    assert len(intents) >= 1
    intent = intents[0].get_object()
    assert intent["/S"] == "/GTS_PDFA1"
    profile = intent["/DestOutputProfile"].get_object().get_data()
    assert profile[36:40] == b"acsp", "the output intent carries an ICC profile"
    assert rendered.pdf.startswith(b"%PDF-1.7")
    assert "/ID" in rendered.reader.trailer


def _fonts(resources, seen: set[int]):
    """Every font dictionary reachable from a resources dictionary, forms and patterns included."""
    resources = resources.get_object() if resources is not None else {}
    for font in (resources.get("/Font") or {}).values():
        yield font.get_object()
    for key in ("/XObject", "/Pattern"):
        for item in (resources.get(key) or {}).values():
            if isinstance(item, IndirectObject):
                if item.idnum in seen:
                    continue
                seen.add(item.idnum)
            yield from _fonts(item.get_object().get("/Resources"), seen)


def _is_embedded(font) -> bool:
    if font["/Subtype"] == "/Type3":
        return True  # glyphs are content streams inside the PDF
    if font["/Subtype"] == "/Type0":
        return all(_is_embedded(d.get_object()) for d in font["/DescendantFonts"])
    descriptor = font.get("/FontDescriptor")
    if descriptor is None:
        return False
    descriptor = descriptor.get_object()
    return any(k in descriptor for k in ("/FontFile", "/FontFile2", "/FontFile3"))


def test_every_font_is_embedded(rendered) -> None:
    seen: set[int] = set()
    fonts = [f for page in rendered.reader.pages for f in _fonts(page.get("/Resources"), seen)]
    assert fonts, "the report uses fonts"
    for font in fonts:
        assert _is_embedded(font), f"font {font.get('/BaseFont')} is not embedded"


def test_results_json_is_embedded_byte_for_byte_as_an_associated_file(rendered) -> None:
    assert rendered.reader.attachments["results.json"] == [rendered.payload]
    root = rendered.reader.trailer["/Root"]
    specs = [spec.get_object() for spec in root["/AF"]]
    assert [s["/UF"] for s in specs] == ["results.json"]
    assert specs[0]["/AFRelationship"] == "/Data"
    embedded = specs[0]["/EF"]["/F"].get_object()
    assert embedded["/Subtype"] in ("/application#2Fjson", "/application/json")
    assert "/ModDate" in embedded["/Params"]


def test_two_renders_with_source_date_epoch_are_byte_identical(rendered) -> None:
    assert rendered.pdf == rendered.again
    assert rendered.reader.metadata["/CreationDate"].startswith("D:20231114221320")
    assert "2023-11-14T22:13:20Z" in rendered.text, "the render date shown is the epoch's"


def test_render_report_embeds_results_as_the_pipeline_writes_them(tmp_path, monkeypatch) -> None:
    results = json.loads(FIXTURE.read_bytes())
    assert results_bytes(results) == FIXTURE.read_bytes(), "same serialisation as run_audit"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    # A one-confounder, no-example version keeps this second render quick.
    small = _without_optional(results)
    small["protocol"]["confounders"] = small["protocol"]["confounders"][:1]
    target = render_report(small, tmp_path / "report.pdf")
    reader = PdfReader(target)
    assert reader.attachments["results.json"] == [results_bytes(small)]


def test_results_json_that_does_not_match_the_results_is_refused() -> None:
    results = json.loads(FIXTURE.read_bytes())
    with pytest.raises(ValueError, match="results_json"):
        render_pdf(results, results_json=b'{"other": 1}')


def _without_optional(results: dict) -> dict:
    small = copy.deepcopy(results)
    for key in ("examples", "provenance", "statistics", "budget"):
        small.pop(key, None)
    for model in small["models"]:
        model.pop("trust_flags", None)
    return small


def _row(html: str, label: str) -> str:
    match = re.search(rf"<td>{re.escape(label)}</td>\s*<td[^>]*>(.*?)</td>", html, re.S)
    assert match, f"no row {label!r}"
    return match.group(1)


def test_absent_optional_fields_are_marked_not_recorded() -> None:
    small = _without_optional(json.loads(FIXTURE.read_bytes()))
    validate_results(small)
    html = render_html(small, rendered_utc="2024-01-01T00:00:00Z")
    marked = f'<span class="gap">{NOT_RECORDED}</span>'
    for label in ("budget", "trust flags", "tool commit", "audit started (UTC)"):
        assert marked in _row(html, label), label
    assert f"Example images: {marked}" in html
    assert html.count(marked) >= 10


def test_an_incomplete_audit_shows_no_verdict() -> None:
    results = json.loads(FIXTURE.read_bytes())
    results["verdict"] = None
    results["status"].update(complete=False, runs_failed=2, runs_done=6)
    html = render_html(results, rendered_utc="2024-01-01T00:00:00Z")
    assert "No verdict: the audit is incomplete" in html
    assert "2 of 8 runs failed" in html
    assert 'class="verdict-word' not in html, "no verdict word anywhere"


def test_a_non_synthetic_audit_carries_no_synthetic_mark() -> None:
    results = json.loads(FIXTURE.read_bytes())
    results.update(illustrative=False, illustrative_note=None)
    html = render_html(results, rendered_utc="2024-01-01T00:00:00Z")
    assert "ILLUSTRATIVE" not in html.upper()
    assert 'class="watermark"' not in html and "@top-center" not in html


def test_source_date_epoch_is_honoured_and_checked() -> None:
    assert render_time({"SOURCE_DATE_EPOCH": EPOCH}).isoformat() == "2023-11-14T22:13:20+00:00"
    with pytest.raises(ValueError, match="SOURCE_DATE_EPOCH"):
        render_time({"SOURCE_DATE_EPOCH": "yesterday"})


def test_limitations_name_an_architecture_mismatch() -> None:
    from audit.report.context import limitations

    results = json.loads((Path(__file__).parent / "data" / "report_results.json").read_text())
    results["models"][0]["arch"] = "densenet121"
    results["models"][1]["arch"] = "resnet50"
    text = " ".join(limitations(results))
    assert "densenet121" in text and "resnet50" in text
