"""The probe's intervals with several images per patient: whole patients are resampled, and the
flip rate's exact interval uses the effective sample size; one image per patient changes nothing.
"""

from __future__ import annotations

import numpy as np
import pytest

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
    assert effective.method == EXACT_EFFECTIVE and effective.n_effective == pytest.approx(60)
    assert effective.n_flipped == copies * exact.n_flipped  # the counts stay what they are ...
    assert effective.ci_low == pytest.approx(exact.ci_low)  # ... the interval is the original's
    assert effective.ci_high == pytest.approx(exact.ci_high)
    assert effective.p_below(0.5) == pytest.approx(exact.p_below(0.5))


def test_no_flip_keeps_the_exact_interval_on_all_images() -> None:
    y, clean, _ = _data(40, 2)
    patients = np.repeat(np.arange(20), 2)
    none = flip_rate(clean, clean, 0.5, 0.95, clusters=patients)
    assert none.n_flipped == 0 and none.n_effective == 40 and none.ci_low == 0.0
    assert none.ci_high == pytest.approx(flip_rate(clean, clean, 0.5, 0.95).ci_high)


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
