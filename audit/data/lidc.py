"""LIDC-IDRI: CT series as DICOM slices plus the radiologists' XML reading sessions.

Each case is one axial slice (2-D), windowed to the request's HU window (default [-1000, 400] HU,
a lung window, the same as the phantom CT). The label rule, :class:`LidcLabelRule`, is per slice:

- up to four readers outline nodules of 3 mm or more (with a 1-5 malignancy rating) slice by slice;
  a slice's score is the mean, over the readers who outlined a rated nodule on it, of their rating
  (a reader's highest if they outlined two);
- **positive**: at least ``min_readers`` readers and a mean of ``malignant_at_least`` (3) or more;
- **negative** (``negatives="nodule-free"``, the default): slices with no annotation of any kind
  (rated nodule, nodule under 3 mm, or non-nodule) within ``margin_mm`` (10 mm) along the scan
  axis, away from the scan's first and last ``edge_fraction`` (10 %) of slices, ``negatives_per_scan``
  (4) of them spread evenly; with ``"benign"``, slices whose mean is ``benign_at_most`` (2) or less
  instead; ``"both"`` takes both kinds;
- slices in between (e.g. a mean of 2.5) are not used.

Patients are the DICOM PatientID (hashed), so a patient's slices stay in one split. Scanning the
headers of every file happens only when the decoded cache is missing; the cache key is the tree's
file listing (names, sizes, times), so an unchanged tree is never rescanned.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from audit.data.decode import sniff
from audit.data.dicom import read_header
from audit.data.items import PlannedImage, PlannedProblem, SourcePlan
from audit.data.problems import UNREADABLE_XML, Unreadable
from audit.data.source import DataRequest, DataSource, file_stat
from audit.errors import UsageError

SOURCE = "lidc-idri"
NEGATIVE_KINDS = ("nodule-free", "benign", "both")


@dataclass(frozen=True)
class LidcLabelRule:
    """How slices become positive and negative cases (see the module docstring)."""

    malignant_at_least: float = 3.0
    benign_at_most: float = 2.0
    negatives: str = "nodule-free"
    min_readers: int = 1
    negatives_per_scan: int = 4
    margin_mm: float = 10.0
    edge_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.negatives not in NEGATIVE_KINDS:
            raise UsageError(
                f"LIDC negatives={self.negatives!r}; use one of {', '.join(NEGATIVE_KINDS)}"
            )
        if not 1 <= self.benign_at_most < self.malignant_at_least <= 5:
            raise UsageError(
                "LIDC label rule: need 1 <= benign_at_most < malignant_at_least <= 5, got "
                f"{self.benign_at_most} and {self.malignant_at_least}"
            )
        if self.min_readers < 1 or self.negatives_per_scan < 0 or self.margin_mm < 0:
            raise UsageError(
                "LIDC label rule: min_readers >= 1, negatives_per_scan >= 0, margin_mm >= 0"
            )
        if not 0 <= self.edge_fraction < 0.5:
            raise UsageError("LIDC label rule: edge_fraction must lie in [0, 0.5)")

    def describe(self) -> str:
        negatives = {
            "nodule-free": f"nodule-free slices >= {self.margin_mm:g} mm from any annotation "
            f"({self.negatives_per_scan} per scan)",
            "benign": f"slices whose mean malignancy is <= {self.benign_at_most:g}",
            "both": f"nodule-free slices ({self.negatives_per_scan} per scan) and slices whose "
            f"mean malignancy is <= {self.benign_at_most:g}",
        }[self.negatives]
        return (
            f"positive: slices through a nodule with mean malignancy >= "
            f"{self.malignant_at_least:g} (>= {self.min_readers} reader(s)); negative: {negatives}"
        )


@dataclass(frozen=True)
class Mark:
    """One reader's outline of a rated nodule on one slice."""

    reader: int
    sop_uid: str
    z: float | None
    malignancy: int


@dataclass(frozen=True)
class ReadingSessions:
    """One XML file: the rated outlines, and where every other annotation lies."""

    series_uid: str
    marks: tuple[Mark, ...]
    other_sops: frozenset[str]
    other_z: tuple[float, ...]


def is_lidc_xml(path: Path) -> bool:
    """Cheap check of the root element, for source detection."""
    try:
        for _event, element in ET.iterparse(path, events=("start",)):
            return element.tag.rsplit("}", 1)[-1] == "LidcReadMessage"
    except (ET.ParseError, OSError):
        return False
    return False


