"""NIH ChestX-ray14 as published: ``Data_Entry_2017.csv``, PNGs in ``images_NNN/images/`` (or one
flat ``images/``), and the official ``train_val_list.txt`` / ``test_list.txt``.

Selection: positives are images whose "Finding Labels" include the finding; negatives are images
labelled exactly "No Finding"; images with only other findings are left out by design (counted in
``selection``, not as failures). Only the chosen views are kept (empty = all). With
``--protocol source-matters`` the study's lists choose the images and their labels instead, and the
CSV supplies patient, sex, age and view.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from audit.constants import PROTOCOLS
from audit.data.dicom import normalise_sex
from audit.data.items import PlannedImage, PlannedProblem, SourcePlan
from audit.data.problems import FILE_NOT_FOUND, NOT_IN_DATA_ENTRY, Unreadable
from audit.data.source import DataRequest, DataSource, OfficialLists
from audit.data.study_lists import load_study_lists
from audit.errors import UsageError

log = logging.getLogger(__name__)

SOURCE = "nih-cxr14"
DATA_ENTRY_NAMES = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")
REQUIRED_COLUMNS = (
    "Image Index",
    "Finding Labels",
    "Patient ID",
    "Patient Gender",
    "View Position",
)
NEGATIVE = "No Finding"
_COLUMNS = {  # CSV column -> Row field, in Row's order
    "Image Index": "name",
    "Finding Labels": "findings",
    "Patient ID": "patient",
    "Patient Gender": "sex",
    "View Position": "view",
    "Patient Age": "age",
}
OFFICIAL_LISTS = {"train_val_list.txt": "nih/train_val", "test_list.txt": "nih/test"}
NIH_FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema",
    "Fibrosis", "Hernia", "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia",
    "Pneumothorax",
)  # fmt: skip


def find_data_entry(root: Path) -> Path | None:
    for name in DATA_ENTRY_NAMES:
        if (root / name).is_file():
            return root / name
    return None


def read_data_entry(root: Path) -> pd.DataFrame:
    """The CSV as strings, indexed by image name; a missing column is a one-line error."""
    path = find_data_entry(root)
    if path is None:
        raise UsageError(
            "the NIH ChestX-ray14 folder has no Data_Entry_2017.csv; give the folder that holds it"
        )
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except Exception:
        raise UsageError(f"{path.name} could not be read as CSV; re-download it") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise UsageError(
            f"{path.name} lacks the column(s) {', '.join(map(repr, missing))}; expected the "
            f"official NIH columns {', '.join(REQUIRED_COLUMNS)}, Patient Age"
        )
    if "Patient Age" not in table.columns:
        table["Patient Age"] = ""
    table = table[list(_COLUMNS)].rename(columns=_COLUMNS)
    table["name"] = table["name"].str.strip()
    return table.drop_duplicates("name").set_index("name", drop=False)


class Row(NamedTuple):
    """The CSV columns medaudit reads, in this order."""

    name: str
    findings: str
    patient: str
    sex: str
    view: str
    age: str


def _rows(table: pd.DataFrame) -> list[Row]:
    return [Row(*values) for values in table.itertuples(index=False, name=None)]


def index_images(root: Path) -> dict[str, Path]:
    """Image name -> file, over ``images/`` and ``images_*/images/`` (or ``images_*/``)."""
    folders = [root / "images"]
    for child in sorted(root.glob("images_*")):
        folders += [child / "images", child]
    found: dict[str, Path] = {}
    unlisted = 0
    for folder in folders:
        try:
            entries = sorted(folder.iterdir()) if folder.is_dir() else []
        except OSError:  # its images are then counted as not found, never a crash with its path
            unlisted += 1
            continue
        for entry in entries:
            if entry.suffix.lower() == ".png" and entry.name not in found:
                found[entry.name] = entry
    if unlisted:
        log.warning(
            "%d image folder(s) of the NIH data could not be listed (permissions?); their "
            "images are counted as not found", unlisted,
        )  # fmt: skip
    return found


def read_official_lists(root: Path) -> dict[str, set[str]]:
    lists = {}
    for file_name, subset in OFFICIAL_LISTS.items():
        path = root / file_name
        if path.is_file():
            try:
                text = path.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                raise UsageError(
                    f"{file_name} is not a UTF-8 text file (NIH's lists hold one image name per "
                    "line); re-download it"
                ) from None
            except OSError as exc:
                raise UsageError(f"{file_name} cannot be read ({exc.strerror})") from None
            lists[subset] = {line.strip() for line in text.splitlines() if line.strip()}
    return lists


def plan_nih(root: Path, finding: str, views: tuple[str, ...], protocol: str | None) -> SourcePlan:
    table = read_data_entry(root)
    files = index_images(root)
    lists = read_official_lists(root)
    if protocol is not None:
        return _plan_preset(table, files, lists, protocol)
    _check_finding(table, finding)
    selection: Counter[str] = Counter({"rows in Data_Entry_2017.csv": len(table)})
    wanted_views = {v.upper() for v in views}
    entries: list[PlannedImage | PlannedProblem] = []
    for row in _rows(table):
        labels = {s.strip() for s in row.findings.split("|")}
        if finding in labels:
            label = 1
        elif labels == {NEGATIVE}:
            label = 0
        else:
            selection["left out: other findings only"] += 1
            continue
        if wanted_views and row.view.strip().upper() not in wanted_views:
            selection["left out: view not selected"] += 1
            continue
        entries.append(_entry(row, label, None, files, lists, ()))
    selection["selected"] = len(entries)
    description = (
        f"NIH ChestX-ray14: {finding} (positive) vs {NEGATIVE} (negative), "
        f"views {', '.join(sorted(wanted_views)) or 'all'}"
    )
    return SourcePlan(SOURCE, tuple(entries), description, dict(selection))


def _check_finding(table: pd.DataFrame, finding: str) -> None:
    """The finding must occur; the message lists only NIH's own finding names, never other
    values (a misaligned file puts other columns' values, names among them, in this column)."""
    found = set()
    for value in table["findings"]:
        found.update(s.strip() for s in str(value).split("|"))
    found.discard(NEGATIVE)
    if finding in found:
        return
    known = sorted(found & set(NIH_FINDINGS))
    others = len(found - set(NIH_FINDINGS))
    extra = f"; and {others} value(s) that are not NIH finding names (not shown)" if others else ""
    raise UsageError(
        f"`finding` {finding[:60]!r} does not occur in Data_Entry_2017.csv; findings in it: "
        f"{', '.join(known) or 'none'}{extra}"
    )


def _entry(row: Row, label, sex, files, lists, subsets) -> PlannedImage | PlannedProblem:
    path = files.get(row.name)
    if path is None:
        return PlannedProblem(row.name, Unreadable(FILE_NOT_FOUND))
    official = tuple(subset for subset, names in lists.items() if row.name in names)
    return PlannedImage(
        path=path,
        ref=row.name,
        patient=_patient(row.patient),
        label=label,
        sex=sex or normalise_sex(row.sex),
        age=_age(row.age),
        view=row.view.strip().upper() or None,
        subsets=(*subsets, *official),
    )


def _patient(value: str) -> str:
    text = str(value).strip()
    return str(int(text)) if text.isdigit() else text


def _age(value: str) -> float | None:
    """Years from "58" or "058Y"; NIH has a few impossible ages (over 120): unknown."""
    match = re.match(r"\s*(\d+)", str(value))
    if match is None:
        return None
    age = float(match.group(1))
    return age if age <= 120 else None


def _plan_preset(table, files, lists, protocol: str) -> SourcePlan:
    study = load_study_lists(protocol)
    entries: list[PlannedImage | PlannedProblem] = []
    warnings: Counter[str] = Counter()
    for experiment, listed in (("chest14", study.chest14), ("sex", study.sex)):
        for image in listed:
            ref = f"{protocol}/{experiment}/{image.name}"
            if image.name not in table.index:
                entries.append(PlannedProblem(ref, Unreadable(NOT_IN_DATA_ENTRY)))
                continue
            row = Row(*table.loc[image.name].tolist())
            if _patient(row.patient) != image.patient:
                warnings["patient id differs between the study lists and Data_Entry_2017.csv"] += 1
            csv_sex = normalise_sex(row.sex)
            if image.sex is not None and csv_sex is not None and csv_sex != image.sex:
                warnings["sex differs between the study lists and Data_Entry_2017.csv"] += 1
            entry = _entry(row, image.label, image.sex, files, lists, image.subsets)
            if isinstance(entry, PlannedProblem):
                entry = PlannedProblem(ref, entry.problem)
            else:
                entry = PlannedImage(**{**entry.__dict__, "ref": ref})
            entries.append(entry)
    description = (
        "NIH ChestX-ray14, the Source Matters study's image lists (chest14: pixel confounders; "
        "sex: Atelectasis vs No Finding, PA)"
    )
    selection = {"rows in Data_Entry_2017.csv": len(table), "listed by the study": len(entries)}
    notes = ("--finding and --views do not apply: the study's lists choose the images",)
    return SourcePlan(SOURCE, tuple(entries), description, selection, dict(warnings), notes)


class NihSource(DataSource):
    """NIH ChestX-ray14 as published; the study's image lists (``--protocol``) are read from it."""

    name = SOURCE
    title = "NIH ChestX-ray14"
    modalities = ("cxr",)
    looked_for = f"{DATA_ENTRY_NAMES[0]} (NIH ChestX-ray14)"
    detect_order = 10
    option_names = ("views",)  # a changed --views arrives here too; NIH reads request.views
    protocols = PROTOCOLS
    official_lists = OfficialLists(
        train_val=OFFICIAL_LISTS["train_val_list.txt"],
        test=OFFICIAL_LISTS["test_list.txt"],
        label="nih official",
    )

    def detect(self, path: Path) -> str | None:
        if path.is_file():
            if path.name in DATA_ENTRY_NAMES:
                raise UsageError(
                    f"`data` names {path.name}; give the NIH ChestX-ray14 folder that holds it"
                )
            return None
        entry = find_data_entry(path)
        return None if entry is None else entry.name

    def plan(self, request: DataRequest) -> SourcePlan:
        return plan_nih(request.path, request.finding, request.views, request.protocol)
