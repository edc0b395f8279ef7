"""How much of the study's protocol an audit ran, recorded so its reader sees what was cut.

A verdict from 2 folds at 64 px is weaker evidence than one from the study's 5 folds at 224 px;
the report says which, in words, instead of leaving the reader to diff settings. The yardstick is
the study's public code (fine-tuning.py): medaudit's defaults except where they depart from it
(batch 64 and patience 5 against the study's batch 256 and patience 30, which never fires within
its 30 epochs), and images decoded from the 1024-px NIH originals.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from audit.resolve.settings import STUDY_TRAIN, Settings, TrainSettings

STUDY = Settings(train=dataclasses.replace(TrainSettings(), **STUDY_TRAIN))
STUDY_IMAGE_SIDE = 1024  # the NIH originals the study drew its confounders on
STUDY_TIER = "study"  # every protocol setting the study's
REDUCED_TIER = "reduced"  # fewer levels, folds, epochs, confounders or a smaller input
MODIFIED_TIER = "modified"  # the study's extent, other settings (learning rate, patience, ...)


def _momentum(value: float | None) -> str:
    return "each layer's own" if value is None else f"{value:g}"


def _head(head: str) -> str:
    return {"logit": "one logit", "softmax2": "two-way softmax"}.get(head, head)


def _levels(levels: tuple[float, ...]) -> str:
    return ", ".join(f"{level:g}" for level in levels)


def _reductions(settings: Settings) -> list[str]:
    """Cuts that make the evidence weaker: fewer levels, folds, epochs, pixels, steps, confounders."""
    ours, study = settings.train, STUDY.train
    found = []
    if tuple(settings.levels) != tuple(STUDY.levels):
        found.append(f"levels {_levels(settings.levels)} (the study: {_levels(STUDY.levels)})")
    if settings.folds < STUDY.folds:
        found.append(f"{settings.folds} fold(s) (the study: {STUDY.folds})")
    if ours.input_size < study.input_size:
        found.append(f"input {ours.input_size} px (the study: {study.input_size})")
    if ours.epochs < study.epochs:
        found.append(f"at most {ours.epochs} epoch(s) (the study: {study.epochs})")
    if ours.max_steps_per_epoch is not None:
        found.append(f"at most {ours.max_steps_per_epoch} step(s) per epoch (the study: all)")
    missing = [name for name in STUDY.confounders if name not in settings.confounders]
    if missing:
        found.append(f"without {', '.join(missing)} (the study: {', '.join(STUDY.confounders)})")
    return found


def _changes(settings: Settings) -> list[str]:
    """Other departures: neither weaker nor stronger by themselves, but not the study's."""
    ours, study = settings.train, STUDY.train
    compared = (
        ("folds", settings.folds, STUDY.folds, settings.folds > STUDY.folds),
        ("input px", ours.input_size, study.input_size, ours.input_size > study.input_size),
        ("epochs", ours.epochs, study.epochs, ours.epochs > study.epochs),
        ("patience", ours.patience, study.patience, True),
        ("batch", ours.batch_size, study.batch_size, True),
        ("learning rate", ours.lr, study.lr, True),
        ("weight decay", ours.weight_decay, study.weight_decay, True),
        ("dropout", ours.dropout, study.dropout, True),
        ("augmentation", "on" if ours.augment else "off", "on" if study.augment else "off", True),
        ("BatchNorm momentum", _momentum(ours.bn_momentum), _momentum(study.bn_momentum), True),
        ("Adam epsilon", ours.adam_eps, study.adam_eps, True),
        ("head", _head(ours.head), _head(study.head), True),
        ("image side", settings.image_size, STUDY_IMAGE_SIDE, True),
    )
    found = [
        f"{label} {value:g} (the study: {default:g})"
        if isinstance(value, int | float)
        else f"{label} {value} (the study: {default})"
        for label, value, default, applies in compared
        if applies and value != default
    ]
    if settings.counted_levels is not None:
        found.append(f"counted levels {_levels(settings.counted_levels)} (the study: all)")
    changed = sorted(settings.confounder_params)
    if changed:
        found.append(f"confounder parameters set for {', '.join(changed)} (the study: defaults)")
    return found


def deviations(settings: Settings) -> list[str]:
    """Each protocol setting that departs from the study's, as '<ours> (the study: <theirs>)'."""
    return _reductions(settings) + _changes(settings)


def budget_record(
    settings: Settings, runs_total: int, fine_tuning_seconds: float
) -> dict[str, Any]:
    """The results' ``budget``: the tier, what departs from the study, and what was spent."""
    reduced, changed = _reductions(settings), _changes(settings)
    tier = REDUCED_TIER if reduced else MODIFIED_TIER if changed else STUDY_TIER
    return {
        "tier": tier,
        "deviations": reduced + changed,
        "runs": runs_total,
        "fine_tuning_seconds": round(float(fine_tuning_seconds), 3),
    }
