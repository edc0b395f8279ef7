"""From run results to the numbers the verdict and the report use.

Per confounder, level and model: the AUC of every test set per fold, its mean and spread; and the
fold-averaged per-case o.o.d. scores on which the shortcut gap and its interval are computed.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from audit.train.engine import RunResult


@dataclass(frozen=True, eq=False)
class OodScores:
    """Fold-averaged o.o.d. scores per level, for one confounder, aligned on the same cases."""

    case_ids: tuple[str, ...]
    y_true: np.ndarray
    levels: tuple[float, ...]
    by_role: dict[str, np.ndarray]  # role -> (L, n)


def fold_results(results: Sequence[RunResult]) -> list[RunResult]:
    """One result per (model, confounder, level, fold): a fold's repeats (independent training
    draws on the same split) averaged first, AUCs and per-case scores alike, so every summary
    and test treats a fold as one unit whatever ``--repeats`` is. Without repeats: unchanged."""
    groups: dict[tuple[str, str, float, int], list[RunResult]] = defaultdict(list)
    for result in results:
        groups[(result.role, result.confounder, result.level, result.fold)].append(result)
    folded = []
    for runs in groups.values():
        if len(runs) == 1:
            folded.append(runs[0])
            continue
        runs = sorted(runs, key=lambda r: r.repeat)
        first = runs[0]
        for other in runs[1:]:
            if dict(other.case_ids) != dict(first.case_ids):
                raise ValueError("a fold's repeats scored different test cases")
        folded.append(
            dataclasses.replace(
                first,
                auc={k: float(np.mean([r.auc[k] for r in runs])) for k in first.auc},
                study_auc={
                    k: float(np.mean([r.study_auc.get(k, float("nan")) for r in runs]))
                    for k in first.study_auc
                },
                scores={
                    k: tuple(np.mean([r.scores[k] for r in runs], axis=0).tolist())
                    for k in first.scores
                },
                threshold=None,  # each draw chose its own; their operating measures are averaged
                operating=_mean_operating(runs),
                seconds=sum(r.seconds for r in runs),
            )
        )
    return folded


def _mean_operating(runs: Sequence[RunResult]) -> dict[str, dict[str, float | None]]:
    sets = sorted({name for r in runs for name in r.operating})
    out: dict[str, dict[str, float | None]] = {}
    for name in sets:
        measures = sorted({m for r in runs for m in r.operating.get(name, {})})
        out[name] = {}
        for measure in measures:
            values = [r.operating.get(name, {}).get(measure) for r in runs]
            kept = [v for v in values if v is not None]
            out[name][measure] = float(np.mean(kept)) if kept else None
    return out


def _group(results: Sequence[RunResult]) -> dict[tuple[str, str, float], list[RunResult]]:
    groups: dict[tuple[str, str, float], list[RunResult]] = defaultdict(list)
    for result in results:
        groups[(result.confounder, result.role, result.level)].append(result)
    return groups


def auc_summary(
    results: Sequence[RunResult], levels: Sequence[float], metric: str = "auc"
) -> dict[str, Any]:
    """confounder -> role -> test set -> {mean, sd, per_fold} lists over levels (JSON-ready);
    ``metric`` "study_auc": the same table of the study's AUC (runs that recorded it)."""
    groups = _group(results)
    summary: dict[str, Any] = {}
    for confounder, role in sorted({(c, r) for c, r, _ in groups}):
        per_set: dict[str, dict[str, list]] = {}
        for level in levels:
            runs = sorted(groups.get((confounder, role, float(level)), []), key=lambda r: r.fold)
            for set_name in sorted({s for r in runs for s in getattr(r, metric)}):
                values = [getattr(r, metric).get(set_name, float("nan")) for r in runs]
                entry = per_set.setdefault(set_name, {"mean": [], "sd": [], "per_fold": []})
                finite = [v for v in values if np.isfinite(v)]
                entry["mean"].append(float(np.mean(finite)) if finite else None)
                entry["sd"].append(float(np.std(finite, ddof=1)) if len(finite) > 1 else None)
                entry["per_fold"].append([float(v) if np.isfinite(v) else None for v in values])
        summary.setdefault(confounder, {})[role] = per_set
    return summary


def ood_scores(results: Sequence[RunResult], confounder: str, levels: Sequence[float]) -> OodScores:
    """Average each case's o.o.d. score over folds; every run must have scored the same cases."""
    groups = _group([r for r in results if r.confounder == confounder])
    reference_run = next(r for r in results if r.confounder == confounder)
    case_ids = reference_run.case_ids["ood"]
    y_true = np.array(reference_run.labels["ood"], dtype=np.int64)
    by_role: dict[str, np.ndarray] = {}
    for role in sorted({role for _, role, _ in groups}):
        rows = []
        for level in levels:
            runs = groups.get((confounder, role, float(level)), [])
            if not runs:
                raise ValueError(f"no finished {role} run for {confounder} at level {level}")
            for run in runs:
                if run.case_ids["ood"] != case_ids:
                    raise ValueError("o.o.d. test sets differ between runs; the results are mixed")
            rows.append(np.mean([run.scores["ood"] for run in runs], axis=0))
        by_role[role] = np.vstack(rows)
    return OodScores(case_ids, y_true, tuple(float(v) for v in levels), by_role)


