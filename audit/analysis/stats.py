"""Statistics for the audit and the probe; no verdict is decided here.

The audit's gate is the reliance gap of :mod:`audit.analysis.reliance`, declared in advance (one
primary measure per confounder); it and :mod:`audit.probe.decide` take :func:`holm` from here. The
probe's gated mean shift draws its patient-stratified resamples from :class:`PatientStrata` and
:func:`bootstrap_streams`. The rest is descriptive -- DeLong per level and fold, the study's exact
permutation tests across folds, breaking points, calibration, sensitivity and specificity -- and
is reported without becoming a garden of forking paths.

Labels are binary: 1 is the positive class (the finding), 0 the negative. Scores are "higher means
more likely positive". Inputs are validated here, at the boundary, and every error is one line that
names the parameter, the value received and what is accepted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata
from sklearn.metrics import roc_auc_score, roc_curve

MAX_SIGN_FLIP_FOLDS = 20
MAX_PERMUTATION_GROUP = 12


# ------------------------------------------------------------------------------- input validation


def _labels(y_true: object, name: str = "y_true", *, both_classes: bool = True) -> np.ndarray:
    """Return labels as an int8 vector of 0/1, or raise a one-line ValueError."""
    arr = np.asarray(y_true)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-D array of 0/1 labels; got shape {arr.shape}."
        )
    if arr.dtype == bool:
        arr = arr.astype(np.int8)
    values = set(np.unique(arr).tolist())
    if not values <= {0, 1}:
        shown = sorted(values - {0, 1})[:5]
        raise ValueError(f"{name} must contain only the labels 0 and 1; got also {shown}.")
    if both_classes and len(values) < 2:
        raise ValueError(
            f"{name} must contain both classes 0 and 1 for an AUC; got only class {values.pop()} "
            f"({arr.size} cases)."
        )
    return arr.astype(np.int8)


def _scores(y_score: object, n: int, name: str) -> np.ndarray:
    """Return finite float scores of length ``n``, or raise a one-line ValueError."""
    arr = np.asarray(y_score, dtype=float)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match y_true; got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite; got {int(np.sum(~np.isfinite(arr)))} NaN/inf.")
    return arr


# --------------------------------------------------------------------------------- AUC and DeLong


def binary_auc(y_true: object, y_score: object) -> float:
    """Standard binary ROC AUC (ties count one half).

    The study's Keras metric micro-averaged one-hot labels against both softmax columns, which reads
    a few points lower; medaudit always reports this standard binary AUC.
    """
    labels = _labels(y_true)
    return float(roc_auc_score(labels, _scores(y_score, labels.size, "y_score")))


@dataclass(frozen=True)
class DeLongResult:
    """A paired DeLong comparison of two AUCs on the same cases (``diff = auc_a - auc_b``)."""

    auc_a: float
    auc_b: float
    diff: float
    se: float
    z: float
    p_value: float


def _split(y_true: object, score_a: object, score_b: object) -> tuple[np.ndarray, ...]:
    labels = _labels(y_true)
    a = _scores(score_a, labels.size, "score_a")
    b = _scores(score_b, labels.size, "score_b")
    n_pos, n_neg = int(labels.sum()), int(labels.size - labels.sum())
    if min(n_pos, n_neg) < 2:
        raise ValueError(
            "y_true must hold at least 2 positives and 2 negatives for DeLong's variance; "
            f"got {n_pos} positives and {n_neg} negatives."
        )
    pos, neg = labels == 1, labels == 0
    return a[pos], a[neg], b[pos], b[neg]


def _midrank_components(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Structural components from midranks (Sun & Xu 2014), O((m+n) log(m+n)).

    A positive's rank among all cases minus its rank among positives counts the negatives below it
    (ties one half); the same trick for negatives gives the positives below each negative.
    """
    m, n = pos.size, neg.size
    combined = rankdata(np.concatenate([pos, neg]))
    v10 = (combined[:m] - rankdata(pos)) / n
    v01 = 1.0 - (combined[m:] - rankdata(neg)) / m
    return v10, v01


