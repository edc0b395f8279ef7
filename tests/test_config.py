"""Settings: defaults, then the config file, then flags; bad values named in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit.errors import UsageError
from audit.resolve.settings import (
    STUDY_LEVELS,
    Settings,
    build_settings,
    find_config_file,
    read_config_table,
)


def test_defaults_are_the_study_protocol() -> None:
    settings = Settings()
    assert settings.levels == STUDY_LEVELS
    assert settings.folds == 5
    assert settings.train.dropout == 0.5
    assert settings.train.rotation_deg == 10.0 and settings.train.zoom_fraction == 0.1


def test_flags_override_the_file_which_overrides_defaults() -> None:
    file_values = {"folds": 3, "margin": 0.1, "train": {"epochs": 7, "lr": 1e-4}}
    flags = {"folds": 2, "margin": None, "train": {"epochs": 4}}
    settings = build_settings(file_values, flags)
    assert settings.folds == 2
    assert settings.margin == 0.1
    assert settings.train.epochs == 4
    assert settings.train.lr == 1e-4


def test_confounder_params_merge_per_key() -> None:
    settings = build_settings(
        {"confounder_params": {"tag": {"font_size": 48, "text": "L"}}},
        {"confounder_params": {"tag": {"font_size": 32}}},
    )
    assert settings.confounder_params["tag"] == {"font_size": 32, "text": "L"}


def test_unknown_setting_is_named_with_the_accepted_ones() -> None:
    with pytest.raises(UsageError, match=r"unknown setting 'fold'.*accepted:.*folds"):
        build_settings({"fold": 3})


def test_wrong_type_is_named() -> None:
    with pytest.raises(UsageError, match="'folds' must be int"):
        build_settings({"folds": "five"})


def test_counted_levels_must_be_among_levels() -> None:
    with pytest.raises(UsageError, match="counted_levels"):
        build_settings({"levels": [0, 0.5], "counted_levels": [0.8]})


def test_bad_normalisation_lists_the_accepted_ones() -> None:
    with pytest.raises(UsageError, match="auto, imagenet, radimagenet, none"):
        build_settings({"train": {"normalize": "zscore"}})


def test_pyproject_tool_table_is_found_and_read(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.medaudit]\nfolds = 3\nlevels = [0, 1]\n")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    found = find_config_file(nested)
    assert found == tmp_path / "pyproject.toml"
    settings = build_settings(read_config_table(found))
    assert settings.folds == 3 and settings.levels == (0.0, 1.0)


def test_medaudit_toml_wins_over_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.medaudit]\nfolds = 3\n")
    (tmp_path / "medaudit.toml").write_text("folds = 4\n")
    assert read_config_table(find_config_file(tmp_path))["folds"] == 4


def test_broken_toml_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "medaudit.toml"
    path.write_text("folds = = 3\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        read_config_table(path)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"levels": [0, 0, 1]}, "holds a level twice"),
        ({"levels": ["a", 1]}, "'levels' must be a list of numbers"),
        ({"levels": [0, float("nan")]}, "must be fractions"),
        ({"margin": 1.5}, r"margin = 1.5 is not accepted: use a finite number in \(0, 0.5\]"),
        ({"margin": 0}, r"margin = 0(\.0)? is not accepted: use a finite number in \(0, 0.5\]"),
        ({"margin": float("nan")}, "margin = nan is not accepted"),
        ({"n_resamples": 0}, "n_resamples = 0 is not accepted: use a whole number >= 100"),
        ({"seed": -1}, r"seed = -1 is not accepted: use a whole number in \[0, 4294967295\]"),
        ({"n_resamples": True}, "n_resamples = True is not accepted: use a whole number"),
        ({"folds": True}, "folds = True is not accepted: use a whole number"),
        ({"confounder_params": {"tag": 3}}, r"confounder_params.tag must be a table"),
    ],
)
def test_every_bad_setting_fails_before_any_run(values, message) -> None:
    """Checked when the settings are built: never after the fine-tuning, as an internal error."""
    with pytest.raises(UsageError, match=message):
        build_settings(values)


def test_the_inconclusive_exit_code_is_checked_when_the_flags_are_read(capsys) -> None:
    from audit import cli

    assert cli.main(["probe", "m.onnx", "--modality", "cxr", "--synthetic",
                     "--inconclusive-exit", "300"]) == 2  # fmt: skip
    assert "300 is not an exit code: use 0 to 255" in capsys.readouterr().err
