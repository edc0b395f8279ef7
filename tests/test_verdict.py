"""Tests for audit.analysis.verdict: the pre-declared decision rule, Holm, exit codes and serialisation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from audit.analysis import stats
from audit.analysis.verdict import (
    AuditVerdict,
    GapInput,
    Thresholds,
    decide,
    exit_code_for,
    overall_verdict,
    to_dict,
)
from audit.errors import UsageError

LEVELS = (0.0, 0.1, 0.2, 0.5, 0.8, 1.0)


def _gap_input(
    seed: int, n: int, d_user: list[float], d_ref: list[float], levels=LEVELS
) -> GapInput:
    """Binormal o.o.d. scores per level; one shared per-case latent pairs the two models."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n // 2, dtype=int), np.zeros(n - n // 2, dtype=int)]
    shared = rng.normal(size=y.size)

    def draw(d: float) -> np.ndarray:
        return d * y + math.sqrt(0.5) * (shared + rng.normal(size=y.size))

    user = np.array([draw(d) for d in d_user])
    ref = np.array([draw(d) for d in d_ref])
    auc = np.array([stats.binary_auc(y, row) for row in user])
    return GapInput(y, np.array(levels), user, ref, auc)


# the study's tag curves, roughly: ImageNet collapses, RadImageNet holds (d = sqrt(2) Phi^-1(AUC))
COLLAPSING = [1.47, 1.24, 0.95, -0.43, -2.33, -3.0]
ROBUST = [1.41, 1.24, 1.14, 0.82, 0.43, -0.25]
FAST = Thresholds(n_resamples=1000)


def test_a_model_that_collapses_like_the_reference_passes() -> None:
    gap = _gap_input(0, 400, ROBUST, ROBUST)
    result = decide({"tag": gap}, FAST)
    (tag,) = result.per_confounder
    assert tag.verdict == "pass" and result.overall == "pass"
    assert tag.ci_high < FAST.margin and tag.p_pass_adjusted < FAST.alpha
    assert "below the margin" in tag.reason


def test_a_model_that_collapses_faster_than_the_reference_fails() -> None:
    result = decide({"tag": _gap_input(1, 200, COLLAPSING, ROBUST)}, FAST)
    (tag,) = result.per_confounder
    assert tag.verdict == "fail" and result.overall == "fail"
    assert tag.ci_low > FAST.margin and tag.p_fail_adjusted < FAST.alpha
    assert "exceeds the margin" in tag.reason


def test_a_small_test_set_with_a_gap_near_the_margin_is_inconclusive() -> None:
    d_user = [d - 0.2 for d in ROBUST]  # a true gap of about 0.05, the margin itself
    result = decide({"tag": _gap_input(3, 60, d_user, ROBUST)}, FAST)
    (tag,) = result.per_confounder
    assert tag.verdict == "inconclusive" and result.overall == "inconclusive"
    assert tag.ci_low <= FAST.margin <= tag.ci_high
    assert "contains the margin" in tag.reason


def test_any_failing_confounder_fails_the_audit() -> None:
    gaps = {
        "tag": _gap_input(3, 400, ROBUST, ROBUST),
        "denoise": _gap_input(4, 200, COLLAPSING, ROBUST),
    }
    result = decide(gaps, FAST)
    assert [v.verdict for v in result.per_confounder] == ["pass", "fail"]
    assert result.overall == "fail"


def test_holm_turns_a_borderline_fail_inconclusive_when_a_second_confounder_joins() -> None:
    borderline = _gap_input(5, 120, [d - 0.3 for d in ROBUST], ROBUST)
    same = _gap_input(6, 200, ROBUST, ROBUST)
    clear_pass = GapInput(  # the user's model is the reference: a gap of exactly 0
        same.y_true,
        same.levels,
        same.reference_scores,
        same.reference_scores,
        same.user_ood_auc_by_level,
    )
    est = stats.bootstrap_shortcut_gap(
        borderline.y_true,
        borderline.user_scores,
        borderline.reference_scores,
        n_resamples=2000,
        seed=0,
        confidence=0.95,
    )
    ordered = np.sort(est.samples)
    assert ordered[35] < ordered[36]
    # 36 of 2000 resampled gaps at or below the margin: one-sided 0.018, two-sided scale 0.036
    settings = Thresholds(margin=float(ordered[35] + ordered[36]) / 2, n_resamples=2000, seed=0)
    assert settings.margin > 0

    alone = decide({"sex": borderline}, settings).per_confounder[0]
    assert alone.verdict == "fail" and alone.p_fail == pytest.approx(0.036)

    both = decide({"sex": borderline, "tag": clear_pass}, settings)
    sex = both.per_confounder[0]
    assert sex.p_fail == pytest.approx(0.036) and sex.p_fail_adjusted == pytest.approx(0.072)
    assert sex.verdict == "inconclusive" and both.per_confounder[1].verdict == "pass"
    assert both.overall == "inconclusive"
    assert sex.ci_low > settings.margin  # the marginal CI alone would have failed it
    assert "not after Holm adjustment across 2 confounders" in sex.reason