def _direct_components(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Structural components from the full m x n kernel psi (DeLong et al. 1988)."""
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return psi.mean(axis=1), psi.mean(axis=0)


def _delong_from_components(
    comp_a: tuple[np.ndarray, np.ndarray], comp_b: tuple[np.ndarray, np.ndarray]
) -> DeLongResult:
    """Var(AUC_a - AUC_b) = S10/m + S01/n contrasted with (1, -1); z and a two-sided normal p.

    With zero variance (e.g. all scores tied) the difference is exactly known: z = 0 and p = 1 if
    it is zero, otherwise z = +-inf and p = 0.
    """
    v10 = np.vstack([comp_a[0], comp_b[0]])
    v01 = np.vstack([comp_a[1], comp_b[1]])
    cov = np.cov(v10) / v10.shape[1] + np.cov(v01) / v01.shape[1]
    contrast = np.array([1.0, -1.0])
    var = max(float(contrast @ cov @ contrast), 0.0)
    auc_a, auc_b = float(comp_a[0].mean()), float(comp_b[0].mean())
    diff, se = auc_a - auc_b, math.sqrt(var)
    z = diff / se if se > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    p_value = float(min(1.0, 2.0 * norm.sf(abs(z))))
    return DeLongResult(auc_a, auc_b, diff, se, float(z), p_value)


def delong_test(y_true: object, score_a: object, score_b: object) -> DeLongResult:
    """DeLong's paired test of two correlated AUCs, via the fast midrank algorithm of Sun & Xu."""
    a_pos, a_neg, b_pos, b_neg = _split(y_true, score_a, score_b)
    return _delong_from_components(
        _midrank_components(a_pos, a_neg), _midrank_components(b_pos, b_neg)
    )


def delong_direct(y_true: object, score_a: object, score_b: object) -> DeLongResult:
    """The same test from the O(n*m) kernel; slow, kept as an independent check for the fast one."""
    a_pos, a_neg, b_pos, b_neg = _split(y_true, score_a, score_b)
    return _delong_from_components(
        _direct_components(a_pos, a_neg), _direct_components(b_pos, b_neg)
    )


# ------------------------------------------------------------------------ exact permutation tests


def _finite_vector(values: object, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be a non-empty 1-D array of finite numbers; got {arr!r}.")
    return arr


def _tolerance(values: np.ndarray) -> float:
    """Slack for ">= observed": rounding must not drop the observed pattern from its own tail."""
    return 1e-9 * max(1.0, float(np.abs(values).sum()))


def exact_sign_flip_test(diffs: object) -> float:
    """Two-sided exact paired test: all 2^k sign patterns of the per-fold differences.

    Under "no difference" each fold's difference is as likely negative as positive, so the sum's
    null distribution is the enumeration itself; no Monte Carlo error. With k folds the smallest
    attainable p is 2 / 2^k (0.0625 for 5 folds): 5 folds can never reach 0.05.
    """
    d = _finite_vector(diffs, "diffs")
    if d.size > MAX_SIGN_FLIP_FOLDS:
        raise ValueError(
            f"diffs may hold at most {MAX_SIGN_FLIP_FOLDS} values for exact enumeration; "
            f"got {d.size}."
        )
    sums = np.zeros(1)
    for value in d:
        sums = np.concatenate([sums + value, sums - value])
    observed = abs(float(d.sum()))
    return float(np.mean(np.abs(sums) >= observed - _tolerance(d)))


def _subset_sums(values: np.ndarray, size: int) -> np.ndarray:
    """Sums of every subset of ``values`` with exactly ``size`` elements (C(N, size) of them)."""
    levels: list[np.ndarray] = [np.zeros(1)] + [np.empty(0) for _ in range(size)]
    for i, value in enumerate(values):
        for j in range(min(size, i + 1), 0, -1):
            levels[j] = np.concatenate([levels[j], levels[j - 1] + value])
        remaining = values.size - i - 1
        for j in range(size):
            if j + remaining < size:  # can no longer grow to `size`: drop to save memory
                levels[j] = np.empty(0)
    return levels[size]


def exact_permutation_test(a: object, b: object) -> float:
    """Two-sided exact two-sample permutation test of the mean difference, over all splits.

    This is the unpaired comparison the study ran across folds (model A's fold AUCs against model
    B's); it enumerates all C(na + nb, na) relabelings instead of sampling 10,000 of them.
    """
    x, y = _finite_vector(a, "a"), _finite_vector(b, "b")
    if max(x.size, y.size) > MAX_PERMUTATION_GROUP:
        raise ValueError(
            f"a and b may hold at most {MAX_PERMUTATION_GROUP} values each for exact enumeration; "
            f"got {x.size} and {y.size}."
        )
    pooled = np.concatenate([x, y])
    total = float(pooled.sum())
    sums = _subset_sums(pooled, x.size)
    stats = np.abs(sums / x.size - (total - sums) / y.size)
    observed = abs(float(x.mean() - y.mean()))
    return float(np.mean(stats >= observed - _tolerance(pooled)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: monotone in the raw order, capped at 1.

    Controls the family-wise error rate under any dependence between the tests, which the
    confounders' gaps (same models, overlapping cases) certainly have.
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"p_values must be a 1-D sequence; got shape {p.shape}.")
    if p.size and not (np.all(np.isfinite(p)) and p.min() >= 0 and p.max() <= 1):
        raise ValueError(f"p_values must all lie in [0, 1]; got {p.tolist()}.")
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (p.size - np.arange(p.size))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return [float(v) for v in adjusted]


# --------------------------------------------------------------------------- descriptive measures


def expected_calibration_error(y_true: object, prob: object, n_bins: int = 10) -> float:
    """ECE over equal-width bins [k/B, (k+1)/B), 1.0 in the last: sum of share * |freq - conf|.

    Equal width (not equal mass) so that the number is comparable across models and runs.
    """
    labels = _labels(y_true, both_classes=False)
    p = _scores(prob, labels.size, "prob")
    if p.min() < 0 or p.max() > 1:
        raise ValueError(f"prob must lie in [0, 1]; got values from {p.min()!r} to {p.max()!r}.")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer; got {n_bins!r}.")
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    gap = np.abs(
        np.bincount(bins, weights=labels, minlength=n_bins)
        - np.bincount(bins, weights=p, minlength=n_bins)
    )
    return float(gap.sum() / count.sum())


def youden_threshold(y_true: object, y_score: object) -> float:
    """The validation-set threshold maximising Youden's J = sensitivity + specificity - 1.

    Returns an observed score; a case is called positive when ``score >= threshold``. Chosen on
    validation data so that test sensitivity and specificity are not optimistically biased. Ties
    in J go to the highest threshold (fewest positive calls).
    """
    labels = _labels(y_true)
    fpr, tpr, thresholds = roc_curve(
        labels, _scores(y_score, labels.size, "y_score"), drop_intermediate=False
    )
    j = (tpr - fpr)[1:]  # the first point is sklearn's "+inf" threshold: nobody called positive
    return float(thresholds[1:][int(np.argmax(j))])


def sensitivity_specificity(
    y_true: object, y_score: object, threshold: float
) -> tuple[float, float]:
    """Sensitivity and specificity when ``score >= threshold`` is called positive."""
    labels = _labels(y_true)
    scores = _scores(y_score, labels.size, "y_score")
    if not math.isfinite(float(threshold)):
        raise ValueError(f"threshold must be a finite number; got {threshold!r}.")
    called = scores >= float(threshold)
    return float(called[labels == 1].mean()), float((~called[labels == 0]).mean())


def average_over_folds(scores: object) -> np.ndarray:
    """Mean per-case score over folds: (F, n) -> (n,) or (L, F, n) -> (L, n).

    The o.o.d. test set holds the same cases for every fold, so averaging scores per case turns
    five noisy models into one estimate per level before the bootstrap resamples cases.
    """
    arr = np.asarray(scores, dtype=float)
    if arr.ndim not in (2, 3) or 0 in arr.shape:
        raise ValueError(f"scores must have shape (F, n) or (L, F, n); got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError("scores must be finite; got NaN/inf.")
    return arr.mean(axis=-2)


def breaking_point(levels: object, auc_by_level: object, floor: float) -> float | None:
    """The lowest correlation level at which the o.o.d. AUC falls below ``floor``; None if never."""
    lv = _finite_vector(levels, "levels")
    auc = _finite_vector(auc_by_level, "auc_by_level")
    if auc.shape != lv.shape:
        raise ValueError(f"auc_by_level must have one value per level ({lv.size}); got {auc.size}.")
    below = lv[auc < float(floor)]
    return float(below.min()) if below.size else None


# ---------------------------------------------------------------- resampling patients (bootstrap)


def _multiplicities(rng: np.random.Generator, n_rows: int, size: int) -> np.ndarray:
    """Draw ``n_rows`` resamples of ``size`` indices with replacement, as per-case counts."""
    idx = rng.integers(0, size, size=(n_rows, size))
    flat = (idx + size * np.arange(n_rows)[:, None]).ravel()
    return np.bincount(flat, minlength=n_rows * size).reshape(n_rows, size).astype(float)


@dataclass(frozen=True)
class PatientStrata:
    """Resampling units: patients, in three strata (positive images only, negative images only,
    both), each resampled with replacement to its own size.

    A patient's images are alike, so a bootstrap that treats them as independent draws makes its
    interval too narrow; resampling whole patients does not. Stratifying by what a patient holds
    keeps both classes in every resample (an AUC is always defined). Within a stratum patients are
    numbered by first appearance, so when every patient has one image the resamples are exactly
    the label-stratified case resamples (same streams, same order).
    """

    code: np.ndarray  # per case: its patient's index
    strata: tuple[np.ndarray, np.ndarray, np.ndarray]  # patient indices: positive, negative, both

    @classmethod
    def of(cls, labels: np.ndarray, clusters: object = None) -> PatientStrata:
        """``clusters`` (n,) names each case's patient; None: every case is its own patient."""
        keys = np.arange(labels.size) if clusters is None else np.asarray(clusters)
        if keys.shape != labels.shape:
            raise ValueError(f"clusters must have shape {labels.shape}; got {keys.shape}.")
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        rank = np.empty(first.size, dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(first.size)
        code = rank[inverse.ravel()]
        has_positive = np.zeros(first.size, dtype=bool)
        has_negative = np.zeros(first.size, dtype=bool)
        has_positive[code[labels == 1]] = True
        has_negative[code[labels != 1]] = True
        return cls(
            code,
            (
                np.flatnonzero(has_positive & ~has_negative),
                np.flatnonzero(has_negative & ~has_positive),
                np.flatnonzero(has_positive & has_negative),
            ),
        )

    @property
    def n_patients(self) -> int:
        return int(sum(stratum.size for stratum in self.strata))

    @property
    def singletons(self) -> bool:
        return self.n_patients == self.code.size

    def case_weights(self, streams: Sequence[np.random.Generator], rows: int) -> np.ndarray:
        """(rows, n) multiplicity of each case in ``rows`` resamples of whole patients."""
        patients = np.zeros((rows, self.n_patients))
        for stratum, rng in zip(self.strata, streams, strict=True):
            if stratum.size:
                patients[:, stratum] = _multiplicities(rng, rows, stratum.size)
        return patients[:, self.code]


def bootstrap_streams(seed: int) -> tuple[np.random.Generator, ...]:
    """One seeded stream per stratum of :class:`PatientStrata` (positive, negative, both)."""
    return tuple(np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
