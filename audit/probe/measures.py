"""What a confounder does to a model's scores, measured on the same images clean and confounded.

Each image is its own control, so every measure is paired:

* the mean score shift, with a seeded, label-stratified percentile bootstrap over images (the
  shifts of a model that ignores the artifact are all exactly zero, and the interval is [0, 0]);
* the fraction of decisions that flip at the operating threshold, with an exact (Clopper-Pearson)
  interval: each image flips or not, independently of the others;
* the AUC change, by DeLong's paired test (descriptive; it does not gate);
* the images whose score moved most, by pseudonymous case id only.

The sex confounder changes no pixel, so it is measured by comparing subgroups instead: AUC per sex
with DeLong's variance (the groups are disjoint, so the variances add) and the mean score per sex
within each class, which keeps a difference in prevalence from passing for a difference in scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import beta, norm, rankdata

from audit.stats import delong_test

BOOTSTRAP = "label-stratified paired percentile bootstrap over images"
EXACT = "exact binomial (Clopper-Pearson)"
_CHUNK_ELEMENTS = 4_000_000


@dataclass(frozen=True, eq=False)
class ShiftEstimate:
    """Mean of (confounded - clean) scores, its bootstrap interval and distribution."""

    estimate: float
    ci_low: float
    ci_high: float
    confidence: float
    n_resamples: int
    seed: int
    mean_abs: float  # mean |shift|: large when shifts of both signs cancel in the mean
    samples: np.ndarray = field(repr=False)
    method: str = BOOTSTRAP

    def share_at_most(self, value: float) -> float:
        return float(np.mean(self.samples <= value))

    def share_at_least(self, value: float) -> float:
        return float(np.mean(self.samples >= value))

    def to_dict(self) -> dict[str, object]:
        return {
            "estimate": self.estimate,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "confidence": self.confidence,
            "n_resamples": self.n_resamples,
            "seed": self.seed,
            "mean_abs": self.mean_abs,
            "method": self.method,
        }


def mean_shift(
    y_true: np.ndarray,
    clean: np.ndarray,
    confounded: np.ndarray,
    *,
    n_resamples: int,
    seed: int,
    confidence: float,
) -> ShiftEstimate:
    """Resample images within each label, so every resample keeps the class mix of the data."""
    diff = np.asarray(confounded, dtype=float) - np.asarray(clean, dtype=float)
    rng = np.random.default_rng(seed)
    totals = np.zeros(n_resamples)
    for label in np.unique(y_true):
        group = diff[y_true == label]
        rows = max(1, _CHUNK_ELEMENTS // group.size)
        for start in range(0, n_resamples, rows):
            stop = min(n_resamples, start + rows)
            picks = rng.integers(0, group.size, size=(stop - start, group.size))
            totals[start:stop] += group[picks].sum(axis=1)
    samples = totals / diff.size
    samples.setflags(write=False)
    low, high = percentile_bounds(samples, confidence)
    return ShiftEstimate(
        float(diff.mean()), low, high, confidence, n_resamples, seed,
        float(np.abs(diff).mean()), samples,
    )  # fmt: skip


def percentile_bounds(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """Order statistics chosen so that "the CI excludes x" matches ``2 * tail(x) < 1 - confidence``
    (the rule ``audit.stats`` uses for the audit's gap)."""
    n = samples.size
    j = max(math.ceil((1.0 - confidence) * n / 2.0 - 1e-9) - 1, 0)
    ordered = np.sort(samples)
    return float(ordered[j]), float(ordered[n - 1 - j])


@dataclass(frozen=True)
class FlipRate:
    """Decisions (``score >= threshold``) that differ between the clean and confounded image."""

    n: int
    n_flipped: int
    to_positive: int
    to_negative: int
    ci_low: float
    ci_high: float
    confidence: float
    method: str = EXACT

    @property
    def estimate(self) -> float:
        return self.n_flipped / self.n

    def p_above(self, rate: float) -> float:
        """One-sided exact p for "the flip rate exceeds ``rate``": P(X >= k | rate)."""
        if self.n_flipped == 0:
            return 1.0
        return float(beta.cdf(rate, self.n_flipped, self.n - self.n_flipped + 1))

    def p_below(self, rate: float) -> float:
        """One-sided exact p for "the flip rate is below ``rate``": P(X <= k | rate)."""
        if self.n_flipped == self.n:
            return 1.0
        return float(beta.sf(rate, self.n_flipped + 1, self.n - self.n_flipped))

    def to_dict(self) -> dict[str, object]:
        return {
            "estimate": self.estimate,
            "n": self.n,
            "n_flipped": self.n_flipped,
            "to_positive": self.to_positive,
            "to_negative": self.to_negative,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "confidence": self.confidence,
            "method": self.method,
        }


def flip_rate(
    clean: np.ndarray, confounded: np.ndarray, threshold: float, confidence: float
) -> FlipRate:
    before, after = clean >= threshold, confounded >= threshold
    n, k = int(before.size), int(np.sum(before != after))
    tail = (1.0 - confidence) / 2.0
    low = 0.0 if k == 0 else float(beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1.0 - tail, k + 1, n - k))
    return FlipRate(
        n, k, int(np.sum(after & ~before)), int(np.sum(before & ~after)), low, high, confidence
    )


