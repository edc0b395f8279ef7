"""From a ``--data`` path to a :class:`Cohort`: detect the source, plan, decode once, cache.

The stages, each in its own module: :mod:`source` (the interface), :mod:`registry` (which
source), :mod:`nih`, :mod:`lidc`, :mod:`manifest` (which images, labels, patients),
:mod:`decode` and :mod:`dicom` (pixels), :mod:`cache` (the decode-once store),
:mod:`pseudonyms` (keyed hashes). This module joins them and
is the only one the command line needs: :func:`load_cohort`, :func:`describe_dry_run`,
:func:`preset_split`.

Privacy contract: original identifiers (image names, patient ids, DICOM UIDs, file paths) exist
only inside the plan, in memory; cases, the cache record, log lines and error messages carry
pseudonyms, positions and counts.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from audit.data import cache as store
from audit.data import registry
from audit.data.cases import Case, Cohort
from audit.data.decode import DecodeSettings, sniff
from audit.data.items import PlannedImage, PlannedProblem, SourcePlan
from audit.data.problems import NOT_AN_IMAGE, Quarantined, Unreadable
from audit.data.pseudonyms import Pseudonymizer, load_or_create_key
from audit.data.source import DEFAULT_HU_WINDOW, DataRequest, DataSource
from audit.data.study_lists import (
    ListedSplit,
    preset_overlap,
    preset_split,
    split_from_lists,
    subset_name,
)
from audit.errors import UsageError
from audit.resolve.data import DataChoice

__all__ = [
    "DEFAULT_HU_WINDOW", "DataRequest", "describe_dry_run", "load_cohort", "official_split",
    "preset_split",
]  # fmt: skip

log = logging.getLogger(__name__)

_SHOWN_QUARANTINED = 50


def load_cohort(request: DataRequest, progress: bool = True) -> Cohort:
    """The cohort, decoded once into the cache (reused when the data and settings are unchanged).

    Unreadable files are left out and counted in ``Cohort.excluded``; with ``request.strict``
    any such file is a :class:`UsageError` (the cache is still written, so a later run without
    ``--strict`` starts at once).
    """
    detection, source, pseudonyms, key = _prepare(request)
    loaded = store.load_entry(request.cache_dir, key)
    if loaded is None:
        images, record = _build(request, source, pseudonyms, key, progress)
    else:
        images, record = loaded
        log.info("using the cached decoded cohort (%d images)", len(images))
    _report_exclusions(record)
    if request.strict and record["quarantined"]:
        raise UsageError(_strict_message(record))
    return _cohort(images, record, request)


def request_for(choice: DataChoice) -> DataRequest:
    """The loader's request for a data set on disk, from the resolved choice."""
    if choice.path is None:
        raise UsageError("images are needed: give `data` PATH, or `synthetic` for phantoms")
    return DataRequest(
        choice.path, choice.modality, cache_dir=choice.cache_dir, source=choice.source,
        finding=choice.finding, views=choice.views, protocol=choice.protocol,
        image_size=choice.image_size, strict=choice.strict,
        max_image_pixels=choice.max_image_pixels,
        source_options=dict(choice.source_options) or None,
    )  # fmt: skip


def load_chosen(choice: DataChoice) -> Cohort:
    """The cohort a resolved choice names: the data set on disk, or the phantoms (every output
    of an audit of phantoms is marked illustrative)."""
    if choice.synthetic:
        log.warning("using built-in synthetic phantom data: every output is marked illustrative")
        return registry.get_source("synthetic").generate(choice)
    return load_cohort(request_for(choice), progress=choice.progress)


def official_split(
    cohort: Cohort, *, n_folds: int = 5, val_fraction: float = 0.15, seed: int = 0
) -> ListedSplit | None:
    """The source's official test list as the test set, folds by patient from its training
    list; None when the cohort's source has no official lists (or the cohort lacks them)."""
    lists = registry.official_lists_of(cohort.source)
    if lists is None:
        return None
    return split_from_lists(
        cohort, lists.train_val, lists.test, n_folds=n_folds, val_fraction=val_fraction, seed=seed
    )


def describe_dry_run(request: DataRequest) -> dict[str, Any]:
    """Counts by split, class, sex and view, what was detected, what would be left out and why.

    Decodes nothing: from the cache record when one exists, else from the plan with a check of
    each file's type (decoding problems are then found only when the cohort is built).
    """
    detection, source, pseudonyms, key = _prepare(request)
    loaded = store.load_entry(request.cache_dir, key)
    if loaded is not None:
        record, decoded = loaded[1], True
    else:
        record, decoded = _record_without_decoding(request, source.plan, pseudonyms), False
    return _summary(request, detection, record, decoded)