def parse_reading_sessions(path: Path) -> ReadingSessions | None:
    """None for other XML (e.g. the chest radiograph sessions); Unreadable if damaged."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        raise Unreadable(UNREADABLE_XML) from None
    if root.tag.rsplit("}", 1)[-1] != "LidcReadMessage":
        return None
    series = (root.findtext(".//{*}ResponseHeader/{*}SeriesInstanceUid") or "").strip()
    marks, other_sops, other_z = [], set(), []
    for reader, session in enumerate(root.iterfind("{*}readingSession")):
        for nodule in session.iterfind("{*}unblindedReadNodule"):
            rating = _int(nodule.findtext("{*}characteristics/{*}malignancy"))
            for roi in nodule.iterfind("{*}roi"):
                if (roi.findtext("{*}inclusion") or "TRUE").strip().upper() != "TRUE":
                    continue
                sop = (roi.findtext("{*}imageSOP_UID") or "").strip()
                z = _float(roi.findtext("{*}imageZposition"))
                if rating is not None and 1 <= rating <= 5:
                    marks.append(Mark(reader, sop, z, rating))
                else:
                    other_sops.add(sop)
                    if z is not None:
                        other_z.append(z)
        for other in session.iterfind("{*}nonNodule"):
            other_sops.add((other.findtext("{*}imageSOP_UID") or "").strip())
            z = _float(other.findtext("{*}imageZposition"))
            if z is not None:
                other_z.append(z)
    return ReadingSessions(series, tuple(marks), frozenset(other_sops - {""}), tuple(other_z))


def _int(text: str | None) -> int | None:
    try:
        return int(float(text)) if text is not None else None
    except ValueError:
        return None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def tree_files(root: Path) -> list[Path]:
    """Every file under ``root``, sorted (the order of the listing, the plan and the cache key)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def _is_candidate_dicom(path: Path) -> bool:
    """``.dcm`` files, and files without a suffix whose first bytes say DICOM (old layouts)."""
    suffix = path.suffix.lower()
    if suffix in (".dcm", ".dicom"):
        return True
    try:
        return suffix == "" and sniff(path) == "dicom"
    except Unreadable:
        return False


def plan_lidc(root: Path, rule: LidcLabelRule) -> SourcePlan:
    files = tree_files(root)
    entries: list[PlannedImage | PlannedProblem] = []
    sessions: dict[str, list[ReadingSessions]] = defaultdict(list)
    slices: dict[str, list[tuple[Path, object]]] = defaultdict(list)
    selection: Counter[str] = Counter()
    for path in files:
        relative = path.relative_to(root).as_posix()
        try:
            if path.suffix.lower() == ".xml":
                parsed = parse_reading_sessions(path)
                if parsed is not None:
                    sessions[parsed.series_uid].append(parsed)
            elif _is_candidate_dicom(path):
                header = read_header(path)
                slices[header.series_uid].append((path, header))
        except Unreadable as problem:
            entries.append(PlannedProblem(relative, problem))
    if not sessions:
        raise UsageError(
            "the LIDC-IDRI folder holds no readable CT reading session (XML with LidcReadMessage); "
            "give the folder with the LIDC-IDRI-NNNN patient folders and their XML files"
        )
    for series_uid, series_slices in sorted(slices.items()):
        readings = sessions.get(series_uid)
        ct = [(p, h) for p, h in series_slices if h.modality.upper() == "CT"]
        if not readings or not ct:
            selection["series without CT reading sessions"] += 1
            continue
        selection["CT series with reading sessions"] += 1
        entries += _label_series(ct, readings, rule, selection)
    selection["slices selected"] = sum(isinstance(e, PlannedImage) for e in entries)
    description = f"LIDC-IDRI axial CT slices; {rule.describe()}"
    return SourcePlan(SOURCE, tuple(entries), description, dict(selection))


