"""The exit-code contract and the overall-verdict rule shared by the audit and the probe.

A verdict is one of :data:`VERDICTS`. :func:`overall_verdict` combines several (the probe's per
confounder, or the audit's and the probe's under ``check --probe``): fail if any fails, else
inconclusive if any is, else pass. :func:`exit_code_for` maps the overall verdict to the documented
process exit code.

The audit's decision rule (per confounder, from the reliance gap) lives in
:mod:`audit.analysis.reliance`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from audit.errors import ExitCode

VERDICTS = ("pass", "fail", "inconclusive")


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}; got {value!r}.")
    return int(value)


def overall_verdict(verdicts: Iterable[str]) -> str:
    """Fail if any verdict is fail, else inconclusive if any is, else pass."""
    labels = list(verdicts)
    if not labels:
        raise ValueError("verdicts must hold at least one verdict; got none.")
    unknown = sorted(set(labels) - set(VERDICTS))
    if unknown:
        raise ValueError(f"verdicts must be one of {VERDICTS}; got {unknown}.")
    for outcome in ("fail", "inconclusive"):
        if outcome in labels:
            return outcome
    return "pass"


def exit_code_for(overall: str, inconclusive_exit: int = int(ExitCode.INCONCLUSIVE)) -> int:
    """The documented process exit code: pass 0, fail 1, inconclusive 3 (or ``inconclusive_exit``).

    A pipeline may map inconclusive to 0 or 1 to suit its risk appetite; crashes keep their own
    codes (:class:`audit.errors.ExitCode`), so they are never read as a verdict.
    """
    if overall not in VERDICTS:
        raise ValueError(f"overall must be one of {VERDICTS}; got {overall!r}.")
    _check_int("inconclusive_exit", inconclusive_exit, 0)
    if inconclusive_exit > 255:
        raise ValueError(f"inconclusive_exit must be in [0, 255]; got {inconclusive_exit!r}.")
    codes = {"pass": int(ExitCode.PASS), "fail": int(ExitCode.FAIL)}
    return codes.get(overall, int(inconclusive_exit))
