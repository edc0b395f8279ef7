"""PadChest as laid out on disk: the labels list, Projection, 16-bit PNGs mapped by one window
for the data set, an age band from the birth year, broken files, and no identifier (birth dates
included) in anything the cohort exposes."""

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

from audit.data.decode import decode_file
from audit.data.loading import DataRequest, describe_dry_run, load_cohort
from audit.data.registry import detect_source, get_source
from audit.errors import UsageError

CSV_NAME = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
HEADER = (
    "ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "PatientBirth",
    "PatientSex_DICOM", "ViewPosition_DICOM", "Projection", "MethodProjection", "Pediatric",
    "Labels",
)  # fmt: skip
SIZE = 64


def gradient(top: int) -> np.ndarray:
    """Left to right from 0 to ``top``, 16-bit."""
    return np.tile(np.rint(np.linspace(0, top, SIZE)).astype(np.uint16), (SIZE, 1))


def noise(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4096, (SIZE, SIZE)).astype(np.uint16)


# (ImageID, ImageDir, PatientID, PatientBirth, sex, Projection, Labels, pixels)
ROWS = [
    ("bright.png", "0", "P1", "1946", "F", "PA", "['atelectasis']", gradient(4095)),
    ("dark.png", "0", "P1", "1946.0", "F", "PA", "['normal']", gradient(1000)),
    ("side.png", "0", "P1", "1946", "F", "L", "['normal']", noise(1)),
    ("other.png", "1", "P2", "19371113", "M", "AP", "['pneumonia', ' cardiomegaly']", noise(2)),
    ("broken.png", "1", "P3", "1980", "M", "PA", "['normal']", noise(3)),
    ("gone.png", "1", "P4", "1990", "F", "PA", "['atelectasis']", None),
    ("lying.png", "1", "P2", "19371113", "M", "AP_horizontal", "[' Atelectasis']", noise(4)),
    ("nolabel.png", "1", "P5", "1950", "M", "PA", "", noise(5)),
]
STUDY_DATE = "20150612"


def make_padchest(root: Path, rows=ROWS, *, gz: bool = False) -> Path:
    """The CSV (gzipped when ``gz``) and the 16-bit PNGs it lists, one cut short, one missing."""
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for image, folder, patient, birth, sex, projection, labels, pixels in rows:
        lines.append([image, folder, STUDY_DATE, f"S-{image}", patient, birth, sex, "POSTEROANTERIOR",
                      projection, "Manual review of DICOM fields", "No", labels])  # fmt: skip
        if pixels is None:
            continue
        path = root / folder / image
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
        if "broken" in image:
            path.write_bytes(path.read_bytes()[:100])
    buffer = io.StringIO()
    csv.writer(buffer).writerows([HEADER, *lines])
    text = buffer.getvalue().encode()
    if gz:
        (root / f"{CSV_NAME}.gz").write_bytes(gzip.compress(text))
    else:
        (root / CSV_NAME).write_bytes(text)
    return root


@pytest.fixture(scope="module")
def padchest(tmp_path_factory) -> Path:
    return make_padchest(tmp_path_factory.mktemp("padchest") / "BIMCV-PadChest")


def request(root: Path, cache: Path, options=None, **kw) -> DataRequest:
    return DataRequest(root, "cxr", cache_dir=cache, image_size=SIZE, source_options=options, **kw)


def test_the_folder_is_detected_by_its_csv_plain_or_gzipped(padchest, tmp_path) -> None:
    assert detect_source(padchest)[0].name == "padchest"
    assert detect_source(padchest)[1] == CSV_NAME
    gzipped = make_padchest(tmp_path / "gz", gz=True)
    assert detect_source(gzipped)[1] == f"{CSV_NAME}.gz"
    with pytest.raises(UsageError, match="give the PadChest folder that holds it"):
        detect_source(padchest / CSV_NAME)


def test_dry_run_counts_labels_views_and_left_out_files(padchest, tmp_path) -> None:
    summary = describe_dry_run(request(padchest, tmp_path))
    assert summary["source"] == "padchest" and summary["detected"] is True
    assert summary["selection"] == {
        f"rows in {CSV_NAME}": 8,
        "left out: lateral view": 1,
        "left out: other findings only": 1,
        "left out: Labels empty or not a list": 1,
        "selected": 4,
    }
    assert summary["excluded"] == {"image file not found": 1}
    assert (summary["images"], summary["positive"], summary["negative"]) == (4, 2, 2)
    assert summary["views"] == {"AP_HORIZONTAL": 1, "PA": 3}
    assert "splits" in summary and summary["splits"] == {}  # PadChest has no official split
    assert "by one window for the data set" in summary["description"]


def test_cohort_carries_sex_view_and_an_age_band_and_leaves_out_the_broken_png(
    padchest, tmp_path
) -> None:
    cohort = load_cohort(request(padchest, tmp_path), progress=False)
    assert cohort.excluded == {"image file not found": 1, "damaged or truncated PNG/JPEG": 1}
    assert [c.label for c in cohort.cases] == [1, 0, 1]
    assert [c.sex for c in cohort.cases] == ["F", "F", "M"]
    assert [c.view for c in cohort.cases] == ["PA", "PA", "AP_HORIZONTAL"]
    assert [c.age for c in cohort.cases] == [65.0, 65.0, 75.0]  # 69 and 78 in five-year bands
    assert cohort.patients[0] == cohort.patients[1] != cohort.patients[2]


