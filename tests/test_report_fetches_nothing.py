"""The renderer fetches nothing but medaudit's own files: a results.json crafted to request a URL
(a string breaking out of CSS, an "example PNG" that is really SVG) and to embed a local file
makes no request and embeds nothing; without the restricted fetcher the same document does."""

from __future__ import annotations

import base64
import copy
import http.server
import io
import json
import threading
from pathlib import Path

import pytest
from pypdf import PdfReader

from audit.report import pdfa
from audit.report.render import css_string, render_pdf

FIXTURE = Path(__file__).parent / "data" / "report_results.json"


@pytest.fixture
def server():
    """A web server on 127.0.0.1 that counts the requests it gets."""
    hits: list[str] = []

    class Counting(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()


def _crafted(base: str, secret: Path) -> dict:
    results = copy.deepcopy(json.loads(FIXTURE.read_text(encoding="utf-8")))
    results["illustrative"] = True
    results["illustrative_note"] = f'x\f}} @page {{ background: url("{base}/css") }} p {{'
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="40" height="40"><image href="{base}/svg" width="10" height="10"/>'
        f'<image xlink:href="{secret.as_uri()}" width="10" height="10"/></svg>'
    )
    for example in (results.get("examples") or {}).values():
        example["clean"] = base64.b64encode(svg.encode()).decode()
    assert results.get("examples"), "the fixture must carry example images"
    return results


def _embedded_text(pdf: bytes) -> str:
    reader = PdfReader(io.BytesIO(pdf))
    return " ".join(page.extract_text() for page in reader.pages)


def test_a_crafted_results_file_fetches_no_url_and_embeds_no_file(server, tmp_path) -> None:
    base, hits = server
    secret = tmp_path / "secret.svg"
    secret.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        "<text y='9'>CANARY4242</text></svg>"
    )
    results = _crafted(base, secret)
    pdf = render_pdf(results)
    assert hits == [], "the restricted fetcher made a request"
    assert b"CANARY4242" not in pdf and "CANARY4242" not in _embedded_text(pdf)


def test_the_same_document_would_fetch_without_the_restriction(
    server, tmp_path, monkeypatch
) -> None:
    """The crafted document is a real attack: WeasyPrint's own fetcher requests the URLs."""
    from weasyprint.urls import URLFetcher

    base, hits = server
    monkeypatch.setattr(pdfa, "own_files_fetcher", lambda root: URLFetcher())
    render_pdf(_crafted(base, tmp_path / "missing.svg"))
    assert hits, "the crafted document no longer exercises the fetcher; make it fetch again"


def test_control_characters_cannot_end_a_css_string() -> None:
    text = str(css_string('a\f"} @import url(x); p {\r\n'))
    assert text.startswith('"') and text.endswith('"')
    inner = text[1:-1]
    assert not any(ord(ch) < 0x20 for ch in inner)
    assert '"' not in inner.replace('\\"', "")


def test_report_refuses_a_results_file_with_nan(tmp_path, capsys) -> None:
    from audit import cli

    text = FIXTURE.read_text(encoding="utf-8").replace('"margin": 0.05', '"margin": NaN', 1)
    assert "NaN" in text
    path = tmp_path / "results.json"
    path.write_text(text, encoding="utf-8")
    assert cli.main(["report", str(path), "--out", str(tmp_path / "r.pdf")]) == 2
    err = capsys.readouterr().err
    assert "NaN" in err and "strict JSON" in err and "Traceback" not in err
    assert not (tmp_path / "r.pdf").exists()


def test_an_incomplete_audit_never_renders_or_reports_a_verdict() -> None:
    """A results.json whose status is incomplete but that carries a verdict (crafted, or from a
    broken writer) shows no verdict: page 1 says incomplete, JUnit has an error and no pass."""
    import xml.etree.ElementTree as ET

    from audit.report.junit import junit_tree
    from audit.report.render import render_html

    results = copy.deepcopy(json.loads(FIXTURE.read_text(encoding="utf-8")))
    assert results["verdict"] is not None
    results["status"]["complete"] = False
    results["status"]["runs_failed"] = 1
    html = render_html(results)
    assert "No verdict: the audit is incomplete" in html
    assert "Overall verdict:" not in html
    suite = junit_tree(results)
    assert suite.get("errors") == "1" and suite.get("failures") == "0"
    names = [case.get("name") for case in suite.iter("testcase")]
    assert names == ["complete"], ET.tostring(suite)
