"""MIMIC-CXR-JPG as laid out on disk: plain and gzipped CSVs, per-study labels on every image,
ViewPosition, the official split, MIMIC-IV's patients.csv, broken files, and no identifier in
anything the cohort exposes."""

from __future__ import annotations

import csv
import gzip
import io
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_data_chexpert import exposed
from test_data_privacy import CANARY

from audit.data.chexpert import OBSERVATIONS
from audit.data.loading import DataRequest, describe_dry_run, load_cohort, official_split
from audit.data.registry import detect_source
from audit.errors import UsageError

METADATA = "mimic-cxr-2.0.0-metadata.csv"
LABELS = "mimic-cxr-2.0.0-chexpert.csv"
SPLIT = "mimic-cxr-2.0.0-split.csv"

# (dicom_id, subject_id, study_id, ViewPosition, StudyDate, split)
IMAGES = [
    ("d-0001", "10000032", "50414267", "PA", "21800506", "train"),
    ("d-0002", "10000032", "50414267", "LATERAL", "21800506", "train"),
    ("d-0003", "10000032", "53189527", "AP", "21830101", "train"),
    ("d-0004", "10000764", "57375967", "AP", "21320411", "validate"),
    ("d-0005", "11000011", "51000001", "PA", "21500101", "train"),  # broken JPEG
    ("d-0006", "12000022", "52000002", "PA", "21500101", "train"),  # file missing
    ("d-0007", "13000033", "53000003", "PA", "21500101", "train"),  # study not labelled
    ("d-0008", "19999999", "59000001", "PA", "21900101", "test"),
    ("d-0009", "19999999", "59000002", "PA", "21900303", "test"),
    ("d-0010", "14000044", "54000004", "", "21500101", "train"),  # no ViewPosition
]
BROKEN, MISSING = "d-0005", "d-0006"
STUDY_LABELS = {  # study_id -> {observation: code}
    "50414267": {"Atelectasis": "1.0"},
    "53189527": {"No Finding": "1.0"},
    "57375967": {"Atelectasis": "-1.0", "Edema": "1.0"},
    "51000001": {"No Finding": "1.0"},
    "52000002": {"Atelectasis": "1.0"},
    "59000001": {"Atelectasis": "1.0"},
    "59000002": {"No Finding": "1.0"},
    "54000004": {"No Finding": "1.0"},
}
SUBJECTS = {  # subject_id -> (gender, anchor_age, anchor_year)
    "10000032": ("F", "52", "2180"),
    "10000764": ("M", "86", "2132"),
    "11000011": ("M", "40", "2150"),
    "19999999": ("M", "89", "2189"),
}


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(buffer.getvalue().encode()))
    else:
        path.write_text(buffer.getvalue())


def make_mimic(
    root: Path,
    images=IMAGES,
    *,
    labels=STUDY_LABELS,
    subjects=SUBJECTS,
    gz: bool = True,
    patients: bool = True,
) -> Path:
    """The three CSVs (metadata and split gzipped when ``gz``), patients.csv, and a JPEG per
    image under ``files/pXX/pNNNNNNNN/sNNNNNNNN/``."""
    root.mkdir(parents=True, exist_ok=True)
    tail = ".gz" if gz else ""
    write_csv(
        root / f"{METADATA}{tail}",
        ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription",
         "ViewPosition", "Rows", "Columns", "StudyDate", "StudyTime"],
        [[d, s, t, "CHEST (PA AND LAT)", v, "24", "24", date, "101010.000"]
         for d, s, t, v, date, _ in images],
    )  # fmt: skip
    studies = sorted({(s, t) for _d, s, t, *_ in images})
    write_csv(
        root / LABELS,
        ["subject_id", "study_id", *OBSERVATIONS],
        [[s, t, *(labels[t].get(n, "") for n in OBSERVATIONS)] for s, t in studies
         if t in labels],
    )  # fmt: skip
    write_csv(
        root / f"{SPLIT}{tail}",
        ["dicom_id", "study_id", "subject_id", "split"],
        [[d, t, s, split] for d, s, t, _v, _date, split in images],
    )
    if patients:
        write_csv(
            root / "patients.csv",
            ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"],
            [[s, *values, "2008 - 2010", ""] for s, values in subjects.items()],
        )
    for n, (dicom, subject, study, *_rest) in enumerate(images):
        if dicom.endswith(MISSING):
            continue
        path = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(n).integers(0, 256, (24, 24), dtype=np.uint8)
        Image.fromarray(pixels).save(path, quality=95)
        if dicom.endswith(BROKEN):
            path.write_bytes(path.read_bytes()[:200])
    return root


@pytest.fixture(scope="module")
def mimic(tmp_path_factory) -> Path:
    return make_mimic(tmp_path_factory.mktemp("mimic") / "2.0.0")


def request(root: Path, cache: Path, options=None, **kw) -> DataRequest:
    return DataRequest(root, "cxr", cache_dir=cache, image_size=16, source_options=options, **kw)


def test_the_folder_is_detected_by_its_metadata_csv_plain_or_gzipped(mimic, tmp_path) -> None:
    source, evidence = detect_source(mimic)
    assert source.name == "mimic-cxr-jpg" and evidence == f"{METADATA}.gz"
    plain = make_mimic(tmp_path / "plain", gz=False)
    assert detect_source(plain) == (source, METADATA)
    with pytest.raises(UsageError, match="give the MIMIC-CXR-JPG folder that holds it"):
        detect_source(mimic / f"{METADATA}.gz")


