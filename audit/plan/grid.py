"""The grid of runs and the sample sets of each cell (confounder x level x fold).

Every run spec has a content hash; that hash is the run's identity in the results store, so a
changed model, data set, parameter or protocol can never reuse a stale result.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from audit.common.hashing import canonical, content_hash
from audit.confounders import Confounder
from audit.data.cases import Cohort
from audit.plan.splits import (
    PatientSplit,
    SampleSet,
    SplitTable,
    attribute_clean_set,
    clean_set,
    ood_set,
    pixel_sets,
    sampled_ood_set,
    sampled_set,
)
from audit.resolve.confounders import ResolvedConfounder
from audit.resolve.settings import INPUT_SCHEMES, Settings, TrainSettings

# 2: sampling confounders score a clean (other-value) test set for the reliance gap, and splits
# are drawn on key-free patient groups; runs stored under 1 lack what the gate reads.
PROTOCOL_VERSION = "medaudit-protocol-2"


@dataclass(frozen=True)
class ModelRef:
    """A model taking part in the audit, identified by content, never by a path."""

    role: str
    arch: str
    sha256: str
    format: str
    preprocessing: str
    display_name: str
    trust_flags: Mapping[str, bool] | None = None  # the trust flags it was loaded with


@dataclass(frozen=True)
class RunSpec:
    """One fine-tuning run. Its hash is its identity; the same spec is never run twice."""

    role: str
    model_hash: str
    arch: str
    data_hash: str
    split_hash: str
    confounder: str
    params: tuple[tuple[str, Any], ...]
    level: float
    fold: int
    seed: int
    train: TrainSettings
    protocol: str = PROTOCOL_VERSION
    confounder_code: str = ""  # a plugin confounder's code hash; "" for medaudit's own
    repeat: int = 0  # which independent training draw of its fold (--repeats)

    @property
    def key(self) -> str:
        record = canonical(self)
        if not self.confounder_code:  # medaudit's own confounders: keys as they always were
            del record["confounder_code"]
        if not self.repeat:  # the first draw of a fold keeps the key it had before repeats
            del record["repeat"]
        return content_hash(record, length=24)

    @property
    def cell(self) -> tuple[str, float, int]:
        return (self.confounder, self.level, self.fold)


@dataclass(frozen=True)
class CellSets:
    """Train, validation and test sets of one (confounder, level, fold)."""

    train: SampleSet
    val: SampleSet
    tests: Mapping[str, SampleSet]


def run_seed(base_seed: int, confounder: str, level: float, fold: int, repeat: int = 0) -> int:
    """One seed per cell and repeat, shared by all models so their runs are paired (same data
    order); a fold's repeats draw independent training seeds on the same split."""
    salt = [base_seed, confounder, level, fold] + ([repeat] if repeat else [])
    return int(content_hash(salt, length=8), 16) % (2**31)


def effective_train(train: TrainSettings, model: ModelRef) -> TrainSettings:
    """Resolve ``normalize="auto"`` to the model's own preprocessing, recorded in the spec."""
    if train.normalize != "auto":
        return train
    scheme = model.preprocessing if model.preprocessing in INPUT_SCHEMES else "imagenet"
    return dataclasses.replace(train, normalize=scheme)


def build_runs(
    settings: Settings,
    models: Sequence[ModelRef],
    confounders: Mapping[str, ResolvedConfounder],
    data_hash: str,
    splits: SplitTable,
) -> tuple[RunSpec, ...]:
    """The full grid, ordered so the runs of one cell follow each other (confound once per cell)."""
    specs = []
    for name, resolved in confounders.items():
        frozen_params = tuple(sorted(resolved.params.items()))
        code = confounder_code(resolved.confounder)
        for level in settings.levels:
            split = splits.get(name, level)
            split_hash = split.content_hash()
            for fold, repeat in itertools.product(range(len(split.folds)), range(settings.repeats)):
                for model in models:
                    specs.append(
                        RunSpec(
                            role=model.role,
                            model_hash=model.sha256,
                            arch=model.arch,
                            data_hash=data_hash,
                            split_hash=split_hash,
                            confounder=name,
                            params=frozen_params,
                            level=float(level),
                            fold=fold,
                            seed=run_seed(settings.seed, name, level, fold, repeat),
                            train=effective_train(settings.train, model),
                            confounder_code=code,
                            repeat=repeat,
                        )
                    )
    return tuple(specs)


