"""JUnit XML: one test case per confounder, so any CI system shows the verdict natively."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from audit.atomic import atomic_write_bytes


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
        case = ET.SubElement(
            suite, "testcase", classname="medaudit.shortcut", name=row["confounder"]
        )
        message = row.get("reason", "")
        if row["verdict"] == "fail":
            ET.SubElement(case, "failure", message=message)
            failures += 1
        elif row["verdict"] == "inconclusive":
            ET.SubElement(case, "skipped", message=f"inconclusive: {message}")
            skipped += 1
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    return suite


def write_junit(results: dict[str, Any], path: Path) -> Path:
    tree = junit_tree(results)
    ET.indent(tree)
    atomic_write_bytes(path, ET.tostring(tree, encoding="utf-8", xml_declaration=True))
    return path
