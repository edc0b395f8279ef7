"""The seams where users extend medaudit: data sources, executors and output formats.

Exhaustiveness (pip-audit's habit): every choice the command line offers maps to a registered
implementation, and every registered implementation is offered. Then a data source, an executor
and an output format defined here, outside the package, are registered and used by a whole
`medaudit check` with no edit to medaudit's files.
"""

from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from audit_checks import WORKING_TRAINING, assert_finished
from model_builders import tiny_checkpoints
from test_data_builders import separable_pngs

from audit import cli
from audit.data import registry
from audit.data.items import PlannedImage, SourcePlan
from audit.data.source import DataRequest, DataSource
from audit.report import outputs
from audit.run import executors
from audit.run.executor import Executor, InProcessExecutor, Record
from audit.schema import validate_results

DATA = Path(__file__).parent / "data"


def subcommand(name: str) -> argparse.ArgumentParser:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def choices_of(command: str, flag: str) -> tuple[str, ...]:
    action = next(a for a in subcommand(command)._actions if flag in a.option_strings)
    return tuple(action.choices)


# --- exhaustiveness ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["check", "probe"])
def test_every_source_choice_is_a_registered_file_source_and_every_one_is_offered(command) -> None:
    offered = choices_of(command, "--source")
    file_sources = [s for s in registry.all_sources() if s.reads_files]
    assert sorted(offered) == sorted(s.name for s in file_sources)
    for source in file_sources:
        assert type(source).detect is not DataSource.detect, f"{source.name} cannot be detected"
        assert type(source).plan is not DataSource.plan, f"{source.name} lists no cases"
        assert source.title and source.looked_for and source.modalities
    generated = [s for s in registry.all_sources() if not s.reads_files]
    assert [s.name for s in generated] == ["synthetic"], "--synthetic is the one made source"
    assert type(generated[0]).generate is not DataSource.generate


def test_built_in_sources_are_named_without_importing_them() -> None:
    """The command line's choices cost no pandas, pydicom or scikit-learn import, and the
    declared names agree with the implementations."""
    import subprocess
    import sys

    probe = (
        "import sys; from audit.data.registry import file_source_names; "
        "from audit.run.executors import executor_names; names = file_source_names(); "
        "executor_names(); heavy = [m for m in ('pandas', 'pydicom', 'sklearn', 'torch') "
        "if m in sys.modules]; print(','.join(names), heavy)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [
        "nih-cxr14,chexpert,mimic-cxr-jpg,padchest,lidc-idri,manifest",
        "[]",
    ]
    assert set(registry.file_source_names()) >= {"nih-cxr14", "lidc-idri", "manifest"}
    for source in registry.all_sources():
        assert registry.get_source(source.name) is source
    with pytest.raises(ValueError, match="already registered"):
        registry.register_source(type(registry.get_source("manifest"))())
    with pytest.raises(ValueError, match="built in"):
        registry.unregister_source("nih-cxr14")


def test_only_nih_holds_the_study_lists_and_official_lists() -> None:
    from audit.constants import PROTOCOLS

    for protocol in PROTOCOLS:
        assert [s.name for s in registry.sources_with_protocol(protocol)] == ["nih-cxr14"]
    lists = registry.official_lists_of("nih-cxr14")
    assert lists is not None and lists.test == "nih/test"
    assert registry.official_lists_of("manifest") is None


@pytest.mark.parametrize("command", ["check", "demo"])
def test_every_executor_choice_is_registered_and_every_kind_is_offered(command) -> None:
    assert choices_of(command, "--executor") == executors.executor_names()
    assert set(executors.executor_names()) >= {"local", "ray"}
    for kind in executors.executor_kinds():
        assert kind.summary and callable(kind.build) and callable(kind.resolve_devices)


def test_each_built_in_kind_builds_its_executor() -> None:
    local = executors.build_executor("local", ("cpu",))
    assert isinstance(local, InProcessExecutor) and local.device == "cpu"
    from audit.run.local import LocalProcessesExecutor

    assert isinstance(executors.build_executor("local", ("cpu", "cpu")), LocalProcessesExecutor)
    pytest.importorskip("ray")
    from audit.run.ray_cluster import RayExecutor

    ray = executors.build_executor("ray", ("cpu",), {"ray_cpus_per_task": 2})
    assert isinstance(ray, RayExecutor) and ray.options.cpus_per_task == 2


