"""The console summary of a finished results document: what `check`, `demo` and `probe` print.

It renders the document only (results.json's contents and the paths of what was written); the
numbers and verdicts come from the analysis, never from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from audit.report.formatting import incomplete_reason, settings_origin_text


def audit_lines(results: Mapping[str, Any], written: Mapping[str, Path | None]) -> list[str]:
    """An audit's console summary: where its files are, then the verdict (never an incomplete
    audit's) and, with ``--probe``, the probe's lines and the combined gate."""
    lines = [f"results: {written['results.json']}"]
    if written.get("report.pdf"):
        lines.append(f"report:  {written['report.pdf']}")
    verdict = results.get("verdict")
    if results.get("illustrative"):
        lines.append(f"({results['illustrative_note']})")
    origin = results.get("settings_origin") or {}
    if origin.get("from_file"):  # a threshold or setting not on the command line: say whose
        lines.append(f"settings: {settings_origin_text(origin)}")
    status = results["status"]
    if not status["complete"]:
        lines.append(f"audit incomplete, no verdict: {incomplete_reason(status)}")
        return [*lines, *_probe_lines(results, None)]
    if verdict is None:
        return lines
    return [*lines, *verdict_lines(results), *_probe_lines(results, verdict["overall"])]


def _interval(record: Mapping[str, Any] | None, name: str) -> str:
    if not record or record.get("estimate") is None:
        return f"{name} n/a"
    return f"{name} = {record['estimate']:+.3f} [{record['ci_low']:+.3f}, {record['ci_high']:+.3f}]"


def verdict_lines(results: Mapping[str, Any]) -> list[str]:
    """The console's verdict: per confounder the gated reliance gap D and, beside it, the
    descriptive o.o.d. AUC gap S; then the overall verdict and what inconclusive counts as."""
    verdict = results["verdict"]
    if verdict.get("measure") != "reliance_gap":  # a schema-0 document: S was the gate
        rows = [
            f"  {r['confounder']:<8} {r['verdict'].upper():<13} {_interval(r.get('gap'), 'S')}"
            for r in verdict["per_confounder"]
        ]
        return [*rows, f"overall: {verdict['overall'].upper()}"]
    lines = []
    for row in verdict["per_confounder"]:
        gated = _interval(row.get("reliance"), "D") if row["gated"] else "D not gated"
        lines.append(
            f"  {row['confounder']:<8} {row['verdict'].upper():<13} {gated}   "
            f"({_interval(row.get('shortcut_gap'), 'S')}, descriptive)"
        )
    lines.append(
        f"overall: {verdict['overall'].upper()}   (D: reliance gap, gated at margin "
        f"{verdict['thresholds']['margin']:g}; S: o.o.d. AUC gap, not gated)"
    )
    gate = results.get("gate") or {}
    if verdict["overall"] == "inconclusive" and gate.get("inconclusive_counted_as"):
        lines.append(
            f"note:    inconclusive counted as {gate['inconclusive_counted_as']} "
            f"(--inconclusive-exit {gate['inconclusive_exit']}){_detectable(results)}"
        )
    if gate.get("override"):
        lines.append(f"note:    {gate['override']}")
    return lines


def _detectable(results: Mapping[str, Any]) -> str:
    """The smallest gap this audit could have detected (from its power record), as a clause."""
    gaps = [
        p["detectable_gap"]
        for p in (results.get("power") or {}).values()
        if isinstance(p, dict) and p.get("detectable_gap") is not None
    ]
    if not gaps:
        return ""
    return f"; the smallest reliance gap this audit could detect is about {max(gaps):.2f}"


def _probe_lines(results: Mapping[str, Any], audit_overall: str | None) -> list[str]:
    """The probe's lines (``check --probe``) and, beside an audit verdict, the combined gate."""
    probe = results.get("probe")
    if not probe:
        return []
    from audit.probe.outputs import verdict_lines as probe_verdict_lines

    found = probe_verdict_lines(probe)
    lines = ["probe (training-free, the model as shipped):", *found[:-1], f"probe {found[-1]}"]
    gate = (results.get("gate") or {}).get("overall")
    if audit_overall is not None and gate:
        lines.append(f"gate:    {gate.upper()} (the worse of the audit's and the probe's verdicts)")
    return lines