def confounder_code(conf: Confounder) -> str:
    """A plugin confounder's identity beyond its name: the source of the modules its functions
    live in, so editing the plugin (or another plugin of the same name) never reuses a run made
    by the old code. "" for medaudit's own confounders, which the protocol version covers."""
    functions = [fn for fn in (conf.apply, conf.baseline, conf.check) if fn is not None]
    if all(getattr(fn, "__module__", "").startswith("audit.") for fn in functions):
        return ""
    parts = []
    for fn in functions:
        module = inspect.getmodule(fn)
        try:
            parts.append(inspect.getsource(module) if module else inspect.getsource(fn))
        except (OSError, TypeError):  # no source file (e.g. defined interactively): its bytecode
            code = getattr(fn, "__code__", None)
            parts.append(f"{fn!r}:{code.co_code.hex() if code else ''}")
        parts.append(getattr(fn, "__qualname__", repr(fn)))
    return content_hash(parts, length=16)


def attribute_masks(cohort: Cohort, confounder: Confounder) -> tuple[np.ndarray, np.ndarray]:
    """For a sampling confounder: which cases record the attribute, and which have its value."""
    values = np.array([getattr(c, confounder.attribute or "") for c in cohort.cases], dtype=object)
    known = np.array([v is not None and v != "" for v in values])
    return known, values == confounder.attribute_value


def cell_sets(
    cohort: Cohort, split: PatientSplit, confounder: Confounder, level: float, fold: int, seed: int
) -> CellSets:
    """The study's sets for one cell.

    ``seed`` is the audit's base seed: test sets depend on it and the level only, never on the
    fold, so per-case scores can be averaged over folds; o.o.d. and clean sets depend on neither.
    """
    labels = cohort.labels
    train_idx, val_idx = split.folds[fold]
    if confounder.kind == "sampling" and split.presampled:
        return _presampled_sets(cohort, split, confounder, fold)
    if confounder.kind == "sampling":
        known, has = attribute_masks(cohort, confounder)
        fold_rng = np.random.default_rng([seed, int(round(level * 1000)), fold])
        test_rng = np.random.default_rng([seed, int(round(level * 1000)), 10_000])
        return CellSets(
            train=sampled_set(train_idx, labels, has, known, level, "train", fold_rng),
            val=sampled_set(val_idx, labels, has, known, level, "val", fold_rng),
            tests={
                "iid": sampled_set(split.test, labels, has, known, level, "iid", test_rng),
                "ood": sampled_ood_set(split.test, labels, has, known),
                "clean": attribute_clean_set(split.test, labels, has, known),
            },
        )
    return CellSets(
        train=pixel_sets(train_idx, labels, level, "train", seed, fold, 1),
        val=pixel_sets(val_idx, labels, level, "val", seed, fold, 2),
        tests={
            "iid": pixel_sets(split.test, labels, level, "iid", seed, 3),
            "ood": ood_set(split.test, labels),
            "clean": clean_set(split.test),
        },
    )


def _presampled_sets(
    cohort: Cohort, split: PatientSplit, confounder: Confounder, fold: int
) -> CellSets:
    """The study's sex lists: training pools already drawn at the level, and a test set that is
    the o.o.d. arrangement itself (so there is no i.i.d. or clean set)."""
    _, has = attribute_masks(cohort, confounder)
    train_idx, val_idx = split.folds[fold]
    return CellSets(
        train=SampleSet("train", train_idx, has[train_idx]),
        val=SampleSet("val", val_idx, has[val_idx]),
        tests={"ood": SampleSet("ood", split.test, has[split.test])},
    )
