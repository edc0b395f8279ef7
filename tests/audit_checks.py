"""What a finished tiny audit must show, and the smallest audit whose experiment works.

Most end-to-end tests train one step at 32 px on 40 phantom patients: enough to exercise the
pipeline, far too little for the controls (a single step cannot show the loss fell; ten test
images cannot bound a clean AUC). Such an audit finishes every run and exits 4, incomplete by
its controls. Tests of the verdict itself use :func:`working_manifest`: separable PNGs that a
tiny network learns in three epochs, with test sets large enough for the controls to hold.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from test_data_builders import separable_pngs

VERDICT_CODES = (0, 1, 3)
INCOMPLETE = 4


def assert_finished(code: int, out: Path) -> dict[str, Any]:
    """Every run of the audit in ``out`` finished; its exit code is a verdict's, or 4 with the
    controls (never a failed run or a crash) as the reason. Returns results.json."""
    results = json.loads((Path(out) / "results.json").read_text())
    status = results["status"]
    assert status["runs_done"] == status["runs_total"] and status["runs_failed"] == 0, status
    if code == INCOMPLETE:
        controls = results["controls"]
        assert controls is not None and not controls["passed"], status
        assert not status["complete"] and status["reason"] == controls["reason"]
        assert results["verdict"] is None and "gate" not in results
    else:
        assert code in VERDICT_CODES, code
        assert status["complete"] and results["controls"]["passed"]
    return results


def working_manifest(folder: Path, n: int = 96, sex: bool = False) -> Path:
    """``n`` separable PNGs, one patient each, and their manifest.csv; returns the manifest.
    ``sex``: a sex column, F and M in turn within each class (independent of the label)."""
    made = separable_pngs(folder, n=n)
    header = "path,label,patient_id" + (",sex" if sex else "")
    lines = [header] + [
        f"{f},{y},p{i}" + (f",{'FM'[(i // 2) % 2]}" if sex else "") for i, (f, y) in enumerate(made)
    ]
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


WORKING_TRAINING = (
    "--folds", "2", "--epochs", "3", "--batch-size", "16", "--input-size", "32",
    "--image-size", "32", "--resamples", "100",
)  # fmt: skip
