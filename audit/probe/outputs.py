"""What a probe writes into ``--out``: results.json (its own schema) and junit.xml.

The probe's results are a document of kind "probe", validated against ``probe.schema.json``: a
full audit's schema requires runs, folds and a reference that a training-free probe does not have.
``check --probe`` can later embed the same document under the audit's optional ``probe`` key.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from audit.common.atomic import atomic_write_bytes
from audit.report.junit import add_verdict_cases
from audit.schema import write_results


def junit_tree(results: dict[str, Any]) -> ET.Element:
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


def write_outputs(results: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Validate, then write results.json (the one writer) and junit.xml; returns their paths."""
    results_path = write_results(results, out_dir / "results.json")
    junit_path = out_dir / "junit.xml"
    tree = junit_tree(results)
    ET.indent(tree)
    atomic_write_bytes(junit_path, ET.tostring(tree, encoding="utf-8", xml_declaration=True))
    return results_path, junit_path


def summary_lines(results: dict[str, Any]) -> list[str]:
    """The console summary: one line per confounder, then the overall verdict."""
    model, timing = results["model"], results["timing"]
    runtime = model["runtime"]
    where = ", ".join(runtime["providers_used"]) or runtime["device"]
    lines = [
        f"model:   {model['file']} ({model['format']}, {runtime['backend']} on {where})",
        f"images:  {results['data']['selection']}; threshold "
        f"{results['thresholds']['operating_threshold']:.4g} "
        f"({results['thresholds']['operating_threshold_source']})",
    ]
    if results["illustrative"]:
        lines.append(f"({results['illustrative_note']})")
    lines.extend(verdict_lines(results)[:-1])
    rate = timing.get("images_per_second")
    speed = f", {rate:.1f} images/s in the model" if rate else ""
    lines.append(
        f"overall: {results['verdict']['overall'].upper()} "
        f"({timing['images_scored']} images scored in {timing['seconds_total']:.1f} s{speed})"
    )
    return lines


def verdict_lines(results: dict[str, Any]) -> list[str]:
    """One line per confounder with its measures, then the overall verdict."""
    lines = []
    for row in results["confounders"]:
        if row["kind"] == "pixel":
            shift, flips = row["mean_shift"], row["flip_rate"]
            detail = (
                f"shift {shift['estimate']:+.3f} [{shift['ci_low']:+.3f}, {shift['ci_high']:+.3f}]"
                f"  flips {flips['estimate']:.3f} [{flips['ci_low']:.3f}, {flips['ci_high']:.3f}]"
            )
        else:
            gap = row["auc_gap"]
            detail = (
                f"AUC F-M {gap['estimate']:+.3f} [{gap['ci_low']:+.3f}, {gap['ci_high']:+.3f}]"
                if gap
                else "AUC by sex not available"
            )
        lines.append(f"  {row['name']:<8} {row['verdict'].upper():<13} {detail}")
        if row.get("placebo"):
            placebo, excess = row["placebo"], row["placebo"]["excess_flip_rate"]
            lines.append(
                f"  {'':<8} {'placebo':<13} flips {placebo['flip_rate']['estimate']:.3f}; "
                f"excess {excess['estimate']:+.3f} [{excess['ci_low']:+.3f}, "
                f"{excess['ci_high']:+.3f}] (descriptive)"
            )
    lines.append(f"overall: {results['verdict']['overall'].upper()}")
    return lines
