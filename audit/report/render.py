"""Render results.json to a PDF with Jinja2 and WeasyPrint; the numbers come from results only."""

from __future__ import annotations

import base64
from importlib import resources
from pathlib import Path
from typing import Any

from audit.atomic import atomic_write_bytes
from audit.report.plots import ROLE_COLOURS, ROLE_LABELS, auc_curves_svg


def templates_dir() -> Path:
    """Templates ship inside the wheel as audit/templates; a source checkout keeps them at the top."""
    packaged = resources.files("audit").joinpath("templates")
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "templates"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def report_context(results: dict[str, Any]) -> dict[str, Any]:
    levels = results["protocol"]["levels"]
    sections = []
    for conf in results["protocol"]["confounders"]:
        auc = results["auc"].get(conf["name"], {})
        svg = auc_curves_svg(auc, levels, f"{conf['name']} ({conf['category']})") if auc else ""
        sections.append(
            {
                "confounder": conf,
                "auc": auc,
                "plot": "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
                if svg
                else None,
            }
        )
    verdict_rows = {
        row["confounder"]: row for row in (results.get("verdict") or {}).get("per_confounder", [])
    }
    return {
        "r": results,
        "levels": levels,
        "sections": sections,
        "verdicts": verdict_rows,
        "fmt": _fmt,
        "role_colours": ROLE_COLOURS,
        "role_labels": ROLE_LABELS,
    }


def render_html(results: dict[str, Any]) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template("report.html.j2").render(**report_context(results))


def render_report(results: dict[str, Any], path: Path) -> Path:
    """Write the PDF atomically; WeasyPrint is imported only here."""
    import logging

    import weasyprint

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    html = weasyprint.HTML(string=render_html(results), base_url=str(templates_dir()))
    atomic_write_bytes(Path(path), html.write_pdf())
    return Path(path)
