"""Output formats: each renders a finished results document, nothing else.

Every format implements :class:`OutputFormat` and is registered here, in the order they are
written: results.json first (the record every other output renders, written by
``audit.schema.write_results`` only), then junit.xml, report.pdf and the console summary. A
format from outside the package (SARIF, a dashboard upload) calls :func:`register_output_format`
and is written by every finished `check`, `probe` and `demo` with no edit to medaudit. A format
reads the results and the paths already written; it never reads models, data or runs.
"""

from __future__ import annotations

import logging
import sys
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, ClassVar, TextIO

from audit.common.plugins import load_plugins

RESULTS_JSON = "results.json"
log = logging.getLogger(__name__)


class OutputFormat(ABC):
    """One output. ``file_name`` is what it writes into ``--out`` (None: it writes no file)."""

    name: ClassVar[str]
    file_name: ClassVar[str | None] = None

    @abstractmethod
    def write(
        self, results: Mapping[str, Any], out_dir: Path, written: Mapping[str, Path | None]
    ) -> Path | None:
        """Render ``results``; ``written`` holds what the formats before it wrote. Returns the
        file written, or None."""


class ResultsJson(OutputFormat):
    """The record itself, validated against its schema before it is written."""

    name = RESULTS_JSON
    file_name = RESULTS_JSON

    def write(
        self, results: Mapping[str, Any], out_dir: Path, written: Mapping[str, Path | None]
    ) -> Path | None:
        from audit.schema import write_results

        return write_results(dict(results), Path(out_dir) / RESULTS_JSON)


class JUnitXml(OutputFormat):
    """One test case per confounder, for CI systems (an audit's, or a probe's)."""

    name = "junit.xml"
    file_name = "junit.xml"

    def write(
        self, results: Mapping[str, Any], out_dir: Path, written: Mapping[str, Path | None]
    ) -> Path | None:
        from audit.report.junit import write_junit

        return write_junit(dict(results), Path(out_dir) / self.file_name)


class ReportPdf(OutputFormat):
    """The archival PDF/A report with results.json embedded; a renderer failure is one warning
    (results.json and junit.xml stand, and the exit code is still the verdict's)."""

    name = "report.pdf"
    file_name = "report.pdf"

    def write(
        self, results: Mapping[str, Any], out_dir: Path, written: Mapping[str, Path | None]
    ) -> Path | None:
        from audit.report.render import render_report_or_warn

        (Path(out_dir) / self.file_name).unlink(missing_ok=True)  # never an older report standing
        source = written.get(RESULTS_JSON)
        payload = source.read_bytes() if source is not None else None
        return render_report_or_warn(results, Path(out_dir) / self.file_name, results_json=payload)


class ConsoleSummary(OutputFormat):
    """The lines a person reads at the end of a command: files written, then the verdict."""

    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def write(
        self, results: Mapping[str, Any], out_dir: Path, written: Mapping[str, Path | None]
    ) -> Path | None:
        print("\n".join(self.lines(results, written)), file=self.stream or sys.stdout)
        return None

    @staticmethod
    def lines(results: Mapping[str, Any], written: Mapping[str, Path | None]) -> list[str]:
        if results.get("kind") == "probe":
            from audit.probe.outputs import summary_lines

            lines = summary_lines(dict(results))
            lines += [f"results: {written[RESULTS_JSON]}", f"junit:   {written['junit.xml']}"]
            if written.get("report.pdf"):
                lines.append(f"report:  {written['report.pdf']}")
            return lines
        from audit.report.console import audit_lines

        return audit_lines(results, written)


_formats: dict[str, OutputFormat] = {}
_BUILTIN = (RESULTS_JSON, "junit.xml", "report.pdf", "console")


def register_output_format(output: OutputFormat, *, replace: bool = False) -> OutputFormat:
    """Add a format, written after the built-in files and before the console summary."""
    if not isinstance(output, OutputFormat) or not getattr(output, "name", ""):
        raise ValueError("register_output_format takes an OutputFormat with a name")
    if output.name in _formats and not replace:
        raise ValueError(f"an output format named {output.name!r} is already registered")
    _formats[output.name] = output
    return output


def unregister_output_format(name: str) -> None:
    if name in _BUILTIN:
        raise ValueError(f"{name!r} is built in")
    _formats.pop(name, None)


ENTRY_POINT_GROUP = "medaudit.output_formats"
_plugins_loaded = [False]


def output_formats() -> tuple[OutputFormat, ...]:
    """Every format in writing order: results.json, the other files, the console last.
    Formats installed by other distributions (``medaudit.output_formats``) are included."""
    if not _plugins_loaded[0]:
        _plugins_loaded[0] = True
        load_plugins(ENTRY_POINT_GROUP, register_output_format)
    rank = {RESULTS_JSON: 0, "console": 2}
    return tuple(sorted(_formats.values(), key=lambda f: rank.get(f.name, 1)))


def write_finished(
    results: Mapping[str, Any], out_dir: Path, *, skip: Collection[str] = ()
) -> dict[str, Path | None]:
    """Write every registered format but those in ``skip`` (``--no-report`` skips report.pdf),
    results.json first; returns what each wrote. A skipped format's file from an earlier run
    is removed, so nothing in ``--out`` contradicts the new results."""
    if RESULTS_JSON in skip:
        raise ValueError("results.json is the record every output renders; it cannot be skipped")
    out_dir = Path(out_dir)
    written: dict[str, Path | None] = {}
    for output in output_formats():
        if output.name in skip:
            if output.file_name:
                (out_dir / output.file_name).unlink(missing_ok=True)
            written[output.name] = None
        elif output.name in _BUILTIN:
            written[output.name] = output.write(results, out_dir, written)
        else:
            written[output.name] = _write_extra(output, results, out_dir, written)
    return written


def _write_extra(
    output: OutputFormat,
    results: Mapping[str, Any],
    out_dir: Path,
    written: Mapping[str, Path | None],
) -> Path | None:
    """A registered format that fails is one warning: results.json and junit.xml stand and the
    exit code stays the verdict's; its partial file is removed."""
    try:
        return output.write(results, out_dir, written)
    except Exception as exc:  # noqa: BLE001 - a plugin's failure must not change the exit code
        if output.file_name:
            (out_dir / output.file_name).unlink(missing_ok=True)
        log.warning("output %s not written (%s)", output.name[:60], type(exc).__name__)
        return None


def stale_output_files() -> tuple[str, ...]:
    """Files a finished run writes that an unfinished one must not leave standing (results.json
    and junit.xml are replaced by their unfinished versions instead)."""
    return tuple(
        f.file_name
        for f in output_formats()
        if f.file_name not in (None, RESULTS_JSON, "junit.xml")
    )


for _output in (ResultsJson(), JUnitXml(), ReportPdf(), ConsoleSummary()):
    register_output_format(_output)
