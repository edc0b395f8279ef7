"""The command line's contract: exit codes and one-line errors, never a bare traceback."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
from audit_checks import assert_finished

from audit import cli, commands
from audit.errors import UsageError


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_lists_every_subcommand(capsys) -> None:
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0
    for name in ("check", "demo", "report", "inspect", "probe", "reference"):
        assert name in out
    assert "exit codes" in out


@pytest.mark.parametrize("sub", ["check", "demo", "report", "inspect", "probe", "reference"])
def test_each_subcommand_has_help(sub, capsys) -> None:
    code, out, _ = run_main([sub, "--help"], capsys)
    assert code == 0 and "usage: medaudit" in out


def test_missing_arguments_exit_2(capsys) -> None:
    code, _, err = run_main(["check", "model.pt"], capsys)
    assert code == 2
    assert "required" in err and "--modality" in err


def test_probe_without_modality_is_a_usage_error(capsys) -> None:
    code, _, err = run_main(["probe", "model.onnx"], capsys)
    assert code == 2
    assert "--modality" in err
    assert "Traceback" not in err


def test_usage_error_is_one_line_exit_2(monkeypatch, capsys) -> None:
    def bad(args):
        raise UsageError("levels must be fractions")

    monkeypatch.setattr(commands, "run_demo", bad)
    code, _, err = run_main(["demo"], capsys)
    assert code == 2
    assert err.strip() == "medaudit: error: levels must be fractions"


def test_internal_error_exits_4_without_traceback(monkeypatch, capsys) -> None:
    def crash(args):
        raise RuntimeError("boom")

    monkeypatch.setattr(commands, "run_demo", crash)
    code, _, err = run_main(["demo"], capsys)
    assert code == 4
    assert "internal error (RuntimeError): boom" in err
    assert "Traceback" not in err


def test_debug_shows_the_traceback(monkeypatch, capsys) -> None:
    def crash(args):
        raise RuntimeError("boom")

    monkeypatch.setattr(commands, "run_demo", crash)
    code, _, err = run_main(["--debug", "demo"], capsys)
    assert code == 4
    assert "Traceback" in err


def test_bad_param_syntax_is_a_usage_error(capsys, tmp_path) -> None:
    code, _, err = run_main(
        [
            "check",
            str(tmp_path / "m.pt"),
            "--modality",
            "cxr",
            "--synthetic",
            "--reference",
            str(tmp_path / "r.pt"),
            "--param",
            "font_size=3",
        ],
        capsys,
    )
    assert code == 2
    assert "CONFOUNDER.NAME=VALUE" in err


def test_unrecognised_data_folder_is_one_line_exit_2(capsys, tmp_path) -> None:
    (tmp_path / "data").mkdir()
    code, _, err = run_main(
        [
            "check",
            str(tmp_path / "m.pt"),
            "--modality",
            "cxr",
            "--data",
            str(tmp_path / "data"),
            "--reference",
            str(tmp_path / "r.pt"),
            "--out",
            str(tmp_path / "out"),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        capsys,
    )
    assert code == 2
    assert "Traceback" not in err and err.count("\n") == 1


def test_cache_inside_out_is_refused(capsys, tmp_path) -> None:
    code, _, err = run_main(
        ["demo", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "out" / "cache")],
        capsys,
    )
    assert code == 2 and "--cache-dir" in err


def test_report_on_a_missing_file_exits_2(capsys, tmp_path) -> None:
    code, _, err = run_main(["report", str(tmp_path / "results.json")], capsys)
    assert code == 2 and "not found" in err


def test_console_script_help_runs_in_a_fresh_process() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "audit", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert "medaudit" in done.stdout


def test_help_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys; from audit import cli; cli.build_parser(); "
        "heavy = [m for m in ('torch', 'weasyprint', 'pydicom', 'onnxruntime', 'ray') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == ""


def test_check_without_a_reference_says_how_to_get_one(capsys, tmp_path) -> None:
    import torch
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "m.pt")
    code, _, err = run_main(
        [
            "check",
            str(tmp_path / "m.pt"),
            "--modality",
            "cxr",
            "--synthetic",
            "--out",
            str(tmp_path / "out"),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        capsys,
    )
    assert code == 2
    assert "medaudit reference fetch" in err and "--reference" in err


def test_dry_run_prints_the_cohort_and_the_plan(capsys, tmp_path) -> None:
    from test_data_builders import make_nih_tree

    make_nih_tree(tmp_path / "nih")
    args = ["check", str(tmp_path / "m.pt"), "--modality", "cxr", "--data", str(tmp_path / "nih"),
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "--dry-run",
            "--confounders", "tag,sex", "--levels", "0,1", "--folds", "2"]  # fmt: skip
    code, out, _ = run_main(args, capsys)
    assert code == 0
    assert "source:    nih-cxr14 (detected)" in out
    assert "plan:      16 fine-tuning runs" in out
    code, out, _ = run_main([*args, "--json"], capsys)
    summary = json.loads(out)
    assert summary["plan"]["runs"] == 16
    assert summary["images"] == summary["positive"] + summary["negative"]
    assert not (tmp_path / "out").exists(), "a dry run writes no output folder"


def test_training_path_imports_no_optional_heavy_library() -> None:
    """A GPU machine without weasyprint, pydicom, onnxruntime or Ray can still train."""
    code = (
        "import sys, audit.pipeline, audit.run.cells, audit.train.engine, audit.demo.run, audit.commands; "
        "heavy = [m for m in ('weasyprint', 'pydicom', 'onnxruntime', 'ray') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_strict_turns_a_broken_file_into_exit_2(capsys, tmp_path) -> None:
    import torch
    import torchvision
    from test_data_builders import write_manifest, write_png

    rows = []
    for n in range(12):
        write_png(tmp_path / "img" / f"{n}.png", seed=n)
        rows.append({"path": f"img/{n}.png", "label": str(n % 2), "patient_id": f"p{n}"})
    (tmp_path / "img" / "bad.png").write_bytes(b"not a png at all")
    rows.append({"path": "img/bad.png", "label": "1", "patient_id": "p99"})
    manifest = write_manifest(tmp_path / "manifest.csv", rows)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "m.pt")
    code, _, err = run_main(
        ["check", str(tmp_path / "m.pt"), "--modality", "cxr", "--data", str(manifest),
         "--reference", str(tmp_path / "m.pt"), "--out", str(tmp_path / "out"),
         "--cache-dir", str(tmp_path / "cache"), "--strict"],
        capsys,
    )  # fmt: skip
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("medaudit: error:")]
    assert len(errors) == 1 and "--strict" in errors[0]
    assert "bad.png" not in err and "Traceback" not in err


BLOCKER = """
import importlib.abc, importlib.machinery, sys
BLOCKED = {"weasyprint", "pydicom", "onnxruntime", "ray", "platformdirs"}
class _Absent(importlib.abc.Loader):
    def create_module(self, spec):
        raise ImportError(f"No module named {spec.name!r} (blocked by the test)")
    def exec_module(self, module):
        raise ImportError("blocked")