# --- preparing: source, key -------------------------------------------------------------------


class _Planned:
    """The chosen source and its plan for one request, built at most once."""

    def __init__(self, request: DataRequest, source: DataSource) -> None:
        self.request, self.source = request, source
        self._plan: SourcePlan | None = None

    @property
    def plan(self) -> SourcePlan:
        if self._plan is None:
            self._plan = self.source.plan(self.request)
        return self._plan

    def fingerprint(self) -> Any:
        return self.source.fingerprint(self.request, lambda: self.plan)

    def decode_settings(self) -> DecodeSettings:
        return self.source.decode_settings(self.request, lambda: self.plan)


@dataclass(frozen=True)
class Detection:
    """The source, how it was chosen, and the file that decided (a fixed name, never a path)."""

    source: str
    automatic: bool
    evidence: str


def _choose_source(request: DataRequest) -> tuple[DataSource, Detection]:
    registry.check_data_path(request.path)
    if request.source is not None:
        source = registry.get_source(request.source)
        if not source.reads_files:
            raise UsageError(f"`source` {source.name} reads no files; use `synthetic` instead")
        return source, Detection(source.name, False, "given by --source")
    source, evidence = registry.detect_source(request.path)
    return source, Detection(source.name, True, evidence)


def _prepare(request: DataRequest) -> tuple[Detection, _Planned, Pseudonymizer, str]:
    source, detection = _choose_source(request)
    source.check_request(request)
    _check_protocol(request, source)
    how = f"detected: {detection.evidence}" if detection.automatic else detection.evidence
    log.info("data source: %s (%s)", detection.source, how)
    pseudonyms = load_or_create_key(request.cache_dir)
    planned = _Planned(request, source)
    settings = {
        "decode": planned.decode_settings(),
        "finding": request.finding,
        "views": request.views,
        "protocol": request.protocol,
        "source": detection.source,
    }
    key = pseudonyms.digest(
        "cohort-cache", {"data": planned.fingerprint(), "settings": settings}, 24
    )
    return detection, planned, pseudonyms, key


def _check_protocol(request: DataRequest, source: DataSource) -> None:
    if request.protocol is None or request.protocol in source.protocols:
        return
    holders = " or ".join(s.title for s in registry.sources_with_protocol(request.protocol))
    raise UsageError(
        f"`protocol` {request.protocol} uses {holders or 'other'} image lists; give that data"
    )


# --- building -----------------------------------------------------------------------------------


def _build(request, source: _Planned, pseudonyms, key: str, progress: bool):
    plan = source.plan
    entries = plan.entries
    images_only = [(i, e) for i, e in enumerate(entries) if isinstance(e, PlannedImage)]
    jobs = [
        store.DecodeJob(row, str(entry.path), entry.frame)
        for row, (_i, entry) in enumerate(images_only)
    ]
    temp, outcomes = store.decode_to_temp(
        request.cache_dir,
        key,
        jobs,
        source.decode_settings(),
        workers=request.workers,
        progress=progress,
    )
    by_position = {i: outcome for (i, _e), outcome in zip(images_only, outcomes, strict=True)}
    record = _record(plan, pseudonyms, by_position)
    if not record["cases"]:
        temp.unlink(missing_ok=True)
        raise UsageError(f"no usable image in the data: {_excluded_text(record['excluded'])}")
    keep = np.asarray(record.pop("_kept_rows"), dtype=np.int64)
    shared = _images_under_several_patients(temp, keep, [row[2] for row in record["cases"]])
    if shared:
        record["warnings"][SHARED_PIXELS] = shared
    images = store.commit_entry(request.cache_dir, key, temp, keep, record)
    return images, record


SHARED_PIXELS = (
    "identical pixels under two or more patients (a train/test leak, unless they are one "
    "patient under two ids)"
)


def _images_under_several_patients(temp, keep: np.ndarray, patients: list[str]) -> int:
    """How many kept images have pixels identical to an image of another patient: the same file
    exported twice under two ids puts one image on both sides of a split. Counted once, when
    the cache is built (a digest per decoded image)."""
    import hashlib

    pixels = np.load(temp, mmap_mode="r")
    owners: dict[bytes, set[str]] = {}
    digests = []
    for position, row in enumerate(keep):
        digest = hashlib.blake2b(np.ascontiguousarray(pixels[row]).tobytes(), digest_size=16)
        digests.append(digest.digest())
        owners.setdefault(digests[-1], set()).add(patients[position])
    del pixels
    return sum(1 for digest in digests if len(owners[digest]) > 1)