def _label_series(ct, readings, rule: LidcLabelRule, selection: Counter) -> list[PlannedImage]:
    ct = sorted(ct, key=lambda item: (item[1].z is None, item[1].z or 0.0))
    by_sop: dict[str, int] = {}
    for i, (_path, header) in enumerate(ct):
        by_sop.setdefault(header.sop_uid, i)  # a duplicated file counts once
    zs = np.array([h.z if h.z is not None else np.nan for _p, h in ct], dtype=np.float64)
    ratings: dict[int, dict[int, int]] = defaultdict(dict)
    annotated_z: list[float] = []
    annotated = set()
    for session_index, reading in enumerate(readings):
        for mark in reading.marks:
            index = _slice_of(mark.sop_uid, mark.z, by_sop, zs)
            if index is None:
                selection["outlines on slices not found"] += 1
                continue
            reader = session_index * 100 + mark.reader
            ratings[index][reader] = max(ratings[index].get(reader, 0), mark.malignancy)
            annotated.add(index)
            annotated_z.append(zs[index])
        for sop in reading.other_sops:
            if sop in by_sop:
                annotated.add(by_sop[sop])
                annotated_z.append(zs[by_sop[sop]])
        annotated_z += list(reading.other_z)
    labels: dict[int, int] = {}
    for index, per_reader in ratings.items():
        if len(per_reader) < rule.min_readers:
            continue
        mean = float(np.mean(list(per_reader.values())))
        if mean >= rule.malignant_at_least:
            labels[index] = 1
        elif mean <= rule.benign_at_most and rule.negatives in ("benign", "both"):
            labels[index] = 0
    if rule.negatives in ("nodule-free", "both"):
        for index in _nodule_free(zs, annotated, annotated_z, rule):
            labels.setdefault(index, 0)
    return [
        PlannedImage(
            path=ct[i][0],
            ref=ct[i][1].sop_uid,
            patient=ct[i][1].patient_id or ct[i][1].series_uid,
            label=label,
            sex=ct[i][1].sex,
        )
        for i, label in sorted(labels.items())
    ]


def _slice_of(sop: str, z: float | None, by_sop: dict[str, int], zs: np.ndarray) -> int | None:
    if sop in by_sop:
        return by_sop[sop]
    if z is None or np.all(np.isnan(zs)):
        return None
    distance = np.abs(zs - z)
    index = int(np.nanargmin(distance))
    return index if distance[index] < 0.01 else None


def _nodule_free(zs: np.ndarray, annotated: set[int], annotated_z: list[float], rule) -> list[int]:
    n = len(zs)
    edge = int(np.floor(n * rule.edge_fraction))
    candidates = []
    marked = np.array(annotated_z, dtype=np.float64)
    for index in range(edge, n - edge):
        if index in annotated or np.isnan(zs[index]):
            continue
        if marked.size and np.min(np.abs(marked - zs[index])) < rule.margin_mm:
            continue
        candidates.append(index)
    if not candidates or rule.negatives_per_scan == 0:
        return []
    count = min(rule.negatives_per_scan, len(candidates))
    picks = np.unique(np.rint(np.linspace(0, len(candidates) - 1, count)).astype(int))
    return [candidates[i] for i in picks]


_XML_SCAN_LIMIT = 20_000  # files looked at before detection gives up on a large foreign tree


def has_lidc_xml(root: Path) -> bool:
    """Whether the tree holds an LIDC reading session (an XML whose root is LidcReadMessage)."""
    seen = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            seen += 1
            if name.lower().endswith(".xml") and is_lidc_xml(Path(folder) / name):
                return True
            if seen > _XML_SCAN_LIMIT:
                return False
    return False


class LidcSource(DataSource):
    """LIDC-IDRI CT series with their XML reading sessions, read as labelled axial slices.

    ``source_options`` may carry a :class:`LidcLabelRule` (None: the default rule)."""

    name = SOURCE
    title = "LIDC-IDRI"
    modalities = ("ct",)
    looked_for = "LIDC XML reading sessions (LIDC-IDRI)"
    detect_order = 30

    def detect(self, path: Path) -> str | None:
        return "LIDC XML reading sessions" if path.is_dir() and has_lidc_xml(path) else None

    def plan(self, request: DataRequest) -> SourcePlan:
        return plan_lidc(request.path, self.rule(request))

    def fingerprint(self, request: DataRequest, plan: Callable[[], SourcePlan]) -> Any:
        """The tree's listing (planning parses every XML and header: too slow for a key)."""
        root = request.path
        listing = [(p.relative_to(root).as_posix(), *file_stat(p)) for p in tree_files(root)]
        return {"files": listing, "rule": self.rule(request)}

    @staticmethod
    def rule(request: DataRequest) -> LidcLabelRule:
        options = request.source_options
        if options is None:
            return LidcLabelRule()
        if not isinstance(options, LidcLabelRule):
            raise UsageError("LIDC-IDRI takes a LidcLabelRule as its source options")
        return options
