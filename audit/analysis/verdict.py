"""From shortcut gaps to a pass / fail / inconclusive verdict, and from the verdict to an exit code.

The decision rule, fixed before any data are seen:

* Per confounder the primary measure is the shortcut gap S (see
  :func:`audit.analysis.stats.bootstrap_shortcut_gap`): the mean over the counted levels of reference o.o.d.
  AUC minus user o.o.d. AUC. ``margin`` is the largest gap we tolerate.
* Two one-sided bootstrap tests per confounder: "S > margin" (evidence to fail) and "S < margin"
  (evidence to pass). Their p-values are reported on the two-sided scale, ``p = min(1, 2 * tail)``,
  so that for a single confounder "p_fail < alpha" is exactly "the lower bound of the two-sided
  (1 - alpha) percentile CI exceeds the margin", and "p_pass < alpha" exactly "its upper bound lies
  below the margin" -- the rule medaudit applies. Each direction thus runs at alpha / 2;
  at most one of the two can be below alpha.
* Holm across confounders, once for the fail p-values and once for the pass p-values. The fail
  family needs it: the audit fails if any confounder fails, so wrong fails must be controlled
  family-wise. For the overall pass it is conservative (an overall pass needs every confounder to
  pass, an intersection-union test), but it keeps every per-confounder "pass" that a report prints
  family-wise controlled too. Altogether the chance of any wrong verdict is at most alpha.
* A confounder fails if its Holm-adjusted p_fail < alpha, passes if its Holm-adjusted p_pass <
  alpha, and is inconclusive otherwise. The audit fails if any confounder fails, else is
  inconclusive if any is, else passes.
* The reported CI is the marginal (unadjusted) two-sided (1 - alpha) interval. With several
  confounders a CI may exclude the margin while Holm keeps the verdict inconclusive; the reason
  sentence says so.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from audit.analysis.stats import GapEstimate, bootstrap_shortcut_gap, breaking_point, holm
from audit.errors import ExitCode
from audit.resolve.constraints import check_setting

VERDICTS = ("pass", "fail", "inconclusive")
CI_NOTE = (
    "CIs are marginal two-sided (1 - alpha) stratified paired percentile-bootstrap intervals "
    "that resample whole patients; verdicts use one-sided bootstrap p-values on the two-sided "
    "scale, Holm-adjusted across confounders."
)


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}; got {value!r}.")
    return int(value)


@dataclass(frozen=True)
class Thresholds:
    """The pre-declared decision settings; recorded in every verdict.

    ``counted_levels`` picks the correlation levels that enter S (None: every level run).
    ``breaking_auc`` is the o.o.d. AUC below which a level counts as broken (descriptive only;
    0.5 is chance, i.e. the shortcut outweighs the real signal).
    """

    margin: float = 0.05
    alpha: float = 0.05
    counted_levels: tuple[float, ...] | None = None
    n_resamples: int = 2000
    seed: int = 0
    breaking_auc: float = 0.5

    def __post_init__(self) -> None:
        for key in ("margin", "alpha", "breaking_auc", "n_resamples", "seed"):
            check_setting(key, getattr(self, key))
        if self.counted_levels is not None:
            levels = tuple(float(v) for v in self.counted_levels)
            if not levels or any(not 0.0 <= v <= 1.0 for v in levels):
                raise ValueError(
                    f"counted_levels must be None or a non-empty tuple of levels in [0, 1]; "
                    f"got {self.counted_levels!r}."
                )
            object.__setattr__(self, "counted_levels", levels)


@dataclass(frozen=True, eq=False)
class GapInput:
    """One confounder's o.o.d. results: fold-averaged scores per level, and fold-mean AUCs.

    ``user_scores`` / ``reference_scores`` are (L, n), one row per entry of ``levels``;
    ``user_ood_auc_by_level`` (L,) feeds the breaking point.
    """

    y_true: np.ndarray
    levels: np.ndarray
    user_scores: np.ndarray
    reference_scores: np.ndarray
    user_ood_auc_by_level: np.ndarray
    clusters: np.ndarray | None = None  # (n,) each case's patient: its images resample together

    def __post_init__(self) -> None:
        levels = np.asarray(self.levels, dtype=float)
        if levels.ndim != 1 or levels.size == 0 or np.unique(levels).size != levels.size:
            raise ValueError(
                f"levels must be a non-empty 1-D array of distinct levels; got {levels}."
            )
        shape = (levels.size, np.asarray(self.y_true).size)
        for name in ("user_scores", "reference_scores"):
            arr = np.asarray(getattr(self, name), dtype=float)
            if arr.shape != shape:
                raise ValueError(
                    f"{name} must have shape {shape} (levels, cases); got {arr.shape}."
                )
        auc = np.asarray(self.user_ood_auc_by_level, dtype=float)
        if auc.shape != levels.shape:
            raise ValueError(
                f"user_ood_auc_by_level must have shape {levels.shape}, one AUC per level; "
                f"got {auc.shape}."
            )
        for name in ("y_true", "user_scores", "reference_scores"):
            object.__setattr__(self, name, np.asarray(getattr(self, name)))
        object.__setattr__(self, "levels", levels)
        object.__setattr__(self, "user_ood_auc_by_level", auc)


@dataclass(frozen=True)
class ConfounderVerdict:
    """The verdict on one confounder, with the numbers behind it and one sentence why."""

    confounder: str
    verdict: str
    gap: GapEstimate
    margin: float
    counted_levels: tuple[float, ...]
    p_fail: float
    p_pass: float
    p_fail_adjusted: float
    p_pass_adjusted: float
    breaking_point: float | None
    reason: str

    @property
    def estimate(self) -> float:
        return self.gap.estimate

    @property
    def ci_low(self) -> float:
        return self.gap.ci_low

    @property
    def ci_high(self) -> float:
        return self.gap.ci_high


@dataclass(frozen=True)
class AuditVerdict:
    """The audit's overall verdict, each confounder's, and the settings that produced them."""

    overall: str
    per_confounder: tuple[ConfounderVerdict, ...]
    thresholds: Thresholds
    ci_note: str = field(default=CI_NOTE)


def _counted_rows(name: str, levels: np.ndarray, counted: tuple[float, ...] | None) -> np.ndarray:
    """Row indices of the counted levels; every counted level must have been run."""
    if counted is None:
        return np.arange(levels.size)
    rows = []
    for level in counted:
        hits = np.flatnonzero(np.isclose(levels, level, rtol=0, atol=1e-9))
        if hits.size == 0:
            raise ValueError(
                f"counted_levels includes {level}, but confounder {name!r} has only levels "
                f"{levels.tolist()}."
            )
        rows.append(int(hits[0]))
    return np.array(rows)


def _estimate(name: str, gap: GapInput, thresholds: Thresholds) -> tuple[GapEstimate, tuple]:
    rows = _counted_rows(name, gap.levels, thresholds.counted_levels)
    estimate = bootstrap_shortcut_gap(
        gap.y_true,
        gap.user_scores[rows],
        gap.reference_scores[rows],
        n_resamples=thresholds.n_resamples,
        seed=thresholds.seed,
        confidence=1.0 - thresholds.alpha,
        clusters=gap.clusters,
    )
    return estimate, tuple(float(v) for v in gap.levels[rows])


def baseline_adjusted_gap(
    name: str, gap: GapInput, thresholds: Thresholds
) -> tuple[GapEstimate, float] | None:
    """S minus the gap at p = 0, with its CI from the same resamples; descriptive, never gated.

    S compares o.o.d. AUCs, so a model that is simply less accurate on this task has S > 0 without
    leaning on any shortcut. At p = 0 the confounder is not correlated with the label in training:
    the gap there is the accuracy difference alone, and subtracting it leaves the part of S that
    grows with the correlation. None when p = 0 was not run or is the only counted level.
    """
    found = np.flatnonzero(np.isclose(gap.levels, 0.0, rtol=0, atol=1e-9))
    rows = [int(r) for r in _counted_rows(name, gap.levels, thresholds.counted_levels)]
    if found.size == 0 or rows == [int(found[0])]:
        return None
    baseline = int(found[0])
    picked = rows if baseline in rows else [*rows, baseline]
    # S weighs each counted level 1/L; the gap at p = 0 is then subtracted once, whole.
    weights = [(1.0 / len(rows) if r in rows else 0.0) - (r == baseline) for r in picked]
    estimate = bootstrap_shortcut_gap(
        gap.y_true, gap.user_scores[picked], gap.reference_scores[picked],
        n_resamples=thresholds.n_resamples, seed=thresholds.seed,
        confidence=1.0 - thresholds.alpha, weights=weights, clusters=gap.clusters,
    )  # fmt: skip
    return estimate, float(gap.levels[baseline])


def decide(gaps: Mapping[str, GapInput], thresholds: Thresholds) -> AuditVerdict:
    """Bootstrap each confounder's gap and apply the pre-declared rule (module docstring)."""
    if not gaps:
        raise ValueError("gaps must name at least one confounder; got none.")
    estimates, counted, breaks = {}, {}, {}
    for name, gap in gaps.items():
        estimates[name], counted[name] = _estimate(name, gap, thresholds)
        breaks[name] = breaking_point(
            gap.levels, gap.user_ood_auc_by_level, thresholds.breaking_auc
        )
    return decide_from_estimates(estimates, thresholds, counted, breaks)


