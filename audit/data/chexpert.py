"""CheXpert as published: ``train.csv`` and ``valid.csv`` in ``CheXpert-v1.0-small/`` (or
``CheXpert-v1.0/``), JPEGs under ``train/patientNNNNN/studyN/`` and ``valid/...``.

Each of the 14 observations is coded 1 (positive), 0 (negative), -1 (uncertain) or blank (not
mentioned). Selection, as NIH's: positives are images whose finding is 1; negatives are images with
"No Finding" 1 (``negatives="no-finding"``, the default; ``"absent"`` takes every image whose
finding is 0 or blank instead); images with only other findings are left out by design. An
uncertain finding follows ``uncertain``: ``drop`` (the default: left out), ``zeros`` (negative,
whatever the other findings) or ``ones`` (positive). Only frontal images are kept by default
(``views``). Everything left out by design is counted in ``selection``, not as a failure.

``Path`` is relative to the folder above the CSVs (it starts with ``CheXpert-v1.0-small/``), so
either folder may be given; a renamed data set folder is found too. The patient is the path's
``patientNNNNN`` folder. ``valid.csv`` (labelled by radiologists, no uncertain labels) is the
official test list, ``train.csv`` the training list.

The label coding and the source options (:class:`CxrOptions`) are shared with MIMIC-CXR-JPG, whose
labels come from the same labeller, and PadChest (views and negatives).
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from audit.data.dicom import normalise_sex
from audit.data.items import PlannedImage, PlannedProblem, SourcePlan
from audit.data.problems import FILE_NOT_FOUND, Unreadable, is_file
from audit.data.source import DataRequest, DataSource, OfficialLists
from audit.errors import UsageError

SOURCE = "chexpert"
TITLE = "CheXpert"
FOLDER_NAMES = ("CheXpert-v1.0-small", "CheXpert-v1.0")
OFFICIAL_LISTS = {"train.csv": "chexpert/train", "valid.csv": "chexpert/valid"}
REQUIRED = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
NEGATIVE = "No Finding"
OBSERVATIONS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices",
)  # fmt: skip
FINDINGS = OBSERVATIONS[1:]
NO_PATIENT = "no patient folder (patientNNNNN) in the listed path"

# --- the source options, shared with MIMIC-CXR-JPG and PadChest ----------------------------------

UNCERTAIN_POLICIES = ("drop", "zeros", "ones")
NEGATIVE_RULES = ("no-finding", "absent")
FRONTAL, LATERAL = "FRONTAL", "LATERAL"
OPTION_NAMES = ("uncertain", "views", "negatives")

LEFT_OUT_OTHER = "left out: other findings only"
LEFT_OUT_UNCERTAIN = "left out: uncertain label (uncertain=drop)"
LEFT_OUT_BAD_LABEL = "left out: label not 1, 0, -1 or blank"
LEFT_OUT_LATERAL = "left out: lateral view"
LEFT_OUT_VIEW = "left out: view not selected"


@dataclass(frozen=True)
class CxrOptions:
    """How labels and views become cases (``DataRequest.source_options``, or a mapping with
    these keys). ``views`` holds view codes (PA, AP, LL...) and the groups FRONTAL and LATERAL;
    empty (or "all") keeps every view."""

    uncertain: str = "drop"
    views: tuple[str, ...] = (FRONTAL,)
    negatives: str = "no-finding"

    def __post_init__(self) -> None:
        object.__setattr__(self, "views", _view_tokens(self.views))
        if self.uncertain not in UNCERTAIN_POLICIES:
            raise UsageError(
                f"`uncertain` {str(self.uncertain)[:20]!r}; use one of {', '.join(UNCERTAIN_POLICIES)}"
            )
        if self.negatives not in NEGATIVE_RULES:
            raise UsageError(
                f"`negatives` {str(self.negatives)[:20]!r}; use one of {', '.join(NEGATIVE_RULES)}"
            )

    def keeps(self, view: str | None, kind: str | None) -> bool:
        """Whether an image of this view code and group (FRONTAL, LATERAL or None) is kept."""
        return not self.views or (view or "") in self.views or (kind or "") in self.views

    def left_out_by_view(self, kind: str | None) -> str:
        return LEFT_OUT_LATERAL if kind == LATERAL else LEFT_OUT_VIEW

    def describe_views(self) -> str:
        return ", ".join(v.lower() if v in (FRONTAL, LATERAL) else v for v in self.views) or "all"


def _view_tokens(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    try:
        tokens = tuple(str(v).strip().upper() for v in items if str(v).strip())
    except TypeError:
        raise UsageError(
            "`views` takes view names, e.g. frontal or PA,AP; 'all' keeps every view"
        ) from None
    return () if "ALL" in tokens else tokens


def read_options(options: Any, title: str, names: Sequence[str] = OPTION_NAMES) -> CxrOptions:
    """The request's source options for ``title``: None (the defaults), a :class:`CxrOptions`,
    or a mapping whose keys are among ``names``."""
    if options is None:
        return CxrOptions()
    if isinstance(options, CxrOptions):
        unused = [f.name for f in fields(CxrOptions) if f.name not in names]
        if any(getattr(options, n) != getattr(CxrOptions(), n) for n in unused):
            raise UsageError(f"{title} takes the source options {', '.join(names)} only")
        return options
    if not isinstance(options, Mapping):
        raise UsageError(f"{title} takes its source options as a mapping of {', '.join(names)}")
    unknown = sorted(str(k)[:30] for k in options if k not in names)
    if unknown:
        raise UsageError(
            f"unknown source option(s) {', '.join(map(repr, unknown))} for {title}; known: "
            f"{', '.join(names)}"
        )
    return CxrOptions(**{str(k): v for k, v in options.items()})


def label_code(value: str) -> int | None:
    """1, 0 or -1, None for blank; ValueError for anything else."""
    text = str(value).strip()
    if not text:
        return None
    number = float(text)
    if number not in (1.0, 0.0, -1.0):
        raise ValueError("not a CheXpert label code")
    return int(number)


def choose_label(finding: str, no_finding: str, options: CxrOptions) -> int | str:
    """An image's label (1 or 0) from its finding's and "No Finding"'s codes, or why it is left
    out (a ``selection`` key)."""
    try:
        code = label_code(finding)
        if code == 1:
            return 1
        if code == -1:
            return {"ones": 1, "zeros": 0}.get(options.uncertain, LEFT_OUT_UNCERTAIN)
        if options.negatives == "absent" or label_code(no_finding) == 1:
            return 0
    except ValueError:
        return LEFT_OUT_BAD_LABEL
    return LEFT_OUT_OTHER


def describe_selection(
    title: str, finding: str, negative: str, options: CxrOptions, *, uncertain: bool = True
) -> str:
    negatives = negative if options.negatives == "no-finding" else f"no {finding}"
    policy = f"; uncertain labels: {options.uncertain}" if uncertain else ""
    return (
        f"{title}: {finding} (positive) vs {negatives} (negative){policy}; "
        f"views {options.describe_views()}"
    )


def find_csv(root: Path, name: str) -> Path | None:
    """``name`` or ``name.gz`` in ``root`` (the later data sets ship compressed CSVs)."""
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def detect_csv(path: Path, name: str, title: str) -> str | None:
    """Detection for a source known by one CSV (plain or ``.gz``) in its folder: the file's name
    as evidence; the CSV itself given as ``data`` is one line asking for its folder."""
    if path.is_file():
        if path.name in (name, f"{name}.gz"):
            raise UsageError(f"`data` names {path.name}; give the {title} folder that holds it")
        return None
    found = find_csv(path, name)
    return None if found is None else found.name


def read_table(
    path: Path, required: Sequence[str], optional: Sequence[str] = (), *, title: str
) -> pd.DataFrame:
    """The CSV's (plain or ``.gz``) wanted columns as stripped strings, blank for an absent
    optional one; a missing required column is one line naming the official columns."""
    wanted = {*required, *optional}
    try:
        table = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            usecols=lambda column: str(column).strip() in wanted,
        )
    except Exception:
        raise UsageError(f"{path.name} could not be read as CSV; re-download it") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise UsageError(
            f"{path.name} lacks the column(s) {', '.join(map(repr, missing))}; expected the "
            f"official {title} columns {', '.join(required)}"
        )
    for column in wanted:
        table[column] = table[column].str.strip() if column in table.columns else ""
    return table


def age_years(value: str) -> float | None:
    try:
        age = float(value)
    except ValueError:
        return None
    return age if 0 <= age <= 120 else None


# --- CheXpert ------------------------------------------------------------------------------------


def _is_chexpert_csv(path: Path) -> bool:
    """Cheap: the header names CheXpert's ``Path`` and ``Frontal/Lateral`` columns."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return {"Path", "Frontal/Lateral"} <= {c.strip() for c in header}


