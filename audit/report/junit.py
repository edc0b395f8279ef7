"""JUnit XML: one test case per confounder, so any CI system shows the verdict natively."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from audit.common.atomic import atomic_write_bytes
from audit.report.formatting import incomplete_reason


def add_verdict_cases(
    suite: ET.Element, classname: str, rows: Iterable[tuple[str, str, str]]
) -> tuple[int, int]:
    """One test case per (name, verdict, reason): fail is a failure; inconclusive, not tested
    and not gated are skipped (the audit's schema-1 rows spell it "not gated", the probe's
    "not-gated"): only a pass reads as a passed case. Returns the (failures, skipped) added."""
    failures = skipped = 0
    for name, verdict, message in rows:
        case = ET.SubElement(suite, "testcase", classname=classname, name=name)
        if verdict == "fail":
            ET.SubElement(case, "failure", message=message)
            failures += 1
        elif verdict in ("inconclusive", "not tested", "not-gated", "not gated"):
            said = message.lower().startswith(verdict)
            prefix = (
                f"{verdict}: " if verdict in ("inconclusive", "not tested") and not said else ""
            )
            ET.SubElement(case, "skipped", message=prefix + message)
            skipped += 1
    return failures, skipped


def _probe_tree(results: dict[str, Any]) -> ET.Element:
    """One test case per confounder: fail is a failure, inconclusive and not-gated are skipped."""
    rows = results["confounders"]
    suite = ET.Element("testsuite", name="medaudit.probe", tests=str(len(rows)))
    failures, skipped = add_verdict_cases(
        suite, "medaudit.probe", [(r["name"], r["verdict"], r.get("reason", "")) for r in rows]
    )
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", str(skipped))
    timing = results.get("timing", {}).get("seconds_total")
    if timing is not None:
        suite.set("time", f"{timing:.3f}")
    return suite


def junit_tree(results: dict[str, Any]) -> ET.Element:
    """An audit's cases (and its probe's), or a standalone probe's (``kind`` "probe")."""
    if results.get("kind") == "probe":
        return _probe_tree(results)
    verdict = (results.get("verdict") or {}) if results["status"]["complete"] else {}
    rows = verdict.get("per_confounder", [])  # an incomplete audit's verdict is never shown
    suite = ET.Element("testsuite", name="medaudit", tests=str(max(len(rows), 1)))
    errors = 0
    if not results["status"]["complete"]:
        case = ET.SubElement(suite, "testcase", classname="medaudit.audit", name="complete")
        ET.SubElement(
            case,
            "error",
            message=f"audit incomplete, no verdict: {incomplete_reason(results['status'])}",
        )
        errors += 1
    failures, skipped = add_verdict_cases(
        suite,
        "medaudit.shortcut",
        [(r["confounder"], r["verdict"], r.get("reason") or "") for r in rows],
    )
    probe = results.get("probe")
    if probe:  # check --probe: the probe's verdicts beside the audit's
        rows = probe["confounders"]
        more = add_verdict_cases(
            suite, "medaudit.probe", [(r["name"], r["verdict"], r.get("reason", "")) for r in rows]
        )
        failures, skipped = failures + more[0], skipped + more[1]
        suite.set("tests", str(int(suite.get("tests", "0")) + len(rows)))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    return suite


def write_junit(results: dict[str, Any], path: Path) -> Path:
    tree = junit_tree(results)
    ET.indent(tree)
    atomic_write_bytes(path, ET.tostring(tree, encoding="utf-8", xml_declaration=True))
    return path


def write_unfinished_junit(path: Path, what: str = "audit") -> Path:
    """One errored case while a run is unfinished: a CI job publishing junit.xml shows red until
    the run's own results replace it (an earlier run's green never stands for this one)."""
    suite = ET.Element("testsuite", name="medaudit", tests="1", failures="0", errors="1")
    suite.set("skipped", "0")
    case = ET.SubElement(suite, "testcase", classname=f"medaudit.{what}", name="finished")
    ET.SubElement(
        case, "error", message=f"the {what} has not finished (it is running, or was stopped)"
    )
    ET.indent(suite)
    atomic_write_bytes(path, ET.tostring(suite, encoding="utf-8", xml_declaration=True))
    return path
