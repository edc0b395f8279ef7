"""How much of the study's protocol an audit ran, recorded so its reader sees what was cut.

A verdict from 2 folds at 64 px is weaker evidence than one from the study's 5 folds at 224 px;
the report says which, in words, instead of leaving the reader to diff settings. The defaults of
:class:`audit.config.Settings` are the study's protocol, so they are the yardstick.
"""

from __future__ import annotations

from typing import Any

from audit.config import Settings

STUDY = Settings()
STUDY_TIER = "study"  # every protocol setting the study's
REDUCED_TIER = "reduced"  # fewer levels, folds, epochs, confounders or a smaller input


def _levels(levels: tuple[float, ...]) -> str:
    return ", ".join(f"{level:g}" for level in levels)


def deviations(settings: Settings) -> list[str]:
    """Each protocol setting that departs from the study's, as '<ours> (the study: <theirs>)'."""
    ours, study = settings.train, STUDY.train
    found = []
    if tuple(settings.levels) != tuple(STUDY.levels):
        found.append(f"levels {_levels(settings.levels)} (the study: {_levels(STUDY.levels)})")
    if settings.folds != STUDY.folds:
        found.append(f"{settings.folds} fold(s) (the study: {STUDY.folds})")
    if ours.input_size != study.input_size:
        found.append(f"input {ours.input_size} px (the study: {study.input_size})")
    if ours.epochs != study.epochs:
        found.append(f"at most {ours.epochs} epoch(s) (the study: {study.epochs})")
    if ours.patience != study.patience:
        found.append(f"patience {ours.patience} (the study: {study.patience})")
    if ours.batch_size != study.batch_size:
        found.append(f"batch {ours.batch_size} (the study: {study.batch_size})")
    if ours.max_steps_per_epoch is not None:
        found.append(f"at most {ours.max_steps_per_epoch} step(s) per epoch (the study: all)")
    missing = [name for name in STUDY.confounders if name not in settings.confounders]
    if missing:
        found.append(f"without {', '.join(missing)} (the study: {', '.join(STUDY.confounders)})")
    return found


def budget_record(
    settings: Settings, runs_total: int, fine_tuning_seconds: float
) -> dict[str, Any]:
    """The results' ``budget``: the tier, what departs from the study, and what was spent."""
    departs = deviations(settings)
    return {
        "tier": REDUCED_TIER if departs else STUDY_TIER,
        "deviations": departs,
        "runs": runs_total,
        "fine_tuning_seconds": round(float(fine_tuning_seconds), 3),
    }