def find_csv_folder(path: Path) -> Path | None:
    """The folder holding train.csv / valid.csv: ``path`` or its CheXpert-v1.0(-small) folder."""
    for folder in (path, *(path / name for name in FOLDER_NAMES)):
        if any(_is_chexpert_csv(folder / name) for name in OFFICIAL_LISTS):
            return folder
    return None


def resolve_finding(finding: str) -> str:
    """The observation named (case and underscores aside); the message lists CheXpert's own."""
    wanted = str(finding).strip().replace("_", " ").lower()
    for name in FINDINGS:
        if name.lower() == wanted:
            return name
    raise UsageError(
        f"`finding` {str(finding)[:60]!r} is not a CheXpert observation; use one of "
        f"{', '.join(FINDINGS)}"
    )


def image_path(folder: Path, listed: str) -> Path | None:
    """The file a ``Path`` value names: under the folder above the CSVs, or (data set folder
    renamed) under the CSVs' own folder; None when neither exists."""
    relative = PurePosixPath(listed.replace("\\", "/"))
    candidates = [folder.parent / relative, folder / relative]
    if relative.parts and relative.parts[0].startswith("CheXpert-v1.0"):
        candidates.insert(1, folder.joinpath(*relative.parts[1:]))
    return next((c for c in candidates if is_file(c)), None)


