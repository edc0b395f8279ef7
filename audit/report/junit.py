"""JUnit XML: one test case per confounder, so any CI system shows the verdict natively."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from audit.atomic import atomic_write_bytes


def add_verdict_case(
    suite: ET.Element, classname: str, name: str, verdict: str, message: str
) -> tuple[int, int]:
    """One test case for one verdict: fail is a failure; inconclusive and not-gated are skipped.

    Returns the (failures, skipped) it added, so callers keep the suite's counters."""
    case = ET.SubElement(suite, "testcase", classname=classname, name=name)
    if verdict == "fail":
        ET.SubElement(case, "failure", message=message)
        return 1, 0
    if verdict == "inconclusive":
        ET.SubElement(case, "skipped", message=f"inconclusive: {message}")
        return 0, 1
    if verdict == "not-gated":
        ET.SubElement(case, "skipped", message=message)
        return 0, 1
    return 0, 0


def junit_tree(results: dict[str, Any]) -> ET.Element:
    verdict = results.get("verdict") or {}
    rows = verdict.get("per_confounder", [])
    suite = ET.Element("testsuite", name="medaudit", tests=str(max(len(rows), 1)))
    failures = errors = skipped = 0
    if not results["status"]["complete"]:
        case = ET.SubElement(suite, "testcase", classname="medaudit.audit", name="complete")
        ET.SubElement(case, "error", message="audit incomplete: some runs failed; no verdict")
        errors += 1
    for row in rows:
        failed, skip = add_verdict_case(
            suite, "medaudit.shortcut", row["confounder"], row["verdict"], row.get("reason", "")
        )
        failures += failed
        skipped += skip
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    return suite


def write_junit(results: dict[str, Any], path: Path) -> Path:
    tree = junit_tree(results)
    ET.indent(tree)
    atomic_write_bytes(path, ET.tostring(tree, encoding="utf-8", xml_declaration=True))
    return path