def auc_change(y_true: np.ndarray, clean: np.ndarray, confounded: np.ndarray) -> dict | None:
    """Paired DeLong: AUC(confounded) - AUC(clean); None when a class has fewer than 2 images."""
    if min(int(np.sum(y_true == 1)), int(np.sum(y_true == 0))) < 2:
        return None
    result = delong_test(y_true, confounded, clean)
    return {
        "clean": result.auc_b,
        "confounded": result.auc_a,
        "diff": result.diff,
        "se": result.se,
        "z": result.z,
        "p_value": result.p_value,
        "method": "DeLong paired test (Sun & Xu midrank algorithm)",
    }


def worst_cases(
    case_ids: Sequence[str],
    y_true: np.ndarray,
    clean: np.ndarray,
    confounded: np.ndarray,
    threshold: float,
    count: int = 10,
) -> list[dict]:
    """The images whose score moved most, by pseudonymous id, largest |shift| first."""
    diff = confounded - clean
    order = np.argsort(-np.abs(diff), kind="stable")[:count]
    return [
        {
            "case_id": case_ids[i],
            "label": int(y_true[i]),
            "clean": float(clean[i]),
            "confounded": float(confounded[i]),
            "shift": float(diff[i]),
            "flipped": bool((clean[i] >= threshold) != (confounded[i] >= threshold)),
        }
        for i in order
        if diff[i] != 0
    ]


def auc_with_variance(y_true: np.ndarray, scores: np.ndarray) -> tuple[float, float] | None:
    """AUC and DeLong's variance of it (midranks); None with fewer than 2 images of a class."""
    pos, neg = scores[y_true == 1], scores[y_true == 0]
    m, n = pos.size, neg.size
    if min(m, n) < 2:
        return None
    combined = rankdata(np.concatenate([pos, neg]))
    v10 = (combined[:m] - rankdata(pos)) / n
    v01 = 1.0 - (combined[m:] - rankdata(neg)) / m
    return float(v10.mean()), float(np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n)


@dataclass(frozen=True)
class SubgroupGap:
    """AUC(F) - AUC(M) on disjoint groups, with a normal-theory interval from DeLong variances."""

    estimate: float
    se: float
    ci_low: float
    ci_high: float
    confidence: float
    p_value: float  # two-sided, of "no difference"
    method: str = "difference of independent AUCs, DeLong variances, normal interval"

    def tail_above(self, value: float) -> float:
        """One-sided p for "the gap exceeds ``value``"."""
        return _normal_tail(self.estimate - value, self.se)

    def tail_below(self, value: float) -> float:
        """One-sided p for "the gap is below ``value``"."""
        return _normal_tail(value - self.estimate, self.se)

    def to_dict(self) -> dict[str, object]:
        return {
            "estimate": self.estimate,
            "se": self.se,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "confidence": self.confidence,
            "p_value": self.p_value,
            "method": self.method,
        }


def _normal_tail(distance: float, se: float) -> float:
    if se > 0:
        return float(norm.sf(distance / se))
    return 0.0 if distance > 0 else 1.0


def subgroup_comparison(
    y_true: np.ndarray, scores: np.ndarray, sexes: np.ndarray, confidence: float
) -> tuple[dict[str, dict], SubgroupGap | None]:
    """Per sex: counts, AUC, mean score per class; and the AUC gap F - M when both have one."""
    groups: dict[str, dict] = {}
    aucs = {}
    for sex in ("F", "M"):
        members = sexes == sex
        y, s = y_true[members], scores[members]
        found = auc_with_variance(y, s)
        if found is not None:
            aucs[sex] = found
        groups[sex] = {
            "n": int(members.sum()),
            "n_positive": int(y.sum()),
            "auc": found[0] if found else None,
            "mean_score": float(s.mean()) if s.size else None,
            "mean_score_positive": float(s[y == 1].mean()) if np.any(y == 1) else None,
            "mean_score_negative": float(s[y == 0].mean()) if np.any(y == 0) else None,
        }
    groups["unknown"] = {"n": int(np.sum(~np.isin(sexes, ("F", "M"))))}
    if len(aucs) < 2:
        return groups, None
    diff = aucs["F"][0] - aucs["M"][0]
    se = math.sqrt(aucs["F"][1] + aucs["M"][1])
    z = norm.ppf(0.5 + confidence / 2.0)
    p = float(min(1.0, 2.0 * _normal_tail(abs(diff), se))) if se > 0 else float(diff == 0)
    return groups, SubgroupGap(diff, se, diff - z * se, diff + z * se, confidence, p)
