"""From finished runs to the release gate's record: per confounder the reliance gap and its
verdict (:mod:`audit.analysis.reliance`, the one decision function), and beside it, descriptive,
the o.o.d. AUC gap S and the clean AUC gap on the same per-run averages the report's tables show.

A confounder whose reliance cannot be measured by design (the study's sex lists: no male
negatives, so no lift) is shown but not gated; one that should be measurable but is not leaves
the audit inconclusive: no verdict passes on an experiment that did not work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from audit.analysis import reliance
from audit.analysis.stats import breaking_point
from audit.train.engine import RunResult

NOT_GATED = "not gated"
NOT_TESTED = "not tested"  # the artifact is invisible at the input size: never a pass
MEASURE = "reliance_gap"
BREAKING_AUC = 0.5  # an o.o.d. AUC below chance: the shortcut outweighs the real signal
S_NOTE = (
    "Descriptive, not gated: the reference's minus the user's o.o.d. AUC, averaged over runs "
    "and counted levels; it mixes accuracy with shortcut reliance."
)


class _Arrays:
    """Patient-id arrays shared by every run of a layout (the reliance module checks runs share
    one test layout; sharing the arrays makes that check an identity test)."""

    def __init__(self, patient_of: Mapping[str, str]) -> None:
        self.patient_of = patient_of
        self._cache: dict[tuple[str, ...], np.ndarray] = {}

    def patients(self, case_ids: Sequence[str]) -> np.ndarray:
        key = tuple(case_ids)
        if key not in self._cache:
            self._cache[key] = np.array([self.patient_of[c] for c in key])
        return self._cache[key]


def _negatives(result: RunResult, test_set: str) -> tuple[np.ndarray, tuple[str, ...]]:
    labels = np.asarray(result.labels[test_set])
    scores = np.asarray(result.scores[test_set], dtype=float)
    ids = tuple(c for c, y in zip(result.case_ids[test_set], labels, strict=True) if y == 0)
    return scores[labels == 0], ids


def _reliance_run(result: RunResult, kind: str, arrays: _Arrays) -> reliance.RunScores:
    """Clean set, treated negatives (the o.o.d. set's) and controls (the clean set's)."""
    if "clean" not in result.scores or "ood" not in result.scores:
        raise ValueError("a run scored no clean or no o.o.d. test set")
    treated, treated_ids = _negatives(result, "ood")
    control, control_ids = _negatives(result, "clean")
    if kind == "pixel" and control_ids != treated_ids:  # same negatives: pair them in order
        position = {c: i for i, c in enumerate(control_ids)}
        control = control[[position[c] for c in treated_ids]]
        control_ids = treated_ids
    return reliance.RunScores(
        role=result.role, level=result.level, fold=result.fold, repeat=result.repeat,
        clean_scores=np.asarray(result.scores["clean"], dtype=float),
        clean_labels=np.asarray(result.labels["clean"], dtype=np.int8),
        clean_patients=arrays.patients(result.case_ids["clean"]),
        treated_scores=treated, treated_patients=arrays.patients(treated_ids),
        control_scores=control, control_patients=arrays.patients(control_ids),
    )  # fmt: skip


def _single_set_run(result: RunResult, test_set: str, arrays: _Arrays) -> reliance.RunScores:
    """One test set in the clean slot, for its AUC gap; its negatives stand in as treated and
    control (a pixel layout) because the AUC gap reads the clean slot only."""
    negatives, ids = _negatives(result, test_set)
    patients = arrays.patients(ids)
    return reliance.RunScores(
        role=result.role, level=result.level, fold=result.fold, repeat=result.repeat,
        clean_scores=np.asarray(result.scores[test_set], dtype=float),
        clean_labels=np.asarray(result.labels[test_set], dtype=np.int8),
        clean_patients=arrays.patients(result.case_ids[test_set]),
        treated_scores=negatives, treated_patients=patients,
        control_scores=negatives, control_patients=patients,
    )  # fmt: skip


def _gated_roles(results: Sequence[RunResult]) -> list[RunResult]:
    """The user's and the reference's runs in a fixed order: executors finish runs in any order,
    and floating-point sums must not depend on it (Ray and local give the same verdict)."""
    runs = [r for r in results if r.role in reliance.ROLES]
    return sorted(runs, key=lambda r: (r.role, r.level, r.fold, r.repeat))


def _auc_gap(
    runs: Sequence[RunResult], test_set: str, arrays: _Arrays, settings: reliance.RelianceSettings
) -> dict[str, Any] | None:
    if not runs or any(test_set not in r.scores for r in runs):
        return None
    try:
        estimate = reliance.estimate_auc_gap(
            reliance.ConfounderRuns(tuple(_single_set_run(r, test_set, arrays) for r in runs)),
            settings,
        )
    except ValueError:
        return None
    return reliance.to_dict(estimate)  # type: ignore[return-value]


def _breaking_point(runs: Sequence[RunResult], levels: Sequence[float]) -> float | None:
    """The lowest level at which the user's run-averaged o.o.d. AUC is below chance."""
    curve = []
    for level in levels:
        aucs = [r.auc.get("ood") for r in runs if r.role == "user" and r.level == float(level)]
        finite = [a for a in aucs if a is not None and np.isfinite(a)]
        if not finite:
            return None
        curve.append(float(np.mean(finite)))
    return breaking_point(np.asarray(levels, dtype=float), np.asarray(curve), BREAKING_AUC)


