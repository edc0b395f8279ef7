"""Patient-level folds and the confounded sample sets of the study.

Train/val at level p: the artifact on a random fraction p of the positives. Test sets, from one
fixed patient-disjoint test split: i.i.d. (built like training), o.o.d. (the correlation reversed:
the artifact on every negative, none on a positive) and clean (no artifact). A sampling confounder
(sex) makes the correlation by *which* cases are drawn; its clean set is the test split's cases
without the attribute value training pairs with positives (:func:`attribute_clean_set`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import GroupShuffleSplit

from audit.common.hashing import content_hash
from audit.data.cases import Cohort
from audit.data.study_lists import ListedSplit, preset_split
from audit.errors import UsageError
from audit.resolve.confounders import ResolvedConfounder
from audit.resolve.settings import Settings


@dataclass(frozen=True, eq=False)
class PatientSplit:
    """Indices into the cohort: one fixed test split and the train/val pairs of every fold."""

    test: np.ndarray
    folds: tuple[tuple[np.ndarray, np.ndarray], ...]
    presampled: bool = False  # a sampling confounder's sets are already drawn (study lists)

    def content_hash(self) -> str:
        return content_hash({"test": self.test, "folds": self.folds, "presampled": self.presampled})


def from_listed(listed: ListedSplit, *, presampled: bool = False) -> PatientSplit:
    """The plan's split from lists the data set brings (the study's, NIH's official test list)."""
    return PatientSplit(test=listed.test, folds=listed.folds, presampled=presampled)


@dataclass(frozen=True, eq=False)
class SplitTable:
    """Which patient split each (confounder, level) uses: one shared split, or the study's lists,
    which differ by confounder (and, for sex, by level)."""

    default: PatientSplit | None
    specific: dict[tuple[str, float], PatientSplit] = field(default_factory=dict)

    def get(self, confounder: str, level: float) -> PatientSplit:
        split = self.specific.get((confounder, float(level)), self.default)
        if split is None:
            raise UsageError(f"no split for confounder {confounder!r} at level {level}")
        return split


@dataclass(frozen=True, eq=False)
class SampleSet:
    """Which cohort cases a set holds and which of them carry the artifact."""

    name: str
    indices: np.ndarray
    confounded: np.ndarray

    def content_hash(self) -> str:
        return content_hash({"name": self.name, "i": self.indices, "c": self.confounded})


def patient_split(
    patients: np.ndarray, *, n_folds: int, val_fraction: float, test_fraction: float, seed: int
) -> PatientSplit:
    """GroupShuffleSplit by patient: no patient in more than one of train, val and test."""
    if len(np.unique(patients)) < 3:
        raise UsageError(
            "the data holds fewer than 3 patients; a patient-level split is impossible"
        )
    everything = np.arange(len(patients))
    outer = GroupShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed)
    pool, test = next(outer.split(everything, groups=patients))
    inner = GroupShuffleSplit(n_splits=n_folds, test_size=val_fraction, random_state=seed + 1)
    folds = tuple(
        (np.sort(pool[tr]), np.sort(pool[va]))
        for tr, va in inner.split(pool, groups=patients[pool])
    )
    return PatientSplit(test=np.sort(test), folds=folds)


def _rng(seed: int, *salt: float) -> np.random.Generator:
    return np.random.default_rng([seed, *(int(round(s * 1000)) for s in salt)])


def tag_positives(
    indices: np.ndarray, labels: np.ndarray, level: float, rng: np.random.Generator
) -> np.ndarray:
    """Flag exactly round(level * positives) random positives, no negative."""
    positives = np.flatnonzero(labels[indices] == 1)
    chosen = rng.choice(positives, size=int(round(level * len(positives))), replace=False)
    flags = np.zeros(len(indices), dtype=bool)
    flags[chosen] = True
    return flags


def pixel_sets(
    indices: np.ndarray, labels: np.ndarray, level: float, name: str, seed: int, *salt: float
) -> SampleSet:
    """A training-like set: all cases, the artifact on a fraction ``level`` of positives."""
    flags = tag_positives(indices, labels, level, _rng(seed, level, *salt))
    return SampleSet(name, indices, flags)


