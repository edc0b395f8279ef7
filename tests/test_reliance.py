"""Tests for audit.analysis.reliance: each test names the property it proves (fast; the seeded
operating-characteristic simulations are in test_reliance_simulation.py)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import norm, t

from audit.analysis import reliance
from audit.analysis.reliance import ConfounderRuns, RelianceSettings, RunScores

SETTINGS = RelianceSettings()


def _run(role, level, fold, clean, labels, treated, *, patients=None, repeat=0, control=None):
    """A pixel-confounder run: treated are the negatives with the artifact, control the same
    negatives clean (by default their clean scores)."""
    clean, labels = np.asarray(clean, dtype=float), np.asarray(labels)
    patients = np.arange(labels.size) if patients is None else np.asarray(patients)
    neg = labels == 0
    control = clean[neg] if control is None else np.asarray(control, dtype=float)
    return RunScores(
        role, level, fold, clean, labels, patients,
        np.asarray(treated, dtype=float), patients[neg], control, patients[neg], repeat,
    )  # fmt: skip


def _direct_auc(pos, neg, exclude=None):
    """Mann-Whitney AUC over all pairs (ties one half), optionally leaving out pairs (i, j)
    for which exclude[i, j] is True."""
    pos, neg = np.asarray(pos, dtype=float), np.asarray(neg, dtype=float)
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    keep = np.ones_like(psi, dtype=bool) if exclude is None else ~exclude
    return float(psi[keep].mean())


def _binormal_runs(rng, n_pos, n_neg, d_user, d_ref, deltas_user, deltas_ref, *, folds=1,
                   levels=(0.5,), patients=None, repeats=1, sd=0.0):  # fmt: skip
    """Binormal runs: clean = d y + noise, treated negative = clean + delta (pixel)."""
    y = np.r_[np.ones(n_pos, dtype=int), np.zeros(n_neg, dtype=int)]
    pids = np.arange(y.size) if patients is None else np.asarray(patients)
    base = rng.normal(size=y.size)
    runs = []
    for role, d, deltas in (("user", d_user, deltas_user), ("reference", d_ref, deltas_ref)):
        for level, delta in zip(levels, deltas, strict=True):
            for fold in range(folds):
                for rep in range(repeats):
                    s = (d + sd * rng.normal()) * y + 0.8 * base + 0.6 * rng.normal(size=y.size)
                    treated = s[y == 0] + delta + sd * rng.normal()
                    runs.append(_run(role, level, fold, s, y, treated, patients=pids, repeat=rep))
    return runs


# -------------------------------------------------------------------------------- the measure


def test_reliance_gap_is_the_formula() -> None:
    c, kr, ku = 0.84, 0.7, 0.8
    z = norm.ppf
    expected = norm.cdf(z(c) - z(kr)) - norm.cdf(z(c) - z(ku))
    assert reliance.reliance_gap(c, kr, ku) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("clean", [0.55, 0.74, 0.84, 0.96])
@pytest.mark.parametrize("lift", [0.3, 0.5, 0.8, 0.999])
def test_equal_lift_gives_zero_whatever_the_clean_auc(clean: float, lift: float) -> None:
    assert reliance.reliance_gap(clean, lift, lift) == 0.0


def test_binormal_prediction_is_the_ood_auc_of_the_binormal_model() -> None:
    d, delta = 1.4, 0.9  # positives N(d, 1), negatives N(0, 1), artifact adds delta
    c, k = norm.cdf(d / math.sqrt(2)), norm.cdf(delta / math.sqrt(2))
    assert reliance.binormal_ood_auc(c, k) == pytest.approx(norm.cdf((d - delta) / math.sqrt(2)))


def test_the_clip_keeps_collapsed_models_finite_and_equal() -> None:
    assert reliance.reliance_gap(0.8, 1.0, 0.9999) == 0.0
    assert np.isfinite(reliance.binormal_ood_auc(1.0, 0.0))


def test_the_estimate_on_constructed_scores_equals_the_hand_computed_formula() -> None:
    # Clean: two positives (a, b), three negatives (c, d, e); one patient each.
    labels = [1, 1, 0, 0, 0]
    ref_clean, ref_treated = [0.9, 0.6, 0.7, 0.2, 0.1], [0.8, 0.5, 0.1]
    usr_clean, usr_treated = [0.8, 0.4, 0.3, 0.5, 0.2], [0.9, 0.9, 0.6]
    # C_ref: 0.9 beats all 3 negatives, 0.6 beats 0.2 and 0.1 -> 5 / 6.
    # K_ref over pairs of different patients: c 0.8 > d 0.2, e 0.1 (2); d 0.5 > e 0.1 only
    # (1); e 0.1 beats neither c 0.7 nor d 0.2 (0) -> 3 / 6. K_user: every pair -> 6 / 6 = 1.
    runs = [
        _run("reference", 0.5, 0, ref_clean, labels, ref_treated),
        _run("user", 0.5, 0, usr_clean, labels, usr_treated),
    ]
    est = reliance.estimate_reliance(ConfounderRuns(tuple(runs)))
    z = norm.ppf
    hand = norm.cdf(z(5 / 6) - z(0.5)) - norm.cdf(z(5 / 6) - z(0.995))  # K_user clipped
    level = est.per_level[0]
    assert (level.clean_auc_reference, level.lift_auc_reference) == pytest.approx((5 / 6, 0.5))
    assert level.lift_auc_user == 1.0
    assert est.estimate == pytest.approx(hand, abs=1e-12)
    assert est.estimate == pytest.approx(0.7795, abs=1e-4)


def test_runs_are_averaged_repeats_first_then_folds() -> None:
    """Fold 0 has two repeats, fold 1 one: each fold weighs 1/2, each repeat of fold 0 1/4."""
    rng = np.random.default_rng(3)
    y = np.r_[np.ones(12, dtype=int), np.zeros(18, dtype=int)]
    runs, aucs = [], {"user": [], "reference": []}
    for role in ("user", "reference"):
        for fold, repeat in ((0, 0), (0, 1), (1, 0)):
            s = rng.normal(size=30) + y
            treated = s[y == 0] + rng.normal(0.5, 0.3, size=18)
            runs.append(_run(role, 0.8, fold, s, y, treated, repeat=repeat))
            aucs[role].append(
                (
                    _direct_auc(s[y == 1], s[y == 0]),
                    _direct_auc(treated, s[y == 0], np.eye(18, dtype=bool)),
                )
            )
    est = reliance.estimate_reliance(ConfounderRuns(tuple(runs)))
    weights = np.array([0.25, 0.25, 0.5])
    c_ref, k_ref = weights @ np.array(aucs["reference"])
    _, k_user = weights @ np.array(aucs["user"])
    assert est.per_level[0].clean_auc_reference == pytest.approx(c_ref, abs=1e-12)
    assert est.per_level[0].lift_auc_reference == pytest.approx(k_ref, abs=1e-12)
    assert est.per_level[0].lift_auc_user == pytest.approx(k_user, abs=1e-12)
    assert est.estimate == pytest.approx(float(reliance.reliance_gap(c_ref, k_ref, k_user)))
    # The per-fold measures behind V_runs: fold 0 averages its repeats first.
    (c0, k0), (_, ku0) = (np.mean(aucs[r][:2], axis=0) for r in ("reference", "user"))
    assert est.fold_estimates[0] == pytest.approx(float(reliance.reliance_gap(c0, k0, ku0)))
    assert est.n_folds == 2 and est.n_runs == 6


def test_the_estimate_averages_the_counted_levels() -> None:
    rng = np.random.default_rng(4)
    runs = _binormal_runs(rng, 30, 40, 1.0, 1.4, (0.2, 0.9), (0.2, 0.5), levels=(0.2, 0.8))
    est = reliance.estimate_reliance(ConfounderRuns(tuple(runs)))
    assert est.levels == (0.2, 0.8)
    assert est.estimate == pytest.approx(np.mean([g.gap for g in est.per_level]))
    only = reliance.estimate_reliance(
        ConfounderRuns(tuple(runs)), RelianceSettings(counted_levels=(0.8,))
    )
    assert only.estimate == pytest.approx(est.per_level[1].gap)


def test_equal_reliance_gives_zero_regardless_of_accuracy() -> None:
    """Same treated and control scores for both models, very different clean accuracy."""
    rng = np.random.default_rng(5)
    y = np.r_[np.ones(20, dtype=int), np.zeros(30, dtype=int)]
    runs = []
    for fold in range(3):
        control = rng.normal(size=30)
        treated = control + rng.normal(0.8, 0.5, size=30)
        for role, d in (("user", 0.3), ("reference", 2.5)):
            clean = np.empty(50)
            clean[y == 0] = control
            clean[y == 1] = d + rng.normal(size=20)
            runs.append(_run(role, 1.0, fold, clean, y, treated))
    est = reliance.estimate_reliance(ConfounderRuns(tuple(runs)))
    level = est.per_level[0]
    assert level.clean_auc_user < 0.7 < 0.9 < level.clean_auc_reference
    assert est.estimate == 0.0
    assert est.fold_estimates == (0.0, 0.0, 0.0)


# ---------------------------------------------------------------------- AUCs, ties and clusters


@pytest.mark.parametrize("seed", range(4))
def test_cross_counts_equal_the_direct_kernel_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 6, size=(3, 7)).astype(float)
    b = rng.integers(0, 6, size=(3, 9)).astype(float)
    counts_a, counts_b = reliance._cross_counts(a, b)
    for r in range(3):
        psi = (a[r][:, None] > b[r][None, :]) + 0.5 * (a[r][:, None] == b[r][None, :])
        np.testing.assert_allclose(counts_a[r], psi.sum(axis=1))
        np.testing.assert_allclose(counts_b[r], psi.sum(axis=0))


def test_all_tied_scores_give_auc_one_half() -> None:
    y = np.array([1, 1, 1, 0, 0, 0])
    runs = [_run(role, 1.0, 0, np.full(6, 0.3), y, np.full(3, 0.3)) for role in reliance.ROLES]
    est = reliance.estimate_reliance(ConfounderRuns(tuple(runs)))
    g = est.per_level[0]
    assert (g.clean_auc_reference, g.lift_auc_reference, g.lift_auc_user) == (0.5, 0.5, 0.5)
    assert est.estimate == 0.0


def test_lift_auc_leaves_out_pairs_of_one_patient() -> None:
    """Negatives c and d belong to one patient: (c, d) and (d, c) pairs are left out too."""
    labels = np.array([1, 1, 0, 0, 0])
    patients = np.array(["a", "b", "p", "p", "q"])
    clean = np.array([0.9, 0.8, 0.1, 0.2, 0.3])
    treated = np.array([0.5, 0.05, 0.25])
    runs = [
        _run(role, 1.0, 0, clean, labels, treated, patients=patients) for role in reliance.ROLES
    ]
    est = reliance.estimate_reliance(ConfounderRuns(tuple(runs)))
    same = patients[labels == 0][:, None] == patients[labels == 0][None, :]
    expected = _direct_auc(treated, clean[labels == 0], same)
    assert est.per_level[0].lift_auc_reference == pytest.approx(expected)
    # Valid pairs: c' 0.5 vs e 0.3 (win), d' 0.05 vs e 0.3 (loss), e' 0.25 vs c 0.1, d 0.2 (wins).
    assert expected == pytest.approx(3 / 4)
    assert est.n_patients == 4


def test_test_variance_of_one_auc_is_delong_with_singletons() -> None:
    """The stratified patient-sum variance of a single AUC is DeLong's S10 / m + S01 / n."""
    rng = np.random.default_rng(6)
    y = np.r_[np.ones(15, dtype=int), np.zeros(25, dtype=int)]
    s = rng.normal(size=40) + 1.2 * y
    run = _run("user", 1.0, 0, s, y, s[y == 0] + 0.3)
    layout = reliance._Layout.of(run)
    pos, neg = s[y == 1][None, :], s[y == 0][None, :]
    comp = reliance._auc_components(*reliance._cross_counts(pos, neg), 15, 25)
    psi = layout.patient_sums([(layout.code_pos, comp.first), (layout.code_neg, comp.second)])
    psi_kernel = (pos[0][:, None] > neg[0][None, :]).astype(float)
    v10, v01 = psi_kernel.mean(axis=1), psi_kernel.mean(axis=0)
    delong = v10.var(ddof=1) / 15 + v01.var(ddof=1) / 25
    assert layout.variance(psi)[0] == pytest.approx(delong, rel=1e-10)