def _paired_runs(
    results: Sequence[RunResult], confounder: str, level: float
) -> list[tuple[RunResult, RunResult]]:
    by_fold: dict[int, dict[str, RunResult]] = defaultdict(dict)
    for r in results:
        if r.confounder == confounder and r.level == float(level):
            by_fold[r.fold][r.role] = r
    return [
        (runs["user"], runs["reference"])
        for _, runs in sorted(by_fold.items())
        if "user" in runs and "reference" in runs
    ]


def descriptive_statistics(
    results: Sequence[RunResult], confounder: str, levels: Sequence[float]
) -> list[dict[str, Any]]:
    """Per level: DeLong's paired test per fold (user vs reference, o.o.d. set) and medaudit's
    paired sign-flip test across folds, each Holm-adjusted within the confounder; and the study's
    own test: an unpaired two-sample permutation test of the per-fold o.o.d. AUCs, enumerated
    exactly (scipy's permutation ``ttest_ind``, which the study ran, orders splits by the same
    statistic), unadjusted as the study reported it. Reported, not gating."""
    from audit.analysis.stats import (
        delong_test,
        exact_permutation_test,
        exact_sign_flip_test,
        holm,
    )

    rows = []
    for level in levels:
        per_fold, diffs, fold_aucs = [], [], {"user": [], "reference": []}
        for user, reference in _paired_runs(results, confounder, level):
            y = np.array(user.labels["ood"])
            try:
                test = delong_test(
                    y, np.array(user.scores["ood"]), np.array(reference.scores["ood"])
                )
            except ValueError:
                per_fold.append(
                    {"fold": user.fold, "auc_diff": None, "delong_z": None, "delong_p": None}
                )
                continue
            per_fold.append(
                {"fold": user.fold, "auc_diff": float(test.diff), "delong_z": float(test.z),
                 "delong_p": float(test.p_value)}
            )  # fmt: skip
            diffs.append(float(test.diff))
            fold_aucs["user"].append(float(user.auc["ood"]))
            fold_aucs["reference"].append(float(reference.auc["ood"]))
        study = _study_test(fold_aucs["user"], fold_aucs["reference"], exact_permutation_test)
        rows.append(
            {
                "level": float(level),
                "test_set": "ood",
                "per_fold": per_fold,
                "delong_p": [f["delong_p"] for f in per_fold],
                "permutation_p": float(exact_sign_flip_test(diffs)) if len(diffs) >= 2 else None,
                "n_permutations": 2 ** len(diffs),
                **study,
            }
        )
    _holm_in_place(rows, holm)
    return rows


def _study_test(user: list[float], reference: list[float], test: Any) -> dict[str, Any]:
    """The study's comparison of two models' fold AUCs; None without two finite AUCs a side."""
    finite = [v for v in user + reference if np.isfinite(v)]
    if len(user) < 2 or len(reference) < 2 or len(finite) != len(user) + len(reference):
        return {"study_test_p": None, "study_test_splits": None}
    return {
        "study_test_p": float(test(user, reference)),
        "study_test_splits": math.comb(len(user) + len(reference), len(user)),
    }


def _holm_in_place(rows: list[dict[str, Any]], holm: Any) -> None:
    """Holm across every DeLong test of the confounder, and across its levels' permutation tests."""
    flat = [
        (i, j, p)
        for i, row in enumerate(rows)
        for j, p in enumerate(row["delong_p"])
        if p is not None
    ]
    adjusted = holm([p for _, _, p in flat]) if flat else []
    for row in rows:
        row["delong_p_adjusted"] = [None] * len(row["delong_p"])
    for (i, j, _), value in zip(flat, adjusted, strict=True):
        rows[i]["delong_p_adjusted"][j] = float(value)
    perm = [
        (i, row["permutation_p"]) for i, row in enumerate(rows) if row["permutation_p"] is not None
    ]
    perm_adjusted = holm([p for _, p in perm]) if perm else []
    for row in rows:
        row["permutation_p_adjusted"] = None
    for (i, _), value in zip(perm, perm_adjusted, strict=True):
        rows[i]["permutation_p_adjusted"] = float(value)


def operating_summary(results: Sequence[RunResult], levels: Sequence[float]) -> dict[str, Any]:
    """confounder -> role -> test set -> {sensitivity, specificity, ece}: fold means per level,
    at the threshold each run chose on its i.i.d. validation set (descriptive)."""
    groups = _group(results)
    summary: dict[str, Any] = {}
    for confounder, role in sorted({(c, r) for c, r, _ in groups}):
        per_set: dict[str, dict[str, list]] = {}
        for level in levels:
            runs = groups.get((confounder, role, float(level)), [])
            for set_name in sorted({s for r in runs for s in r.operating}):
                entry = per_set.setdefault(
                    set_name, {"sensitivity": [], "specificity": [], "ece": []}
                )
                for measure, values in entry.items():
                    found = [
                        r.operating[set_name][measure]
                        for r in runs
                        if r.operating.get(set_name, {}).get(measure) is not None
                    ]
                    values.append(float(np.mean(found)) if found else None)
        summary.setdefault(confounder, {})[role] = per_set
    return summary
