"""The resolution stage: check, check --probe, probe and --dry-run resolve and refuse alike.

Every row of the constraint table is walked through every command that takes the setting, with a
model file that does not exist: a refused value must be refused (exit 2, one line, the same words
on every command) before anything is loaded, and an accepted value must get as far as the model.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from audit import cli, commands
from audit.confounders import available_confounders
from audit.resolve.constraints import CONSTRAINTS, Constraint
from audit.resolve.settings import Settings, TrainSettings

MISSING_MODEL = "model file not found"

# Rows that no command-line flag sets: settings-file keys (the [tool.medaudit] table), and the
# verdict's own descriptive threshold, which only the library sets.
SETTINGS_FILE_ONLY = {
    "val_fraction", "test_fraction", "train.weight_decay", "train.dropout",
    "train.rotation_deg", "train.shift_fraction", "train.shear_deg", "train.zoom_fraction",
    "train.bn_momentum", "train.adam_eps",
}  # fmt: skip
LIBRARY_ONLY = {"breaking_auc"}


def refused_values(row: Constraint, *, typed: bool) -> list[object]:
    """Values just outside the row, and a value of the wrong kind: NaN for a real number, 1.5 for
    a whole one (a typed flag never gets there: argparse itself refuses ``--folds 1.5``)."""
    values: list[object] = []
    if row.low is not None:
        values.append(row.low if row.low_open else (row.low - 1 if row.whole else row.low - 0.5))
    if row.high is not None:
        values.append(
            row.high if row.high_open else (row.high + 1 if row.whole else row.high + 0.5)
        )
    if not row.whole:
        values.append(math.nan)
    elif not typed:
        values.append(1.5)
    return values


def accepted_value(row: Constraint) -> float | int:
    low = row.low if row.low is not None else 0.0
    if row.high is not None:
        middle = (low + row.high) / 2
        return int(middle) if row.whole else middle
    return int(low) + 1 if row.whole else low + 1.0


def flag_text(value: object) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def commands_taking(key: str) -> list[str]:
    """The command variants whose command line sets ``key``: the probe's own settings only with
    --probe on check, the phantom count only with --synthetic (not beside --dry-run's --data)."""
    variants = []
    if key in cli.SETTING_FLAGS["check"]:
        if not key.startswith("probe."):
            variants.append("check")
            if key != "synthetic_patients":
                variants.append("check --dry-run")
        if key.startswith("probe.") or key in ("seed", "alpha", "n_resamples"):
            variants.append("check --probe")
    if key in cli.SETTING_FLAGS["probe"]:
        variants.append("probe")
    return variants


def argv_for(variant: str, tmp_path: Path, flag: str, value: str) -> list[str]:
    model = str(tmp_path / "missing" / "model.pt")
    places = ["--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    if variant == "probe":
        return ["probe", model, "--modality", "cxr", "--synthetic", *places, flag, value]
    base = ["check", model, "--modality", "cxr", *places]
    if variant == "check --dry-run":
        base += ["--data", str(tmp_path / "data"), "--dry-run"]
    else:
        base += ["--synthetic"]
    if variant == "check --probe":
        base += ["--probe"]
    if flag.startswith("--ray-"):  # Ray's options are refused with any other executor
        base += ["--executor", "ray"]
    return [*base, flag, value]


def run(argv: list[str], capsys) -> tuple[int, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.err


FLAGGED_ROWS = [r for r in CONSTRAINTS if r.key not in SETTINGS_FILE_ONLY | LIBRARY_ONLY]


@pytest.mark.parametrize("row", FLAGGED_ROWS, ids=lambda row: row.key)
def test_every_row_is_refused_alike_by_every_command_before_loading(row, tmp_path, capsys):
    """Rows no flag sets are walked through the settings file and the library below."""
    variants = commands_taking(row.key)
    assert variants, f"{row.key} has no flag on any command: add it to SETTING_FLAGS or the lists"
    for value in refused_values(row, typed=True):
        said = {}
        for variant in variants:
            flag = cli.SETTING_FLAGS[variant.split()[0]][row.key]
            code, err = run(argv_for(variant, tmp_path, flag, flag_text(value)), capsys)
            lines = err.strip().splitlines()
            assert code == 2 and len(lines) == 1, (variant, value, err)
            assert lines[0].startswith(f"medaudit: error: {flag} "), (variant, lines)
            assert "is not accepted: use " + row.accepted() in lines[0], (variant, lines)
            assert MISSING_MODEL not in err, "refused only after trying to load the model"
            said[variant] = lines[0].replace(flag, "FLAG")
        assert len(set(said.values())) == 1, said
        assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()
    good = accepted_value(row)
    if row.key.startswith("ray."):  # an accepted Ray option goes on to need Ray itself
        pytest.importorskip("ray")
    for variant in variants:
        flag = cli.SETTING_FLAGS[variant.split()[0]][row.key]
        code, err = run(argv_for(variant, tmp_path, flag, flag_text(good)), capsys)
        assert "is not accepted" not in err, (variant, good, err)
        if variant != "check --dry-run":  # the dry run stops at the missing data folder instead
            assert MISSING_MODEL in err, (variant, good, err)


@pytest.mark.parametrize("key", sorted(SETTINGS_FILE_ONLY))
def test_settings_file_rows_are_refused_from_the_file_before_loading(key, tmp_path, capsys):
    row = next(r for r in CONSTRAINTS if r.key == key)
    table, _, name = key.rpartition(".")
    for variant in ("check", "check --dry-run"):
        for value in [*refused_values(row, typed=False), accepted_value(row)]:
            shown = "nan" if isinstance(value, float) and math.isnan(value) else repr(value)
            text = f"[{table}]\n{name} = {shown}\n" if table else f"{name} = {shown}\n"
            config = tmp_path / "medaudit.toml"
            config.write_text(text)
            argv = argv_for(variant, tmp_path, "--config", str(config))
            code, err = run(argv, capsys)
            if value == accepted_value(row):
                assert "is not accepted" not in err, (variant, err)
            else:
                assert code == 2 and f"{key} = " in err and row.accepted() in err, (variant, err)
                assert MISSING_MODEL not in err


def test_library_only_rows_are_checked_where_they_are_set() -> None:
    from audit.errors import UsageError
    from audit.resolve.constraints import check_setting

    for key in sorted(LIBRARY_ONLY):
        check_setting(key, 0.5)
    with pytest.raises(UsageError, match=r"breaking_auc = 1.5 is not accepted"):
        check_setting("breaking_auc", 1.5)


def test_every_row_is_a_setting_somewhere() -> None:
    """No row without a setting it checks (a typo in a key would check nothing)."""
    fields = {f.name for f in dataclasses.fields(Settings)} | {
        "train." + f.name for f in dataclasses.fields(TrainSettings)
    }
    flagged = {k for table in cli.SETTING_FLAGS.values() for k in table}
    for row in CONSTRAINTS:
        assert row.key in fields | flagged | LIBRARY_ONLY, row.key
    for key in SETTINGS_FILE_ONLY:
        assert key in fields, key


def test_untrained_settings_never_reach_a_verdict(tmp_path, capsys) -> None:
    """--max-steps 0 once trained nothing and passed (exit 0): now exit 2, before any loading."""
    for flag, value in (("--max-steps", "0"), ("--max-steps", "-1"), ("--lr", "nan"),
                        ("--patience", "-5"), ("--epochs", "0")):  # fmt: skip
        code, err = run(argv_for("check", tmp_path, flag, value), capsys)
        assert code == 2 and f"{flag} {value} is not accepted" in err, err


# ------------------------------------------------ check --probe and probe plant the same artifacts


def parsed(argv: list[str]):
    args = cli.build_parser().parse_args(argv)
    args.typed, args.path_placeholders = argv, {}
    return args


OVERRIDES = {
    "tag": ["tag.font_size=40"],
    "denoise": ["denoise.diameter=300"],
    "noise": ["noise.low_dose=1e7"],
    "sex": [],
}


@pytest.mark.parametrize("modality", ["cxr", "ct"])
@pytest.mark.parametrize("with_params", [False, True], ids=["defaults", "with --param"])
def test_check_probe_and_probe_resolve_the_same_confounders(modality, with_params, tmp_path):
    names = [n for n in available_confounders() if n in OVERRIDES]
    assert sorted(names) == sorted(OVERRIDES), "a built-in confounder is missing from this test"
    params = [f"--param={p}" for n in names for p in OVERRIDES[n]] if with_params else []
    common = ["--modality", modality, "--synthetic", "--confounders", ",".join(names), *params,
              "--max-sex-auc-gap", "0.1"]  # fmt: skip
    check = commands.resolve_check_args(parsed(["check", "m.pt", *common, "--probe"]))
    probe = commands.resolve_probe_args(parsed(["probe", "m.pt", *common]))
    assert list(probe.confounders) == names
    for name in names:
        audited, probed_in_check, probed = (
            check.confounders[name], check.probe.confounders[name], probe.confounders[name],
        )  # fmt: skip
        assert dict(audited.params) == dict(probed_in_check.params) == dict(probed.params), name
        assert audited.preset == probed_in_check.preset == probed.preset, name
    assert check.probe.thresholds == probe.thresholds


def test_a_parameter_override_keeps_the_modality_preset() -> None:
    """--modality ct --param noise.low_dose=1e7 once gave the fine-tuning runs the chest X-ray
    window (-1200, 800) and the probe the CT window (-1000, 400)."""
    argv = ["check", "m.pt", "--modality", "ct", "--synthetic", "--confounders", "noise",
            "--param", "noise.low_dose=1e7"]  # fmt: skip
    noise = commands.resolve_check_args(parsed(argv)).confounders["noise"]
    default_ct = commands.resolve_check_args(parsed(argv[:-2])).confounders["noise"]
    assert noise.preset == "ct" and noise.params["low_dose"] == 1e7
    for key, value in default_ct.params.items():
        if key != "low_dose":
            assert noise.params[key] == value, key


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--confounders", "tag,bogus"], "bogus"),
        (
            ["--param", "tag.bogus=1"],
            "'bogus' (in overrides) is not a parameter of confounder 'tag'",
        ),
        (["--param", "nosuch.size=1"], "nosuch"),
    ],
)
def test_the_dry_run_refuses_unknown_confounders_and_parameters(extra, said, tmp_path, capsys):
    """A dry run checks what the audit would plant before it reads any data."""
    argv = [*argv_for("check --dry-run", tmp_path, "--seed", "0"), *extra]
    code, err = run(argv, capsys)
    assert code == 2 and said in err and "--data path" not in err, err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a GPU")
def test_a_dry_run_plans_gpu_devices_on_a_machine_without_one(tmp_path, capsys) -> None:
    """A dry run is how a user checks a plan before the GPU time, often on another machine."""
    from test_data_builders import make_nih_tree

    make_nih_tree(tmp_path / "nih")
    argv = ["check", str(tmp_path / "m.pt"), "--modality", "cxr", "--data", str(tmp_path / "nih"),
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "--dry-run",
            "--device", "cuda:0,cuda:1"]  # fmt: skip
    code = cli.main(argv)
    out = capsys.readouterr().out
    assert code == 0 and "devices cuda:0, cuda:1" in out
    argv[-1] = "cuda:0,banana"
    code, err = run(argv, capsys)
    assert code == 2 and "--device 'banana' is not accepted" in err


def test_two_confounders_of_one_name_are_refused() -> None:
    from audit.confounders import get_confounder
    from audit.errors import UsageError
    from audit.resolve.confounders import resolve_confounders

    plugin = dataclasses.replace(get_confounder("tag"), description="Another tag.")
    with pytest.raises(UsageError, match="two confounders are named 'tag'"):
        resolve_confounders(
            ("tag", "mine:tag"), {}, "cxr", seed=0, work_size=32, extra={"mine:tag": plugin}
        )


def test_an_abbreviated_flag_is_named_in_full(tmp_path, capsys) -> None:
    code, err = run(argv_for("check", tmp_path, "--max-step", "0"), capsys)
    assert code == 2 and "--max-steps 0 is not accepted" in err, err


def test_the_probe_refuses_a_device_it_cannot_run_on(tmp_path, capsys) -> None:
    code, err = run(argv_for("probe", tmp_path, "--device", "meta"), capsys)
    assert code == 2 and "--device 'meta' is not accepted" in err, err
