"""Canary through a whole audit: identifiers in DICOM fields and folder names reach no output.

A unique string sits in every DICOM patient field (name, id, birth date, accession number), in
folder and file names, and in the manifest's patient ids; one file is broken. After a full
`medaudit check --data`, the string is in no output file (name or content, the PDF's text and its
attachment included), no cache file name, and nothing printed.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
from audit_checks import WORKING_TRAINING, assert_finished
from model_builders import tiny_checkpoints
from test_data_builders import Identity, ct_dataset, save_dataset

CANARY = "ZQK7CANARY93"


def build_manifest(root: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for n in range(64):
            identity = Identity(
                patient_id=f"PID-{CANARY}-{n}", name=f"{CANARY}^Pat{n}", birth_date=CANARY,
                accession=f"ACC{CANARY}{n}", sex="F" if n % 2 else "M",
            )  # fmt: skip
            label = n % 2
            hu = rng.normal(-600, 150, (32, 32)) + 300 * label  # brighter positives: learnable
            path = root / f"ward-{CANARY}" / f"{CANARY}-{n}" / f"{CANARY}.dcm"
            save_dataset(ct_dataset(identity, series_uid=f"1.2.3.{n}", z=0.0, hu=hu), path)
            rows.append({"path": str(path.relative_to(root)), "label": str(label),
                         "patient_id": f"{CANARY}-{n}"})  # fmt: skip
    broken = root / f"ward-{CANARY}" / f"{CANARY}-broken.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + CANARY.encode())
    rows.append({"path": str(broken.relative_to(root)), "label": "1", "patient_id": CANARY})
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "patient_id"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def test_no_identifier_reaches_any_output_of_a_full_audit(tmp_path: Path) -> None:
    from pypdf import PdfReader

    data_root = tmp_path / f"site-{CANARY}"
    manifest = build_manifest(data_root)
    tiny_checkpoints(
        tmp_path
    )  # user.pt, reference.pt: they learn the images, so every page renders
    out, cache = tmp_path / "out", tmp_path / "cache"
    done = subprocess.run(
        [sys.executable, "-m", "audit", "check", str(tmp_path / "user.pt"), "--modality", "ct",
         "--data", str(manifest), "--reference", str(tmp_path / "reference.pt"), "--out", str(out),
         "--cache-dir", str(cache), "--confounders", "tag,noise", "--levels", "0,1",
         *WORKING_TRAINING],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    results = assert_finished(done.returncode, out)
    assert results["controls"]["passed"], results["status"]["reason"]
    assert results["verdict"] is not None, "the verdict pages are checked too"
    assert CANARY not in done.stdout and CANARY not in done.stderr
    assert (out / "report.pdf").is_file()
    for path in [*out.rglob("*"), *cache.rglob("*")]:
        assert CANARY not in path.name
    for path in out.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path.name
    reader = PdfReader(out / "report.pdf")
    assert all(CANARY not in page.extract_text() for page in reader.pages)
    for contents in reader.attachments.values():
        assert all(CANARY.encode() not in blob for blob in contents)
    # the broken file was left out and counted, without its name
    import json

    results = json.loads((out / "results.json").read_text())
    assert sum(results["data"]["excluded"].values()) == 1
