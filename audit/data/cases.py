"""The cases and cohort that every source produces and every later stage reads.

A case carries no patient identifier: ``case_id`` and ``patient_key`` are pseudonyms (hashes or
generated ids), so nothing downstream can leak one into a log, a report or a file name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from audit.common.hashing import content_hash

SEXES = ("F", "M")


@dataclass(frozen=True)
class Case:
    """One image with its binary label and the attributes confounders may use."""

    case_id: str
    label: int
    patient_key: str
    sex: str | None = None
    view: str | None = None
    modality: str = "cxr"
    age: float | None = None


@dataclass(frozen=True, eq=False)
class Cohort:
    """Cases plus their decoded images (N, H, W) uint8, decoded once and never again.

    ``synthetic`` marks phantom data: every output made from it must say so. ``excluded`` counts
    the files left out, by reason; ``warnings`` counts kept files with a caveat, by kind (e.g.
    burned-in annotation); ``subsets`` names index arrays into the cohort that the source defines
    (official or study image lists, e.g. ``"source-matters/chest14/test"``): names, never ids.
    """

    cases: tuple[Case, ...]
    images: np.ndarray
    source: str
    modality: str
    synthetic: bool = False
    description: str = ""
    excluded: dict[str, int] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)
    subsets: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.ndim != 3 or self.images.dtype != np.uint8:
            raise ValueError("cohort images must be a (N, H, W) uint8 array")
        if len(self.cases) != len(self.images):
            raise ValueError(f"{len(self.cases)} cases but {len(self.images)} images")

    @property
    def labels(self) -> np.ndarray:
        return np.array([c.label for c in self.cases], dtype=np.int64)

    @property
    def patients(self) -> np.ndarray:
        return np.array([c.patient_key for c in self.cases])

    @property
    def patient_groups(self) -> np.ndarray:
        """Each case's patient as the rank of its first appearance in the cohort: the grouping of
        ``patients`` without the pseudonyms' values, which follow the cache folder's secret key.
        Splits are drawn on these, so the same data and seed split alike with any cache folder."""
        _, first, inverse = np.unique(self.patients, return_index=True, return_inverse=True)
        rank = np.empty(first.size, dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(first.size)
        return rank[inverse.ravel()]

    @property
    def sexes(self) -> np.ndarray:
        return np.array([c.sex or "" for c in self.cases])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    @cached_property
    def _manifest_hash(self) -> str:
        import hashlib

        digest = hashlib.sha256()
        for start in range(0, len(self.images), 256):  # blocks: a memory-mapped cache stays on disk
            digest.update(np.ascontiguousarray(self.images[start : start + 256]).tobytes())
        # Key-free: each case by its position, label, patient group and attributes, never by its
        # pseudonyms (they follow the cache folder's secret key), so the same data has the same
        # identity, audit id and run keys with any cache folder.
        cases = [
            [c.label, int(group), c.sex, c.view, c.modality, c.age]
            for c, group in zip(self.cases, self.patient_groups, strict=True)
        ]
        subsets = {name: np.asarray(idx).tolist() for name, idx in sorted(self.subsets.items())}
        return content_hash(
            {
                "cases": cases,
                "subsets": subsets,
                "pixels": digest.hexdigest(),
                "source": self.source,
            }
        )

    def manifest_hash(self) -> str:
        """Identity of the data: the cases (key-free), the source's lists and a digest of the
        pixels (computed once)."""
        return self._manifest_hash
