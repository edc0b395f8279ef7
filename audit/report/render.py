"""Render results.json to an archival PDF: Jinja2 templates, WeasyPrint, numbers from results only."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from markupsafe import Markup, escape

from audit.common.atomic import atomic_write_bytes
from audit.report.context import report_context
from audit.report.formatting import NOT_RECORDED
from audit.report.pdfa import (
    render_time,
    results_attachment,
    sha256_hex,
    w3c_utc,
    write_pdf_bytes,
)
from audit.report.probe_context import probe_report_context
from audit.schema import results_bytes


def templates_dir() -> Path:
    """Templates ship inside the wheel as audit/templates; a source checkout keeps them at the top."""
    packaged = resources.files("audit").joinpath("templates")
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "templates"


def css_string(value: Any) -> Markup:
    """A value as a quoted CSS string, for the page margin boxes set in the template's <style>."""
    text = "".join(" " if ord(ch) < 0x20 or ord(ch) == 0x7F else ch for ch in str(value))
    text = text.replace("\\", "\\\\").replace('"', '\\"')  # control characters end a CSS string
    text = text.replace("<", "\\3C ").replace(">", "\\3E ")
    return Markup(f'"{text}"')


def cell(value: Any) -> Markup:
    """A table value; the not-recorded marker is set apart so a reader sees the gap."""
    if value == NOT_RECORDED:
        return Markup('<span class="gap">') + escape(NOT_RECORDED) + Markup("</span>")
    return escape(value)


def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["css_string"] = css_string
    env.filters["cell"] = cell
    return env


def is_probe(results: Mapping[str, Any]) -> bool:
    """A standalone probe's results (``medaudit probe``) rather than a full audit's."""
    return results.get("kind") == "probe"


def render_html(
    results: Mapping[str, Any], *, results_sha256: str | None = None, rendered_utc: str = ""
) -> str:
    """The report's HTML: the audit report, or the probe report for a kind-"probe" document."""
    sha = results_sha256 or sha256_hex(results_bytes(results))
    if is_probe(results):
        context = probe_report_context(results, results_sha256=sha, rendered_utc=rendered_utc)
        template = "probe_report.html.j2"
    else:
        context = report_context(results, results_sha256=sha, rendered_utc=rendered_utc)
        template = "report.html.j2"
    return _environment().get_template(template).render(**context)


def render_pdf(results: Mapping[str, Any], *, results_json: bytes | None = None) -> bytes:
    """The PDF/A-3b bytes of either kind; ``results_json`` (the file's exact bytes) is embedded.

    Without it, the results are serialised exactly as the pipeline writes results.json. Either
    way the embedded file must decode to the results being rendered.
    """
    payload = results_bytes(results) if results_json is None else bytes(results_json)
    if json.loads(payload) != json.loads(results_bytes(results)):
        raise ValueError("results_json does not hold the results being rendered")
    moment = render_time()
    html = render_html(results, results_sha256=sha256_hex(payload), rendered_utc=w3c_utc(moment))
    for name in ("weasyprint", "fontTools"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return write_pdf_bytes(html, str(templates_dir()), results_attachment(results, payload, moment))


def render_report(
    results: Mapping[str, Any], path: Path, *, results_json: bytes | None = None
) -> Path:
    """Write the PDF atomically. Pass ``results_json`` when re-rendering a results.json file."""
    atomic_write_bytes(Path(path), render_pdf(results, results_json=results_json))
    return Path(path)


def render_report_or_warn(
    results: Mapping[str, Any], path: Path, *, results_json: bytes | None = None
) -> Path | None:
    """The report, or None and one warning when it cannot be rendered here (WeasyPrint's system
    libraries missing on a GPU node, say): the verdict, results.json and junit.xml are already
    written and the exit code must still be the verdict's, so a CI gate keeps working."""
    try:
        return render_report(results, path, results_json=results_json)
    except Exception as error:  # noqa: BLE001 - any renderer failure becomes one warning
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        logging.getLogger("audit").warning(
            "report.pdf not written (%s); render it where WeasyPrint works: "
            "medaudit report results.json",
            reason[:200],
        )
        return None