def _record(plan: SourcePlan, pseudonyms: Pseudonymizer, outcomes: dict) -> dict:
    """The cache record: pseudonymous cases, subsets, exclusions; ``_kept_rows`` for the caller."""
    cases, kept_rows, quarantined = [], [], []
    subsets: dict[str, list[int]] = {}
    excluded: Counter[str] = Counter()
    warnings: Counter[str] = Counter(plan.warnings)
    ids = _CaseIds(pseudonyms, plan.source)
    image_rank = 0
    for position, entry in enumerate(plan.entries, 1):
        case_id = ids.make(entry.ref)
        if isinstance(entry, PlannedProblem):
            problem = entry.problem
        else:
            outcome = outcomes[position - 1]
            problem = Unreadable(outcome.reason, outcome.detail) if outcome.reason else None
            image_rank += 1
        if problem is not None:
            excluded[problem.reason] += 1
            quarantined.append([position, case_id, problem.reason, problem.detail])
            continue
        warnings.update(outcomes[position - 1].warnings)
        for name in entry.subsets:
            subsets.setdefault(name, []).append(len(cases))
        kept_rows.append(image_rank - 1)
        cases.append(_case_row(entry, case_id, pseudonyms, plan.source))
    return _record_dict(plan, cases, subsets, excluded, warnings, quarantined, kept_rows)


def _record_dict(plan, cases, subsets, excluded, warnings, quarantined, kept_rows=()) -> dict:
    return {
        "source": plan.source,
        "description": plan.description,
        "cases": cases,
        "subsets": subsets,
        "excluded": dict(excluded),
        "warnings": dict(warnings),
        "quarantined": quarantined,
        "selection": plan.selection,
        "notes": list(plan.notes),
        "_kept_rows": list(kept_rows),
    }


class _CaseIds:
    """Case pseudonyms, unique even when a source lists the same file twice."""

    def __init__(self, pseudonyms: Pseudonymizer, source: str) -> None:
        self.pseudonyms, self.source, self.seen = pseudonyms, source, Counter()

    def make(self, ref: str) -> str:
        self.seen[ref] += 1
        count = self.seen[ref]
        return self.pseudonyms.case_id(self.source, ref if count == 1 else f"{ref}\x00{count}")


def _case_row(entry: PlannedImage, case_id: str, pseudonyms, source: str) -> list:
    patient = pseudonyms.patient_key(source, entry.patient)
    return [case_id, int(entry.label), patient, entry.sex, entry.view, entry.age]


def _cohort(images: np.ndarray, record: dict, request: DataRequest) -> Cohort:
    cases = tuple(
        Case(case_id, label, patient, sex=sex, view=view, modality=request.modality, age=age)
        for case_id, label, patient, sex, view, age in record["cases"]
    )
    subsets = {name: np.asarray(rows, dtype=np.int64) for name, rows in record["subsets"].items()}
    return Cohort(
        cases=cases,
        images=images,
        source=record["source"],
        modality=request.modality,
        synthetic=False,
        description=f"{record['description']}; {len(cases)} images",
        excluded=dict(record["excluded"]),
        warnings=dict(record["warnings"]),
        subsets=subsets,
    )


def _record_without_decoding(request: DataRequest, plan: SourcePlan, pseudonyms) -> dict:
    """As :func:`_record`, with each file's type checked instead of decoding it."""
    outcomes = {}
    for position, entry in enumerate(plan.entries):
        if isinstance(entry, PlannedImage):
            outcomes[position] = _type_check(entry)
    record = _record(plan, pseudonyms, outcomes)
    record.pop("_kept_rows")
    return record


def _type_check(entry: PlannedImage) -> store.Outcome:
    try:
        kind = sniff(entry.path)
    except Unreadable as problem:
        return store.Outcome(0, problem.reason)
    return store.Outcome(0, NOT_AN_IMAGE if kind is None else None)


# --- reporting ----------------------------------------------------------------------------------


def _excluded_text(excluded: dict[str, int]) -> str:
    if not excluded:
        return "no file was left out"
    parts = ", ".join(f"{n} {reason}" for reason, n in sorted(excluded.items()))
    return f"{sum(excluded.values())} file(s) left out ({parts})"


