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

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import beta, norm, rankdata
from scipy.stats import t as student_t

from audit.analysis.stats import PatientStrata, bootstrap_streams, delong_test

BOOTSTRAP = "label-stratified paired percentile bootstrap over images"
CLUSTER_BOOTSTRAP = (
    "paired percentile bootstrap over patients (all of a patient's images together), stratified "
    "by whether the patient has a positive image"
)
EXACT = "exact binomial (Clopper-Pearson)"
CLUSTERED_GAP = (
    "difference of independent AUCs, Obuchowski's clustered DeLong variances (images grouped by "
    "patient), normal interval"
)
EXACT_EFFECTIVE = (
    "exact binomial (Clopper-Pearson) on the effective sample size of images clustered by "
    "patient (Korn-Graubard)"
)
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
    clusters: np.ndarray | None = None,
) -> ShiftEstimate:
    """Resample images within each label, so every resample keeps the class mix of the data.

    With ``clusters`` (each image's patient) whole patients are resampled instead, within two
    strata (patients with a positive image, the rest): a patient's images are alike, so counting
    them as independent would make the interval too narrow. One image per patient resamples
    exactly as without clusters.
    """
    diff = np.asarray(confounded, dtype=float) - np.asarray(clean, dtype=float)
    strata = PatientStrata.of(np.asarray(y_true), clusters)
    streams = bootstrap_streams(seed)
    samples = np.empty(n_resamples)
    rows = max(1, _CHUNK_ELEMENTS // diff.size)
    for start in range(0, n_resamples, rows):
        stop = min(n_resamples, start + rows)
        weights = strata.case_weights(streams, stop - start)
        samples[start:stop] = (weights @ diff) / weights.sum(axis=1)
    samples.setflags(write=False)
    low, high = percentile_bounds(samples, confidence)
    return ShiftEstimate(
        float(diff.mean()), low, high, confidence, n_resamples, seed,
        float(np.abs(diff).mean()), samples,
        BOOTSTRAP if strata.singletons else CLUSTER_BOOTSTRAP,
    )  # fmt: skip


def percentile_bounds(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """Order statistics chosen so that "the CI excludes x" matches ``2 * tail(x) < 1 - confidence``:
    the probe's interval and its p-values then agree."""
    n = samples.size
    j = max(math.ceil((1.0 - confidence) * n / 2.0 - 1e-9) - 1, 0)
    ordered = np.sort(samples)
    return float(ordered[j]), float(ordered[n - 1 - j])


@dataclass(frozen=True)
class FlipRate:
    """Decisions (``score >= threshold``) that differ between the clean and confounded image.

    Images of one patient are not independent: with several per patient the exact interval and
    p-values use the effective sample size ``n_effective`` (Korn and Graubard: n over the design
    effect of the clustering, never more than n) and ``k_effective`` = rate x n_effective. With one
    image per patient both are the plain counts.
    """

    n: int
    n_flipped: int
    to_positive: int
    to_negative: int
    ci_low: float
    ci_high: float
    confidence: float
    method: str = EXACT
    n_effective: float | None = None
    n_patients: int | None = None

    @property
    def estimate(self) -> float:
        return self.n_flipped / self.n

    def _counts(self) -> tuple[float, float]:
        n = float(self.n_effective if self.n_effective is not None else self.n)
        return self.estimate * n if self.n_effective is not None else self.n_flipped, n

    def p_above(self, rate: float) -> float:
        """One-sided exact p for "the flip rate exceeds ``rate``": P(X >= k | rate)."""
        k, n = self._counts()
        if k <= 0:
            return 1.0
        return float(beta.cdf(rate, k, n - k + 1))

    def p_below(self, rate: float) -> float:
        """One-sided exact p for "the flip rate is below ``rate``": P(X <= k | rate)."""
        k, n = self._counts()
        if k >= n:
            return 1.0
        return float(beta.sf(rate, k + 1, n - k))

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
            "n_effective": self.n_effective,
            "n_patients": self.n_patients,
        }


def flip_rate(
    clean: np.ndarray,
    confounded: np.ndarray,
    threshold: float,
    confidence: float,
    clusters: np.ndarray | None = None,
) -> FlipRate:
    before, after = clean >= threshold, confounded >= threshold
    flipped = before != after
    n, k = int(before.size), int(np.sum(flipped))
    n_eff, n_patients = _effective_size(flipped, clusters, confidence)
    k_eff, n_used = (k, float(n)) if n_eff is None else (k / n * n_eff, n_eff)
    tail = (1.0 - confidence) / 2.0
    low = 0.0 if k == 0 else float(beta.ppf(tail, k_eff, n_used - k_eff + 1))
    high = 1.0 if k == n else float(beta.ppf(1.0 - tail, k_eff + 1, n_used - k_eff))
    return FlipRate(
        n, k, int(np.sum(after & ~before)), int(np.sum(before & ~after)), low, high, confidence,
        EXACT if n_eff is None else EXACT_EFFECTIVE, n_eff, n_patients,
    )  # fmt: skip


def _effective_size(
    flipped: np.ndarray, clusters: np.ndarray | None, confidence: float
) -> tuple[float | None, int | None]:
    """Korn and Graubard's (1998) effective sample size for a proportion over images clustered
    by patient; None when every patient has one image (the plain exact interval applies)."""
    if clusters is None:
        return None, None
    keys = np.asarray(clusters)
    if keys.shape != flipped.shape:
        raise ValueError(f"clusters must have shape {flipped.shape}; got {keys.shape}")
    _, patient = np.unique(keys, return_inverse=True)
    patient = patient.ravel()
    n_patients = int(patient.max()) + 1 if patient.size else 0
    n = flipped.size
    if n_patients == n:
        return None, n_patients
    if n_patients < 2:
        return 1.0, n_patients  # one patient: one unit of evidence, however many images
    rate = float(flipped.mean())
    totals = np.bincount(patient, weights=flipped.astype(float))
    sizes = np.bincount(patient).astype(float)
    # with-replacement variance of the ratio estimator over patients
    variance = n_patients / (n_patients - 1) * float(np.sum((totals - rate * sizes) ** 2)) / n**2
    n_eff = float(n) if variance <= 0.0 else min(float(n), rate * (1.0 - rate) / variance)
    # degrees of freedom: the t quantiles of the images against those of the patients
    q = 0.5 + confidence / 2.0
    return n_eff * (student_t.ppf(q, n - 1) / student_t.ppf(q, n_patients - 1)) ** 2, n_patients


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


def auc_with_variance(
    y_true: np.ndarray, scores: np.ndarray, clusters: np.ndarray | None = None
) -> tuple[float, float] | None:
    """AUC and DeLong's variance of it (midranks); None with fewer than 2 images of a class.

    With ``clusters`` (each image's patient) and some patient holding several images, the
    variance is Obuchowski's (1997) for clustered data: the same placement values, summed per
    patient, so images of one patient count as one unit of evidence, not several.
    """
    is_pos = y_true == 1
    pos, neg = scores[is_pos], scores[~is_pos]
    m, n = pos.size, neg.size
    if min(m, n) < 2:
        return None
    combined = rankdata(np.concatenate([pos, neg]))
    v10 = (combined[:m] - rankdata(pos)) / n
    v01 = 1.0 - (combined[m:] - rankdata(neg)) / m
    auc = float(v10.mean())
    if clusters is not None:
        _, patient = np.unique(np.asarray(clusters), return_inverse=True)
        patient = patient.ravel()
        if patient.max() + 1 < patient.size:
            return auc, _obuchowski_variance(auc, v10, v01, patient[is_pos], patient[~is_pos])
    return auc, float(np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n)


def _obuchowski_variance(
    auc: float, v10: np.ndarray, v01: np.ndarray, pos_patient: np.ndarray, neg_patient: np.ndarray
) -> float:
    """Variance of the AUC from per-patient sums of placement values (Obuchowski 1997): S10 over
    the I10 patients with a positive image, S01 over the I01 with a negative one, S11 over all I.
    NaN with fewer than two patients on either side: one patient is one unit of evidence. With
    one image per patient this is DeLong's variance."""
    n_patients = int(max(pos_patient.max(), neg_patient.max())) + 1
    with_pos, with_neg = np.unique(pos_patient).size, np.unique(neg_patient).size
    if min(with_pos, with_neg) < 2:
        return float("nan")
    m, n = v10.size, v01.size
    dx = np.bincount(pos_patient, weights=v10, minlength=n_patients) - auc * np.bincount(
        pos_patient, minlength=n_patients
    )
    dy = np.bincount(neg_patient, weights=v01, minlength=n_patients) - auc * np.bincount(
        neg_patient, minlength=n_patients
    )
    s10 = with_pos / (with_pos - 1) * float(dx @ dx) / m
    s01 = with_neg / (with_neg - 1) * float(dy @ dy) / n
    s11 = n_patients / (n_patients - 1) * float(dx @ dy)
    return s10 / m + s01 / n + 2.0 * s11 / (m * n)


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
    if not math.isfinite(se):
        return 1.0  # no variance estimate: no evidence either way
    if se > 0:
        return float(norm.sf(distance / se))
    return 0.0 if distance > 0 else 1.0


def subgroup_comparison(
    y_true: np.ndarray,
    scores: np.ndarray,
    sexes: np.ndarray,
    confidence: float,
    clusters: np.ndarray | None = None,
) -> tuple[dict[str, dict], SubgroupGap | None]:
    """Per sex: counts, AUC, mean score per class; and the AUC gap F - M when both have one.
    ``clusters`` (each image's patient) gives the clustered variance where patients have several
    images (a patient has one sex, so the groups stay independent)."""
    groups: dict[str, dict] = {}
    aucs = {}
    clustered = False
    for sex in ("F", "M"):
        members = sexes == sex
        y, s = y_true[members], scores[members]
        patients = None if clusters is None else np.asarray(clusters)[members]
        clustered |= patients is not None and np.unique(patients).size < patients.size
        found = auc_with_variance(y, s, patients)
        if found is not None and math.isfinite(found[1]):  # NaN: too few patients to tell
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
    gap = SubgroupGap(diff, se, diff - z * se, diff + z * se, confidence, p)
    if clustered:
        gap = dataclasses.replace(gap, method=CLUSTERED_GAP)
    return groups, gap