def test_one_window_for_the_data_set_keeps_the_darker_image_darker(padchest, tmp_path) -> None:
    req = request(padchest, tmp_path)
    source = get_source("padchest")
    plan = source.plan(req)
    low, high = plan.window
    pooled = np.concatenate(
        [r[-1].ravel() for r in ROWS if r[-1] is not None and r[0] != "broken.png"]
    )
    assert (low, high) == pytest.approx(tuple(np.percentile(pooled, (0.5, 99.5))))
    assert plan.window_images == 6  # every readable 16-bit image of this small set
    settings = source.decode_settings(req, lambda: plan)
    bright, _ = decode_file(padchest / "0" / "bright.png", settings)
    dark, _ = decode_file(padchest / "0" / "dark.png", settings)
    # the full dynamic range: the bright gradient spans 0-255, monotonically (not its low byte)
    assert bright.min() == 0 and bright.max() == 255
    assert np.all(np.diff(bright[0].astype(int)) >= 0) and len(np.unique(bright)) > 60
    # the same mapping: 0-1000 of about 0-4075 stays dark
    assert dark.max() == pytest.approx(255 * (1000 - low) / (high - low), abs=1)
    assert np.all(np.diff(dark[0].astype(int)) >= 0)
    # each image's own range would have stretched the dark one to white: the confounder avoided
    stretched, _ = decode_file(padchest / "0" / "dark.png", req.decode_settings)
    assert stretched.max() == 255


def test_the_window_is_in_the_cache_key(padchest, tmp_path) -> None:
    req = request(padchest, tmp_path)
    source = get_source("padchest")
    plan = source.plan(req)
    assert source.fingerprint(req, lambda: plan)["window"] == plan.window
    other = make_padchest(tmp_path / "brighter", [(*ROWS[0][:7], gradient(8000)), *ROWS[1:]])
    other_plan = source.plan(request(other, tmp_path))
    assert other_plan.window[1] > plan.window[1]


def test_the_loaded_cohort_uses_the_data_sets_window(padchest, tmp_path) -> None:
    cohort = load_cohort(request(padchest, tmp_path), progress=False)
    bright, dark = cohort.images[0], cohort.images[1]
    assert bright.max() == 255 and dark.max() < 80


def test_negatives_absent_and_all_views(padchest, tmp_path) -> None:
    summary = describe_dry_run(request(padchest, tmp_path, {"negatives": "absent", "views": "all"}))
    assert (summary["positive"], summary["negative"]) == (2, 4)  # normal, lateral, other, broken
    assert summary["views"] == {"AP": 1, "AP_HORIZONTAL": 1, "LATERAL": 1, "PA": 3}


@pytest.mark.parametrize(
    ("options", "finding", "message"),
    [
        ({"uncertain": "ones"}, "Atelectasis", "`uncertain` does not apply to PadChest"),
        (None, "Effusion", "labels no image in .*; PadChest's labels are lowercase phrases"),
        (None, "normal", "labels no image"),
    ],
)
def test_bad_options_and_findings_are_one_line(padchest, tmp_path, options, finding, message):
    with pytest.raises(UsageError, match=message) as caught:
        describe_dry_run(request(padchest, tmp_path, options, finding=finding))
    assert "\n" not in str(caught.value)


def test_the_canary_and_the_birth_dates_never_leave_the_source(tmp_path, caplog, capsys) -> None:
    """A canary in the folders, the image and patient ids and a birth date; a real-looking
    birth date and the study date must not leave either."""
    caplog.set_level(logging.DEBUG)
    rows = [
        (f"{CANARY}-{image}", f"dir-{CANARY}", f"{CANARY}-{patient}",
         CANARY if n == 0 else birth, sex, projection, labels, pixels)
        for n, (image, _d, patient, birth, sex, projection, labels, pixels) in enumerate(ROWS)
    ]  # fmt: skip
    root = make_padchest(tmp_path / f"site-{CANARY}", rows)
    cache = tmp_path / "cache"
    cohort = load_cohort(request(root, cache), progress=False)
    assert len(cohort.cases) == 3 and len(set(cohort.patients)) == 2  # real cases are read
    assert [c.age for c in cohort.cases] == [None, 65.0, 75.0]  # the canary birth date: unknown
    requests = [
        request(root, cache, options, finding=finding, strict=strict)
        for strict in (False, True)
        for options, finding in (
            (None, "atelectasis"),
            ({"views": "all"}, "pneumonia"),
            (None, "X"),
        )
    ]
    seen = exposed(requests, cache, caplog, capsys)
    for marker in (CANARY, "19371113", STUDY_DATE):
        assert [text for text in seen if marker.lower() in text.lower()] == []