def _clustered_runs(rng, *, duplicate: bool, own_ids: bool = False):
    """Binormal runs on 40 patients (some with two images); optionally every image twice."""
    patients = np.r_[np.arange(30), np.arange(10)]  # patients 0..9 have two images
    y = np.r_[np.ones(14, dtype=int), np.zeros(16, dtype=int), np.ones(4), np.zeros(6)].astype(int)
    latent = rng.normal(size=30)[patients] * 0.7 + 0.7 * rng.normal(size=40)
    runs = []
    for role, d in (("user", 0.9), ("reference", 1.4)):
        for level, delta in ((0.5, 0.6 if role == "user" else 0.4), (1.0, 1.2)):
            for fold in range(3):
                s = d * y + latent + 0.4 * rng.normal(size=40)
                treated = s[y == 0] + delta + 0.3 * rng.normal(size=int((y == 0).sum()))
                if duplicate:
                    keep = np.repeat(np.arange(40), 2)
                    pid = patients[keep] if not own_ids else np.arange(80)
                    neg_keep = np.repeat(np.arange(int((y == 0).sum())), 2)
                    runs.append(
                        _run(role, level, fold, s[keep], y[keep], treated[neg_keep], patients=pid)
                    )
                else:
                    runs.append(_run(role, level, fold, s, y, treated, patients=patients))
    return ConfounderRuns(tuple(runs))


