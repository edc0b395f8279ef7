"""The probe's resolved choices, one function for ``probe`` and ``check --probe`` alike.

Both commands hand the same values (the audit's seed, alpha, resamples, confounders and their
parameters, the probe's own thresholds) to :func:`resolve_probe`, so they refuse the same values
with the same message and plant the same artifacts: ``check --probe`` gives the numbers a
standalone ``probe`` with the same choices gives.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from audit.errors import UsageError
from audit.probe.decide import ProbeThresholds
from audit.resolve.confounders import ResolvedConfounder, probed
from audit.resolve.constraints import check_setting


@dataclass(frozen=True)
class ProbeOptions:
    """The probe's own settings, as the user gave them (flags or defaults)."""

    max_shift: float = 0.05
    max_flip_rate: float = 0.05
    max_sex_auc_gap: float | None = None
    threshold: float | None = None
    max_images: int = 1000  # 0: every image
    batch_size: int = 32  # images per forward pass
    score_output: str | None = None
    activation: str = "auto"
    placebo: bool = False


@dataclass(frozen=True)
class ResolvedProbe:
    """What a probe scores and how it decides; ``skipped`` confounders select cases by an
    attribute other than sex, which no training-free probe can test."""

    confounders: Mapping[str, ResolvedConfounder]
    skipped: tuple[str, ...]
    thresholds: ProbeThresholds
    options: ProbeOptions


def resolve_probe(
    confounders: Mapping[str, ResolvedConfounder],
    options: ProbeOptions,
    *,
    alpha: float,
    n_resamples: int,
    seed: int,
) -> ResolvedProbe:
    """Check every probe setting (against the one constraint table) and pick what is probed."""
    check_setting("probe.max_images", options.max_images)
    check_setting("probe.batch_size", options.batch_size)
    thresholds = ProbeThresholds(
        max_shift=options.max_shift, max_flip_rate=options.max_flip_rate, alpha=alpha,
        n_resamples=n_resamples, seed=seed, max_sex_auc_gap=options.max_sex_auc_gap,
        threshold=options.threshold,
    )  # fmt: skip
    kept, skipped = probed(confounders)
    if not kept:
        raise UsageError("none of the confounders can be probed (they select cases, pixels stay)")
    if all(rc.kind != "pixel" for rc in kept.values()) and thresholds.max_sex_auc_gap is None:
        raise UsageError(
            "sex alone is reported, not gated: add a pixel confounder or set probe.max_sex_auc_gap"
        )
    return ResolvedProbe(kept, skipped, thresholds, options)


def record(probe: ResolvedProbe) -> dict[str, Any]:
    """The resolved probe as results.json and ``--dry-run --json`` show it."""
    return {
        "confounders": [rc.record() for rc in probe.confounders.values()],
        "skipped": list(probe.skipped),
        "thresholds": {
            "max_shift": probe.thresholds.max_shift,
            "max_flip_rate": probe.thresholds.max_flip_rate,
            "max_sex_auc_gap": probe.thresholds.max_sex_auc_gap,
            "threshold": probe.thresholds.threshold,
            "alpha": probe.thresholds.alpha,
            "n_resamples": probe.thresholds.n_resamples,
            "seed": probe.thresholds.seed,
        },
        "max_images": probe.options.max_images,
    }
