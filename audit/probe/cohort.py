"""Which of the probe's images are scored (the images come from ``audit.data.loading.load_chosen``).

The probe is training-free, so it needs no splits: it scores held-out images. When the source
names an official test list (NIH ChestX-ray14) that list is used by default, because the model was
most likely trained on the rest; otherwise every image. ``--max-images`` caps the count with a
seeded, label-stratified sample, so a per-commit check stays minutes long on large data sets.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from audit.data.cases import Cohort
from audit.data.registry import official_lists_of
from audit.errors import UsageError

log = logging.getLogger(__name__)


def _official_test(cohort: Cohort) -> str:
    """The source's official test list when the cohort holds it, else every image."""
    lists = official_lists_of(cohort.source)
    return lists.test if lists is not None and lists.test in cohort.subsets else "all"


@dataclass(frozen=True)
class Selection:
    indices: np.ndarray  # into the cohort, sorted
    subset: str  # "all" or a subset name
    description: str


def select_images(
    cohort: Cohort, subset: str | None, max_images: int | None, seed: int
) -> Selection:
    """``subset`` None picks an official test list when there is one, else all images."""
    name = subset or _official_test(cohort)
    if name == "all":
        indices = np.arange(len(cohort.cases))
    elif name in cohort.subsets:
        indices = np.sort(np.asarray(cohort.subsets[name], dtype=np.int64))
    else:
        known = ", ".join(["all", *sorted(cohort.subsets)])
        raise UsageError(f"`subset` {name!r} is not in this data set; available: {known}")
    if len(indices) == 0:
        raise UsageError(f"`subset` {name!r} holds no images")
    found = f"{len(indices)} images ({name})"
    if max_images is not None and max_images < 1:
        raise UsageError(f"`probe.max_images` {max_images}: use 1 or more, or 0 for no cap")
    if max_images is not None and len(indices) > max_images:
        indices = _stratified_sample(indices, cohort.labels[indices], max_images, seed)
        found += f", a label-stratified sample of {max_images} (seed {seed})"
    return Selection(indices, name, found)


def _stratified_sample(
    indices: np.ndarray, labels: np.ndarray, count: int, seed: int
) -> np.ndarray:
    """``count`` indices keeping the label proportions (largest remainders), seeded."""
    rng = np.random.default_rng([seed, 7])
    classes, sizes = np.unique(labels, return_counts=True)
    quota = sizes * count / len(indices)
    take = np.floor(quota).astype(int)
    for k in np.argsort(-(quota - take), kind="stable")[: count - int(take.sum())]:
        take[k] += 1
    picked = [
        rng.choice(indices[labels == c], size=int(t), replace=False)
        for c, t in zip(classes, take, strict=True)
    ]
    return np.sort(np.concatenate(picked))