def test_dry_run_counts_the_selection_and_the_official_split(mimic, tmp_path) -> None:
    summary = describe_dry_run(request(mimic, tmp_path))
    assert summary["source"] == "mimic-cxr-jpg" and summary["detected"] is True
    assert summary["selection"] == {
        f"rows in {METADATA}": 10,
        "left out: lateral view": 1,
        "left out: view not selected": 1,
        f"left out: study not in {LABELS}": 1,
        "left out: uncertain label (uncertain=drop)": 1,
        "selected": 5,
    }
    assert summary["excluded"] == {"image file not found": 1}
    assert (summary["images"], summary["positive"], summary["negative"]) == (5, 2, 3)
    assert summary["splits"]["mimic-cxr/test"]["images"] == 2
    assert summary["splits"]["mimic-cxr/train_val"]["images"] == 3
    assert not [note for note in summary["notes"] if note.startswith("no ")]  # all files found


def test_each_image_gets_its_study_label_sex_age_and_view(mimic, tmp_path) -> None:
    cohort = load_cohort(request(mimic, tmp_path), progress=False)
    assert cohort.excluded == {"image file not found": 1, "damaged or truncated PNG/JPEG": 1}
    assert [c.label for c in cohort.cases] == [1, 0, 1, 0]
    assert [c.view for c in cohort.cases] == ["PA", "AP", "PA", "PA"]
    assert [c.sex for c in cohort.cases] == ["F", "F", "M", "M"]
    # anchor_age moved to the study's year; over 89 is 90
    assert [c.age for c in cohort.cases] == [52.0, 55.0, 90.0, 90.0]
    assert cohort.patients[0] == cohort.patients[1] and cohort.patients[2] == cohort.patients[3]
    assert len(set(cohort.patients)) == 2
    assert "uncertain labels: drop" in cohort.description


def test_the_official_test_rows_are_the_test_list(tmp_path) -> None:
    images = [*IMAGES, ("d-0011", "15000055", "55000005", "PA", "21500101", "train")]
    labels = {**STUDY_LABELS, "55000005": {"No Finding": "1.0"}}
    root = make_mimic(tmp_path / "data", images, labels=labels)
    cohort = load_cohort(request(root, tmp_path / "cache"), progress=False)
    split = official_split(cohort, n_folds=2, val_fraction=0.5, seed=0)
    assert split is not None and cohort.patients[split.test].tolist() == [cohort.patients[2]] * 2
    for train, _val in split.folds:
        assert not set(cohort.patients[train]) & set(cohort.patients[split.test])


@pytest.mark.parametrize(("policy", "positive", "negative"), [("ones", 3, 3), ("zeros", 2, 4)])
def test_the_uncertain_policy_applies_to_the_study(mimic, tmp_path, policy, positive, negative):
    summary = describe_dry_run(request(mimic, tmp_path, {"uncertain": policy}))
    assert (summary["positive"], summary["negative"]) == (positive, negative)
    assert f"uncertain labels: {policy}" in summary["description"]


def test_all_views_keeps_the_lateral_and_the_unknown_view(mimic, tmp_path) -> None:
    summary = describe_dry_run(request(mimic, tmp_path, {"views": "all"}))
    assert summary["views"] == {"AP": 1, "LATERAL": 1, "PA": 4, "unknown": 1}


def test_without_patients_csv_sex_and_age_are_unknown(tmp_path) -> None:
    root = make_mimic(tmp_path / "data", gz=False, patients=False)
    summary = describe_dry_run(request(root, tmp_path / "cache"))
    assert summary["sex"] == {"unknown": 5}
    assert "no patients.csv (MIMIC-IV): sex and age unknown" in summary["notes"]


def test_a_missing_labels_file_is_one_line(tmp_path) -> None:
    root = make_mimic(tmp_path / "data")
    (root / LABELS).unlink()
    with pytest.raises(UsageError, match=f"has no {LABELS}") as caught:
        describe_dry_run(request(root, tmp_path / "cache"))
    assert "\n" not in str(caught.value)


def test_the_canary_never_leaves_the_source(tmp_path, caplog, capsys) -> None:
    """A canary in the folders above, in every dicom_id and (as digits) in a subject id."""
    caplog.set_level(logging.DEBUG)
    digits = "73910462"
    images = [
        (f"{CANARY}-{d}", digits if s == "10000032" else s, t, v, date, split)
        for d, s, t, v, date, split in IMAGES
    ]
    subjects = {**SUBJECTS, digits: SUBJECTS["10000032"]}
    root = make_mimic(tmp_path / f"site-{CANARY}" / f"mimic-{CANARY}", images, subjects=subjects)
    cache = tmp_path / "cache"
    cohort = load_cohort(request(root, cache), progress=False)
    assert len(cohort.cases) == 4 and len(set(cohort.patients)) == 2  # real cases are read
    requests = [
        request(root, cache, options, finding=finding, strict=strict)
        for strict in (False, True)
        for options, finding in ((None, "Atelectasis"), ({"views": "all"}, "Edema"), (None, "X"))
    ]
    seen = exposed(requests, cache, caplog, capsys)
    for marker in (CANARY, digits):
        assert [text for text in seen if marker.lower() in text.lower()] == []
