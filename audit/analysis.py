"""From run results to the numbers the verdict and the report use.

Per confounder, level and model: the AUC of every test set per fold, its mean and spread; and the
fold-averaged per-case o.o.d. scores on which the shortcut gap and its interval are computed.
"""

from __future__ import annotations

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


def _group(results: Sequence[RunResult]) -> dict[tuple[str, str, float], list[RunResult]]:
    groups: dict[tuple[str, str, float], list[RunResult]] = defaultdict(list)
    for result in results:
        groups[(result.confounder, result.role, result.level)].append(result)
    return groups


def auc_summary(results: Sequence[RunResult], levels: Sequence[float]) -> dict[str, Any]:
    """confounder -> role -> test set -> {mean, sd, per_fold} lists over levels (JSON-ready)."""
    groups = _group(results)
    summary: dict[str, Any] = {}
    for confounder, role in sorted({(c, r) for c, r, _ in groups}):
        per_set: dict[str, dict[str, list]] = {}
        for level in levels:
            runs = sorted(groups.get((confounder, role, float(level)), []), key=lambda r: r.fold)
            for set_name in sorted({s for r in runs for s in r.auc}):
                values = [r.auc[set_name] for r in runs]
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
    """Per level: DeLong's paired test per fold (user vs reference, o.o.d.) and the study's exact
    sign-flip permutation test across folds. Reported, not gating: the verdict rests on the
    bootstrap of the shortcut gap."""
    from audit.stats import delong_test, exact_sign_flip_test

    rows = []
    for level in levels:
        pairs = _paired_runs(results, confounder, level)
        per_fold, diffs = [], []
        for user, reference in pairs:
            y = np.array(user.labels["ood"])
            try:
                test = delong_test(
                    y, np.array(user.scores["ood"]), np.array(reference.scores["ood"])
                )
            except ValueError:
                per_fold.append({"fold": user.fold, "delong_p": None, "auc_diff": None})
                continue
            per_fold.append(
                {
                    "fold": user.fold,
                    "auc_diff": float(test.diff),
                    "delong_z": float(test.z),
                    "delong_p": float(test.p_value),
                }
            )
            diffs.append(float(test.diff))
        permutation_p = float(exact_sign_flip_test(diffs)) if len(diffs) >= 2 else None
        rows.append({"level": float(level), "per_fold": per_fold, "permutation_p": permutation_p})
    return rows