def _two_sided(one_sided: float) -> float:
    return min(1.0, 2.0 * one_sided)


def decide_from_estimates(
    estimates: Mapping[str, GapEstimate],
    thresholds: Thresholds,
    counted_levels: Mapping[str, tuple[float, ...]] | None = None,
    breaking_points: Mapping[str, float | None] | None = None,
) -> AuditVerdict:
    """The decision rule on gaps already bootstrapped; :func:`decide` is the usual entry point."""
    if not estimates:
        raise ValueError("estimates must name at least one confounder; got none.")
    names = list(estimates)
    for name in names:
        if not math.isclose(estimates[name].confidence, 1.0 - thresholds.alpha, abs_tol=1e-12):
            raise ValueError(
                f"estimates[{name!r}].confidence must equal 1 - alpha = {1 - thresholds.alpha} so "
                f"that CI and verdict agree; got {estimates[name].confidence}."
            )
    margin = thresholds.margin
    p_fail = [_two_sided(estimates[n].p_greater(margin)) for n in names]
    p_pass = [_two_sided(estimates[n].p_less(margin)) for n in names]
    adj_fail, adj_pass = holm(p_fail), holm(p_pass)
    verdicts = tuple(
        _confounder_verdict(
            name,
            estimates[name],
            thresholds,
            (p_fail[i], p_pass[i], adj_fail[i], adj_pass[i]),
            (counted_levels or {}).get(name, thresholds.counted_levels or ()),
            (breaking_points or {}).get(name),
            len(names),
        )
        for i, name in enumerate(names)
    )
    return AuditVerdict(overall_verdict(verdicts), verdicts, thresholds)


