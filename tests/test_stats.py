"""Tests for audit.analysis.stats: each test names the property it proves."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from audit.analysis import stats


def _binormal(rng: np.random.Generator, n_pos: int, n_neg: int, d: float) -> tuple[np.ndarray, ...]:
    y = np.r_[np.ones(n_pos, dtype=int), np.zeros(n_neg, dtype=int)]
    return y, rng.normal(size=y.size) + d * y


# -------------------------------------------------------------------------------------------- AUC


def test_binary_auc_equals_sklearn() -> None:
    y, s = _binormal(np.random.default_rng(0), 30, 40, 1.0)
    assert stats.binary_auc(y, s) == pytest.approx(roc_auc_score(y, s))


def test_binary_auc_with_one_class_only_raises_a_clear_error() -> None:
    with pytest.raises(ValueError, match="y_true must contain both classes"):
        stats.binary_auc([1, 1, 1], [0.1, 0.2, 0.3])


def test_labels_other_than_zero_and_one_are_rejected() -> None:
    with pytest.raises(ValueError, match="only the labels 0 and 1"):
        stats.binary_auc([0, 1, 2], [0.1, 0.2, 0.3])


def test_score_length_mismatch_names_the_parameter() -> None:
    with pytest.raises(ValueError, match=r"y_score must have shape \(3,\)"):
        stats.binary_auc([0, 1, 1], [0.1, 0.2])


def test_all_tied_scores_give_auc_half_and_a_finite_delong() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    tied = np.full(6, 0.3)
    assert stats.binary_auc(y, tied) == 0.5
    result = stats.delong_test(y, tied, tied)
    assert (result.auc_a, result.auc_b, result.diff, result.se) == (0.5, 0.5, 0.0, 0.0)
    assert (result.z, result.p_value) == (0.0, 1.0)


# ----------------------------------------------------------------------------------------- DeLong


@pytest.mark.parametrize("seed", range(5))
def test_fast_delong_equals_the_direct_kernel_formula_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.random(80) < 0.4).astype(int)
    y[:2], y[2:4] = 1, 0
    a = np.round(rng.normal(size=80) + y, 1)  # rounding makes many ties
    b = np.round(rng.normal(size=80) + 0.5 * y + 0.5 * a, 1)
    fast, direct = stats.delong_test(y, a, b), stats.delong_direct(y, a, b)
    for name in ("auc_a", "auc_b", "diff", "se", "z", "p_value"):
        assert getattr(fast, name) == pytest.approx(getattr(direct, name), rel=1e-10, abs=1e-12)
    assert fast.auc_a == pytest.approx(roc_auc_score(y, a))


def test_delong_matches_a_hand_computed_example() -> None:
    """DeLong, DeLong & Clarke-Pearson (1988), worked by hand with exact fractions.

    Positives score a = (.9, .6, .4), b = (.7, .2, .6); negatives a = (.5, .3), b = (.8, .1).
    psi(x, y) = 1 if x > y, 1/2 if equal, 0 otherwise.
      V10_a = (1, 1, 1/2), V01_a = (2/3, 1)  -> AUC_a = 5/6
      V10_b = (1/2, 1/2, 1/2), V01_b = (0, 1) -> AUC_b = 1/2
      S10 = [[1/12, 0], [0, 0]], S01 = [[1/18, 1/6], [1/6, 1/2]]  (sample covariances, n - 1)
      S = S10 / 3 + S01 / 2 = [[1/18, 1/12], [1/12, 1/4]]
      Var(diff) = 1/18 + 1/4 - 2/12 = 5/36, so se = sqrt(5)/6 and z = (1/3) / se = 2 / sqrt(5).
    """
    y = np.array([1, 1, 1, 0, 0])
    a = np.array([0.9, 0.6, 0.4, 0.5, 0.3])
    b = np.array([0.7, 0.2, 0.6, 0.8, 0.1])
    for result in (stats.delong_test(y, a, b), stats.delong_direct(y, a, b)):
        assert result.auc_a == pytest.approx(5 / 6)
        assert result.auc_b == pytest.approx(1 / 2)
        assert result.diff == pytest.approx(1 / 3)
        assert result.se == pytest.approx(math.sqrt(5) / 6)
        assert result.z == pytest.approx(2 / math.sqrt(5))
        assert result.p_value == pytest.approx(2 * norm.sf(2 / math.sqrt(5)))


def test_delong_is_antisymmetric_in_the_two_models() -> None:
    y, a = _binormal(np.random.default_rng(3), 20, 25, 1.0)
    b = a + np.random.default_rng(4).normal(size=a.size)
    ab, ba = stats.delong_test(y, a, b), stats.delong_test(y, b, a)
    assert ab.z == pytest.approx(-ba.z) and ab.p_value == pytest.approx(ba.p_value)


def test_delong_with_a_single_positive_raises_a_clear_error() -> None:
    with pytest.raises(ValueError, match="at least 2 positives and 2 negatives"):
        stats.delong_test([1, 0, 0, 0], [0.9, 0.1, 0.2, 0.3], [0.5, 0.1, 0.2, 0.3])


def test_delong_works_on_the_smallest_allowed_sample() -> None:
    result = stats.delong_test([1, 1, 0, 0], [0.9, 0.4, 0.5, 0.1], [0.6, 0.7, 0.2, 0.3])
    assert 0.0 <= result.p_value <= 1.0 and math.isfinite(result.se)


# --------------------------------------------------------------------------- exact tests and Holm


def test_sign_flip_with_five_positive_folds_gives_p_0625() -> None:
    assert stats.exact_sign_flip_test([0.02, 0.05, 0.01, 0.03, 0.04]) == pytest.approx(0.0625)


def test_sign_flip_matches_brute_force_enumeration() -> None:
    diffs = np.array([0.3, -0.1, 0.2, 0.05, -0.25, 0.1])
    observed = abs(diffs.sum())
    hits = sum(
        abs(np.dot(signs, diffs)) >= observed - 1e-12
        for signs in itertools.product([1, -1], repeat=diffs.size)
    )
    assert stats.exact_sign_flip_test(diffs) == pytest.approx(hits / 2**diffs.size)


def test_sign_flip_of_zero_differences_is_one() -> None:
    assert stats.exact_sign_flip_test([0.0, 0.0, 0.0]) == 1.0


def test_sign_flip_rejects_too_many_folds() -> None:
    with pytest.raises(ValueError, match="diffs may hold at most"):
        stats.exact_sign_flip_test(np.ones(stats.MAX_SIGN_FLIP_FOLDS + 1))


def test_permutation_test_of_fully_separated_five_folds_gives_2_over_252() -> None:
    a = [0.80, 0.81, 0.82, 0.83, 0.84]
    b = [0.70, 0.71, 0.72, 0.73, 0.74]
    assert stats.exact_permutation_test(a, b) == pytest.approx(2 / math.comb(10, 5))


def test_permutation_test_matches_brute_force_over_all_splits() -> None:
    a = np.array([0.3, 0.7, 0.5, 0.9])
    b = np.array([0.4, 0.1, 0.6, 0.2, 0.5])
    pooled = np.r_[a, b]
    observed = abs(a.mean() - b.mean())
    splits = list(itertools.combinations(range(pooled.size), a.size))
    hits = 0
    for chosen in splits:
        mask = np.zeros(pooled.size, dtype=bool)
        mask[list(chosen)] = True
        hits += abs(pooled[mask].mean() - pooled[~mask].mean()) >= observed - 1e-12
    assert stats.exact_permutation_test(a, b) == pytest.approx(hits / len(splits))


def test_permutation_test_enumerates_twelve_per_group_quickly() -> None:
    start = time.perf_counter()
    p = stats.exact_permutation_test(np.arange(12.0), np.arange(12.0) + 0.5)
    assert 0.0 < p <= 1.0 and time.perf_counter() - start < 5.0


def test_holm_matches_a_hand_worked_example() -> None:
    # sorted: 0.005 * 4 = 0.02, 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, 0.04 * 1 = 0.04 -> max(0.06, 0.04)
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_keeps_a_single_p_value() -> None:
    assert stats.holm([0.6, 0.7]) == [1.0, 1.0]
    assert stats.holm([0.04]) == [0.04]
    assert stats.holm([]) == []


def test_holm_rejects_p_values_outside_zero_one() -> None:
    with pytest.raises(ValueError, match=r"p_values must all lie in \[0, 1\]"):
        stats.holm([0.1, 1.2])


# --------------------------------------------------------------------------- descriptive measures


def test_ece_matches_a_hand_computed_example() -> None:
    # bin [0.1, 0.2): confidence 0.1, frequency 0.5, share 1/2; bin [0.9, 1]: 0.9 vs 1.0, share 1/2
    y = [0, 1, 1, 1]
    prob = [0.1, 0.1, 0.9, 0.9]
    assert stats.expected_calibration_error(y, prob) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)


def test_ece_puts_probability_one_in_the_last_bin_and_is_zero_when_calibrated() -> None:
    assert stats.expected_calibration_error([1, 1, 0, 0], [1.0, 1.0, 0.0, 0.0]) == 0.0


def test_ece_rejects_probabilities_outside_zero_one() -> None:
    with pytest.raises(ValueError, match=r"prob must lie in \[0, 1\]"):
        stats.expected_calibration_error([0, 1], [0.2, 1.3])


def test_youden_threshold_separates_a_separable_validation_set() -> None:
    y = [0, 0, 1, 1]
    threshold = stats.youden_threshold(y, [0.1, 0.2, 0.7, 0.9])
    assert threshold == 0.7
    assert stats.sensitivity_specificity(y, [0.1, 0.2, 0.7, 0.9], threshold) == (1.0, 1.0)


def test_youden_ties_go_to_the_highest_threshold() -> None:
    # t = 0.35 gives (sens 1, spec 0.5) and t = 0.8 gives (0.5, 1): J = 0.5 both
    assert stats.youden_threshold([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.8


def test_sensitivity_specificity_at_a_fixed_threshold() -> None:
    y = [1, 1, 1, 1, 0, 0, 0, 0]
    s = [0.9, 0.8, 0.4, 0.6, 0.2, 0.6, 0.1, 0.3]
    assert stats.sensitivity_specificity(y, s, 0.5) == (0.75, 0.75)


def test_breaking_point_is_the_lowest_level_below_the_floor() -> None:
    levels = [1.0, 0.0, 0.5, 0.1, 0.2, 0.8]
    auc = [0.01, 0.85, 0.38, 0.81, 0.75, 0.05]  # the study's tag/ImageNet curve, shuffled
    assert stats.breaking_point(levels, auc, floor=0.5) == 0.5
    assert stats.breaking_point(levels, auc, floor=0.0) is None


def test_average_over_folds_takes_the_per_case_mean() -> None:
    scores = np.arange(2 * 5 * 3, dtype=float).reshape(2, 5, 3)
    assert np.allclose(stats.average_over_folds(scores), scores.mean(axis=1))


# ------------------------------------------------------------- images clustered by patient


def test_patient_strata_put_a_patient_with_both_labels_in_its_own_stratum() -> None:
    """No patient holds negatives only: patients with both kinds are their own stratum."""
    patients = np.r_[np.arange(20), [0, 0, 1, 1, 2, 2]]
    y = np.r_[np.ones(20, int), np.zeros(6, int)]
    strata = stats.PatientStrata.of(y, patients)
    assert [s.size for s in strata.strata] == [17, 0, 3]
    assert strata.n_patients == 20 and not strata.singletons
    with pytest.raises(ValueError, match="clusters must have shape"):
        stats.PatientStrata.of(y, patients[:-1])


def test_resampled_patients_stay_whole_and_every_resample_keeps_both_classes() -> None:
    rng = np.random.default_rng(8)
    patients = np.repeat(np.arange(40), 3)
    y = (rng.random(patients.size) < 0.4).astype(int)
    y[:2] = (1, 0)  # patient 0 has a positive and a negative image
    strata = stats.PatientStrata.of(y, patients)
    weights = strata.case_weights(stats.bootstrap_streams(0), 200)
    assert weights.shape == (200, y.size)
    per_patient = weights.reshape(200, 40, 3)
    assert np.all(per_patient == per_patient[:, :, :1])  # a patient's images are drawn together
    assert np.all(weights[:, y == 1].sum(axis=1) > 0) and np.all(weights[:, y == 0].sum(axis=1) > 0)
    again = strata.case_weights(stats.bootstrap_streams(0), 200)
    assert np.array_equal(weights, again)


def test_one_image_per_patient_resamples_exactly_as_without_clusters() -> None:
    y = np.r_[np.ones(30, int), np.zeros(40, int)]
    names = np.array([f"P{i:03d}" for i in range(y.size)])[::-1]  # any names, any order
    plain = stats.PatientStrata.of(y)
    named = stats.PatientStrata.of(y, names)
    assert plain.singletons and named.singletons
    first = plain.case_weights(stats.bootstrap_streams(3), 50)
    second = named.case_weights(stats.bootstrap_streams(3), 50)
    assert np.array_equal(first, second)
    assert np.all(first[:, y == 1].sum(axis=1) == 30) and np.all(first[:, y == 0].sum(axis=1) == 40)