def _report_exclusions(record: dict) -> None:
    if record["excluded"]:
        log.warning("%s", _excluded_text(record["excluded"]))
    for kind, count in sorted(record["warnings"].items()):
        log.warning("%d image(s): %s", count, kind)


def _strict_message(record: dict) -> str:
    first = Quarantined(*record["quarantined"][0]).describe()
    return (
        f"`strict`: {_excluded_text(record['excluded'])}, e.g. {first}; fix or remove those "
        "files, or run without `strict` to leave them out"
    )


def _counts(rows: list[list], indices: list[int] | None = None) -> dict[str, Any]:
    chosen = rows if indices is None else [rows[i] for i in indices]
    labels = Counter(row[1] for row in chosen)
    sexes = Counter(row[3] or "unknown" for row in chosen)
    return {
        "images": len(chosen),
        "patients": len({row[2] for row in chosen}),
        "positive": labels.get(1, 0),
        "negative": labels.get(0, 0),
        "sex": dict(sorted(sexes.items())),
    }


def _summary(request: DataRequest, detection: Detection, record: dict, decoded: bool) -> dict:
    rows = record["cases"]
    quarantined = [Quarantined(*q) for q in record["quarantined"]]
    summary: dict[str, Any] = {
        "source": detection.source,
        "detected": detection.automatic,
        "detected_by": detection.evidence,
        "modality": request.modality,
        "protocol": request.protocol,
        "description": record["description"],
        "decoded": decoded,
        **_counts(rows),
        "views": dict(sorted(Counter(row[4] or "unknown" for row in rows).items())),
        "selection": record["selection"],
        "splits": {name: _counts(rows, idx) for name, idx in sorted(record["subsets"].items())},
        "excluded": record["excluded"],
        "excluded_total": sum(record["excluded"].values()),
        "quarantined": [q.describe() for q in quarantined[:_SHOWN_QUARANTINED]],
        "warnings": record["warnings"],
        "notes": list(record["notes"]),
    }
    if not decoded:
        summary["notes"].append(
            "not decoded yet: files were checked for presence and type only; decoding problems "
            "are counted when the cohort is built"
        )
    overlap = _overlap(record)
    summary["overlap"] = overlap
    summary["overlap_warnings"] = [
        f"{row['list']}: {row['patients_in_training_pool_and_test']} patient(s) in both a "
        "training pool and the test set"
        for row in overlap
        if row["patients_in_training_pool_and_test"]
    ]
    if request.protocol is not None:
        summary["preset"] = _preset_counts(record)
    return summary


def _overlap(record: dict) -> list[dict]:
    """Patient overlap between the training pools and the test set of the source's own lists."""
    patients = np.array([row[2] for row in record["cases"]])
    subsets = {name: np.asarray(rows, dtype=np.int64) for name, rows in record["subsets"].items()}
    rows = preset_overlap(patients, subsets)
    lists = registry.official_lists_of(record["source"])
    train_val = None if lists is None else subsets.get(lists.train_val)
    test = None if lists is None else subsets.get(lists.test)
    if train_val is not None and test is not None:
        shared = set(patients[train_val].tolist()) & set(patients[test].tolist())
        rows.append({"list": lists.label, "patients_in_training_pool_and_test": len(shared)})
    return rows


def _preset_counts(record: dict) -> dict[str, Any]:
    rows, subsets = record["cases"], record["subsets"]

    def count(name: str) -> dict[str, Any]:
        return _counts(rows, subsets.get(name, []))

    chest14 = count(subset_name("chest14"))
    chest14["test"] = count(subset_name("chest14", "test"))["images"]
    chest14["folds"] = [
        {
            part: count(subset_name("chest14", f"fold{k}", part))["images"]
            for part in ("train", "val")
        }
        for k in range(1, 6)
    ]
    sex = count(subset_name("sex"))
    sex["test"] = count(subset_name("sex", "test"))
    sex["levels"] = {}
    for name in sorted({n.split("/")[2] for n in subsets if n.startswith("source-matters/sex/F_")}):
        folds = [
            {
                part: count(subset_name("sex", name, f"fold{k}", part))["images"]
                for part in ("train", "val")
            }
            for k in range(1, 6)
        ]
        pool = _counts(
            rows,
            sorted(
                set(subsets.get(subset_name("sex", name, "fold1", "train"), []))
                | set(subsets.get(subset_name("sex", name, "fold1", "val"), []))
            ),
        )
        sex["levels"][name] = {"pool": pool, "folds": folds}
    return {"chest14": chest14, "sex": sex}
