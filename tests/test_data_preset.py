"""``--protocol source-matters``: the study's exact lists, counts, folds and patient overlap."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from test_data_builders import make_nih_tree, make_preset_tree, nih_rows

from audit.confounders import get_confounder
from audit.data.loading import DataRequest, describe_dry_run, load_cohort, preset_split
from audit.errors import UsageError

FOLD_SIZES = [(223, 25), (217, 31), (225, 23), (220, 28), (223, 25)]


@pytest.fixture(scope="module")
def preset(tmp_path_factory) -> tuple[DataRequest, dict, object]:
    base = tmp_path_factory.mktemp("preset")
    make_preset_tree(base / "nih")
    req = DataRequest(
        base / "nih", "cxr", cache_dir=base / "cache", image_size=16, protocol="source-matters"
    )
    summary = describe_dry_run(req)
    cohort = load_cohort(req, progress=False)
    return req, summary, cohort


def test_the_preset_ships_with_its_licence() -> None:
    folder = resources.files("audit.data") / "presets" / "source-matters"
    assert "MIT License" in (folder / "LICENSE").read_text()
    assert (folder / "chest14" / "gender" / "F_50" / "val_fold5.csv").is_file()


def test_dry_run_reports_the_studys_chest14_counts(preset) -> None:
    _req, summary, _cohort = preset
    chest14 = summary["preset"]["chest14"]
    assert (chest14["images"], chest14["positive"], chest14["test"]) == (331, 99, 83)
    assert [(f["train"], f["val"]) for f in chest14["folds"]] == FOLD_SIZES
    assert summary["excluded"] == {} and summary["warnings"] == {}


def test_dry_run_reports_the_sex_lists(preset) -> None:
    _req, summary, _cohort = preset
    sex = summary["preset"]["sex"]
    assert sex["test"]["images"] == 400
    assert sex["test"]["positive"] == 200 and sex["test"]["sex"] == {"F": 200, "M": 200}
    assert set(sex["levels"]) == {"F_0", "F_10", "F_20", "F_50", "F_80", "F_100"}
    for level, female_positives in (("F_0", 0), ("F_50", 100), ("F_100", 200)):
        pool = sex["levels"][level]["pool"]
        assert pool["images"] == 400 and pool["positive"] == 200
        assert pool["sex"].get("F", 0) == female_positives


def test_dry_run_flags_the_preset_patient_overlap(preset) -> None:
    _req, summary, _cohort = preset
    by_list = {row["list"]: row["patients_in_training_pool_and_test"] for row in summary["overlap"]}
    assert by_list["chest14"] == 0
    assert by_list["sex F_100"] == 8 and by_list["sex F_0"] == 2
    assert all(1 <= by_list[f"sex F_{p}"] <= 8 for p in (0, 10, 20, 50, 80, 100))
    assert any("sex F_100: 8 patient(s)" in text for text in summary["overlap_warnings"])


def test_preset_split_gives_the_studys_folds_for_pixel_confounders(preset) -> None:
    _req, _summary, cohort = preset
    split = preset_split(cohort, "source-matters", get_confounder("tag"))
    assert split is not None and len(split.test) == 83
    assert [(len(t), len(v)) for t, v in split.folds] == FOLD_SIZES
    assert int(cohort.labels[split.test].sum()) == 31
    every = np.concatenate([split.test, *split.folds[0]])
    assert len(set(every.tolist())) == 331


def test_preset_split_for_sex_uses_the_level_lists(preset) -> None:
    _req, _summary, cohort = preset
    split = preset_split(cohort, "source-matters", "sex", level=0.5)
    assert split is not None and len(split.test) == 400
    train, val = split.folds[0]
    pool = np.concatenate([train, val])
    female_positive = (cohort.sexes[pool] == "F") & (cohort.labels[pool] == 1)
    assert len(pool) == 400 and int(female_positive.sum()) == 100
    test_patients = set(cohort.patients[split.test].tolist())
    assert set(cohort.patients[pool].tolist()) & test_patients
    clean = preset_split(cohort, "source-matters", "sex", level=0.5, drop_overlap=True)
    for train, val in clean.folds:
        assert not set(cohort.patients[np.concatenate([train, val])].tolist()) & test_patients


def test_preset_split_needs_a_study_level_for_sex(preset) -> None:
    _req, _summary, cohort = preset
    with pytest.raises(UsageError, match="levels 0, 0.1, 0.2, 0.5, 0.8, 1"):
        preset_split(cohort, "source-matters", "sex", level=0.3)


def test_no_protocol_means_no_preset_split(preset) -> None:
    _req, _summary, cohort = preset
    assert preset_split(cohort, None, "tag") is None


def test_preset_split_on_a_cohort_without_the_lists_is_a_usage_error(tmp_path: Path) -> None:
    make_nih_tree(tmp_path / "nih", nih_rows(4, 2))
    cohort = load_cohort(
        DataRequest(tmp_path / "nih", "cxr", cache_dir=tmp_path / "c", image_size=16),
        progress=False,
    )
    with pytest.raises(UsageError, match="not loaded with `protocol` source-matters"):
        preset_split(cohort, "source-matters", "tag")


def test_missing_preset_images_are_counted(tmp_path: Path) -> None:
    make_preset_tree(tmp_path / "nih")
    victims = sorted((tmp_path / "nih" / "images").glob("*.png"))[:3]
    for path in victims:
        path.unlink()
    summary = describe_dry_run(
        DataRequest(tmp_path / "nih", "cxr", cache_dir=tmp_path / "c", protocol="source-matters")
    )
    assert summary["excluded"]["image file not found"] >= 3