def test_duplicating_every_image_changes_neither_estimate_nor_patient_level_se() -> None:
    once = reliance.estimate_reliance(_clustered_runs(np.random.default_rng(7), duplicate=False))
    twice = reliance.estimate_reliance(_clustered_runs(np.random.default_rng(7), duplicate=True))
    case_level = reliance.estimate_reliance(
        _clustered_runs(np.random.default_rng(7), duplicate=True, own_ids=True)
    )
    assert twice.estimate == pytest.approx(once.estimate, abs=1e-12)
    assert twice.var_test == pytest.approx(once.var_test, rel=1e-9)
    assert twice.var_runs == pytest.approx(once.var_runs, rel=1e-9)
    assert twice.se == pytest.approx(once.se, rel=1e-9)
    assert (once.n_patients, twice.n_patients, case_level.n_patients) == (30, 30, 80)
    # Treating each copy as its own patient pretends to twice the data: the test SE shrinks.
    assert math.sqrt(case_level.var_test) < 0.8 * math.sqrt(once.var_test)


def test_test_variance_matches_fresh_test_sets_for_fixed_models() -> None:
    """Fixed score models, 400 fresh test sets of 83 images: mean V_test vs the variance."""
    rng = np.random.default_rng(8)
    estimates, variances = [], []
    for _ in range(400):
        runs = _binormal_runs(rng, 31, 52, 1.0, 1.4, (0.3, 1.1), (0.5, 0.9), levels=(0.2, 1.0))
        est = reliance.estimate_reliance(ConfounderRuns(tuple(runs)), fit_check=False)
        estimates.append(est.estimate)
        variances.append(est.var_test)
    ratio = np.var(estimates) / np.mean(variances)
    assert 0.8 < ratio < 1.25, ratio  # relative MC error of a variance from 400 draws: ~7 %


