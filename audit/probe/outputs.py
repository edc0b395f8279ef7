"""The probe's console lines. Its results are a document of kind "probe", validated against
``probe.schema.json`` and written, like an audit's, by the output formats of
``audit.report.outputs`` (results.json, junit.xml, report.pdf, this summary): a full audit's
schema requires runs, folds and a reference that a training-free probe does not have.
``check --probe`` embeds the same document under the audit's optional ``probe`` key.
"""

from __future__ import annotations

from typing import Any


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