def _confounder_verdict(
    name: str,
    gap: GapEstimate,
    thresholds: Thresholds,
    p: tuple[float, float, float, float],
    counted: tuple[float, ...],
    breaking: float | None,
    n_confounders: int,
) -> ConfounderVerdict:
    p_fail, p_pass, adj_fail, adj_pass = p
    if adj_fail < thresholds.alpha:
        verdict = "fail"
    elif adj_pass < thresholds.alpha:
        verdict = "pass"
    else:
        verdict = "inconclusive"
    reason = _reason(verdict, gap, thresholds, p, n_confounders)
    return ConfounderVerdict(
        name,
        verdict,
        gap,
        thresholds.margin,
        tuple(counted),
        p_fail,
        p_pass,
        adj_fail,
        adj_pass,
        breaking,
        reason,
    )


def _p(value: float) -> str:
    """A bootstrap p of 0 only says no resample crossed the margin: shown in those words (after
    doubling and Holm, any bound would be a multiple of 1 / resamples)."""
    return "p = 0: no bootstrap resample crossed the margin" if value == 0 else f"p = {value:.3g}"


def _reason(
    verdict: str,
    gap: GapEstimate,
    thresholds: Thresholds,
    p: tuple[float, float, float, float],
    n_confounders: int,
) -> str:
    """One sentence a reader can act on, with the numbers that decided it."""
    p_fail, p_pass, adj_fail, adj_pass = p
    ci = f"{gap.confidence:.0%} CI {gap.ci_low:.3f} to {gap.ci_high:.3f}"
    margin = f"the margin {thresholds.margin:.3f}"
    head = f"Shortcut gap {gap.estimate:.3f} ({ci})"
    if verdict == "fail":
        return f"{head} exceeds {margin} (Holm-adjusted {_p(adj_fail)})."
    if verdict == "pass":
        return f"{head} stays below {margin} (Holm-adjusted {_p(adj_pass)})."
    unadjusted = min(p_fail, p_pass)
    if unadjusted < thresholds.alpha:
        side = "above" if p_fail < p_pass else "below"
        adjusted = adj_fail if p_fail < p_pass else adj_pass
        return (
            f"The {ci} lies {side} {margin}, but not after Holm adjustment across "
            f"{n_confounders} confounders (adjusted {_p(adjusted)}, "
            f"alpha {thresholds.alpha:g})."
        )
    return (
        f"The {ci} of the shortcut gap {gap.estimate:.3f} contains {margin}, so the data cannot "
        f"tell whether the gap exceeds it."
    )