def test_an_option_of_one_executor_is_refused_with_another() -> None:
    from audit.errors import UsageError
    from audit.resolve.devices import ExecutorChoice

    with pytest.raises(UsageError, match="`ray_address` works with `executor` ray only"):
        ExecutorChoice("local", {"ray_address": "head:6379"})
    assert ExecutorChoice("ray", {"ray_address": "head:6379"}).options == {
        "ray_address": "head:6379"
    }


def test_every_output_format_renders_a_finished_document_and_no_report_skips_only_the_pdf(
    tmp_path, capsys
) -> None:
    names = [f.name for f in outputs.output_formats()]
    assert names[0] == "results.json" and names[-1] == "console"
    assert set(names) >= {"results.json", "junit.xml", "report.pdf", "console"}
    results = json.loads((DATA / "report_results.json").read_text())
    (tmp_path / "report.pdf").write_bytes(b"an earlier audit's report")
    written = outputs.write_finished(results, tmp_path, skip=["report.pdf"])
    assert written["report.pdf"] is None and not (tmp_path / "report.pdf").exists()
    validate_results(json.loads(written["results.json"].read_text()))
    suite = ET.parse(written["junit.xml"]).getroot()
    assert suite.tag == "testsuite" and int(suite.get("tests")) >= 1
    printed = capsys.readouterr().out
    assert f"results: {written['results.json']}" in printed and "overall:" in printed
    with pytest.raises(ValueError, match="cannot be skipped"):
        outputs.write_finished(results, tmp_path, skip=["results.json"])


def test_the_pdf_format_embeds_the_results_json_it_renders(tmp_path) -> None:
    from pypdf import PdfReader

    results = json.loads((DATA / "golden" / "probe_results.json").read_text())
    written = outputs.write_finished(results, tmp_path, skip=["console"])
    assert written["report.pdf"] is not None, "WeasyPrint could not render here (see the warning)"
    reader = PdfReader(written["report.pdf"])
    embedded = reader.attachments["results.json"][0]
    assert embedded == written["results.json"].read_bytes()


# --- a data source, an executor and an output format from outside the package ----------------


class TsvFolderSource(DataSource):
    """A hospital export: ``cases.tsv`` (file, label, patient) beside the PNGs."""

    name = "tsv-folder"
    title = "a TSV-listed folder"
    modalities = ("cxr",)
    looked_for = "cases.tsv (a TSV-listed folder)"
    detect_order = 5

    def detect(self, path: Path) -> str | None:
        return "cases.tsv" if path.is_dir() and (path / "cases.tsv").is_file() else None

    def plan(self, request: DataRequest) -> SourcePlan:
        rows = [line.split("\t") for line in (request.path / "cases.tsv").read_text().split("\n")]
        entries = tuple(
            PlannedImage(request.path / name, ref=name, patient=patient, label=int(label))
            for name, label, patient in (row for row in rows if len(row) == 3)
        )
        return SourcePlan(self.name, entries, "a TSV-listed folder", {"rows": len(entries)})


class ReversedExecutor(Executor):
    """Runs the cells last to first in this process: the verdict must not depend on order."""

    name = "reversed"

    def __init__(self) -> None:
        self.inner = InProcessExecutor("cpu")
        self.cells_run = 0

    def run(self, cells: Sequence[list], inputs: Any, record: Record) -> None:
        self.cells_run += len(cells)
        self.inner.run(list(reversed(cells)), inputs, record)

    def environment(self, deterministic: bool) -> dict[str, Any]:
        return {**self.inner.environment(deterministic), "executor": self.name}


class VerdictLine(outputs.OutputFormat):
    """A one-line text file a dashboard could read."""

    name = "verdict.txt"
    file_name = "verdict.txt"

    def write(
        self, results: Mapping[str, Any], out_dir: Path, written: Mapping[str, Path | None]
    ) -> Path | None:
        path = Path(out_dir) / self.file_name
        path.write_text(f"{results['verdict']['overall']} {written['results.json'].name}\n")
        return path