# ------------------------------------------------------------------------------- the interval


def test_the_pivot_is_t_without_test_variance_and_normal_without_run_variance() -> None:
    for folds in (2, 3, 5, 10):
        tail = reliance._pivot_tail(1.7, 0.0, 1.0, folds)
        assert tail == pytest.approx(t.sf(1.7, folds - 1), rel=1e-9)
        width = reliance._pivot_quantile(0.025, 0.0, 4.0, folds)
        assert width == pytest.approx(2.0 * t.ppf(0.975, folds - 1), rel=1e-9)
    assert reliance._pivot_tail(1.7, 1.0, 0.0, 5) == pytest.approx(norm.sf(1.7))
    assert reliance._pivot_quantile(0.025, 1.0, 0.0, 5) == pytest.approx(norm.ppf(0.975))


def test_the_interval_and_the_p_values_agree() -> None:
    rng = np.random.default_rng(9)
    runs = _binormal_runs(rng, 31, 52, 1.0, 1.4, (0.5, 1.0), (0.4, 0.8), levels=(0.5, 1.0),
                          folds=5, sd=0.1)  # fmt: skip
    est = reliance.estimate_reliance(ConfounderRuns(tuple(runs)))
    assert est.p_greater(est.ci_low) == pytest.approx(0.025, abs=1e-9)
    assert est.p_less(est.ci_high) == pytest.approx(0.025, abs=1e-9)
    assert est.var_runs > 0 and 4 <= est.df < math.inf
    expected_df = (est.var_test + est.var_runs) ** 2 / (est.var_runs**2 / 4)
    assert est.df == pytest.approx(expected_df)
    assert est.var_runs == pytest.approx(np.var(est.fold_estimates, ddof=1) / 5)


