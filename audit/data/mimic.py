"""MIMIC-CXR-JPG as published: ``mimic-cxr-2.0.0-metadata.csv``, ``-chexpert.csv`` and
``-split.csv`` (each plain or ``.csv.gz``) beside ``files/pXX/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg``.

The labels are per study, from the CheXpert labeller, so they are read as CheXpert's are (see
:mod:`audit.data.chexpert`: the same finding names, negatives, uncertain policy and views); each of
a study's images gets its study's label. Frontal means ViewPosition PA or AP. The official split's
test rows are the official test list, its train and validate rows the training list. Sex and age
come from MIMIC-IV's ``patients.csv`` when it lies in the folder (optional): age is ``anchor_age``
moved to the study's year (ages over 89, which MIMIC-IV groups, are 90).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from audit.data.chexpert import (
    FRONTAL,
    LATERAL,
    NEGATIVE,
    OPTION_NAMES,
    CxrOptions,
    choose_label,
    describe_selection,
    detect_csv,
    find_csv,
    read_options,
    read_table,
    resolve_finding,
)
from audit.data.dicom import normalise_sex
from audit.data.items import PlannedImage, PlannedProblem, SourcePlan
from audit.data.problems import Unreadable, file_problem
from audit.data.source import DataRequest, DataSource, OfficialLists
from audit.errors import UsageError

SOURCE = "mimic-cxr-jpg"
TITLE = "MIMIC-CXR-JPG"
METADATA = "mimic-cxr-2.0.0-metadata.csv"
LABELS = "mimic-cxr-2.0.0-chexpert.csv"
SPLIT = "mimic-cxr-2.0.0-split.csv"
PATIENTS = "patients.csv"
METADATA_COLUMNS = ("dicom_id", "subject_id", "study_id", "ViewPosition")
SPLITS = {
    "train": "mimic-cxr/train_val",
    "validate": "mimic-cxr/train_val",
    "test": "mimic-cxr/test",
}
FRONTAL_VIEWS = ("PA", "AP")
LATERAL_VIEWS = ("LATERAL", "LL", "RL", "XTABLE LATERAL")
BAD_IDS = "subject or study id is not a number"
OLDEST = 90.0  # MIMIC-IV gives every patient over 89 one anchor_age (91)


def _number(value: str) -> str | None:
    """An id as digits ("10000032", also written "10000032.0"), else None."""
    match = re.fullmatch(r"\s*(\d+)(?:\.0*)?\s*", str(value))
    return None if match is None else str(int(match.group(1)))


def view_of(position: str) -> tuple[str | None, str | None]:
    view = position.strip().upper() or None
    if view in FRONTAL_VIEWS:
        return view, FRONTAL
    return view, LATERAL if view in LATERAL_VIEWS else None


def _labels(root: Path, finding: str, options: CxrOptions) -> dict[str, tuple[str, str]]:
    """Study id -> (the finding's code, No Finding's code)."""
    path = find_csv(root, LABELS)
    if path is None:
        raise UsageError(f"the MIMIC-CXR-JPG folder has no {LABELS}(.gz); give the folder with it")
    required = ("study_id", finding, *((NEGATIVE,) if options.negatives == "no-finding" else ()))
    table = read_table(path, required, (NEGATIVE,), title=TITLE)
    rows = table[["study_id", finding, NEGATIVE]].itertuples(False, None)
    return {study: (value, healthy) for s, value, healthy in rows if (study := _number(s))}


def _splits(root: Path) -> dict[str, str]:
    """dicom_id -> its official list (none when the split file is absent)."""
    path = find_csv(root, SPLIT)
    if path is None:
        return {}
    table = read_table(path, ("dicom_id", "split"), title=TITLE)
    return {
        dicom: SPLITS[split.lower()]
        for dicom, split in table[["dicom_id", "split"]].itertuples(False, None)
        if split.lower() in SPLITS
    }


def _patients(root: Path) -> dict[str, tuple[str, str, str]]:
    """subject_id -> (gender, anchor_age, anchor_year) from MIMIC-IV's patients.csv, if present."""
    path = find_csv(root, PATIENTS)
    if path is None:
        return {}
    table = read_table(path, ("subject_id", "gender", "anchor_age"), ("anchor_year",), title=TITLE)
    rows = table[["subject_id", "gender", "anchor_age", "anchor_year"]].itertuples(False, None)
    return {subject: tuple(rest) for s, *rest in rows if (subject := _number(s))}