@pytest.fixture
def extensions():
    built: list[ReversedExecutor] = []

    def build(devices: tuple[str, ...], options: Mapping[str, Any]) -> Executor:
        built.append(ReversedExecutor())
        return built[-1]

    registry.register_source(TsvFolderSource())
    executors.register_executor(executors.ExecutorKind("reversed", "cells last to first", build))
    outputs.register_output_format(VerdictLine())
    yield built
    registry.unregister_source("tsv-folder")
    executors.unregister_executor("reversed")
    outputs.unregister_output_format("verdict.txt")


@pytest.fixture(scope="module")
def tsv_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export")
    made = separable_pngs(root, n=96, name="scan{n}.png")
    lines = [f"{name}\t{label}\tpatient{n}" for n, (name, label) in enumerate(made)]
    (root / "cases.tsv").write_text("\n".join(lines))
    return root


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> tuple[Path, Path]:
    return tiny_checkpoints(tmp_path_factory.mktemp("models"))


def audit(models: tuple[Path, Path], data: Path, out: Path, cache: Path, *more: str) -> dict:
    user, reference = models
    code = cli.main([
        "--quiet", "check", str(user), "--modality", "cxr", "--data", str(data),
        "--reference", str(reference), "--out", str(out), "--cache-dir", str(cache),
        "--confounders", "tag", "--levels", "0,1", *WORKING_TRAINING, "--deterministic",
        "--no-report", *more,
    ])  # fmt: skip
    results = assert_finished(code, out)
    assert results["controls"]["passed"], "a working experiment: its verdict is compared"
    return results


def test_a_source_executor_and_format_from_outside_audit_end_to_end(
    extensions, tsv_folder, tiny_models, tmp_path, capsys
) -> None:
    cache = tmp_path / "cache"
    code = cli.main(["check", str(tiny_models[0]), "--modality", "cxr", "--data",
                     str(tsv_folder), "--dry-run", "--json", "--cache-dir", str(cache)])  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["source"] == "tsv-folder" and summary["detected"] is True
    assert summary["images"] == 96 and summary["patients"] == 96

    theirs = audit(tiny_models, tsv_folder, tmp_path / "a", cache, "--executor", "reversed")
    assert extensions and extensions[0].cells_run == 4, "the audit's cells ran on our executor"
    assert theirs["data"]["source"] == "tsv-folder" and theirs["status"]["complete"]
    assert theirs["environment"]["executor"] == "reversed"
    assert (tmp_path / "a" / "verdict.txt").read_text().split() == [
        theirs["verdict"]["overall"],
        "results.json",
    ]

    ours = audit(tiny_models, tsv_folder, tmp_path / "b", cache, "--source", "tsv-folder")
    assert {r["key"]: r["auc"] for r in ours["runs"]} == {
        r["key"]: r["auc"] for r in theirs["runs"]
    }
    assert ours["verdict"] == theirs["verdict"], "the same plan gives the same verdict anywhere"


# --- installed plugins: entry points ----------------------------------------------------------


class NamedAsItsEntryPoint(TsvFolderSource):
    name = "tsv-plugin"


def test_installed_plugins_are_offered_by_name_and_loaded_on_first_use(monkeypatch, caplog) -> None:
    """A distribution lists its source, executor kind and format under medaudit's groups; a
    broken one, or one whose name differs from its entry point's, is one warning and skipped."""
    from importlib.metadata import EntryPoint

    from audit.common import plugins

    here = __name__
    points = {
        registry.ENTRY_POINT_GROUP: [
            EntryPoint("tsv-plugin", f"{here}:NamedAsItsEntryPoint", registry.ENTRY_POINT_GROUP),
            EntryPoint("misnamed", f"{here}:TsvFolderSource", registry.ENTRY_POINT_GROUP),
            EntryPoint("broken", "no_such_module_here:Source", registry.ENTRY_POINT_GROUP),
        ],
        executors.ENTRY_POINT_GROUP: [
            EntryPoint("reversed-plugin", f"{here}:REVERSED_KIND", executors.ENTRY_POINT_GROUP)
        ],
        outputs.ENTRY_POINT_GROUP: [
            EntryPoint("verdict.txt", f"{here}:VerdictLine", outputs.ENTRY_POINT_GROUP)
        ],
    }
    monkeypatch.setattr(plugins, "entry_points", lambda group: points.get(group, []))
    monkeypatch.setitem(registry._state, "plugins", False)
    monkeypatch.setattr(executors, "_plugins_loaded", [False])
    monkeypatch.setattr(outputs, "_plugins_loaded", [False])
    try:
        assert "tsv-plugin" in subcommand("check")._option_string_actions["--source"].choices
        assert "reversed-plugin" in choices_of("check", "--executor")
        assert registry.get_source("tsv-plugin").name == "tsv-plugin"
        assert executors.get_executor_kind("reversed-plugin").summary == "cells last to first"
        assert "verdict.txt" in [f.name for f in outputs.output_formats()]
        assert "misnamed" not in [s.name for s in registry.all_sources()]
        warned = " ".join(r.getMessage() for r in caplog.records)
        assert "plugin misnamed" in warned and "plugin broken" in warned
        assert "no_such_module_here" not in warned, "the type of the failure only, no detail"
    finally:
        registry._registered.pop("tsv-plugin", None)
        executors._kinds.pop("reversed-plugin", None)
        outputs._formats.pop("verdict.txt", None)