def test_one_fold_is_flagged_and_uses_the_test_variance_only() -> None:
    rng = np.random.default_rng(10)
    runs = _binormal_runs(rng, 31, 52, 1.0, 1.4, (0.5,), (0.5,))
    est = reliance.estimate_reliance(ConfounderRuns(tuple(runs)))
    assert not est.runs_variance_available
    assert (est.var_runs, est.df, est.n_folds) == (0.0, math.inf, 1)
    assert est.se == pytest.approx(math.sqrt(est.var_test))
    assert est.ci_high - est.estimate == pytest.approx(norm.ppf(0.975) * est.se)
    assert "Only one fold" in est.notes[0]
    decision = reliance.decide({"tag": ConfounderRuns(tuple(runs))}).per_confounder[0]
    assert decision.estimate.ci_high < 0.05, "below the margin..."
    assert decision.verdict == "inconclusive", "...yet one fold never passes"
    assert "single fold" in decision.reason and "at least 2 folds" in decision.reason


def test_fit_check_and_retention() -> None:
    rng = np.random.default_rng(11)
    runs = _binormal_runs(rng, 400, 600, 1.0, 1.4, (0.0, 0.7), (0.0, 0.5), levels=(0.0, 1.0))
    est = reliance.estimate_reliance(ConfounderRuns(tuple(runs)))
    assert est.levels == (1.0,)  # p = 0 is never counted
    assert len(est.fit_check) == 4 and len(est.retention) == 4
    for check in est.fit_check:  # the binormal model fits: observed = predicted within noise
        assert check.se > 0
        assert abs(check.difference) < 4 * check.se + 0.01, check
    by = {(r.role, r.level): r for r in est.retention}
    assert by[("user", 0.0)].retention == 1.0
    assert by[("user", 1.0)].retention == pytest.approx(
        by[("user", 1.0)].clean_auc / by[("user", 0.0)].clean_auc
    )
    no_zero = reliance.estimate_reliance(ConfounderRuns(tuple(r for r in runs if r.level > 0)))
    assert all(r.retention is None for r in no_zero.retention)
    skipped = reliance.estimate_reliance(ConfounderRuns(tuple(runs)), fit_check=False)
    assert skipped.fit_check == () and skipped.estimate == est.estimate
    assert (skipped.ci_low, skipped.ci_high) == (est.ci_low, est.ci_high)


# ------------------------------------------------------------------------------- the decision


def _estimate(estimate: float, var_test: float, var_runs: float, folds: int = 5):
    """A RelianceEstimate with an interval made the module's way (for the decision rule)."""
    width = reliance._pivot_quantile(0.025, var_test, var_runs, folds)
    return reliance.RelianceEstimate(
        estimate=estimate, per_level=(), var_test=var_test, var_runs=var_runs,
        se=math.sqrt(var_test + var_runs), df=reliance._satterthwaite(var_test, var_runs, folds),
        ci_low=estimate - width, ci_high=estimate + width, confidence=0.95, n_folds=folds,
        n_runs=50, fold_estimates=(), runs_variance_available=folds > 1, n_positive=31,
        n_negative=52, n_patients=68,
    )  # fmt: skip