def ood_set(indices: np.ndarray, labels: np.ndarray) -> SampleSet:
    """The correlation reversed: every negative carries the artifact, no positive does."""
    return SampleSet("ood", indices, labels[indices] == 0)


def clean_set(indices: np.ndarray) -> SampleSet:
    return SampleSet("clean", indices, np.zeros(len(indices), dtype=bool))


def sampled_set(
    indices: np.ndarray,
    labels: np.ndarray,
    has_attribute: np.ndarray,
    known: np.ndarray,
    level: float,
    name: str,
    rng: np.random.Generator,
) -> SampleSet:
    """Sampling confounder: a fraction ``level`` of positives with the attribute, negatives without.

    The number of positives is the same at every level (the smaller of the two attribute groups),
    so levels differ only in the correlation, not in the amount of data.
    """
    idx = indices[known[indices]]
    pos_with = idx[(labels[idx] == 1) & has_attribute[idx]]
    pos_without = idx[(labels[idx] == 1) & ~has_attribute[idx]]
    negatives = idx[(labels[idx] == 0) & ~has_attribute[idx]]
    n_pos = min(len(pos_with), len(pos_without))
    n_with = int(round(level * n_pos))
    if n_pos == 0 or len(negatives) == 0:
        raise UsageError(
            f"set {name!r}: too few cases to sample the confounder "
            f"({len(pos_with)} positives with, {len(pos_without)} without, {len(negatives)} negatives)"
        )
    chosen = np.concatenate(
        [
            rng.choice(pos_with, n_with, replace=False),
            rng.choice(pos_without, n_pos - n_with, replace=False),
            negatives,
        ]
    )
    chosen = np.sort(chosen)
    return SampleSet(name, chosen, has_attribute[chosen])


def sampled_ood_set(
    indices: np.ndarray, labels: np.ndarray, has_attribute: np.ndarray, known: np.ndarray
) -> SampleSet:
    """Reversed: positives without the attribute, negatives with it (e.g. male positives, female negatives)."""
    idx = indices[known[indices]]
    chosen = np.sort(
        np.concatenate(
            [
                idx[(labels[idx] == 1) & ~has_attribute[idx]],
                idx[(labels[idx] == 0) & has_attribute[idx]],
            ]
        )
    )
    if len(np.unique(labels[chosen])) < 2:
        raise UsageError("the o.o.d. test set of the sampling confounder lacks a class")
    return SampleSet("ood", chosen, has_attribute[chosen])


def attribute_clean_set(
    indices: np.ndarray, labels: np.ndarray, has_attribute: np.ndarray, known: np.ndarray
) -> SampleSet:
    """A sampling confounder's unconfounded test set: both classes, all without the attribute
    value that training pairs with positives (for sex: male positives and male negatives).

    Its negatives are the controls of the lift AUC K, the o.o.d. set's negatives (the value
    training paired with positives) the treated ones; the same sets serve any attribute."""
    idx = indices[known[indices] & ~has_attribute[indices]]
    if len(np.unique(labels[idx])) < 2:
        raise UsageError(
            "the test split has no positives or no negatives without the confounder's "
            "attribute value, so its reliance cannot be measured"
        )
    return SampleSet("clean", np.sort(idx), np.zeros(len(idx), dtype=bool))


def split_table(
    settings: Settings,
    cohort: Cohort,
    confounders: Mapping[str, ResolvedConfounder],
    protocol: str | None = None,
) -> SplitTable:
    """One patient-level split for every cell, or the study's lists (per confounder and level)."""
    if protocol is None:
        split = patient_split(
            cohort.patient_groups, n_folds=settings.folds, val_fraction=settings.val_fraction,
            test_fraction=settings.test_fraction, seed=settings.seed,
        )  # fmt: skip
        return SplitTable(default=split)
    specific = {}
    for name, resolved in confounders.items():
        conf = resolved.confounder
        for level in settings.levels:
            listed = preset_split(cohort, protocol, conf, level)
            if listed is None:
                raise UsageError(
                    f"the {protocol} protocol has no image lists for confounder {name!r}; "
                    "audit it without the protocol"
                )
            specific[(name, float(level))] = from_listed(listed, presampled=conf.kind == "sampling")
    return SplitTable(default=None, specific=specific)
