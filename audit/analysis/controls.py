"""The controls: evidence that the experiment worked, checked before any verdict is given.

(a) Training: every run took at least one optimiser step, and its training loss (the optimiser's
    own, mean over the last epoch against the first; one epoch: its last step against its first)
    fell. Eval-mode loss was tried and rejected: BatchNorm's running statistics and calibration
    move it by more than training does in small runs. A head that cannot learn may still lower
    the loss a little (to the class balance); control (b) is the one that catches it.
(b) Clean AUC: each gated model (the user's and the reference) learned the task: its clean AUC
    at the lowest level run, where training holds the least shortcut, averaged over the
    confounders, has a lower 95 % bound above ``min_clean_auc``. The bound averages the
    confounders' own lower bounds, which is conservative whatever their correlation (their
    test sets share patients).
(c) Learnability (computed before the runs, :mod:`audit.run.learnability`): a detector sees the
    artifact at the model's input size.

A failed (a) or (b) makes the audit incomplete (exit 4): a verdict on models that did not train,
or that cannot read the images, says nothing about shortcuts. A failed (c) makes its confounder
"not tested" (:mod:`audit.analysis.gate`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from audit.analysis import reliance
from audit.train.engine import RunResult

CONTROL_ALPHA = 0.05  # one-sided: the clean AUC's lower 95 % bound
_LISTED = 20  # failed runs listed by name in results.json (all are counted)
TRAINING_RULE = (
    "every run took at least one optimiser step, and its training loss fell (mean over the "
    "last epoch against the first; with one epoch, its last step against its first)"
)
CLEAN_RULE = (
    "each gated model's clean AUC at the lowest level run, averaged over its runs and the "
    "confounders, has a one-sided lower 95 % bound (test patients and run-to-run spread; the "
    "mean of the confounders' bounds) above min_clean_auc"
)


def training_problem(result: RunResult) -> str | None:
    """Why ``result`` shows no training, or None when it trained."""
    if result.optimizer_steps is None:
        return "the run did not record its training"
    if result.optimizer_steps < 1:
        return "it took no optimiser step"
    start, end = result.train_loss_start, result.train_loss_end
    if start is not None and end is None:
        return "it took a single optimiser step, which cannot show its training loss fell"
    if not (isinstance(start, float) and isinstance(end, float)) or not (
        math.isfinite(start) and math.isfinite(end)
    ):
        return "its training loss is not a finite number"
    if not end < start:
        return f"its training loss did not fall ({start:.4f} before, {end:.4f} after)"
    return None


def training_control(results: Sequence[RunResult]) -> dict[str, Any]:
    failures = []
    for r in sorted(results, key=lambda r: (r.confounder, r.level, r.fold, r.repeat, r.role)):
        why = training_problem(r)
        if why is not None:
            failures.append({"role": r.role, "confounder": r.confounder, "level": r.level,
                             "fold": r.fold, "repeat": r.repeat, "why": why})  # fmt: skip
    return {
        "passed": not failures,
        "rule": TRAINING_RULE,
        "runs_checked": len(results),
        "runs_failed": len(failures),
        "failures": failures[:_LISTED],
    }


def clean_auc_control(
    runs_of: Mapping[str, Sequence[reliance.RunScores]], min_clean_auc: float
) -> dict[str, Any]:
    """``runs_of``: confounder -> its gated runs' scores (confounders with a clean test set).
    Per model the pooled bound decides; each confounder's own is listed beside it."""
    per_confounder = []
    for name, runs in runs_of.items():
        level = min(r.level for r in runs)
        for role in reliance.ROLES:
            row: dict[str, Any] = {"confounder": name, "role": role, "level": level}
            try:
                est = reliance.estimate_clean_auc(runs, role, level, CONTROL_ALPHA)
            except ValueError:
                per_confounder.append({**row, "auc": None, "lower": None})
                continue
            per_confounder.append({**row, "auc": est.estimate, "lower": est.lower,
                                   "var_test": est.var_test, "var_runs": est.var_runs,
                                   "n_folds": est.n_folds})  # fmt: skip
    if not per_confounder:  # nothing gated can be laid out: the gate is inconclusive anyway
        return {"passed": True, "applicable": False, "rule": CLEAN_RULE,
                "min_clean_auc": min_clean_auc, "per_model": [], "per_confounder": [],
                "why": "no gated confounder has a clean test set with both models"}  # fmt: skip
    per_model = [_pooled(role, per_confounder, min_clean_auc) for role in reliance.ROLES]
    single = all(r.get("n_folds") == 1 for r in per_confounder if r["lower"] is not None)
    return {
        "passed": all(r["passed"] for r in per_model),
        "applicable": True,
        "rule": CLEAN_RULE,
        "min_clean_auc": min_clean_auc,
        "confidence": 1.0 - CONTROL_ALPHA,
        "per_model": per_model,
        "per_confounder": per_confounder,
        **(
            {
                "note": "one fold: the bound holds the test patients' variance only, not the "
                "training's"
            }
            if single
            else {}
        ),  # fmt: skip
    }


def _pooled(role: str, rows: Sequence[Mapping[str, Any]], min_clean_auc: float) -> dict[str, Any]:
    mine = [r for r in rows if r["role"] == role and r["lower"] is not None]
    if not mine:  # a confounder that cannot be computed is left out (the gate says why)
        return {"role": role, "auc": None, "lower": None, "passed": False,
                "why": "the clean AUC could not be computed"}  # fmt: skip
    lower = sum(r["lower"] for r in mine) / len(mine)
    return {
        "role": role,
        "auc": sum(r["auc"] for r in mine) / len(mine),
        "lower": lower,
        "confounders": [r["confounder"] for r in mine],
        "passed": bool(lower > min_clean_auc),
    }


def controls_record(
    training: Mapping[str, Any],
    clean_auc: Mapping[str, Any],
    learnable: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """results.json's ``controls``: ``passed`` is (a) and (b); (c) decides per confounder."""
    failed = [name for name, part in (("training", training), ("clean_auc", clean_auc))
              if not part["passed"]]  # fmt: skip
    return {
        "passed": not failed,
        "failed": failed,
        "reason": failure_reason(training, clean_auc) if failed else None,
        "training": dict(training),
        "clean_auc": dict(clean_auc),
        "learnable": {name: dict(r) for name, r in learnable.items()},
    }


def failure_reason(training: Mapping[str, Any], clean_auc: Mapping[str, Any]) -> str:
    """One sentence for page 1 and the console: what failed, so no verdict is given."""
    parts = []
    if not training["passed"]:
        first = training["failures"][0] if training["failures"] else None
        example = (
            f" (e.g. a {first['role']} run on {first['confounder']}: {first['why']})"
            if first
            else ""
        )
        parts.append(
            f"{training['runs_failed']} of {training['runs_checked']} runs show no training{example}"
        )
    if not clean_auc["passed"]:
        low = [r for r in clean_auc["per_model"] if not r["passed"]]
        if low:
            shown = ", ".join(f"{r['role']} {_auc(r['lower'])}" for r in low)
            parts.append(
                f"a model's clean AUC is not shown above {clean_auc['min_clean_auc']} "
                f"(lower 95 % bound: {shown})"
            )
        else:
            parts.append(f"the clean AUC control could not be computed ({clean_auc.get('why')})")
    return "The experiment did not work, so no verdict is given: " + "; ".join(parts) + "."


def _auc(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "not computed"