def _for_p(p_one_sided: float, side: str, var_test=1e-4, var_runs=1e-4):
    """An estimate whose one-sided p (fail side above the margin, pass side below) is given."""
    width = reliance._pivot_quantile(p_one_sided, var_test, var_runs, 5)
    return _estimate(0.05 + width if side == "fail" else 0.05 - width, var_test, var_runs)


def test_a_lower_bound_above_the_margin_fails_and_an_upper_bound_below_passes() -> None:
    verdict = reliance.decide_from_estimates({"a": _estimate(0.2, 1e-4, 1e-4)})
    assert verdict.overall == "fail" and verdict.per_confounder[0].verdict == "fail"
    assert "exceeds the margin" in verdict.per_confounder[0].reason
    verdict = reliance.decide_from_estimates({"a": _estimate(0.0, 1e-4, 1e-4)})
    assert verdict.overall == "pass"
    assert "stays below the margin" in verdict.per_confounder[0].reason


def test_fail_side_is_holm_adjusted() -> None:
    """Both lower bounds exceed the margin (one-sided p 0.02 and 0.015 < 0.025) but Holm's
    smallest adjusted p is 2 x 0.015 = 0.03: neither fails, and the reason says why."""
    verdict = reliance.decide_from_estimates(
        {"a": _for_p(0.02, "fail"), "b": _for_p(0.015, "fail")}
    )
    decisions = {d.confounder: d for d in verdict.per_confounder}
    assert decisions["b"].p_fail_adjusted == pytest.approx(0.03)
    assert all(d.estimate.ci_low > 0.05 for d in decisions.values())
    assert all(d.verdict == "inconclusive" for d in decisions.values())
    assert "not after Holm adjustment across 2 confounders" in decisions["a"].reason
    assert verdict.overall == "inconclusive"
    strong = reliance.decide_from_estimates({"a": _for_p(0.02, "fail"), "b": _for_p(1e-5, "fail")})
    assert [d.verdict for d in strong.per_confounder] == ["fail", "fail"]  # 0.02 x 1 after step


def test_pass_side_needs_every_upper_bound_below_the_margin_without_holm() -> None:
    """Four confounders each with one-sided p_pass = 0.02: Holm would block (4 x 0.02), the
    intersection-union rule does not."""
    estimates = {name: _for_p(0.02, "pass") for name in ("tag", "denoise", "noise", "sex")}
    verdict = reliance.decide_from_estimates(estimates)
    assert all(d.verdict == "pass" for d in verdict.per_confounder)
    assert all(d.p_pass == pytest.approx(0.02) for d in verdict.per_confounder)
    assert verdict.overall == "pass"
    estimates["sex"] = _estimate(0.05, 1e-4, 1e-4)
    assert reliance.decide_from_estimates(estimates).overall == "inconclusive"
    estimates["sex"] = _estimate(0.3, 1e-4, 1e-4)
    assert reliance.decide_from_estimates(estimates).overall == "fail"


def test_inconclusive_reason_names_the_dominant_variance_and_what_would_settle_it() -> None:
    test_heavy = reliance.decide_from_estimates({"a": _estimate(0.02, 4e-4, 1e-5)})
    reason = test_heavy.per_confounder[0].reason
    assert "Test-patient variance dominates" in reason and "test patients would settle" in reason
    runs_heavy = reliance.decide_from_estimates({"a": _estimate(0.02, 1e-5, 4e-4)})
    reason = runs_heavy.per_confounder[0].reason
    assert "Between-run variance dominates" in reason and "runs (folds or repeats)" in reason
    on_margin = reliance.decide_from_estimates({"a": _estimate(0.05, 1e-4, 1e-4)})
    assert "sits on the margin" in on_margin.per_confounder[0].reason


def test_zero_variance_never_passes_but_may_fail() -> None:
    """An interval of zero width (every lift AUC clipped, a saturated measure) is no evidence that
    two models rely alike: never a pass. Far above the margin it still fails (the safe side)."""
    saturated = reliance.decide_from_estimates({"a": _estimate(0.0, 0.0, 0.0)})
    assert saturated.overall == "inconclusive"
    assert "zero width" in saturated.per_confounder[0].reason
    assert reliance.decide_from_estimates({"a": _estimate(0.1, 0.0, 0.0)}).overall == "fail"


