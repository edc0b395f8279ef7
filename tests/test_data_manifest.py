"""Any image set through a manifest CSV: PNG, JPEG and DICOM files, optional columns, detection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from test_data_builders import Identity, ct_dataset, save_dataset, write_manifest, write_png

from audit.data.loading import DataRequest, describe_dry_run, load_cohort
from audit.data.registry import detect_source


def mixed_set(folder: Path) -> Path:
    write_png(folder / "a" / "x.png", seed=1, size=32)
    Image.fromarray(np.full((20, 30, 3), 200, dtype=np.uint8)).save(folder / "b.jpg", quality=95)
    wide = (np.arange(40 * 40, dtype=np.uint16).reshape(40, 40) * 40).astype(np.uint16)
    Image.fromarray(wide).save(folder / "deep.png")
    hu = np.linspace(-1000, 400, 256).reshape(16, 16)
    save_dataset(ct_dataset(Identity(), series_uid="1.2", z=0.0, hu=hu), folder / "c" / "s.dcm")
    rows = [
        {
            "path": "a/x.png",
            "label": "1",
            "patient_id": "A",
            "sex": "female",
            "age": "61",
            "view": "pa",
        },
        {"path": "b.jpg", "label": "0", "patient_id": "B", "sex": "M", "age": "", "view": "AP"},
        {"path": "deep.png", "label": "0.0", "patient_id": "B", "sex": "", "age": "x", "view": ""},
        {
            "path": str(folder / "c" / "s.dcm"),
            "label": "1",
            "patient_id": "C",
            "sex": "X",
            "age": "300",
            "view": "PA",
        },
    ]
    return write_manifest(folder / "manifest.csv", rows)


def test_a_manifest_csv_is_detected_as_file_or_folder(tmp_path) -> None:
    manifest = mixed_set(tmp_path)
    assert detect_source(manifest)[0].name == "manifest"
    assert detect_source(tmp_path)[1] == "manifest.csv"


def test_png_jpeg_16_bit_and_dicom_are_read(tmp_path) -> None:
    manifest = mixed_set(tmp_path)
    cohort = load_cohort(
        DataRequest(manifest, "cxr", cache_dir=tmp_path / "c", image_size=16), progress=False
    )
    assert cohort.excluded == {} and len(cohort.cases) == 4
    assert [c.label for c in cohort.cases] == [1, 0, 0, 1]
    assert [c.sex for c in cohort.cases] == ["F", "M", None, None]
    assert [c.age for c in cohort.cases] == [61.0, None, None, None]
    assert [c.view for c in cohort.cases] == ["PA", "AP", None, "PA"]
    assert abs(int(cohort.images[1].mean()) - 200) <= 2  # JPEG, colour to grey
    deep = cohort.images[2]
    assert deep.min() <= 10 and deep.max() >= 240  # 16-bit scaled from its own range
    assert len(set(cohort.patients)) == 3


def test_column_names_are_matched_case_insensitively(tmp_path) -> None:
    write_png(tmp_path / "x.png", seed=0)
    manifest = write_manifest(
        tmp_path / "list.csv", [{"Path": "x.png", "LABEL": "1", "Patient ID": "P"}]
    )
    summary = describe_dry_run(DataRequest(manifest, "cxr", cache_dir=tmp_path / "c"))
    assert summary["images"] == 1 and summary["positive"] == 1
    assert summary["source"] == "manifest" and summary["detected_by"] == "a CSV file"


def test_ct_manifest_uses_the_hu_window(tmp_path) -> None:
    hu = np.full((16, 16), -300.0)
    save_dataset(ct_dataset(Identity(), series_uid="1", z=0.0, hu=hu), tmp_path / "s.dcm")
    manifest = write_manifest(
        tmp_path / "m.csv", [{"path": "s.dcm", "label": "1", "patient_id": "P"}]
    )
    cohort = load_cohort(
        DataRequest(
            manifest, "ct", cache_dir=tmp_path / "c", image_size=16, hu_window=(-500.0, -100.0)
        ),
        progress=False,
    )
    assert int(cohort.images[0, 0, 0]) == 128  # -300 HU is the middle of [-500, -100]
