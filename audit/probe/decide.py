"""The probe's verdict, by a rule fixed before any image is scored.

Per pixel confounder two measures gate, each against a threshold the user declares in advance:
the mean score shift against ``max_shift`` (either sign: a model may learn "tag means negative"),
and the flip rate against ``max_flip_rate``. Every p-value is on the
two-sided scale, ``p = min(1, 2 * one-sided tail)``, so that for one confounder "p < alpha" is
exactly "the two-sided (1 - alpha) interval lies beyond the threshold":

* evidence to fail: the shift's interval lies wholly outside (-max_shift, max_shift), or the flip
  rate's lies wholly above max_flip_rate. A confounder fails if either does, so its fail p-value
  is the smaller of the two, doubled (Bonferroni over its two measures);
* evidence to pass: the shift's interval lies inside (-max_shift, max_shift) and the flip rate's
  below max_flip_rate. Both must hold (an intersection-union test), so its pass p-value is the
  larger of the two;
* Holm across the gated confounders, once for the fail and once for the pass p-values. A
  confounder fails if its adjusted fail p < alpha, passes if its adjusted pass p < alpha, and is
  inconclusive otherwise; the probe fails if any confounder fails, else is inconclusive if any is.

Sex is compared between subgroups; it gates only when ``max_sex_auc_gap`` is declared (the AUC gap
between sexes, either sign, against it). Otherwise it is reported and marked "not-gated": a
difference between subgroups alone cannot tell a shortcut from a genuinely harder subgroup.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from audit.analysis.stats import holm
from audit.analysis.verdict import overall_verdict
from audit.errors import UsageError
from audit.probe.measures import FlipRate, ShiftEstimate, SubgroupGap
from audit.resolve.constraints import check_setting

CI_NOTE = (
    "Intervals are marginal two-sided (1 - alpha): mean shift by a paired percentile bootstrap "
    "that resamples whole patients (all of a patient's images together), flip rate exact "
    "(Clopper-Pearson, on the effective sample size when patients have several images); verdicts "
    "use p-values on the two-sided scale, Holm-adjusted across the gated confounders."
)


@dataclass(frozen=True)
class ProbeThresholds:
    """Declared before the probe runs, recorded in its results."""

    max_shift: float = 0.05
    max_flip_rate: float = 0.05
    alpha: float = 0.05
    n_resamples: int = 2000
    seed: int = 0
    max_sex_auc_gap: float | None = None
    threshold: float | None = None  # the operating threshold; None: Youden on clean images

    def __post_init__(self) -> None:
        """The same rows as the audit's settings: one accepted range per setting."""
        for key, value in (
            ("probe.max_shift", self.max_shift),
            ("probe.max_flip_rate", self.max_flip_rate),
            ("alpha", self.alpha),
            ("n_resamples", self.n_resamples),
            ("seed", self.seed),
            ("probe.max_sex_auc_gap", self.max_sex_auc_gap),
            ("probe.threshold", self.threshold),
        ):
            check_setting(key, value)


@dataclass(frozen=True)
class Evidence:
    """One gated confounder's p-values before adjustment, and what they rest on."""

    p_fail: float
    p_pass: float
    summary: str  # the numbers, for the reason sentence


def _two_sided(tail: float) -> float:
    return min(1.0, 2.0 * tail)


def pixel_evidence(shift: ShiftEstimate, flips: FlipRate, t: ProbeThresholds) -> Evidence:
    m, r = t.max_shift, t.max_flip_rate
    shift_fail = _two_sided(min(shift.share_at_most(m), shift.share_at_least(-m)))
    shift_pass = _two_sided(max(shift.share_at_least(m), shift.share_at_most(-m)))
    flip_fail = _two_sided(flips.p_above(r))
    flip_pass = _two_sided(flips.p_below(r))
    ci = f"{shift.confidence:.0%} CI"
    summary = (
        f"mean shift {shift.estimate:+.3f} ({ci} {shift.ci_low:+.3f} to {shift.ci_high:+.3f}; "
        f"limit +-{m:g}), flip rate {flips.estimate:.3f} ({ci} {flips.ci_low:.3f} to "
        f"{flips.ci_high:.3f}; limit {r:g})"
    )
    return Evidence(min(1.0, 2.0 * min(shift_fail, flip_fail)), max(shift_pass, flip_pass), summary)


def sex_evidence(gap: SubgroupGap, limit: float) -> Evidence:
    fail = _two_sided(min(gap.tail_above(limit), gap.tail_below(-limit)))
    pass_ = _two_sided(max(gap.tail_below(limit), gap.tail_above(-limit)))
    summary = (
        f"AUC gap F - M {gap.estimate:+.3f} ({gap.confidence:.0%} CI {gap.ci_low:+.3f} to "
        f"{gap.ci_high:+.3f}; limit +-{limit:g})"
    )
    return Evidence(fail, pass_, summary)


@dataclass(frozen=True)
class Decision:
    verdict: str
    p_fail: float
    p_pass: float
    p_fail_adjusted: float
    p_pass_adjusted: float
    reason: str


def decide(evidence: Mapping[str, Evidence], alpha: float) -> tuple[str, dict[str, Decision]]:
    """Holm across the gated confounders; the overall verdict and one decision per confounder."""
    if not evidence:
        raise UsageError("nothing to gate: probe a pixel confounder or give `max_sex_auc_gap`")
    names = list(evidence)
    adj_fail = holm([evidence[n].p_fail for n in names])
    adj_pass = holm([evidence[n].p_pass for n in names])
    decisions = {}
    for i, name in enumerate(names):
        e = evidence[name]
        if adj_fail[i] < alpha:
            verdict = "fail"
            reason = f"{e.summary}: exceeds the limit (Holm-adjusted {_p(adj_fail[i])})."
        elif adj_pass[i] < alpha:
            verdict = "pass"
            reason = f"{e.summary}: within the limits (Holm-adjusted {_p(adj_pass[i])})."
        else:
            verdict = "inconclusive"
            reason = (
                f"{e.summary}: the data cannot tell whether the limits hold (Holm-adjusted "
                f"{_p(min(adj_fail[i], adj_pass[i]))}, alpha {alpha:g}; more images narrow "
                "the intervals)."
            )
        decisions[name] = Decision(verdict, e.p_fail, e.p_pass, adj_fail[i], adj_pass[i], reason)
    return overall_verdict([d.verdict for d in decisions.values()]), decisions


def _p(value: float) -> str:
    """A p of 0 comes from the shift's bootstrap (no resample crossed the limit), whose resolution
    is a multiple of 1 / resamples: said in words, not as a bound it cannot support."""
    if value == 0:
        return "p = 0: no bootstrap resample crossed the limit"
    return "p < 0.001" if value < 0.001 else f"p = {value:.3g}"
