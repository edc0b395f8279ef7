"""The study's exact NIH ChestX-ray14 image lists (``--protocol source-matters``) and their folds.

The lists ship inside the package (``audit/data/presets/source-matters/``, MIT licence beside
them). They name two separate experiments whose labels differ (one image is "YES" in the chest14
lists and "No Finding" in the sex lists), so an image listed by both becomes two cases, one per
experiment, each with its own label; the loader records which lists a case belongs to as named
subsets of the cohort, and :func:`preset_split` turns them back into the study's folds.

- ``chest14``: the pixel confounders (tag, denoise, noise): 331 images, 99 positive, test 83,
  five train/val folds.
- ``sex``: the sex confounder, one training pool per level p (the folders ``F_<p*100>``) and one
  test set of 200 male positives and 200 female negatives (the study's o.o.d. arrangement). The
  pools are already sampled at their level, and they share 2 to 8 patients with the test set:
  :func:`preset_overlap` counts them, ``drop_overlap=True`` removes them from training.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

import numpy as np
from sklearn.model_selection import GroupShuffleSplit

from audit.constants import PROTOCOLS, STUDY_LEVELS
from audit.data.cases import Cohort
from audit.errors import UsageError

PRESET_FOLDER = "source-matters"
N_FOLDS = 5
SEX_LEVELS = STUDY_LEVELS  # the sex lists exist for every level of the study
_POSITIVE = {"YES", "1", "ATELECTASIS"}
_NEGATIVE = {"NO", "0", "NO FINDING"}


@dataclass(frozen=True, eq=False)
class ListedSplit:
    """A test set and train/val folds as cohort indices, as the data's own lists give them; the
    plan stage turns it into its patient split (``audit.plan.splits.from_listed``)."""

    test: np.ndarray
    folds: tuple[tuple[np.ndarray, np.ndarray], ...]


@dataclass(frozen=True)
class ListedImage:
    """One image of a study list: NIH file name, NIH patient id, label, sex if the list has it."""

    name: str
    patient: str
    label: int
    sex: str | None
    subsets: tuple[str, ...]


@dataclass(frozen=True)
class StudyLists:
    """Both experiments of the preset, each a tuple of images with their subset names."""

    chest14: tuple[ListedImage, ...]
    sex: tuple[ListedImage, ...]


def subset_name(experiment: str, *parts: str) -> str:
    return "/".join((PRESET_FOLDER, experiment, *parts))


def level_folder(level: float) -> str:
    return f"F_{int(round(level * 100))}"


def load_study_lists(protocol: str = PRESET_FOLDER) -> StudyLists:
    """Read the packaged lists; names and labels are checked so a damaged copy fails loudly."""
    if protocol not in PROTOCOLS:
        raise UsageError(f"unknown `protocol` {protocol!r}; known: {', '.join(PROTOCOLS)}")
    root = resources.files("audit.data") / "presets" / PRESET_FOLDER / "chest14"
    chest14: dict[str, dict] = {}
    _add_list(chest14, root / "test.csv", subset_name("chest14", "test"))
    for k in range(1, N_FOLDS + 1):
        for part in ("train", "val"):
            path = root / f"{part}_fold{k}.csv"
            _add_list(chest14, path, subset_name("chest14", f"fold{k}", part))
    sex: dict[str, dict] = {}
    _add_list(sex, root / "gender" / "test.csv", subset_name("sex", "test"))
    for level in SEX_LEVELS:
        folder = level_folder(level)
        for k in range(1, N_FOLDS + 1):
            for part in ("train", "val"):
                path = root / "gender" / folder / f"{part}_fold{k}.csv"
                _add_list(sex, path, subset_name("sex", folder, f"fold{k}", part))
    return StudyLists(_freeze(chest14, "chest14"), _freeze(sex, "sex"))


def _add_list(images: dict[str, dict], path, subset: str) -> None:
    for row in csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))):
        name = row["path"].strip()
        label = _label(row["class"])
        entry = images.setdefault(
            name,
            {"patient": str(int(row["pid"])), "label": label, "sex": None, "subsets": []},
        )
        if entry["label"] != label:
            raise UsageError(f"the packaged study list {subset} contradicts itself; reinstall")
        if row.get("Patient Gender"):
            entry["sex"] = row["Patient Gender"].strip().upper()[:1]
        entry["subsets"].append(subset)


def _label(value: str) -> int:
    text = value.strip().upper()
    if text in _POSITIVE:
        return 1
    if text in _NEGATIVE:
        return 0
    raise UsageError("the packaged study lists hold an unknown class; reinstall medaudit")


def _freeze(images: dict[str, dict], experiment: str) -> tuple[ListedImage, ...]:
    every = subset_name(experiment)
    return tuple(
        ListedImage(
            name,
            entry["patient"],
            entry["label"],
            entry["sex"],
            (every, *entry["subsets"]),
        )
        for name, entry in sorted(images.items())
    )


def preset_split(
    cohort: Cohort,
    protocol: str | None,
    confounder: object,
    level: float | None = None,
    *,
    drop_overlap: bool = False,
) -> ListedSplit | None:
    """The study's test set and five folds as indices into ``cohort``, or None without a preset.

    ``confounder`` is a name or an :class:`audit.confounders.Confounder`. Pixel confounders use the
    chest14 lists at every level. The sex confounder needs ``level``: its training pools differ by
    level and are already sampled (p*200 female positives, the rest male), and its test set is the
    study's o.o.d. arrangement (male positives, female negatives), so the caller should use these
    indices as they are rather than resample them. Other sampling confounders have no study lists
    (None). ``drop_overlap`` removes from train/val the patients who are also in the test set.
    """
    if protocol is None:
        return None
    if protocol not in PROTOCOLS:
        raise UsageError(f"unknown `protocol` {protocol!r}; known: {', '.join(PROTOCOLS)}")
    experiment = _experiment(confounder)
    if experiment is None:
        return None
    if subset_name(experiment) not in cohort.subsets:
        raise UsageError(
            f"the cohort was not loaded with `protocol` {protocol}; load it with that protocol "
            "to use the study's image lists"
        )
    prefix = subset_name(experiment)
    if experiment == "sex":
        prefix = subset_name(experiment, level_folder(_sex_level(level)))
    test = _indices(cohort, subset_name(experiment, "test"))
    folds = []
    for k in range(1, N_FOLDS + 1):
        train = _indices(cohort, f"{prefix}/fold{k}/train")
        val = _indices(cohort, f"{prefix}/fold{k}/val")
        if drop_overlap:
            train, val = (
                _without_patients(cohort, train, test),
                _without_patients(cohort, val, test),
            )
        folds.append((train, val))
    return ListedSplit(test=test, folds=tuple(folds))


def _experiment(confounder: object) -> str | None:
    name = confounder if isinstance(confounder, str) else getattr(confounder, "name", "")
    kind = None if isinstance(confounder, str) else getattr(confounder, "kind", None)
    attribute = None if isinstance(confounder, str) else getattr(confounder, "attribute", None)
    if name == "sex" or attribute == "sex":
        return "sex"
    if kind == "sampling":
        return None
    return "chest14"


def _sex_level(level: float | None) -> float:
    for known in SEX_LEVELS:
        if level is not None and abs(level - known) < 1e-9:
            return known
    raise UsageError(
        f"the study's sex lists exist for levels {', '.join(f'{v:g}' for v in SEX_LEVELS)}; "
        f"got {level!r}: choose levels among them with `protocol` source-matters"
    )


def _indices(cohort: Cohort, name: str) -> np.ndarray:
    return _named(cohort.subsets, name)


def _named(subsets: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    return np.asarray(subsets.get(name, np.zeros(0, dtype=np.int64)), dtype=np.int64)


def _without_patients(cohort: Cohort, indices: np.ndarray, other: np.ndarray) -> np.ndarray:
    patients = cohort.patients
    banned = set(patients[other].tolist())
    keep = np.array([p not in banned for p in patients[indices]], dtype=bool)
    return indices[keep] if len(indices) else indices


def preset_overlap(patients: np.ndarray, subsets: Mapping[str, np.ndarray]) -> list[dict]:
    """Patients in both a training pool (train or val of a fold) and the test set, per list."""
    rows = []
    for experiment, folders in (("chest14", ("",)), ("sex", tuple(map(level_folder, SEX_LEVELS)))):
        test_name = subset_name(experiment, "test")
        if test_name not in subsets:
            continue
        test_patients = set(patients[_named(subsets, test_name)].tolist())
        for folder in folders:
            prefix = subset_name(experiment, folder) if folder else subset_name(experiment)
            per_fold = []
            for k in range(1, N_FOLDS + 1):
                pool = np.concatenate(
                    [_named(subsets, f"{prefix}/fold{k}/{part}") for part in ("train", "val")]
                )
                per_fold.append(len(set(patients[pool].tolist()) & test_patients))
            rows.append(
                {
                    "list": f"{experiment} {folder}".strip(),
                    "patients_in_training_pool_and_test": max(per_fold),
                    "per_fold": per_fold,
                }
            )
    return rows


def split_from_lists(
    cohort: Cohort,
    train_val: str,
    test_list: str,
    *,
    n_folds: int = 5,
    val_fraction: float = 0.15,
    seed: int = 0,
) -> ListedSplit | None:
    """A source's official test list as the test set, folds drawn by patient from its training
    list (``train_val`` and ``test_list`` name cohort subsets).

    None when the cohort lacks either list. Patients found in both lists (none in NIH's
    published lists) are kept in the test set only.
    """
    test = _named(cohort.subsets, test_list)
    pool = _named(cohort.subsets, train_val)
    if len(test) == 0 or len(pool) == 0:
        return None
    patients = cohort.patients
    pool = _without_patients(cohort, pool, test)
    if len(np.unique(patients[pool])) < 2:
        raise UsageError(
            "the official training list holds fewer than 2 patients; cannot make folds"
        )
    splitter = GroupShuffleSplit(n_splits=n_folds, test_size=val_fraction, random_state=seed)
    folds = tuple(
        (np.sort(pool[train]), np.sort(pool[val]))
        for train, val in splitter.split(pool, groups=cohort.patient_groups[pool])  # key-free
    )
    return ListedSplit(test=np.sort(test), folds=folds)
