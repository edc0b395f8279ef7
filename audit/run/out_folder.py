"""The ``--out`` folder while an audit or probe runs: locked, and marked unfinished.

A CI job that publishes junit.xml must never show an earlier audit's green while a later one
crashed or was killed. So before any expensive work the folder is locked against a second
concurrent run, results.json says ``in_progress``, junit.xml holds one errored case, and
report.pdf is removed; only a finished run replaces them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from audit import __version__
from audit.errors import UsageError

LOCK_FILE = ".medaudit.lock"  # kept between runs: only its lock, never its existence, counts


def _lock(handle: Any) -> None:
    """An exclusive, non-blocking lock on the open lock file (released when it is closed)."""
    if os.name == "nt":  # pragma: no cover - exercised on Windows only
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        return
    import fcntl

    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def _unlock(handle: Any) -> None:
    """Release the lock (closing the file releases it too on POSIX; Windows wants it explicit)."""
    try:
        if os.name == "nt":  # pragma: no cover - exercised on Windows only
            import msvcrt

            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    except OSError:  # never locked (a second run refused): nothing to release
        pass


def in_progress_record(
    command: str, what: str, thresholds: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """What results.json says until the run finishes: no verdict, and why."""
    return {
        "kind": "in_progress",
        "tool": {"name": "medaudit", "version": __version__},
        "what": what,
        "command": command,
        "started_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "thresholds": dict(thresholds or {}),
        "status": {"complete": False, "in_progress": True},
        "verdict": None,
    }


def check_out_folder(out_dir: Path) -> None:
    """What a dry run can say about ``--out`` without creating it: not a file, and the nearest
    folder that exists can be written (``os.access``: a read-only mount or missing permission
    is caught before the runs)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError("`out` names a file, not a folder")
    existing = next((p for p in (out_dir, *out_dir.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise UsageError("`out` cannot be created: a part of its path is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError("cannot write to the `out` folder (permission denied)")


@contextlib.contextmanager
def claim_out_folder(
    out_dir: Path, command: str, what: str = "audit", thresholds: Mapping[str, Any] | None = None
) -> Iterator[Path]:
    """Lock ``out_dir`` for this run and mark it unfinished; the lock is released on exit.

    A folder that cannot be created or written is a usage error now, not after the runs."""
    from audit.report.junit import write_unfinished_junit
    from audit.report.outputs import stale_output_files
    from audit.schema import write_results

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError("`out` names a file, not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        handle = open(out_dir / LOCK_FILE, "a+b")  # noqa: SIM115 - held for the whole run
    except OSError as exc:
        raise UsageError(
            f"cannot write to the `out` folder ({exc.strerror or 'not writable'})"
        ) from None
    try:
        try:
            _lock(handle)
        except OSError:
            raise UsageError(
                "another medaudit run is writing to this `out` folder; wait for it to finish or "
                "choose another folder"
            ) from None
        write_results(in_progress_record(command, what, thresholds), out_dir / "results.json")
        write_unfinished_junit(out_dir / "junit.xml", what)
        for name in stale_output_files():  # report.pdf, and every registered format's file
            (out_dir / name).unlink(missing_ok=True)
        yield out_dir
    finally:
        _unlock(handle)
        handle.close()  # the lock file stays: removing it would let two runs lock two files