def patient_of(listed: str) -> str | None:
    parts = PurePosixPath(listed.replace("\\", "/")).parts
    return next((p for p in parts if p.lower().startswith("patient") and len(p) > 7), None)


def view_of(frontal_lateral: str, ap_pa: str) -> tuple[str | None, str | None]:
    """(view code, group): a frontal image's AP/PA value, or LATERAL."""
    group = frontal_lateral.strip().upper()
    if group == FRONTAL:
        return ap_pa.strip().upper() or None, FRONTAL
    if group == LATERAL:
        return LATERAL, LATERAL
    return None, None


def plan_chexpert(path: Path, finding: str, options: CxrOptions) -> SourcePlan:
    folder = find_csv_folder(path)
    if folder is None:
        raise UsageError(
            "the CheXpert folder has no train.csv or valid.csv with CheXpert's columns; give the "
            "folder that holds them (CheXpert-v1.0-small)"
        )
    name = resolve_finding(finding)
    required = (*REQUIRED, name, *((NEGATIVE,) if options.negatives == "no-finding" else ()))
    selection: Counter[str] = Counter()
    entries: list[PlannedImage | PlannedProblem] = []
    notes = []
    for file_name, subset in OFFICIAL_LISTS.items():
        if not _is_chexpert_csv(folder / file_name):
            notes.append(f"no {file_name}: its images are not used")
            continue
        table = read_table(folder / file_name, required, (NEGATIVE,), title=TITLE)
        selection[f"rows in {file_name}"] = len(table)
        rows = table[["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", name, NEGATIVE]]
        for listed, sex, age, group, ap_pa, value, healthy in rows.itertuples(False, None):
            view, kind = view_of(group, ap_pa)
            if not options.keeps(view, kind):
                selection[options.left_out_by_view(kind)] += 1
                continue
            label = choose_label(value, healthy, options)
            if isinstance(label, str):
                selection[label] += 1
                continue
            entries.append(_entry(folder, listed, label, sex, age, view, subset))
    selection["selected"] = sum(isinstance(e, PlannedImage) for e in entries)
    description = describe_selection(TITLE, name, NEGATIVE, options)
    return SourcePlan(SOURCE, tuple(entries), description, dict(selection), notes=tuple(notes))


def _entry(folder, listed, label, sex, age, view, subset) -> PlannedImage | PlannedProblem:
    patient = patient_of(listed)
    if patient is None:
        return PlannedProblem(listed, Unreadable(NO_PATIENT))
    file = image_path(folder, listed)
    if file is None:
        return PlannedProblem(listed, Unreadable(FILE_NOT_FOUND))
    return PlannedImage(
        path=file,
        ref=listed,
        patient=patient,
        label=label,
        sex=normalise_sex(sex),
        age=age_years(age),
        view=view,
        subsets=(subset,),
    )


class ChexpertSource(DataSource):
    """CheXpert as published; ``source_options``: a :class:`CxrOptions` or a mapping of
    ``uncertain``, ``views``, ``negatives`` (None: drop uncertain, frontal, No Finding)."""

    option_names = OPTION_NAMES

    name = SOURCE
    title = TITLE
    modalities = ("cxr",)
    looked_for = "train.csv / valid.csv with CheXpert's columns (CheXpert)"
    detect_order = 12
    official_lists = OfficialLists(
        train_val=OFFICIAL_LISTS["train.csv"],
        test=OFFICIAL_LISTS["valid.csv"],
        label="chexpert official",
    )

    def detect(self, path: Path) -> str | None:
        if path.is_file():
            if path.name in OFFICIAL_LISTS and _is_chexpert_csv(path):
                raise UsageError(
                    f"`data` names {path.name}; give the CheXpert folder that holds it"
                )
            return None
        folder = find_csv_folder(path)
        if folder is None:
            return None
        found = next(n for n in OFFICIAL_LISTS if _is_chexpert_csv(folder / n))
        return f"{found} (CheXpert)" if folder == path else f"{folder.name}/{found} (CheXpert)"

    def plan(self, request: DataRequest) -> SourcePlan:
        return plan_chexpert(
            request.path, request.finding, read_options(request.source_options, TITLE)
        )

    def fingerprint(self, request: DataRequest, plan: Callable[[], SourcePlan]) -> Any:
        """The planned files, and the label and view options (the entries' labels follow them)."""
        options = read_options(request.source_options, TITLE)
        return {**super().fingerprint(request, plan), "options": options}
