"""The PDF report: complete, every verdict number shown, archival (PDF/A-3b), reproducible.

One module-scoped render of a real quick-demo results.json (tests/data/report_results.json,
schema 1, rebuilt by tests/data/make_report_results.py) serves most tests; content checks that
need no PDF use the HTML, which is much faster, and page-1 checks of variants render page 1 alone
(everything before the first page break). tests/data/report_results_v0.json is a schema-0
document (the o.o.d. AUC gap S gated), which must still render as before.
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

from audit.analysis.planning import PRESAMPLED_REASON
from audit.report.formatting import NOT_RECORDED
from audit.report.pdfa import render_time, sha256_hex
from audit.report.render import render_html, render_pdf, render_report, templates_dir
from audit.schema import results_bytes, validate_results

FIXTURE = Path(__file__).parent / "data" / "report_results.json"
FIXTURE_V0 = Path(__file__).parent / "data" / "report_results_v0.json"
EPOCH = "1700000000"  # 2023-11-14T22:13:20Z
PAGE_BREAK = '<div class="page-break"></div>'
POWER_FIELDS = (  # a power record's planned figures: None where a confounder is not gated
    "half_width", "detectable_gap", "pass_gap", "equal_pass_probability", "se", "se_test",
    "se_runs", "assumptions", "perfect_gap", "perfect_upper", "perfect_can_pass",
)  # fmt: skip
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
    "The reliance gap per counted level",
    "Model-fit check (o.o.d. AUC)",
    "Clean-AUC retention",
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


def _signed(value: float) -> str:
    return f"{value:+.3f}"


def _interval(record: dict) -> str:
    return f"[{record['ci_low']:+.3f}, {record['ci_high']:+.3f}]"


def _reliance_numbers(row: dict) -> list[str]:
    """Every number of one schema-1 verdict row, formatted as the report formats it."""
    rel, s, clean = row["reliance"], row["shortcut_gap"], row["clean_gap"]
    numbers = [_signed(rel["estimate"]), _interval(rel), f"{rel['se']:.3f}"]
    numbers += [
        f"{rel['var_test']:.3g}",
        f"{rel['var_runs']:.3g}",
        f"{rel['confidence'] * 100:g} %",
    ]
    numbers += [f"{rel[k]} " for k in ("n_positive", "n_negative", "n_patients")]
    numbers += [f"{rel['n_folds']} / {rel['n_runs']}"]
    numbers += [_signed(v) for v in rel["fold_estimates"]]
    for level in rel["per_level"]:
        numbers.append(_signed(level["gap"]))
        numbers += [
            f"{level[k]:.3f}"
            for k in (
                "clean_auc_reference", "clean_auc_user", "lift_auc_reference", "lift_auc_user",
                "ood_reference", "ood_reference_with_user_lift",
            )
        ]  # fmt: skip
    for fit in rel["fit_check"]:
        numbers += [f"{fit['observed_ood_auc']:.3f}", f"{fit['predicted_ood_auc']:.3f}"]
        numbers += [_signed(fit["difference"]), f"{fit['se']:.3f}"]
    for kept in rel["retention"]:
        numbers += [f"{kept['clean_auc']:.3f}", f"\u00d7 {kept['retention']:.3f}"]
    numbers += [f"{row[k]:.3f}" for k in ("p_fail", "p_pass", "p_fail_adjusted")]
    numbers += [_signed(row["margin"]), _signed(s["estimate"]), _interval(s)]
    numbers += [_signed(e["gap"]) for e in s["per_level"]]
    numbers += [_signed(clean["estimate"]), _interval(clean)]
    numbers += rel["notes"]
    if row["breaking_point"] is not None:
        numbers.append(f"p = {row['breaking_point']:g}")
    return numbers


def _v0_numbers(row: dict) -> list[str]:
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


def _text(html: str) -> str:
    """The HTML's text, tags dropped and entities the report uses resolved: for fast checks."""
    import html as html_lib

    inline = r"</?(?:span|b|i|em|sub|sup|a)\b[^>]*>"
    return _flat(html_lib.unescape(re.sub(r"<[^>]+>", " ", re.sub(inline, "", html))))