def clean_run_scores(
    results: Sequence[RunResult],
    confounders: Mapping[str, str],
    patient_of: Mapping[str, str],
) -> dict[str, list[reliance.RunScores]]:
    """Per confounder, its gated runs' scores as the clean-AUC control reads them (a confounder
    whose runs cannot be laid out is left out: the gate says why)."""
    arrays = _Arrays(patient_of)
    scores: dict[str, list[reliance.RunScores]] = {}
    for name, kind in confounders.items():
        runs = _gated_roles([r for r in results if r.confounder == name])
        try:
            scores[name] = [_reliance_run(r, kind, arrays) for r in runs]
        except (KeyError, ValueError):
            continue
    return {name: runs for name, runs in scores.items() if runs}


def gate_record(
    results: Sequence[RunResult],
    confounders: Mapping[str, str],
    not_gated: Mapping[str, str],
    *,
    levels: Sequence[float],
    margin: float,
    alpha: float,
    counted_levels: Sequence[float] | None,
    patient_of: Mapping[str, str],
    not_tested: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The verdict record of results.json (schema 1).

    ``confounders``: name -> kind ("pixel" or "sampling"); ``not_gated``: name -> why it is
    shown but not gated; ``not_tested``: name -> why its artifact could not be learned at this
    input size (gated and measured; its verdict "not tested" unless the measure fails it, since
    reliance shown on an artifact the detector missed is still reliance). Every other
    confounder is gated; one whose measure fails to compute is inconclusive with the reason,
    never left out."""
    not_tested = dict(not_tested or {})
    settings = reliance.RelianceSettings(
        margin=margin,
        alpha=alpha,
        counted_levels=tuple(counted_levels) if counted_levels else None,
    )
    arrays = _Arrays(patient_of)
    runs_of = {
        name: _gated_roles([r for r in results if r.confounder == name]) for name in confounders
    }
    estimates: dict[str, reliance.RelianceEstimate] = {}
    problems: dict[str, str] = {}
    for name, kind in confounders.items():
        if name in not_gated:
            continue
        try:
            estimates[name] = reliance.estimate_reliance(
                reliance.ConfounderRuns(
                    tuple(_reliance_run(r, kind, arrays) for r in runs_of[name]), kind=kind
                ),
                settings,
            )
        except (KeyError, ValueError) as exc:
            why = "a test case has no patient record" if isinstance(exc, KeyError) else _short(exc)
            problems[name] = (
                f"Inconclusive: the reliance gap could not be computed ({why}), so this "
                "confounder cannot support a pass."
            )
    decided = (
        reliance.decide_from_estimates(estimates, settings, unmeasured=len(problems))
        if estimates
        else None
    )
    decisions = {d.confounder: d for d in decided.per_confounder} if decided else {}
    rows = []
    for name, kind in confounders.items():
        runs = runs_of[name]
        row: dict[str, Any] = {
            "confounder": name,
            "kind": kind,
            "gated": name not in not_gated,
            "margin": margin,
            "reliance": None,
            "p_fail": None,
            "p_pass": None,
            "p_fail_adjusted": None,
        }
        if name in decisions:
            d = decisions[name]
            row.update(
                verdict=d.verdict, reason=d.reason, p_fail=d.p_fail, p_pass=d.p_pass,
                p_fail_adjusted=d.p_fail_adjusted,
                reliance={**reliance.to_dict(d.estimate),  # type: ignore[dict-item]
                          "dominant_variance": d.estimate.dominant_variance},
            )  # fmt: skip
            if name in not_tested and d.verdict == "fail":
                row["reason"] = (
                    f"{d.reason} The learnability detector missed this artifact, but the audited model's reliance on it is shown."
                )
            elif name in not_tested:
                row.update(verdict=NOT_TESTED, reason=not_tested[name])
        elif name in not_tested:
            row.update(verdict=NOT_TESTED, reason=not_tested[name])
        elif name in problems:
            row.update(verdict="inconclusive", reason=problems[name])
        else:
            row.update(verdict=NOT_GATED, reason=not_gated[name])
        row["shortcut_gap"] = _auc_gap(runs, "ood", arrays, settings)
        row["clean_gap"] = _auc_gap(runs, "clean", arrays, settings)
        row["breaking_point"] = _breaking_point(runs, levels)
        rows.append(row)
    gated = [
        "inconclusive" if r["verdict"] == NOT_TESTED else r["verdict"] for r in rows if r["gated"]
    ]
    overall = reliance.overall_verdict(gated) if gated else "inconclusive"
    return {
        "measure": MEASURE,
        "overall": overall,
        "reason": None if gated else "No confounder of this audit can be gated.",
        "method": reliance.METHOD_NOTE,
        "shortcut_gap_note": S_NOTE,
        "thresholds": {
            "margin": margin,
            "alpha": alpha,
            "counted_levels": list(settings.counted_levels) if settings.counted_levels else None,
            "clip": settings.clip,
            "breaking_auc": BREAKING_AUC,
        },
        "per_confounder": rows,
    }


def _short(exc: Exception) -> str:
    text = str(exc).rstrip(".")
    return text if len(text) <= 200 else text[:197] + "..."
