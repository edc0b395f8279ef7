"""Settings a gate can trust: where every setting came from is recorded and shown, and a locked
settings file is the only source of an audit's thresholds and training.

A pyproject.toml that medaudit finds by searching upwards (a cloned repository's, say) could
loosen the margin with nobody having asked for it; its values are listed in results.json, in the
console summary and on page 1, and `--locked-config FILE` refuses any setting not from FILE.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from audit_checks import assert_finished
from model_builders import tiny_checkpoints

from audit import cli
from audit.schema import validate_results

FOUND_MARGIN = 0.3


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> tuple[Path, Path]:
    return tiny_checkpoints(tmp_path_factory.mktemp("models"))


def check_args(models: tuple[Path, Path], tmp_path: Path, *more: str) -> list[str]:
    user, reference = models
    return [
        "check", str(user), "--modality", "cxr", "--synthetic", "--reference", str(reference),
        "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
        "--confounders", "tag", "--levels", "0,1", "--folds", "2", "--epochs", "1",
        "--max-steps", "1", "--batch-size", "8", "--input-size", "32", "--image-size", "32",
        "--synthetic-patients", "40", "--resamples", "100", *more,
    ]  # fmt: skip


def test_settings_from_a_found_file_are_recorded_printed_and_on_page_one(
    tiny_models, tmp_path, monkeypatch, capsys
) -> None:
    from pypdf import PdfReader

    project = tmp_path / "cloned-repo"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        f"[tool.medaudit]\nmargin = {FOUND_MARGIN}\n[tool.medaudit.train]\nlr = 0.002\n"
    )
    monkeypatch.chdir(project)
    code = cli.main(check_args(tiny_models, tmp_path))
    results = assert_finished(code, tmp_path / "out")
    validate_results(results)
    origin = results["settings_origin"]
    assert origin == {
        "file": "pyproject.toml", "how": "found by searching upwards from the current folder",
        "locked": False, "from_file": {"margin": FOUND_MARGIN, "train.lr": 0.002},
        "from_flags": origin["from_flags"],
    }  # fmt: skip
    assert {"levels", "folds", "train.epochs", "confounders"} <= set(origin["from_flags"])
    sources = results["thresholds"]["sources"]
    assert (
        sources["margin"] == "pyproject.toml (found by searching upwards from the current folder)"
    )
    assert sources["alpha"] == "default"
    assert results["thresholds"]["margin"] == FOUND_MARGIN
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("settings: "))
    assert "pyproject.toml" in line and "(not named by the user)" in line
    assert f"margin = {FOUND_MARGIN}" in line and "train.lr = 0.002" in line
    page_one = PdfReader(tmp_path / "out" / "report.pdf").pages[0].extract_text()
    flat = " ".join(page_one.split())
    assert "settings from" in flat and "not named by the user" in flat and "margin = 0.3" in flat
    assert "from the command line" in flat
    assert str(project) not in json.dumps(results), "a file name only, never its folder"


def test_a_locked_config_refuses_any_setting_on_the_command_line(
    tiny_models, tmp_path, capsys
) -> None:
    locked = tmp_path / "gate.toml"
    locked.write_text("margin = 0.05\nfolds = 2\n")
    code = cli.main([*check_args(tiny_models, tmp_path), "--locked-config", str(locked)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith(
        "medaudit: error: --locked-config takes every setting from gate.toml"
    )
    assert "--levels" in err[-1] and "--epochs" in err[-1] and "--max-steps" in err[-1]
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
    code = cli.main(
        [
            *check_args(tiny_models, tmp_path),
            "--locked-config",
            str(locked),
            "--config",
            str(locked),
        ]
    )
    assert code == 2 and "not both" in capsys.readouterr().err


def test_a_locked_config_is_the_only_file_read_and_is_recorded_as_locked(
    tiny_models, tmp_path, monkeypatch, capsys
) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.medaudit]\nmargin = 0.49\n")
    monkeypatch.chdir(tmp_path)
    locked = tmp_path / "gate.toml"
    locked.write_text(
        'margin = 0.05\nconfounders = ["tag"]\nlevels = [0.0, 1.0]\nfolds = 2\n'
        "[train]\nepochs = 1\nmax_steps_per_epoch = 1\nbatch_size = 8\ninput_size = 32\n"
    )
    user = tiny_models[0]
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.csv").write_text("path,label,patient_id\n")
    code = cli.main([
        "check", str(user), "--modality", "cxr", "--data", str(data), "--dry-run", "--json",
        "--cache-dir", str(tmp_path / "cache"), "--locked-config", str(locked),
    ])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 2 and "the manifest has no rows" in captured.err, "refused at the data only"
    from audit.commands import settings_from_args
    from audit.resolve.settings import LOCKED

    args = cli.build_parser().parse_args(
        ["check", str(user), "--modality", "cxr", "--synthetic", "--locked-config", str(locked)]
    )
    settings, origin = settings_from_args(args)
    assert settings.margin == 0.05, "the locked file, not the pyproject.toml found upwards"
    assert origin.file == "gate.toml" and origin.how == LOCKED and origin.locked
    assert origin.from_flags == () and origin.from_file["train.epochs"] == 1
    assert origin.record()["locked"] is True


def test_a_locked_config_refuses_the_gate_options_a_file_cannot_hold(
    tiny_models, tmp_path, capsys
) -> None:
    locked = tmp_path / "gate.toml"
    locked.write_text("margin = 0.05\n")
    user = tiny_models[0]
    base = ["check", str(user), "--modality", "cxr", "--synthetic", "--locked-config", str(locked),
            "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    for more, flag in (
        (["--inconclusive-exit", "0"], "--inconclusive-exit"),
        (["--probe", "--max-flip-rate=0.99"], "--max-flip-rate"),
    ):
        assert cli.main([*base, *more]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("medaudit: error: --locked-config: "), err
        assert f"{flag} would change the gate outside gate.toml" in err
    assert not (tmp_path / "out").exists()


def test_an_abbreviated_gate_option_is_caught_too(tiny_models, tmp_path, capsys) -> None:
    locked = tmp_path / "gate.toml"
    locked.write_text("margin = 0.05\n")
    argv = ["check", str(tiny_models[0]), "--modality", "cxr", "--synthetic", "--locked-config",
            str(locked), "--inconclusive", "0", "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    assert cli.main(argv) == 2
    assert "--inconclusive-exit would change the gate" in capsys.readouterr().err
    same = [*argv[:-4], "--inconclusive-exit", "3", "--cache-dir", str(tmp_path / "cache"),
            "--dry-run"]  # fmt: skip
    assert cli.main(same) == 2  # the default typed out is no change: refused only at --synthetic
    assert "would change the gate" not in capsys.readouterr().err
