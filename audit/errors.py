"""Exit codes and the exceptions that map onto them.

The exit code is a contract with release pipelines, so it lives in one place and a crash can never
be mistaken for a verdict.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    PASS = 0
    FAIL = 1
    USAGE = 2
    INCONCLUSIVE = 3
    INTERNAL = 4


class MedauditError(Exception):
    """Base class: an error whose message is fit to show a user on one line."""

    exit_code: ExitCode = ExitCode.INTERNAL


class UsageError(MedauditError):
    """Bad command line, settings or input data: the user can fix it."""

    exit_code = ExitCode.USAGE