def _build_reversed(devices: tuple[str, ...], options: Mapping[str, Any]) -> Executor:
    return ReversedExecutor()


REVERSED_KIND = executors.ExecutorKind("reversed-plugin", "cells last to first", _build_reversed)


class SloppyExecutor(ReversedExecutor):
    """Reports every run twice, one run nobody asked for, and drops the last cell."""

    name = "sloppy"

    def run(self, cells: Sequence[list], inputs: Any, record: Record) -> None:
        from audit.run.cells import RunFailure

        def twice(item: Any) -> None:
            record(item)
            record(item)

        record(RunFailure("f" * 64, "a run of another audit"))
        self.inner.run(list(cells)[:-1], inputs, twice)


def test_an_executor_that_repeats_or_drops_runs_never_completes_the_audit(
    tsv_folder, tiny_models, tmp_path, capsys
) -> None:
    executors.register_executor(
        executors.ExecutorKind("sloppy", "repeats and drops", lambda d, o: SloppyExecutor())
    )
    registry.register_source(TsvFolderSource())
    try:
        user, reference = tiny_models
        code = cli.main([
            "--quiet", "check", str(user), "--modality", "cxr", "--data", str(tsv_folder),
            "--reference", str(reference), "--out", str(tmp_path / "out"), "--cache-dir",
            str(tmp_path / "cache"), "--confounders", "tag", "--levels", "0,1", "--folds", "2",
            "--epochs", "1", "--max-steps", "1", "--batch-size", "8", "--input-size", "32",
            "--image-size", "32", "--resamples", "100", "--no-report", "--executor", "sloppy",
        ])  # fmt: skip
    finally:
        executors.unregister_executor("sloppy")
        registry.unregister_source("tsv-folder")
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert code == 4 and results["status"]["complete"] is False
    assert results["status"]["runs_total"] == 8 and results["status"]["runs_done"] == 6
    assert results["status"]["runs_failed"] == 2, "the dropped cell's two runs are failures"
    err = capsys.readouterr().err
    assert err.count("not awaited; ignored") == 7, "six repeats and one stranger, none counted"
    assert err.count("executor returned no result for this run") == 2


class Exploding(outputs.OutputFormat):
    name = "exploding.txt"
    file_name = "exploding.txt"

    def write(
        self, results: Mapping[str, Any], out_dir: Path, written: Mapping[str, Path | None]
    ) -> Path | None:
        (Path(out_dir) / self.file_name).write_text("half")
        raise RuntimeError("/home/PATIENT_NAME/secret")


def test_a_failing_registered_format_is_one_warning_and_no_stale_file_stands(
    tmp_path, caplog
) -> None:
    from audit.run.out_folder import claim_out_folder

    outputs.register_output_format(Exploding())
    try:
        (tmp_path / "exploding.txt").write_text("an earlier audit's PASS")
        with claim_out_folder(tmp_path, "medaudit check", "audit", {"margin": 0.05}):
            assert not (tmp_path / "exploding.txt").exists(), "gone while the audit runs"
        results = json.loads((DATA / "report_results.json").read_text())
        written = outputs.write_finished(results, tmp_path, skip=["report.pdf", "console"])
    finally:
        outputs.unregister_output_format("exploding.txt")
    assert written["exploding.txt"] is None and not (tmp_path / "exploding.txt").exists()
    assert written["junit.xml"] is not None and "output exploding.txt not written" in caplog.text
    assert "PATIENT_NAME" not in caplog.text