def test_breaking_point_is_the_lowest_level_where_user_ood_auc_drops_below_the_floor() -> None:
    gap = _gap_input(7, 200, COLLAPSING, ROBUST)
    gap = GapInput(
        gap.y_true,
        gap.levels,
        gap.user_scores,
        gap.reference_scores,
        np.array([0.85, 0.81, 0.75, 0.38, 0.05, 0.01]),
    )
    (tag,) = decide({"tag": gap}, FAST).per_confounder
    assert tag.breaking_point == 0.5
    (robust,) = decide({"tag": gap}, Thresholds(n_resamples=200, breaking_auc=0.0)).per_confounder
    assert robust.breaking_point is None


def test_counted_levels_restrict_the_gap_to_those_rows() -> None:
    gap = _gap_input(8, 200, COLLAPSING, ROBUST)
    low = Thresholds(n_resamples=200, counted_levels=(0.0, 0.1))
    (tag,) = decide({"tag": gap}, low).per_confounder
    assert tag.counted_levels == (0.0, 0.1)
    assert len(tag.gap.per_level_gap) == 2
    expected = np.mean(
        [
            stats.binary_auc(gap.y_true, gap.reference_scores[i])
            - stats.binary_auc(gap.y_true, gap.user_scores[i])
            for i in (0, 1)
        ]
    )
    assert tag.estimate == pytest.approx(expected)


def test_a_counted_level_that_was_not_run_is_a_clear_error() -> None:
    gap = _gap_input(9, 40, ROBUST, ROBUST)
    with pytest.raises(ValueError, match="counted_levels includes 0.3, but confounder 'tag'"):
        decide({"tag": gap}, Thresholds(counted_levels=(0.3,)))


def test_overall_verdict_fails_on_any_fail_then_inconclusive_then_passes() -> None:
    assert overall_verdict(["pass", "inconclusive", "fail"]) == "fail"
    assert overall_verdict(["pass", "inconclusive"]) == "inconclusive"
    assert overall_verdict(["pass", "pass"]) == "pass"
    with pytest.raises(ValueError, match="verdicts must hold at least one"):
        overall_verdict([])
    with pytest.raises(ValueError, match="verdicts must be one of"):
        overall_verdict(["maybe"])


def test_exit_codes_follow_the_documented_contract() -> None:
    assert [exit_code_for(v) for v in ("pass", "fail", "inconclusive")] == [0, 1, 3]
    assert exit_code_for("inconclusive", inconclusive_exit=0) == 0
    assert exit_code_for("fail", inconclusive_exit=0) == 1
    with pytest.raises(ValueError, match="overall must be one of"):
        exit_code_for("unknown")


def test_to_dict_is_json_ready_and_leaves_out_the_bootstrap_samples() -> None:
    result = decide({"tag": _gap_input(10, 100, COLLAPSING, ROBUST)}, Thresholds(n_resamples=300))
    assert isinstance(result, AuditVerdict)
    data = to_dict(result)
    text = json.dumps(data, allow_nan=False)
    assert '"samples"' not in text
    tag = data["per_confounder"][0]
    assert tag["gap"]["method"] == "stratified paired percentile bootstrap"
    assert tag["gap"]["n_resamples"] == 300 and tag["gap"]["seed"] == 0
    assert type(tag["gap"]["estimate"]) is float and type(tag["p_fail_adjusted"]) is float
    assert data["thresholds"]["margin"] == 0.05 and "Holm" in data["ci_note"]


def test_thresholds_reject_out_of_range_settings() -> None:
    with pytest.raises(
        UsageError, match=r"alpha = 1.5 is not accepted: use a finite number in \(0, 0.5\)"
    ):
        Thresholds(alpha=1.5)
    with pytest.raises(ValueError, match="counted_levels must be None or a non-empty tuple"):
        Thresholds(counted_levels=())
    with pytest.raises(
        UsageError, match="n_resamples = 0 is not accepted: use a whole number >= 100"
    ):
        Thresholds(n_resamples=0)


