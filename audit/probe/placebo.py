"""A placebo for each pixel confounder: the same pixel changes, scattered at random.

A decision that flips when a tag is burned in may flip because the model reads the tag (a
shortcut) or because any change of that size moves it (a model whose scores crowd the operating
threshold flips under almost anything). The placebo image is the confounder's baseline plus the
confounder's own change (confounded - baseline) with its pixels moved to random places: the same
values and the same total change (up to clipping at 0 and 255, recorded as ``change_kept``), and
none of its structure. Scored on the same images, the difference between the two is what the
confounder's structure does beyond any change of its size.

Descriptive, like the AUC change: it does not enter the verdict. A confounder that is itself
unstructured noise is its own placebo, so expect no excess there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import binomtest

from audit.confounders import Confounder, apply_confounder
from audit.probe.measures import FlipRate, ShiftEstimate, flip_rate, mean_shift

METHOD = (
    "placebo: the confounder's own pixel changes, each image's moved to random positions "
    "(seeded per image); excess flip rate by the paired bootstrap of the shift, its p-value "
    "by McNemar's exact test on the images that flip under one of the two only"
)
_STREAM = 7_919  # keeps the placebo's random positions apart from the confounder's own draws


@dataclass
class PlaceboImages:
    """Makes placebo images chunk by chunk and keeps the change they carry, for ``change_kept``."""

    conf: Confounder
    params: Mapping[str, Any]
    seed: int
    change_intended: int = 0
    change_made: int = 0

    def __call__(self, images: np.ndarray, ids: np.ndarray) -> np.ndarray:
        base = images
        if self.conf.baseline is not None:
            base = self._apply(images, ids, confounded=False)
        change = self._apply(images, ids, confounded=True).astype(np.int16) - base
        out = np.empty_like(base)
        for i, image_id in enumerate(ids):
            rng = np.random.default_rng([self.seed, _STREAM, int(image_id)])
            moved = rng.permutation(change[i].ravel()).reshape(change[i].shape)
            out[i] = np.clip(base[i] + moved, 0, 255)
        self.change_intended += int(np.abs(change).sum())
        self.change_made += int(np.abs(out.astype(np.int16) - base).sum())
        return out

    def _apply(self, images: np.ndarray, ids: np.ndarray, *, confounded: bool) -> np.ndarray:
        mask = np.full(len(images), confounded)
        return apply_confounder(
            self.conf, images, mask, seed=self.seed, params=self.params, ids=ids
        )

    @property
    def change_kept(self) -> float | None:
        """Share of the confounder's total absolute change the placebo carries after clipping."""
        return self.change_made / self.change_intended if self.change_intended else None


@dataclass(frozen=True)
class PlaceboComparison:
    """The placebo's own shift and flips, and how many more decisions the confounder flips."""

    shift: ShiftEstimate
    flips: FlipRate
    excess: ShiftEstimate  # mean over images of flipped(confounder) - flipped(placebo)
    only_confounder: int
    only_placebo: int
    p_value: float
    change_kept: float | None

    def finding(self) -> str:
        """One sentence a reader can act on, read off the excess's interval."""
        excess = self.excess
        ci = f"{excess.confidence:.0%} CI {excess.ci_low:+.3f} to {excess.ci_high:+.3f}"
        if self.only_confounder == self.only_placebo == 0:
            if self.flips.n_flipped == 0:
                return "neither the confounder nor its placebo flips a decision"
            return (
                "the confounder and its placebo flip exactly the same decisions: the flips "
                "measure sensitivity to change of this size, not the confounder's structure"
            )
        if excess.ci_low > 0:
            return (
                f"the confounder flips more decisions than the same change scattered at random "
                f"({ci}): the model reacts to the confounder's structure, not only to its size"
            )
        if excess.ci_high < 0:
            return (
                f"the same change scattered at random flips more decisions than the confounder "
                f"({ci}): the flips measure sensitivity to change of this size"
            )
        return (
            f"the confounder and its placebo flip about as many decisions ({ci}): the data "
            "cannot tell the confounder's structure from a random change of its size"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "method": METHOD,
            "change_kept": self.change_kept,
            "mean_shift": self.shift.to_dict(),
            "flip_rate": self.flips.to_dict(),
            "excess_flip_rate": {
                **self.excess.to_dict(),
                "only_confounder": self.only_confounder,
                "only_placebo": self.only_placebo,
                "p_value": self.p_value,
                "p_method": "McNemar exact (two-sided binomial on discordant images; it counts "
                "images as independent, the interval does not)",
            },
            "finding": self.finding(),
        }


def compare_with_placebo(
    y_true: np.ndarray,
    baseline: np.ndarray,
    confounded: np.ndarray,
    placebo: np.ndarray,
    threshold: float,
    *,
    n_resamples: int,
    seed: int,
    confidence: float,
    change_kept: float | None,
    clusters: np.ndarray | None = None,
) -> PlaceboComparison:
    """Scores of the same images: baseline, with the confounder, with its placebo; ``clusters``
    (each image's patient) makes the intervals resample whole patients."""
    shift = mean_shift(
        y_true, baseline, placebo, n_resamples=n_resamples, seed=seed, confidence=confidence,
        clusters=clusters,
    )  # fmt: skip
    before = baseline >= threshold
    by_confounder = (confounded >= threshold) != before
    by_placebo = (placebo >= threshold) != before
    excess = mean_shift(
        y_true, by_placebo.astype(float), by_confounder.astype(float),
        n_resamples=n_resamples, seed=seed, confidence=confidence, clusters=clusters,
    )  # fmt: skip
    only_confounder = int(np.sum(by_confounder & ~by_placebo))
    only_placebo = int(np.sum(by_placebo & ~by_confounder))
    discordant = only_confounder + only_placebo
    p_value = binomtest(only_confounder, discordant, 0.5).pvalue if discordant else 1.0
    return PlaceboComparison(
        shift, flip_rate(baseline, placebo, threshold, confidence, clusters), excess,
        only_confounder, only_placebo, float(p_value), change_kept,
    )  # fmt: skip