class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            return importlib.machinery.ModuleSpec(name, _Absent())
sys.meta_path.insert(0, _Blocker())
from audit import cli
code = cli.main(sys.argv[1:])
print("loaded:", [m for m in sys.modules if m.split(".")[0] in BLOCKED])
sys.exit(code)
"""


def test_a_gpu_node_without_the_optional_libraries_runs_check_no_report(tmp_path) -> None:
    """The GPU machine lacks WeasyPrint, pydicom, onnxruntime, Ray and platformdirs: an audit
    with --no-report and --cache-dir still runs there and writes results.json and junit.xml."""
    import torch
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=1).state_dict(), tmp_path / "u.pt")
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r.pt")
    argv = [
        "--quiet", "check", str(tmp_path / "u.pt"), "--modality", "cxr", "--synthetic",
        "--reference", str(tmp_path / "r.pt"), "--out", str(tmp_path / "out"),
        "--cache-dir", str(tmp_path / "cache"), "--confounders", "tag", "--levels", "0,1",
        "--folds", "1", "--epochs", "1", "--max-steps", "1", "--batch-size", "8",
        "--input-size", "32", "--image-size", "32", "--synthetic-patients", "40",
        "--resamples", "100", "--no-report", "--device", "cpu",
    ]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", BLOCKER, *argv], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode in (0, 1, 3, 4), done.stderr[-2000:]
    assert_finished(done.returncode, tmp_path / "out")
    assert "loaded: []" in done.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        ".medaudit.lock",  # the --out folder's lock, kept between runs
        "junit.xml",
        "results.json",
        "runs",
    ]


def test_the_recorded_command_hides_every_path_value() -> None:
    typed = ["check", "/models/net.pt", "--data", "/exports/site-DOE_JOHN/", "--out=/o/PID123",
             "--cache", "C:\\cases\\MRN42", "--finding", "Atelectasis", "--confounders", "tag"]  # fmt: skip
    recorded = commands._command_line(
        argparse.Namespace(typed=typed, path_placeholders=cli.path_placeholders())
    )
    assert recorded == (
        "medaudit check net.pt --data '<data>' '--out=<out>' --cache '<cache-dir>' "
        "--finding Atelectasis --confounders tag"
    )
    for option in ("--data", "--out", "--cache-dir", "--reference", "--config", "--shared-cache"):
        assert option in cli.path_placeholders(), option


def test_something_exiting_the_process_is_never_a_pass(monkeypatch, capsys) -> None:
    """A library or plugin calling sys.exit(0) mid-run must not read as exit code 0."""

    def exits(args):
        raise SystemExit(0)

    monkeypatch.setattr(commands, "run_inspect", exits)
    assert cli.main(["inspect", "model.pt"]) == 4
    assert "tried to exit the process" in capsys.readouterr().err


def test_report_on_json_that_is_not_an_object_exits_2(capsys, tmp_path) -> None:
    (tmp_path / "results.json").write_text("[]")
    assert cli.main(["report", str(tmp_path / "results.json")]) == 2
    assert "not medaudit results: not a JSON object" in capsys.readouterr().err


def test_a_found_settings_file_cannot_make_medaudit_import_code(capsys, tmp_path, monkeypatch):
    """A medaudit.toml picked up from the folder (a cloned repository, say) names a plugin: it is
    refused, and its module never imported, unless the user names the file with --config."""
    from test_data_builders import make_nih_tree

    make_nih_tree(tmp_path / "nih")
    (tmp_path / "sneaky_plugin.py").write_text(
        "from pathlib import Path\nPath(__file__).with_name('imported').write_text('yes')\n"
        "from audit.confounders import Confounder\n"
        "def make():\n"
        "    return Confounder('sneaky', 'annotation', 'A test plugin.', 'pixel', {},"
        " apply=lambda image, rng: image)\n"
    )
    (tmp_path / "medaudit.toml").write_text('confounders = ["tag", "sneaky_plugin:make"]\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    args = ["check", str(tmp_path / "m.pt"), "--modality", "cxr", "--data", str(tmp_path / "nih"),
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "--dry-run"]  # fmt: skip
    code, _, err = run_main(args, capsys)
    assert code == 2 and "names plugin confounder(s) sneaky_plugin:make" in err
    assert "--config medaudit.toml" in err and not (tmp_path / "imported").exists()
    code, out, _ = run_main([*args, "--config", "medaudit.toml"], capsys)
    assert code == 0 and "(tag, sneaky)" in out  # named by the user: loaded and resolved
    assert (tmp_path / "imported").exists()


def test_demo_takes_a_seed_for_its_data_splits_and_runs(monkeypatch, capsys, tmp_path) -> None:
    """`medaudit demo --seed N`: a second audit of the same stand-ins, to see the verdict move."""
    import audit.demo.run as demo

    assert demo.demo_settings(quick=False, deterministic=False, seed=3).seed == 3
    seen = {}

    def fake(out_dir, cache_dir, **options):
        seen.update(options)
        return {"status": {"complete": True}, "verdict": None}

    monkeypatch.setattr(demo, "run_demo_audit", fake)
    places = ["--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    assert cli.main(["demo", "--seed", "7", *places]) == 0 and seen["seed"] == 7
    monkeypatch.undo()
    code, _, err = run_main(["demo", "--seed", "-1", *places], capsys)
    assert code == 2 and err.strip() == (
        "medaudit: error: --seed -1 is not accepted: use a whole number in [0, 4294967295]"
    )
    assert not (tmp_path / "cache").exists(), "refused before any stand-in was pretrained"