def test_unmeasured_confounders_count_in_holms_fail_family() -> None:
    borderline = {"a": _estimate(0.09, 2e-4, 0.0)}  # one-sided p_fail about 0.0023
    alone = reliance.decide_from_estimates(borderline)
    p_fail = alone.per_confounder[0].p_fail
    assert alone.per_confounder[0].p_fail_adjusted == pytest.approx(p_fail)
    among = reliance.decide_from_estimates(borderline, unmeasured=2)
    assert among.per_confounder[0].p_fail_adjusted == pytest.approx(min(1.0, 3 * p_fail))


def test_overall_verdict() -> None:
    assert reliance.overall_verdict(["pass", "pass"]) == "pass"
    assert reliance.overall_verdict(["pass", "inconclusive"]) == "inconclusive"
    assert reliance.overall_verdict(["inconclusive", "fail"]) == "fail"
    with pytest.raises(ValueError, match="verdicts must hold"):
        reliance.overall_verdict([])


def test_decide_runs_every_confounder_and_serialises() -> None:
    rng = np.random.default_rng(12)
    tag = ConfounderRuns(tuple(_binormal_runs(rng, 31, 52, 1.0, 1.4, (1.5,), (0.2,), folds=3)))
    same = ConfounderRuns(tuple(_binormal_runs(rng, 31, 52, 1.0, 1.4, (0.4,), (0.4,), folds=3)))
    verdict = reliance.decide({"tag": tag, "denoise": same})
    assert [d.confounder for d in verdict.per_confounder] == ["tag", "denoise"]
    assert verdict.per_confounder[0].verdict == "fail"
    plain = reliance.to_dict(verdict)
    text = json.dumps(plain)
    assert '"overall"' in text and plain["per_confounder"][0]["estimate"]["n_folds"] == 3


def test_confidence_must_match_alpha() -> None:
    with pytest.raises(ValueError, match="confidence must equal 1 - alpha"):
        reliance.decide_from_estimates(
            {"a": _estimate(0.0, 1e-4, 1e-4)}, RelianceSettings(alpha=0.1)
        )


# ------------------------------------------------------------------------------------ validation


def test_inputs_are_validated_with_one_line_messages() -> None:
    y = np.array([1, 1, 0, 0])
    good = _run("user", 0.5, 0, [0.9, 0.8, 0.1, 0.2], y, [0.5, 0.6])
    with pytest.raises(ValueError, match="role must be one of"):
        replace(good, role="teacher")
    with pytest.raises(ValueError, match="clean_labels must be 4 labels of 0 or 1"):
        replace(good, clean_labels=np.array([1, 2, 0, 0]))
    with pytest.raises(ValueError, match="at least 2 positives and 2 negatives"):
        replace(good, clean_labels=np.array([1, 0, 0, 0]))
    with pytest.raises(ValueError, match="clean_scores must be finite"):
        replace(good, clean_scores=np.array([0.9, np.nan, 0.1, 0.2]))
    with pytest.raises(ValueError, match="treated_patients must have shape"):
        replace(good, treated_patients=np.array([2]))
    with pytest.raises(ValueError, match="level must lie in"):
        replace(good, level=1.5)
    with pytest.raises(ValueError, match="both roles"):
        ConfounderRuns((good,))
    ref = replace(good, role="reference")
    with pytest.raises(ValueError, match="must not repeat"):
        ConfounderRuns((good, good, ref))
    other = replace(ref, clean_patients=np.array([9, 1, 2, 3]))
    with pytest.raises(ValueError, match="same test cases in the same order"):
        ConfounderRuns((good, other))
    shuffled = replace(good, treated_patients=np.array([3, 2]))
    with pytest.raises(ValueError, match="treated_patients must equal control_patients"):
        ConfounderRuns((shuffled, replace(shuffled, role="reference")))
    with pytest.raises(ValueError, match="disjoint groups"):
        ConfounderRuns((good, ref), kind="sampling")
    with pytest.raises(ValueError, match="kind must be one of"):
        ConfounderRuns((good, ref), kind="texture")