def _page_one(results: dict) -> list[str]:
    """Page 1 rendered alone (everything before the first page break), page by page: a page-1
    check of a variant without rendering the whole report."""
    import weasyprint

    html = render_html(results, rendered_utc="2024-01-01T00:00:00Z").split(PAGE_BREAK, 1)[0]
    pdf = weasyprint.HTML(string=html + "</body></html>", base_url=str(templates_dir())).write_pdf()
    return [_flat(page.extract_text()) for page in PdfReader(io.BytesIO(pdf)).pages]


def _not_gated_sex(results: dict) -> dict:
    """The same audit as if run under --protocol source-matters: sex is shown but not gated."""
    out = copy.deepcopy(results)
    row = next(r for r in out["verdict"]["per_confounder"] if r["confounder"] == "sex")
    row.update(
        gated=False, verdict="not gated", reason=PRESAMPLED_REASON, reliance=None,
        p_fail=None, p_pass=None, p_fail_adjusted=None, clean_gap=None,
    )  # fmt: skip
    conf = next(c for c in out["protocol"]["confounders"] if c["name"] == "sex")
    conf.update(clean_test=None, has_clean_test=False)
    for by_role in (out["auc"]["sex"], (out.get("operating") or {}).get("sex", {})):
        for by_set in by_role.values():
            by_set.pop("clean", None)  # the study's sex lists have no clean test set
    out["power"]["sex"].update(  # as audit.analysis.planning records a confounder not gated
        dict.fromkeys(POWER_FIELDS), gated=False, reason=PRESAMPLED_REASON
    )
    gated = [r["verdict"] for r in out["verdict"]["per_confounder"] if r["gated"]]
    out["verdict"]["overall"] = "fail" if "fail" in gated else (
        "inconclusive" if "inconclusive" in gated else "pass"
    )  # fmt: skip
    out["gate"].update(overall=out["verdict"]["overall"], audit=out["verdict"]["overall"])
    return out


def _four_confounders(results: dict) -> dict:
    """The crowded page 1: tag, denoise and noise (copies of tag's records, two inconclusive
    with the long reason), and sex not gated; inconclusive counted as pass, with power."""
    out = _not_gated_sex(results)
    rows = {r["confounder"]: r for r in out["verdict"]["per_confounder"]}
    confs = {c["name"]: c for c in out["protocol"]["confounders"]}
    long_reason = max(results["verdict"]["per_confounder"], key=lambda r: len(r["reason"]))
    new_rows, new_confs = [rows["tag"]], [confs["tag"]]
    for name, category in (("denoise", "processing"), ("noise", "acquisition")):
        new_rows.append({**copy.deepcopy(rows["tag"]), "confounder": name,
                         "verdict": "inconclusive", "reason": long_reason["reason"]})  # fmt: skip
        new_confs.append({**copy.deepcopy(confs["tag"]), "name": name, "category": category})
        for key in ("auc", "operating", "statistics", "examples", "power"):
            if "tag" in (out.get(key) or {}):
                out[key][name] = copy.deepcopy(out[key]["tag"])
    out["verdict"]["per_confounder"] = [*new_rows, rows["sex"]]
    out["protocol"]["confounders"] = [*new_confs, confs["sex"]]
    out["verdict"]["overall"] = "inconclusive"
    out["gate"].update(overall="inconclusive", audit="inconclusive", exit_code=0)
    return out


def test_fixtures_are_valid_results_of_both_schemas() -> None:
    v1 = json.loads(FIXTURE.read_text(encoding="utf-8"))
    validate_results(v1)
    assert v1["schema_version"] == "1" and v1["verdict"]["measure"] == "reliance_gap"
    assert v1["gate"]["inconclusive_counted_as"] == "pass" and v1["power"]
    v0 = json.loads(FIXTURE_V0.read_text(encoding="utf-8"))
    validate_results(v0)
    assert v0["schema_version"] == "0" and "gap" in v0["verdict"]["per_confounder"][0]
    validate_results(_not_gated_sex(v1))
    validate_results(_four_confounders(v1))


