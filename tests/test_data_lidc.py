"""LIDC-IDRI: DICOM CT slices plus XML reading sessions, the slice label rule, the HU window."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from test_data_builders import Identity, LidcScan, Nodule, default_scan, write_lidc_scan

from audit.data.lidc import LidcLabelRule
from audit.data.loading import DataRequest, describe_dry_run, load_cohort
from audit.errors import UsageError


@pytest.fixture(scope="module")
def lidc(tmp_path_factory) -> tuple[Path, list[Path]]:
    """Patient 1: the default scan (3 malignant slices, a benign nodule on 2 slices); patient 2:
    one reader's malignancy-5 nodule on slices 10-11 of 40."""
    root = tmp_path_factory.mktemp("lidc") / "LIDC-IDRI"
    first = write_lidc_scan(root, default_scan())
    second_scan = LidcScan(
        Identity(patient_id="LIDC-IDRI-0002", sex="F"),
        n_slices=40,
        nodules=[Nodule((10, 11), (5,))],
    )
    second = write_lidc_scan(root, second_scan)
    return root, [first, second]


def request(root: Path, cache: Path, **rule) -> DataRequest:
    return DataRequest(
        root, "ct", cache_dir=cache, image_size=32, source_options=LidcLabelRule(**rule)
    )


def test_dry_run_detects_lidc_and_counts_slices(lidc, tmp_path) -> None:
    root, _ = lidc
    summary = describe_dry_run(request(root, tmp_path))
    assert (
        summary["source"] == "lidc-idri" and summary["detected_by"] == "LIDC XML reading sessions"
    )
    assert summary["patients"] == 2
    assert (summary["positive"], summary["negative"]) == (3 + 2, 4 + 4)
    assert summary["selection"]["CT series with reading sessions"] == 2
    assert summary["sex"] == {"F": 6, "M": 7}
    assert summary["excluded"] == {}


@pytest.mark.parametrize(
    ("rule", "positive", "negative"),
    [
        ({"negatives": "benign"}, 5, 2),
        ({"negatives": "both"}, 5, 10),
        ({"min_readers": 2}, 3, 8),
        ({"malignant_at_least": 4.0}, 2, 8),
        ({"negatives_per_scan": 1}, 5, 2),
    ],
)
def test_label_rule_is_configurable(lidc, tmp_path, rule, positive, negative) -> None:
    root, _ = lidc
    summary = describe_dry_run(request(root, tmp_path, **rule))
    assert (summary["positive"], summary["negative"]) == (positive, negative)


def test_negatives_keep_away_from_every_annotation(lidc, tmp_path) -> None:
    root, folders = lidc
    cohort = load_cohort(request(root, tmp_path, negatives_per_scan=60), progress=False)
    annotated = {20, 21, 22, 30, 40, 41, 45}
    windowed = _windowed_slices(folders[0])
    negatives = cohort.images[cohort.labels == 0]
    for index, image in enumerate(windowed):
        if any(np.array_equal(image, negative) for negative in negatives):
            assert min(abs(index - a) for a in annotated) >= 4  # 10 mm at 2.5 mm spacing
            assert 6 <= index < 54  # not in the outer 10 % of slices


def test_positive_cases_are_the_outlined_slices_windowed(lidc, tmp_path) -> None:
    root, folders = lidc
    cohort = load_cohort(request(root, tmp_path), progress=False)
    windowed = _windowed_slices(folders[0])
    positives = cohort.images[cohort.labels == 1]
    for index in (20, 21, 22):
        assert any(np.array_equal(windowed[index], image) for image in positives)
    assert all(case.modality == "ct" for case in cohort.cases)


def test_a_patients_slices_share_one_patient_key(lidc, tmp_path) -> None:
    root, _ = lidc
    cohort = load_cohort(request(root, tmp_path), progress=False)
    keys = {case.sex: case.patient_key for case in cohort.cases}
    assert len(set(cohort.patients)) == 2 and keys["F"] != keys["M"]


def test_hu_window_is_a_setting(lidc, tmp_path) -> None:
    root, folders = lidc
    narrow = replace(request(root, tmp_path), hu_window=(-160.0, 240.0))
    cohort = load_cohort(narrow, progress=False)
    wide = load_cohort(request(root, tmp_path), progress=False)
    assert not np.array_equal(cohort.images, wide.images)
    assert len(list((tmp_path / "cohorts").glob("*.npy"))) == 2


def test_lidc_as_radiographs_is_refused(lidc, tmp_path) -> None:
    root, _ = lidc
    with pytest.raises(UsageError, match="use `modality` ct"):
        describe_dry_run(DataRequest(root, "cxr", cache_dir=tmp_path))


def test_a_damaged_reading_session_is_counted(tmp_path) -> None:
    root = tmp_path / "LIDC-IDRI"
    write_lidc_scan(root, default_scan())
    broken = write_lidc_scan(root, default_scan(Identity(patient_id="LIDC-IDRI-0003")))
    (broken / "extra.xml").write_text("<LidcReadMessage><unclosed>")
    summary = describe_dry_run(
        DataRequest(root, "ct", cache_dir=tmp_path / "c", source="lidc-idri")
    )
    assert summary["excluded"] == {"unreadable LIDC reading session (XML)": 1}
    assert summary["positive"] == 6


def _windowed_slices(folder: Path) -> list[np.ndarray]:
    slices = []
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        slices.append(np.clip(np.rint((hu + 1000.0) / 1400.0 * 255.0), 0, 255).astype(np.uint8))
    return slices