def test_gap_input_rejects_scores_that_do_not_match_the_levels() -> None:
    with pytest.raises(ValueError, match=r"user_scores must have shape \(2, 4\)"):
        GapInput(
            np.array([0, 1, 0, 1]),
            np.array([0.0, 1.0]),
            np.zeros((3, 4)),
            np.zeros((2, 4)),
            np.array([0.5, 0.5]),
        )


def test_decide_needs_at_least_one_confounder() -> None:
    with pytest.raises(ValueError, match="gaps must name at least one confounder"):
        decide({}, FAST)


def test_the_baseline_adjusted_gap_removes_a_constant_accuracy_difference() -> None:
    """A model worse by the same AUC at every level has S > 0 but leans on no shortcut."""
    from audit.analysis.verdict import baseline_adjusted_gap

    rng = np.random.default_rng(5)
    y = np.r_[np.ones(60, dtype=int), np.zeros(60, dtype=int)]
    user_row = 0.8 * y + rng.normal(size=y.size)
    ref_row = 1.6 * y + rng.normal(size=y.size)
    levels = np.array(LEVELS)
    user, ref = np.tile(user_row, (6, 1)), np.tile(ref_row, (6, 1))
    auc = np.full(6, stats.binary_auc(y, user_row))
    flat = GapInput(y, levels, user, ref, auc)
    s = decide({"tag": flat}, FAST).per_confounder[0].gap
    adjusted, baseline = baseline_adjusted_gap("tag", flat, FAST)
    assert s.estimate > 0.1 and baseline == 0.0
    assert adjusted.estimate == pytest.approx(0.0, abs=1e-12)
    assert adjusted.ci_low == pytest.approx(0.0, abs=1e-12)
    assert adjusted.ci_high == pytest.approx(0.0, abs=1e-12)


def test_the_baseline_adjusted_gap_keeps_what_grows_with_the_correlation() -> None:
    from audit.analysis.verdict import baseline_adjusted_gap

    gap = _gap_input(3, 400, COLLAPSING, ROBUST)
    s = decide({"tag": gap}, FAST).per_confounder[0].gap
    adjusted, _ = baseline_adjusted_gap("tag", gap, FAST)
    assert adjusted.estimate == pytest.approx(s.estimate - s.per_level_gap[0])
    not_counted = Thresholds(n_resamples=1000, counted_levels=(0.5, 0.8, 1.0))
    s_high = decide({"tag": gap}, not_counted).per_confounder[0].gap
    adjusted_high, _ = baseline_adjusted_gap("tag", gap, not_counted)
    assert adjusted_high.estimate == pytest.approx(s_high.estimate - s.per_level_gap[0])
    assert adjusted.ci_low > 0.0, "the collapse is far beyond the p = 0 difference"


def test_the_baseline_adjusted_gap_needs_level_zero_and_another_counted_level() -> None:
    from audit.analysis.verdict import baseline_adjusted_gap

    no_zero = _gap_input(3, 100, COLLAPSING[1:], ROBUST[1:], levels=LEVELS[1:])
    assert baseline_adjusted_gap("tag", no_zero, FAST) is None
    only_zero = Thresholds(n_resamples=1000, counted_levels=(0.0,))
    assert baseline_adjusted_gap("tag", _gap_input(3, 100, COLLAPSING, ROBUST), only_zero) is None


def test_equal_weights_reproduce_the_mean_gap() -> None:
    gap = _gap_input(4, 200, COLLAPSING, ROBUST)
    plain = stats.bootstrap_shortcut_gap(gap.y_true, gap.user_scores, gap.reference_scores,
                                         n_resamples=500)  # fmt: skip
    weighted = stats.bootstrap_shortcut_gap(gap.y_true, gap.user_scores, gap.reference_scores,
                                            n_resamples=500, weights=[1 / 6] * 6)  # fmt: skip
    assert weighted.estimate == pytest.approx(plain.estimate)
    assert (weighted.ci_low, weighted.ci_high) == pytest.approx((plain.ci_low, plain.ci_high))
    with pytest.raises(ValueError, match="one per level"):
        stats.bootstrap_shortcut_gap(gap.y_true, gap.user_scores, gap.reference_scores,
                                     n_resamples=500, weights=[1.0, 2.0])  # fmt: skip