def test_settings_and_level_checks() -> None:
    with pytest.raises(ValueError, match="margin must lie in"):
        RelianceSettings(margin=0.0)
    with pytest.raises(ValueError, match=r"counted_levels must be None or distinct levels in \(0"):
        RelianceSettings(counted_levels=(0.0, 0.5))
    rng = np.random.default_rng(13)
    runs = _binormal_runs(rng, 10, 12, 1.0, 1.0, (0.5,), (0.5,), folds=2)
    with pytest.raises(ValueError, match="counted_levels includes"):
        reliance.estimate_reliance(
            ConfounderRuns(tuple(runs)), RelianceSettings(counted_levels=(0.8,))
        )
    uneven = [r for r in runs if not (r.role == "user" and r.fold == 1)]
    with pytest.raises(ValueError, match="the same folds for both roles"):
        reliance.estimate_reliance(ConfounderRuns(tuple(uneven)))
    zero = [replace(r, level=0.0) for r in runs]
    with pytest.raises(ValueError, match="at least one level p > 0"):
        reliance.estimate_reliance(ConfounderRuns(tuple(zero)))


def test_a_sampling_confounder_compares_two_disjoint_groups() -> None:
    rng = np.random.default_rng(14)
    y = np.r_[np.ones(20, dtype=int), np.zeros(30, dtype=int)]
    runs = []
    for role, shift in (("user", 1.0), ("reference", 0.2)):
        for fold in range(3):
            s = y * 1.2 + rng.normal(size=50)
            s[20:35] += shift  # negatives with the attribute training paired with positives
            runs.append(
                RunScores(
                    role,
                    1.0,
                    fold,
                    s,
                    y,
                    np.arange(50),
                    s[20:35],
                    np.arange(20, 35),
                    s[35:],
                    np.arange(35, 50),
                )  # fmt: skip
            )
    est = reliance.estimate_reliance(ConfounderRuns(tuple(runs), kind="sampling"))
    g = est.per_level[0]
    assert g.lift_auc_user > g.lift_auc_reference and est.estimate > 0
    assert est.kind == "sampling" and est.var_test > 0


def test_patient_ids_may_be_strings() -> None:
    rng = np.random.default_rng(15)
    runs = _binormal_runs(rng, 10, 12, 1.0, 1.0, (0.5,), (0.5,), folds=2)
    named = [
        replace(
            r,
            clean_patients=np.array([f"p{i}" for i in r.clean_patients]),
            treated_patients=np.array([f"p{i}" for i in r.treated_patients]),
            control_patients=np.array([f"p{i}" for i in r.control_patients]),
        )
        for r in runs
    ]
    a = reliance.estimate_reliance(ConfounderRuns(tuple(runs)))
    b = reliance.estimate_reliance(ConfounderRuns(tuple(named)))
    assert (a.estimate, a.var_test, a.n_patients) == (b.estimate, b.var_test, b.n_patients)


# ----------------------------------------------------------------------------------- the planner


def test_power_analysis_shrinks_with_test_size_and_runs() -> None:
    small = reliance.power_analysis(31, 52, 68)
    large = reliance.power_analysis(747, 1253, 1640)
    assert large.se_test < small.se_test / 3
    assert large.half_width < small.half_width
    assert small.detectable_gap > 0.05 > small.pass_gap
    assert 0 <= small.equal_pass_probability < large.equal_pass_probability <= 1
    more = reliance.power_analysis(747, 1253, 1640, repeats=3)
    assert more.se_runs < large.se_runs and more.se_test == large.se_test
    one = reliance.power_analysis(747, 1253, folds=1)
    assert one.se_runs == 0 and "one fold" in one.assumptions
    clustered = reliance.power_analysis(31, 52, 40)
    assert clustered.se_test > small.se_test  # fewer patients for the same images
    sampling = reliance.power_analysis(31, 52, 68, kind="sampling")
    assert math.isfinite(sampling.half_width) and sampling.se_test > 0


def test_power_analysis_validates_its_inputs() -> None:
    with pytest.raises(ValueError, match="n_patients must be at most"):
        reliance.power_analysis(10, 10, 30)
    with pytest.raises(ValueError, match="lift_auc must be"):
        reliance.power_analysis(10, 10, lift_auc=(1.2,))
    with pytest.raises(ValueError, match="folds must be an integer"):
        reliance.power_analysis(10, 10, folds=0)
