"""Any image set, described by a CSV manifest: one row per image.

Columns (names are matched case-insensitively): ``path`` (relative to the CSV's folder, or
absolute; PNG, JPEG or DICOM, recognised by content), ``label`` (0 or 1), ``patient_id`` (any
string; it is hashed, used only to keep a patient's images in one split), and optionally ``sex``
(M/F), ``age`` (years) and ``view`` (e.g. PA). A malformed manifest is a one-line error naming the
row; a listed file that is missing or unreadable is left out and counted.
"""

from __future__ import annotations

import csv
from pathlib import Path

from audit.data.dicom import normalise_sex
from audit.data.items import PlannedImage, PlannedProblem, SourcePlan
from audit.data.problems import file_problem
from audit.data.source import DataRequest, DataSource
from audit.errors import UsageError

SOURCE = "manifest"
MANIFEST_NAME = "manifest.csv"
REQUIRED = ("path", "label", "patient_id")
OPTIONAL = ("sex", "age", "view")
_ALIASES = {"patient": "patient_id", "patient id": "patient_id", "patientid": "patient_id"}


def manifest_file(path: Path) -> Path:
    return path / MANIFEST_NAME if path.is_dir() else path


def read_manifest(csv_path: Path) -> list[dict[str, str]]:
    """Rows as dicts with the canonical column names; a missing column is a one-line error."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = {_canonical(c): c for c in reader.fieldnames or ()}
            missing = [c for c in REQUIRED if c not in columns]
            if missing:
                raise UsageError(
                    f"the manifest lacks the column(s) {', '.join(missing)}; a manifest CSV needs "
                    f"the columns {', '.join(REQUIRED)} (optional: {', '.join(OPTIONAL)})"
                )
            return [
                {name: (row.get(original) or "").strip() for name, original in columns.items()}
                for row in reader
            ]
    except UsageError:
        raise
    except FileNotFoundError:
        raise UsageError("the manifest CSV does not exist; check `data`") from None
    except (OSError, UnicodeDecodeError, csv.Error):
        raise UsageError("the manifest could not be read as a UTF-8 CSV file") from None


def _canonical(column: str | None) -> str:
    name = (column or "").strip().lower()
    return _ALIASES.get(name, name)


def plan_manifest(path: Path) -> SourcePlan:
    csv_path = manifest_file(path)
    rows = read_manifest(csv_path)
    if not rows:
        raise UsageError("the manifest has no rows; list one image per row")
    entries = [_entry(number, row, csv_path.parent) for number, row in enumerate(rows, 1)]
    description = "image set from a manifest CSV"
    return SourcePlan(SOURCE, tuple(entries), description, {"rows in the manifest": len(rows)})


def _entry(number: int, row: dict[str, str], folder: Path) -> PlannedImage | PlannedProblem:
    if not row["path"]:
        raise UsageError(f"manifest row {number}: path is empty; give the image file of every row")
    if not row["patient_id"]:
        raise UsageError(
            f"manifest row {number}: patient_id is empty; every image needs its patient's id "
            "(any string: it is hashed and keeps a patient's images in one split)"
        )
    label = _label(number, row["label"])
    file = Path(row["path"])
    file = file if file.is_absolute() else folder / file
    problem = file_problem(file)
    if problem is not None:
        return PlannedProblem(row["path"], problem)
    return PlannedImage(
        path=file,
        ref=row["path"],
        patient=row["patient_id"],
        label=label,
        sex=normalise_sex(row.get("sex")),
        age=_age(row.get("age", "")),
        view=(row.get("view") or "").upper() or None,
    )


def _label(number: int, value: str) -> int:
    try:
        number_value = float(value)
    except ValueError:
        number_value = None
    if number_value in (0.0, 1.0):
        return int(number_value)
    # a short number is shown ("got 2"); a long one may be an id or a birth date swapped in
    if number_value is None:
        shown = "got a non-number"
    else:
        shown = f"got {value}" if len(value) <= 4 else "got another number (not shown)"
    raise UsageError(f"manifest row {number}: label must be 0 (negative) or 1 (positive), {shown}")


def _age(value: str) -> float | None:
    try:
        age = float(value)
    except ValueError:
        return None
    return age if 0 <= age <= 120 else None


class ManifestSource(DataSource):
    """Any image set a CSV describes; detected by a ``.csv`` file or a folder's manifest.csv."""

    name = SOURCE
    title = "a manifest CSV"
    looked_for = f"a .csv file or a {MANIFEST_NAME} (manifest with columns {','.join(REQUIRED)})"
    detect_order = 20

    def detect(self, path: Path) -> str | None:
        if path.is_file():
            return "a CSV file" if path.suffix.lower() == ".csv" else None
        return MANIFEST_NAME if (path / MANIFEST_NAME).is_file() else None

    def plan(self, request: DataRequest) -> SourcePlan:
        return plan_manifest(request.path)