def _age(patient: tuple[str, str, str] | None, study_date: str) -> float | None:
    """``anchor_age`` moved from ``anchor_year`` to the study's year, when both are known."""
    if patient is None:
        return None
    try:
        age = float(patient[1])
    except ValueError:
        return None
    anchor_year, study_year = _number(patient[2]), re.match(r"\s*(\d{4})", study_date)
    if anchor_year is not None and study_year is not None:
        age += int(study_year.group(1)) - int(anchor_year)
    return min(age, OLDEST) if 0 <= age <= 120 else None


def plan_mimic(root: Path, finding: str, options: CxrOptions) -> SourcePlan:
    metadata = find_csv(root, METADATA)
    if metadata is None:
        raise UsageError(
            f"the MIMIC-CXR-JPG folder has no {METADATA}(.gz); give the folder that holds it"
        )
    name = resolve_finding(finding)
    table = read_table(metadata, METADATA_COLUMNS, ("StudyDate",), title=TITLE)
    labels, splits, patients = _labels(root, name, options), _splits(root), _patients(root)
    selection: Counter[str] = Counter({f"rows in {METADATA}": len(table)})
    entries: list[PlannedImage | PlannedProblem] = []
    rows = table[[*METADATA_COLUMNS, "StudyDate"]].itertuples(False, None)
    for dicom, subject_text, study_text, position, study_date in rows:
        view, kind = view_of(position)
        if not options.keeps(view, kind):
            selection[options.left_out_by_view(kind)] += 1
            continue
        subject, study = _number(subject_text), _number(study_text)
        if subject is None or study is None:
            entries.append(PlannedProblem(dicom, Unreadable(BAD_IDS)))
            continue
        if study not in labels:
            selection[f"left out: study not in {LABELS}"] += 1
            continue
        label = choose_label(*labels[study], options)
        if isinstance(label, str):
            selection[label] += 1
            continue
        file = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"
        problem = file_problem(file)
        if problem is not None:
            entries.append(PlannedProblem(dicom, problem))
            continue
        patient = patients.get(subject)
        entries.append(
            PlannedImage(
                path=file,
                ref=dicom,
                patient=subject,
                label=label,
                sex=normalise_sex(patient[0]) if patient else None,
                age=_age(patient, study_date),
                view=view,
                subsets=(splits[dicom],) if dicom in splits else (),
            )
        )
    selection["selected"] = sum(isinstance(e, PlannedImage) for e in entries)
    notes = []
    if not splits:
        notes.append(f"no {SPLIT}: no official test list")
    if not patients:
        notes.append(f"no {PATIENTS} (MIMIC-IV): sex and age unknown")
    description = describe_selection(TITLE, name, NEGATIVE, options)
    return SourcePlan(SOURCE, tuple(entries), description, dict(selection), notes=tuple(notes))


class MimicSource(DataSource):
    """MIMIC-CXR-JPG as published; ``source_options`` as CheXpert's (:class:`CxrOptions`)."""

    option_names = OPTION_NAMES

    name = SOURCE
    title = TITLE
    modalities = ("cxr",)
    looked_for = "the mimic-cxr-2.0.0 CSV files (MIMIC-CXR-JPG)"  # not "metadata": no "data"
    detect_order = 14
    official_lists = OfficialLists(
        train_val=SPLITS["train"], test=SPLITS["test"], label="mimic-cxr official"
    )

    def detect(self, path: Path) -> str | None:
        return detect_csv(path, METADATA, TITLE)

    def plan(self, request: DataRequest) -> SourcePlan:
        return plan_mimic(
            request.path, request.finding, read_options(request.source_options, TITLE)
        )

    def fingerprint(self, request: DataRequest, plan: Callable[[], SourcePlan]) -> Any:
        """The planned files, and the label and view options (the entries' labels follow them)."""
        options = read_options(request.source_options, TITLE)
        return {**super().fingerprint(request, plan), "options": options}