def overall_verdict(verdicts: Iterable[ConfounderVerdict | str]) -> str:
    """Fail if any confounder fails, else inconclusive if any is, else pass."""
    labels = [v if isinstance(v, str) else v.verdict for v in verdicts]
    if not labels:
        raise ValueError("verdicts must hold at least one confounder verdict; got none.")
    unknown = sorted(set(labels) - set(VERDICTS))
    if unknown:
        raise ValueError(f"verdicts must be one of {VERDICTS}; got {unknown}.")
    for outcome in ("fail", "inconclusive"):
        if outcome in labels:
            return outcome
    return "pass"


def exit_code_for(overall: str, inconclusive_exit: int = int(ExitCode.INCONCLUSIVE)) -> int:
    """The documented process exit code: pass 0, fail 1, inconclusive 3 (or ``inconclusive_exit``).

    A pipeline may map inconclusive to 0 or 1 to suit its risk appetite; crashes keep their own
    codes (:class:`audit.errors.ExitCode`), so they are never read as a verdict.
    """
    if overall not in VERDICTS:
        raise ValueError(f"overall must be one of {VERDICTS}; got {overall!r}.")
    _check_int("inconclusive_exit", inconclusive_exit, 0)
    if inconclusive_exit > 255:
        raise ValueError(f"inconclusive_exit must be in [0, 255]; got {inconclusive_exit!r}.")
    codes = {"pass": int(ExitCode.PASS), "fail": int(ExitCode.FAIL)}
    return codes.get(overall, int(inconclusive_exit))


def _plain(obj: object) -> object:
    """JSON-ready values: numpy scalars to Python, non-finite floats to None, tuples to lists."""
    if isinstance(obj, GapEstimate):
        return _plain(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: _plain(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if f.metadata.get("serialise", True)
        }
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [_plain(v) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


def to_dict(verdict: AuditVerdict | ConfounderVerdict) -> dict:
    """A JSON-ready dict: plain floats/ints/strings only, no bootstrap samples, NaN/inf as null."""
    result = _plain(verdict)
    if not isinstance(result, dict):
        raise TypeError(
            f"verdict must be an AuditVerdict or ConfounderVerdict; got {type(verdict)}."
        )
    return result
