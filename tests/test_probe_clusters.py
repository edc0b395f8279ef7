"""The probe's intervals with several images per patient: whole patients are resampled, and the
flip rate's exact interval uses the effective sample size; one image per patient changes nothing.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import t

from audit.probe.measures import EXACT, EXACT_EFFECTIVE, flip_rate, mean_shift


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 3 == 0).astype(int)
    clean = rng.random(n)
    return y, clean, np.clip(clean + rng.normal(0.02, 0.1, n), 0, 1)


def test_one_image_per_patient_gives_the_image_bootstrap_and_the_plain_exact_interval() -> None:
    y, clean, confounded = _data(90, 0)
    patients = np.array([f"P{i:02d}" for i in range(90)])[::-1]
    plain = mean_shift(y, clean, confounded, n_resamples=500, seed=2, confidence=0.95)
    grouped = mean_shift(y, clean, confounded, n_resamples=500, seed=2, confidence=0.95,
                         clusters=patients)  # fmt: skip
    assert np.array_equal(plain.samples, grouped.samples) and plain.method == grouped.method
    exact = flip_rate(clean, confounded, 0.5, 0.95)
    same = flip_rate(clean, confounded, 0.5, 0.95, clusters=patients)
    assert (exact.ci_low, exact.ci_high, exact.method) == (same.ci_low, same.ci_high, EXACT)
    assert same.p_above(0.05) == exact.p_above(0.05) and same.n_patients == 90


def test_copies_of_each_patient_add_no_information() -> None:
    y, clean, confounded = _data(60, 1)
    copies = 4
    patients = np.tile(np.arange(60), copies)
    y4, clean4, conf4 = np.tile(y, copies), np.tile(clean, copies), np.tile(confounded, copies)
    original = mean_shift(y, clean, confounded, n_resamples=800, seed=3, confidence=0.95)
    grouped = mean_shift(y4, clean4, conf4, n_resamples=800, seed=3, confidence=0.95,
                         clusters=patients)  # fmt: skip
    by_image = mean_shift(y4, clean4, conf4, n_resamples=800, seed=3, confidence=0.95)
    np.testing.assert_allclose(grouped.samples, original.samples, rtol=0, atol=1e-12)
    assert "over patients" in grouped.method
    assert by_image.ci_high - by_image.ci_low < 0.6 * (original.ci_high - original.ci_low)

    exact = flip_rate(clean, confounded, 0.5, 0.95)
    effective = flip_rate(clean4, conf4, 0.5, 0.95, clusters=patients)
    naive = flip_rate(clean4, conf4, 0.5, 0.95)
    # Korn-Graubard: 60 patients' worth (design effect 4, with-replacement factor 60/59), then
    # the t quantiles of 239 against 59 degrees of freedom
    q = t.ppf(0.975, 239) / t.ppf(0.975, 59)
    assert effective.method == EXACT_EFFECTIVE
    assert effective.n_effective == pytest.approx(59 * q**2)
    assert effective.n_flipped == copies * exact.n_flipped  # the counts stay what they are ...
    assert effective.ci_low <= exact.ci_low and effective.ci_high >= exact.ci_high  # ... as wide
    assert naive.ci_high - naive.ci_low < 0.6 * (effective.ci_high - effective.ci_low)


def test_no_flip_and_a_single_patient_are_no_stronger_than_their_patients() -> None:
    y, clean, _ = _data(40, 2)
    patients = np.repeat(np.arange(20), 2)
    none = flip_rate(clean, clean, 0.5, 0.95, clusters=patients)
    assert none.n_flipped == 0 and none.ci_low == 0.0
    assert none.n_effective == pytest.approx(40 * (t.ppf(0.975, 39) / t.ppf(0.975, 19)) ** 2)
    assert none.ci_high > flip_rate(clean, clean, 0.5, 0.95).ci_high
    flipped = clean.copy()
    flipped[:10] = 1.0 - clean[:10]  # some decisions flip, all on one patient's 40 images
    one = flip_rate(clean, flipped, 0.5, 0.95, clusters=np.zeros(40))
    assert one.n_effective == 1.0 and one.ci_high - one.ci_low > 0.9  # one unit of evidence


def test_the_clustered_auc_variance_counts_patients_per_class() -> None:
    from audit.probe.measures import _obuchowski_variance, auc_with_variance

    rng = np.random.default_rng(5)
    y = np.r_[np.ones(5, int), np.zeros(95, int)]
    scores = rng.normal(size=100) + y
    auc, delong = auc_with_variance(y, scores)
    pos, neg = scores[y == 1], scores[y == 0]
    v10 = np.array([(np.sum(neg < p) + 0.5 * np.sum(neg == p)) / neg.size for p in pos])
    v01 = np.array([(np.sum(pos > q) + 0.5 * np.sum(pos == q)) / pos.size for q in neg])
    singletons = _obuchowski_variance(auc, v10, v01, np.arange(5), np.arange(5, 100))
    assert singletons == pytest.approx(delong, rel=1e-12)  # one image each: DeLong exactly
    # every positive image from one patient: one unit of evidence, no variance to estimate
    one = _obuchowski_variance(auc, v10, v01, np.zeros(5, int), np.arange(1, 96))
    assert np.isnan(one)


def test_a_sex_group_from_one_patient_gives_no_gap_and_no_verdict() -> None:
    from audit.probe.measures import subgroup_comparison

    rng = np.random.default_rng(6)
    y = np.r_[[1, 1, 1, 0, 0, 0], np.arange(40) % 2]
    scores = rng.random(46)
    sexes = np.array(["F"] * 6 + ["M"] * 40)
    patients = np.r_[np.zeros(6, int), np.arange(1, 41)]
    groups, gap = subgroup_comparison(y, scores, sexes, 0.95, patients)
    assert gap is None and groups["F"]["auc"] is not None  # the AUC is shown, no gap is claimed
    _, unclustered = subgroup_comparison(y, scores, sexes, 0.95)
    assert unclustered is not None  # counting the six images as independent would claim one


def test_the_auc_variance_of_copied_patients_is_the_original_one() -> None:
    from audit.probe.measures import auc_with_variance, subgroup_comparison

    rng = np.random.default_rng(4)
    y = (np.arange(80) % 2).astype(int)
    scores = rng.normal(size=80) + 0.8 * y
    auc, variance = auc_with_variance(y, scores)
    copies = 4
    y4, s4, patients = np.tile(y, copies), np.tile(scores, copies), np.tile(np.arange(80), copies)
    auc4, naive = auc_with_variance(y4, s4)
    auc4c, clustered = auc_with_variance(y4, s4, patients)
    assert auc4 == auc4c == pytest.approx(auc)
    assert naive == pytest.approx(variance / copies, rel=0.05)  # falsely four times as sure
    assert clustered == pytest.approx(variance, rel=0.05)  # Obuchowski: as sure as the data
    sexes = np.where(np.tile(np.arange(80) % 4 < 2, copies), "F", "M")
    _, gap = subgroup_comparison(y4, s4, sexes, 0.95, patients)
    _, naive_gap = subgroup_comparison(y4, s4, sexes, 0.95)
    assert "Obuchowski" in gap.method and gap.se == pytest.approx(2 * naive_gap.se, rel=0.1)
    # one image per patient: DeLong's variance exactly
    assert auc_with_variance(y, scores, np.arange(80)) == (auc, variance)
