"""Canary: a unique string in every identifying DICOM field, in folder and file names and in a
manifest's patient ids never reaches a case, a log record, a warning, printed output, an error
message, the dry-run summary or the cache folder, also with broken files and ``strict``."""

from __future__ import annotations

import json
import logging
import traceback
import warnings
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest
from test_data_builders import (
    Identity,
    ct_dataset,
    default_scan,
    make_nih_tree,
    nih_rows,
    save_dataset,
    write_lidc_scan,
    write_manifest,
)

from audit.data.loading import DataRequest, describe_dry_run, load_cohort
from audit.errors import UsageError

CANARY = "QZX9CANARY41"


def canary_identity(n: int) -> Identity:
    return Identity(
        patient_id=f"PID-{CANARY}-{n}",
        name=f"{CANARY}^Jane{n}",
        birth_date=CANARY,
        accession=f"ACC{CANARY}{n}",
        sex="F",
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("privacy") / f"site-{CANARY}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("pydicom").disabled = True  # writing invalid DA values logs them
        try:
            return _build(base)
        finally:
            logging.getLogger("pydicom").disabled = False


def _build(base: Path) -> dict[str, Path]:
    lidc = base / f"LIDC-{CANARY}"
    for n in (1, 2):
        folder = write_lidc_scan(lidc, default_scan(canary_identity(n)), f"patient-{CANARY}-{n}")
        positive = folder / "1-021.dcm"  # slice 20 of the scan: outlined, so decoded
        raw = positive.read_bytes()
        positive.unlink()
        (folder / f"1-{CANARY}.dcm").write_bytes(raw[: len(raw) // 2])  # truncated, canary named
        (folder / f"notes-{CANARY}.dcm").write_text(f"{CANARY} not dicom")
    (lidc / f"patient-{CANARY}-1" / f"{CANARY}.xml").write_text(f"<LidcReadMessage>{CANARY}")
    images = base / f"images-{CANARY}"
    rows = []
    for n in range(6):
        hu = np.linspace(-1000, 400, 256).reshape(16, 16) + n
        ds = ct_dataset(canary_identity(n), series_uid=f"1.2.{n}", z=0.0, hu=hu)
        save_dataset(ds, images / f"{CANARY}-{n}" / f"{CANARY}.dcm")
        rows.append(
            {
                "path": f"images-{CANARY}/{CANARY}-{n}/{CANARY}.dcm",
                "label": str(n % 2),
                "patient_id": f"{CANARY}-{n % 3}",
            }
        )
    (images / f"{CANARY}-bad.dcm").write_bytes(b"\0" * 128 + b"DICM" + CANARY.encode())
    rows.append({"path": f"images-{CANARY}/{CANARY}-bad.dcm", "label": "1", "patient_id": CANARY})
    rows.append({"path": f"images-{CANARY}/{CANARY}-gone.png", "label": "0", "patient_id": CANARY})
    manifest = write_manifest(base / "manifest.csv", rows)
    nih = base / f"nih-{CANARY}"
    make_nih_tree(nih, nih_rows(4, 2))
    next(nih.glob("images_*/images/00000001_000.png")).unlink()
    return {"lidc": lidc, "manifest": manifest, "nih": nih, "empty": _empty(base)}


def _empty(base: Path) -> Path:
    folder = base / f"nothing-{CANARY}"
    folder.mkdir()
    (folder / f"{CANARY}.txt").write_text(CANARY)
    return folder


def requests(data: dict[str, Path], cache: Path, strict: bool) -> list[DataRequest]:
    common = {"cache_dir": cache, "image_size": 16, "strict": strict}
    return [
        DataRequest(data["lidc"], "ct", **common),
        DataRequest(data["manifest"], "ct", **common),
        DataRequest(data["manifest"], "cxr", **common),
        DataRequest(data["nih"], "cxr", views=(), **common),
        DataRequest(data["empty"], "cxr", **common),
        DataRequest(data["lidc"], "cxr", **common),
    ]


def test_the_canary_never_leaves_the_source(data, tmp_path, caplog, capsys) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    with warnings.catch_warnings(record=True) as caught_warnings:
        warnings.simplefilter("always")
        for strict in (False, True):
            for req in requests(data, tmp_path / "cache", strict):
                seen += _exercise(req)
    seen += [str(w.message) for w in caught_warnings]
    seen += [caplog.text, *(repr(r.args) for r in caplog.records)]
    printed = capsys.readouterr()
    seen += [printed.out, printed.err]
    seen += [p.name for p in (tmp_path / "cache").rglob("*")]
    seen += [p.read_text() for p in (tmp_path / "cache").rglob("*.json")]
    assert "decoding images" in printed.err  # the progress bar ran and was captured
    assert any("file(s) left out" in text for text in seen)  # broken files were reported
    leaks = [text for text in seen if CANARY.lower() in text.lower()]
    assert leaks == []
    assert not logging.getLogger("pydicom").isEnabledFor(logging.DEBUG)


def _exercise(req: DataRequest) -> list[str]:
    seen = [repr(req)]
    for call in (
        lambda: describe_dry_run(req),
        lambda: load_cohort(req, progress=True),
        lambda: load_cohort(req, progress=False),
    ):
        try:
            result = call()
        except UsageError as error:
            seen += [str(error), repr(error), "".join(traceback.format_exception(error))]
            continue
        if isinstance(result, dict):
            seen.append(json.dumps(result))
        else:
            seen += [repr(case) for case in result.cases]
            seen += [str(field) for case in result.cases for field in astuple(case)]
            seen += [result.description, *result.excluded, *result.warnings, *result.subsets]
    return seen


def test_the_canary_folders_gave_real_cases(data, tmp_path) -> None:
    """Guard for the test above: the canary data are read, broken files and all."""
    lidc = load_cohort(
        DataRequest(data["lidc"], "ct", cache_dir=tmp_path, image_size=16), progress=False
    )
    assert len(lidc.cases) == 12 and len(set(lidc.patients)) == 2
    assert lidc.excluded == {
        "truncated DICOM": 2,
        "not a DICOM file": 2,
        "unreadable LIDC reading session (XML)": 1,
    }
    manifest = load_cohort(
        DataRequest(data["manifest"], "ct", cache_dir=tmp_path, image_size=16), progress=False
    )
    assert len(manifest.cases) == 6 and len(set(manifest.patients)) == 3
    assert manifest.excluded == {"no pixel data": 1, "image file not found": 1}