def test_every_number_of_the_verdict_appears_in_the_pdf(rendered) -> None:
    verdict = rendered.results["verdict"]
    assert verdict["per_confounder"], "the fixture must carry a verdict"
    for row in verdict["per_confounder"]:
        for number in _reliance_numbers(row):
            assert number in rendered.text, f"{row['confounder']}: {number} missing from the PDF"
        unbroken = rendered.text.replace("- ", "-")  # a line broken after a hyphen
        assert row["reason"] in unbroken, "the full reason, in the confounder's section"
    for name, planned in rendered.results["power"].items():
        for key in ("half_width", "detectable_gap", "pass_gap"):
            shown = f"\u00b1{planned[key]:.3f}" if key == "half_width" else _signed(planned[key])
            assert shown in rendered.text, f"{name}: planned {key}"


def test_page_one_answers_on_its_own(rendered) -> None:
    page = rendered.pages[0]
    r = rendered.results
    assert f"Overall verdict: {r['verdict']['overall'].upper()}" in page
    assert "it does not depend on either model's accuracy" in page
    assert "how much lower the reference's o.o.d. AUC would be" in page
    assert "o.o.d. AUC gap S, not gated" in page
    for row in r["verdict"]["per_confounder"]:
        rel, s = row["reliance"], row["shortcut_gap"]
        assert row["confounder"] in page
        assert row["verdict"].upper() in page.upper()
        assert f"{_signed(rel['estimate'])} {_interval(rel)}" in page, "D and its interval"
        assert (
            f"{row['p_fail_adjusted']:.3f} / {row['p_pass']:.3f} {rel['dominant_variance']}" in page
        )
        assert f"{_signed(s['estimate'])} {_interval(s)}" in page, "S and its interval beside D"
        planned = r["power"][row["confounder"]]
        assert f"\u00b1{planned['half_width']:.3f} / {planned['detectable_gap']:+.3f}" in page
    assert "assumed between-run SD of the measure 0.03" in page
    assert "(patients + runs)" in page, "the interval holds both variances"
    for model in r["models"]:
        assert model["display_name"] in page
    for expected in (r["data"]["manifest_hash"], r["created_utc"], "budget quick"):
        assert expected in page
    assert "What the verdict means" in page and "What it does not mean" in page
    assert "not the shipped" in page or "shipped model's behaviour" in page
    assert "Illustrative: synthetic data" in page
    assert rendered.pages[1].startswith("Scope and intended use"), "page 1 holds it all"


def test_page_one_says_inconclusive_counted_as_pass_with_the_detectable_gap(rendered) -> None:
    r = rendered.results
    assert r["verdict"]["overall"] == "inconclusive"
    assert r["gate"]["inconclusive_counted_as"] == "pass"
    largest = max(p["detectable_gap"] for p in r["power"].values())
    page = rendered.pages[0]
    assert "Inconclusive counted as pass (--inconclusive-exit 0): exit code 0." in page
    assert f"could detect (planned before the runs) is about {largest:+.3f}" in page
    plain = copy.deepcopy(r)
    plain["gate"].update(inconclusive_exit=3, inconclusive_counted_as=None, exit_code=3)
    assert "counted as" not in _text(render_html(plain, rendered_utc="2024-01-01T00:00:00Z"))


def test_a_not_gated_confounder_shows_its_reason_on_page_one_and_four_fit_one_page() -> None:
    results = _four_confounders(json.loads(FIXTURE.read_bytes()))
    results["settings_origin"] = {  # the worst case: a found file and a long command line
        "file": "pyproject.toml", "how": "found by searching upwards from the current folder",
        "locked": False,
        "from_file": {"margin": 0.3, "alpha": 0.1, "train.lr": 0.002, "train.epochs": 3},
        "from_flags": ["levels", "folds", "image_size", "n_resamples", "confounders",
                       "train.batch_size", "train.max_steps_per_epoch", "train.input_size"],
    }  # fmt: skip
    pages = _page_one(results)
    assert len(pages) == 1, "page 1 holds four confounders, their reasons and the notes"
    page = pages[0]
    assert "not named by the user" in page and "margin = 0.3" in page
    assert "8 from the command line" in page
    assert "sex patient NOT GATED not gated" in page
    assert _flat(PRESAMPLED_REASON) in page
    assert "Not gated: sex" in page and "comes from the gated confounders only" in page
    assert "Inconclusive counted as pass" in page
    for name in ("tag", "denoise", "noise"):
        assert f"{name} " in page
    assert page.count("\u00b1") >= 3 and "not gated" in page, "planned per gated confounder"


