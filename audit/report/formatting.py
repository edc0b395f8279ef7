"""How the reports write numbers and recorded values: one set of formatters for both reports."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

NOT_RECORDED = "not recorded in this audit"
MODALITY_LABELS = {"cxr": "chest X-ray", "ct": "CT"}


def as_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def fmt_auc(value: Any) -> str:
    number = as_number(value)
    return "n/a" if number is None else f"{number:.3f}"


def fmt_signed(value: Any) -> str:
    number = as_number(value)
    return "n/a" if number is None else f"{number:+.3f}"


def fmt_p(value: Any) -> str:
    number = as_number(value)
    return "n/a" if number is None else f"{number:.3f}"


def fmt_level(value: Any) -> str:
    number = as_number(value)
    return "n/a" if number is None else f"{number:g}"


def fmt_interval(low: Any, high: Any, *, signed: bool = True) -> str:
    """An interval as the reports write it: signed for gaps and shifts, unsigned for rates."""
    if as_number(low) is None or as_number(high) is None:
        return "n/a"
    number = fmt_signed if signed else fmt_auc
    return f"[{number(low)}, {number(high)}]"


def fmt_range(low: Any, high: Any) -> str:
    """An unsigned interval, for rates and AUCs."""
    return fmt_interval(low, high, signed=False)


def fmt_small(value: Any) -> str:
    """A variance or other small positive quantity: three significant digits, never 0.000."""
    number = as_number(value)
    return "n/a" if number is None else f"{number:.3g}"


def fmt_half_width(value: Any) -> str:
    """The half-width of an interval, as the reports write a +- spread."""
    number = as_number(value)
    return "n/a" if number is None else f"\u00b1{number:.3f}"


def fmt_df(value: Any, *, no_runs_variance: bool = False) -> str:
    """Effective degrees of freedom; results.json stores an infinite df as null, which the caller
    marks when there was no between-run variance to estimate."""
    number = as_number(value)
    if number is None:
        return "\u221e (no between-run variance)" if no_runs_variance else "n/a"
    return f"{number:.3g}"


def fmt_breaking_point(value: Any) -> str:
    number = as_number(value)
    return "not reached" if number is None else f"p = {number:g}"


def fmt_value(value: Any) -> str:
    """A protocol or environment value as a reader expects it: lists joined, booleans in words."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(fmt_value(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return "; ".join(f"{k} = {fmt_value(v)}" for k, v in value.items()) if value else "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def or_not_recorded(value: Any) -> str:
    return NOT_RECORDED if value is None or value == {} else fmt_value(value)


def fmt_percent(confidence: Any) -> str:
    number = as_number(confidence)
    return "n/a" if number is None else f"{number * 100:g} %"


def commit_text(prov: Mapping[str, Any]) -> str:
    """The tool's commit as recorded; an explicit null means "recorded, but there was none"."""
    commit = prov.get("tool_commit")
    if isinstance(commit, Mapping) and commit.get("commit"):
        return f"{commit['commit']} ({commit.get('how', 'source unknown')})"
    if "tool_commit" in prov:
        return "none (not installed from a checkout or a VCS URL)"
    return NOT_RECORDED


_SHOWN_FILE_SETTINGS = 12


def settings_origin_text(origin: Mapping[str, Any] | None, *, brief: bool = False) -> str | None:
    """Where the settings came from, in one line; None for a document that does not record it.

    A file medaudit found by itself is named with every value it set: a gate reader must see a
    margin that a cloned repository's pyproject.toml loosened. ``brief`` (page 1) is None unless
    a file set something, and counts the command line's settings instead of naming them;
    results.json has them all."""
    if not origin:
        return None
    from_file = dict(origin.get("from_file") or {})
    flags = list(origin.get("from_flags") or [])
    if brief and not from_file:
        return None
    found = str(origin.get("how") or "").startswith("found")
    parts = []
    if from_file:
        shown = "; ".join(
            f"{k} = {fmt_value(v)}" for k, v in list(from_file.items())[:_SHOWN_FILE_SETTINGS]
        )
        more = len(from_file) - _SHOWN_FILE_SETTINGS
        shown += f"; and {more} more" if more > 0 else ""
        if brief:
            how = "found, not named by the user" if found else origin["how"]
            parts.append(f"{origin['file']} ({how}): {shown}")
        else:
            caution = " (not named by the user)" if found else ""
            parts.append(f"{origin['file']}, {origin['how']}{caution}: {shown}")
    elif origin.get("file"):
        parts.append(f"{origin['file']} ({origin['how']}) sets nothing")
    if flags and brief:
        parts.append(f"{len(flags)} from the command line; the rest default")
        return "; ".join(parts)
    if flags:
        parts.append(f"command line: {', '.join(flags)}")
    parts.append("every other setting: its documented default")
    return "; ".join(parts)


def incomplete_reason(status: Mapping[str, Any]) -> str:
    """Why an audit gave no verdict: the reason results.json records (runs missing, or a
    control that failed), or for a document written before it was recorded, the run count."""
    if status.get("reason"):
        return str(status["reason"])
    return runs_missing_text(status.get("runs_failed", "some"), status.get("runs_total", "its"))


def runs_missing_text(missing: object, total: object) -> str:
    """The one sentence for an audit whose runs did not all finish (results.json and renderers)."""
    return (
        f"{missing} of {total} runs failed or are missing; an incomplete audit decides nothing: "
        "run the same command again to resume"
    )
