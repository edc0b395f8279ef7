"""Broken inputs: each gives one clear reason, the audit goes on, and ``strict`` makes it exit 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from test_data_builders import Identity, ct_dataset, save_dataset, write_manifest, write_png

from audit.data.loading import DataRequest, describe_dry_run, load_cohort
from audit.errors import ExitCode, UsageError

REASONS = {
    "truncated.dcm": "truncated DICOM",
    "nopixels.dcm": "no pixel data",
    "syntax.dcm": "unknown or unsupported transfer syntax",
    "fake.png": "not a PNG, JPEG or DICOM file",
    "cut.png": "damaged or truncated PNG/JPEG",
    "missing.png": "image file not found",
}


def slice_file(path: Path) -> Path:
    hu = np.linspace(-1000, 400, 64).reshape(8, 8)
    return save_dataset(ct_dataset(Identity(), series_uid="1.2.3", z=0.0, hu=hu), path)


def make_corpus(folder: Path) -> Path:
    """Three good PNGs and one file of each broken kind, listed in a manifest."""
    for i in range(3):
        write_png(folder / f"good{i}.png", seed=i)
    raw = slice_file(folder / "whole.dcm").read_bytes()
    (folder / "truncated.dcm").write_bytes(raw[: len(raw) - 60])
    ds = pydicom.dcmread(folder / "whole.dcm")
    del ds.PixelData
    ds.save_as(folder / "nopixels.dcm", enforce_file_format=True)
    ds = pydicom.dcmread(folder / "whole.dcm")
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6.7"
    ds.save_as(folder / "syntax.dcm", enforce_file_format=False)
    (folder / "fake.png").write_text("this is not an image")
    (folder / "cut.png").write_bytes((folder / "good0.png").read_bytes()[:60])
    (folder / "whole.dcm").unlink()
    names = [f"good{i}.png" for i in range(3)] + list(REASONS)
    rows = [{"path": n, "label": str(i % 2), "patient_id": f"P{i}"} for i, n in enumerate(names)]
    return write_manifest(folder / "manifest.csv", rows)


@pytest.fixture
def corpus(tmp_path) -> Path:
    return make_corpus(tmp_path / "data")


def test_each_broken_file_is_left_out_with_its_reason(corpus, tmp_path) -> None:
    cohort = load_cohort(
        DataRequest(corpus, "cxr", cache_dir=tmp_path / "c", image_size=16), progress=False
    )
    assert len(cohort.cases) == 3
    assert cohort.excluded == {reason: 1 for reason in REASONS.values()}


def test_dry_run_names_each_left_out_file_by_position_and_pseudonym(corpus, tmp_path) -> None:
    req = DataRequest(corpus, "cxr", cache_dir=tmp_path / "c", image_size=16)
    load_cohort(req, progress=False)
    summary = describe_dry_run(req)
    assert summary["excluded_total"] == len(REASONS)
    lines = summary["quarantined"]
    for position, reason in enumerate(REASONS.values(), 4):
        assert any(
            line.startswith(f"file #{position} (case c") and reason in line for line in lines
        )
    assert all("\n" not in line and ".dcm" not in line and ".png" not in line for line in lines)


def test_dry_run_without_a_cache_checks_presence_and_type(corpus, tmp_path) -> None:
    summary = describe_dry_run(DataRequest(corpus, "cxr", cache_dir=tmp_path / "c"))
    assert summary["decoded"] is False
    assert summary["excluded"] == {"image file not found": 1, "not a PNG, JPEG or DICOM file": 1}


def test_strict_makes_a_broken_file_a_usage_error(corpus, tmp_path) -> None:
    req = DataRequest(corpus, "cxr", cache_dir=tmp_path / "c", image_size=16, strict=True)
    with pytest.raises(UsageError) as caught:
        load_cohort(req, progress=False)
    message = str(caught.value)
    assert caught.value.exit_code == ExitCode.USAGE == 2
    assert message.startswith("`strict`: 6 file(s) left out") and "\n" not in message
    assert "file #4 (case c" in message and "run without `strict`" in message


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([{"path": "a.png", "patient_id": "P1"}], r"lacks the column\(s\) label"),
        ([{"path": "a.png", "label": "2", "patient_id": "P1"}], "row 1: label must be 0 .* got 2"),
        (
            [{"path": "a.png", "label": "19650101", "patient_id": "P1"}],  # columns swapped
            "row 1: label must be 0 .* got another number \\(not shown\\)$",
        ),
        ([{"path": "a.png", "label": "yes", "patient_id": "P1"}], "got a non-number"),
        ([{"path": "a.png", "label": "1", "patient_id": ""}], "row 1: patient_id is empty"),
        ([{"path": "", "label": "1", "patient_id": "P"}], "row 1: path is empty"),
    ],
)
def test_a_malformed_manifest_is_one_clear_line(tmp_path, rows, expected) -> None:
    write_png(tmp_path / "a.png", seed=0)
    manifest = write_manifest(tmp_path / "manifest.csv", rows)
    for strict in (False, True):
        with pytest.raises(UsageError, match=expected) as caught:
            load_cohort(
                DataRequest(manifest, "cxr", cache_dir=tmp_path / "c", strict=strict),
                progress=False,
            )
        assert "\n" not in str(caught.value) and caught.value.exit_code == 2


def test_label_values_that_may_be_identifiers_are_not_echoed(tmp_path) -> None:
    write_png(tmp_path / "a.png", seed=0)
    rows = [{"path": "a.png", "label": "Doe^Jane", "patient_id": "P1"}]
    manifest = write_manifest(tmp_path / "manifest.csv", rows)
    with pytest.raises(UsageError) as caught:
        describe_dry_run(DataRequest(manifest, "cxr", cache_dir=tmp_path / "c"))
    assert "Doe" not in str(caught.value)


def test_no_usable_image_is_a_usage_error(tmp_path) -> None:
    (tmp_path / "fake.png").write_text("nope")
    rows = [{"path": "fake.png", "label": "1", "patient_id": "P1"}]
    manifest = write_manifest(tmp_path / "manifest.csv", rows)
    with pytest.raises(UsageError, match="no usable image in the data: 1 file"):
        load_cohort(DataRequest(manifest, "cxr", cache_dir=tmp_path / "c"), progress=False)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p, "does not exist"),
        (lambda p: (p.mkdir(), p)[1], "could not recognise the data layout; looked for"),
        (lambda p: (p.write_text("x"), p)[1], "not a CSV manifest"),
    ],
)
def test_unusable_data_paths_say_what_was_looked_for(tmp_path, make, expected) -> None:
    path = make(tmp_path / "data")
    with pytest.raises(UsageError, match=expected) as caught:
        describe_dry_run(DataRequest(path, "cxr", cache_dir=tmp_path / "c"))
    assert "data" not in str(caught.value).replace("`data`", "").replace("the data", "")


def test_bad_settings_are_usage_errors(tmp_path) -> None:
    for kwargs in (
        {"image_size": 8},
        {"hu_window": (400.0, -1000.0)},
        {"protocol": "mine"},
        {"source": "dicomdir"},
    ):
        with pytest.raises(UsageError):
            describe_dry_run(DataRequest(tmp_path, "cxr", cache_dir=tmp_path / "c", **kwargs))
    with pytest.raises(UsageError, match="`modality` 'mri'"):
        DataRequest(tmp_path, "mri", cache_dir=tmp_path)


def test_a_cut_png_stays_unreadable_after_weasyprint_loosened_pillow(
    corpus, tmp_path, monkeypatch
) -> None:
    """WeasyPrint sets Pillow's process-wide LOAD_TRUNCATED_IMAGES when imported (a report
    rendered earlier in the process); the decoder must refuse a cut file all the same."""
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    cohort = load_cohort(
        DataRequest(corpus, "cxr", cache_dir=tmp_path / "c", image_size=16), progress=False
    )
    assert len(cohort.cases) == 3
    assert cohort.excluded[REASONS["cut.png"]] == 1
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True, "the caller's setting is restored"