def test_a_not_gated_confounder_is_shown_in_its_section_without_a_measure() -> None:
    results = _not_gated_sex(json.loads(FIXTURE.read_bytes()))
    validate_results(results)
    tag = next(r for r in results["verdict"]["per_confounder"] if r["confounder"] == "tag")
    assert results["verdict"]["overall"] == tag["verdict"], "the gated confounders' verdict only"
    text = _text(render_html(results, rendered_utc="2024-01-01T00:00:00Z"))
    section = text[text.index("Results: sex") : text.index("Limitations")]
    assert f"Verdict not gated: {PRESAMPLED_REASON}" in section
    assert "Clean test set: none." in section
    assert "clean AUC gap (descriptive) not computed" in section
    s = next(r for r in results["verdict"]["per_confounder"] if r["confounder"] == "sex")
    assert f"{_signed(s['shortcut_gap']['estimate'])} {_interval(s['shortcut_gap'])}" in section
    assert "The reliance gap per counted level" not in section, "no measure to tabulate"


def test_the_schema_0_fixture_still_renders_with_s_as_the_gate() -> None:
    results = json.loads(FIXTURE_V0.read_bytes())
    html = render_html(results, rendered_utc="2024-01-01T00:00:00Z")
    text = _text(html)
    for row in results["verdict"]["per_confounder"]:
        for number in _v0_numbers(row):
            assert number in text, f"{row['confounder']}: {number} missing from the v0 report"
    assert "reliance gap" not in text.lower() and "Model-fit check" not in text
    assert "shortcut gap S" in text and "bootstrap resamples" in text
    pages = _page_one(results)
    assert len(pages) == 1
    page = pages[0]
    assert f"Overall verdict: {results['verdict']['overall'].upper()}" in page
    assert "Shortcut gap S" in page
    for row in results["verdict"]["per_confounder"]:
        gap = row["gap"]
        assert f"{gap['estimate']:+.3f} [{gap['ci_low']:+.3f}, {gap['ci_high']:+.3f}]" in page
        assert f"{row['p_fail_adjusted']:.3f} / {row['p_pass_adjusted']:.3f}" in page


def test_the_glossary_and_limitations_explain_the_reliance_gap() -> None:
    from audit.report.context import glossary, limitations

    results = json.loads(FIXTURE.read_bytes())
    terms = dict(glossary(results))
    for term in (
        "reliance gap D", "lift AUC K", "clean AUC C", "retention", "fit check",
        "V_test / V_runs", "generalized pivot interval", "o.o.d. AUC gap S",
    ):  # fmt: skip
        assert term in terms, term
    assert terms["o.o.d. AUC gap S"].startswith("Descriptive, not gated")
    assert "bootstrap interval" not in terms and "shortcut gap S" not in terms
    assert "binormal" in " ".join(limitations(results))
    v0 = json.loads(FIXTURE_V0.read_bytes())
    assert "shortcut gap S" in dict(glossary(v0)) and "reliance gap D" not in dict(glossary(v0))
    assert "binormal" not in " ".join(limitations(v0))


def test_reliance_rows_mark_an_infinite_df_and_keep_the_reason_whole() -> None:
    from audit.report.context import verdict_rows

    results = json.loads(FIXTURE.read_bytes())
    rows = verdict_rows(results)
    for row in results["verdict"]["per_confounder"]:
        shown = rows[row["confounder"]]
        assert shown["df"] == "\u221e (no between-run variance)", "one fold: df is stored as null"
        assert shown["reason"] == row["reason"]
        assert row["reason"].startswith(shown["reason_short"])
        for note in row["reliance"]["notes"]:
            assert note not in shown["reason_short"], "page 1 lists the note once"


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

    results = json.loads(FIXTURE.read_text())
    results["models"][0]["arch"] = "densenet121"
    results["models"][1]["arch"] = "resnet50"
    text = " ".join(limitations(results))
    assert "densenet121" in text and "resnet50" in text
