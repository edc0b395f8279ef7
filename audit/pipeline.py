"""The audit from cohort to outputs; ``check`` and ``demo`` both call :func:`run_audit`.

source -> cohort -> plan -> runs -> analysis -> outputs, one direction, no stage reaching back.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from audit import __version__
from audit.analysis.budget import budget_record
from audit.analysis.summaries import (
    auc_summary,
    descriptive_statistics,
    fold_results,
    operating_summary,
)
from audit.common.hashing import canonical, content_hash
from audit.confounders.examples import example_images
from audit.constants import ILLUSTRATIVE_NOTE
from audit.data.cases import Cohort
from audit.errors import UsageError
from audit.models.architectures import Backbone
from audit.models.input_size import fit_input_size
from audit.plan.grid import ModelRef, RunSpec, build_runs
from audit.plan.splits import PatientSplit, SplitTable, split_table
from audit.resolve.confounders import ResolvedConfounder
from audit.resolve.settings import Settings, SettingsOrigin, threshold_sources
from audit.run.cells import AuditInputs
from audit.run.execute import Outcome, execute
from audit.run.executor import Executor, InProcessExecutor
from audit.run.provenance import environment_details
from audit.run.store import ResultsStore
from audit.schema import SCHEMA_VERSION
from audit.train.device import set_determinism

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditRequest:
    settings: Settings
    cohort: Cohort
    models: Sequence[tuple[ModelRef, Backbone]]
    out_dir: Path
    command: str = ""
    confounders: Mapping[str, ResolvedConfounder] = dataclasses.field(default_factory=dict)
    protocol: str | None = None  # "source-matters": the study's image lists decide the splits
    executor: Executor = dataclasses.field(default_factory=InProcessExecutor)  # where runs go
    probe: Mapping[str, Any] | None = None  # `check --probe`: the probe's results, run first
    write_report: bool = True  # False: no report.pdf (render it later with `medaudit report`)
    summary: bool = True  # the console summary (audit.report.outputs.ConsoleSummary)
    origin: SettingsOrigin | None = None  # where each setting came from (None: not recorded)
    inconclusive_exit: int = 3  # the exit code an inconclusive verdict gets (0: counted as pass)


@dataclass(frozen=True)
class AuditOutputs:
    results: dict[str, Any]
    written: Mapping[str, Path | None]  # each output format's file (audit.report.outputs)


def _split_counts(cohort: Cohort, split: PatientSplit) -> dict[str, Any]:
    labels, patients, sexes = cohort.labels, cohort.patients, cohort.sexes

    def describe(idx: np.ndarray) -> dict[str, Any]:
        known = {sex: int(np.sum(sexes[idx] == sex)) for sex in ("F", "M")}
        return {
            "cases": int(len(idx)),
            "positives": int(labels[idx].sum()),
            "patients": int(len(np.unique(patients[idx]))),
            "by_sex": {**known, "unknown": int(len(idx)) - sum(known.values())},
        }

    return {
        "test": describe(split.test),
        "folds": [{"train": describe(tr), "val": describe(va)} for tr, va in split.folds],
    }


def _clean(value: Any) -> Any:
    """NaN and infinities become null: results.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _verdict(
    outcome: Outcome,
    request: AuditRequest,
    splits: SplitTable,
    has_reference: bool,
    learnable: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any] | None:
    """The pre-declared verdict, or None when runs are missing (an incomplete audit decides nothing)."""
    if outcome.failed or not has_reference:
        return None
    from audit.analysis.gate import gate_record
    from audit.run.learnability import learnability_summary

    settings, confounders = request.settings, request.confounders
    return gate_record(
        outcome.results,
        {name: rc.confounder.kind for name, rc in confounders.items()},
        _not_gated(confounders, splits, settings),
        levels=settings.levels,
        margin=settings.margin,
        alpha=settings.alpha,
        counted_levels=settings.counted_levels,
        patient_of=_patient_groups(request.cohort),
        not_tested=learnability_summary(
            learnable, [n for n, rc in confounders.items() if rc.confounder.kind == "pixel"]
        ),
    )


def _controls(
    outcome: Outcome,
    request: AuditRequest,
    splits: SplitTable,
    learnable: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """Controls (a) and (b) on the finished runs, (c) as measured before them."""
    from audit.analysis.controls import clean_auc_control, controls_record, training_control
    from audit.analysis.gate import clean_run_scores

    settings, confounders = request.settings, request.confounders
    not_gated = _not_gated(confounders, splits, settings)
    kinds = {n: rc.confounder.kind for n, rc in confounders.items() if n not in not_gated}
    scores = clean_run_scores(outcome.results, kinds, _patient_groups(request.cohort))
    return controls_record(
        training_control(outcome.results),
        clean_auc_control(scores, settings.min_clean_auc),
        learnable,
    )


def _status(
    specs: Sequence[RunSpec], outcome: Outcome, controls: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Complete means every run finished and the controls hold; ``reason`` says what did not."""
    runs_complete = not outcome.failed and len(outcome.results) == len(specs)
    reason = None
    if not runs_complete:
        from audit.report.formatting import runs_missing_text

        reason = runs_missing_text(len(specs) - len(outcome.results), len(specs))
    elif controls is not None and not controls["passed"]:
        reason = controls["reason"]
    return {
        "complete": reason is None,
        "reason": reason,
        "runs_total": len(specs),
        "runs_done": len(outcome.results),
        "runs_reused": outcome.reused,
        "runs_failed": len(outcome.failed),
    }


def _patient_groups(cohort: Cohort) -> dict[str, str]:
    """Each case's patient as a key-free group (its rank of first appearance): the analysis sums
    over patients in their sorted order, which must not follow the cache folder's secret key."""
    groups = cohort.patient_groups
    return {case.case_id: f"{int(g):09d}" for case, g in zip(cohort.cases, groups, strict=True)}


def _not_gated(
    confounders: Mapping[str, ResolvedConfounder], splits: SplitTable, settings: Settings
) -> dict[str, str]:
    """Confounders shown but not gated by design: a sampling confounder on presampled study lists,
    whose test set has no negatives of the other value (so no lift AUC)."""
    from audit.analysis.planning import presampled_reason

    return {
        name: presampled_reason(rc)
        for name, rc in confounders.items()
        if rc.confounder.kind == "sampling" and splits.get(name, settings.levels[0]).presampled
    }


def _clean_test(rc: ResolvedConfounder, presampled: bool) -> str | None:
    """What the confounder's clean test set holds (None: it has none)."""
    conf = rc.confounder
    if conf.kind == "pixel":
        return "the test cases without the artifact"
    if presampled:
        return None
    return (
        f"test cases of both classes without {conf.attribute} = {conf.attribute_value} (the "
        "value training pairs with positives)"
    )


def _power(request: AuditRequest, splits: SplitTable) -> dict[str, Any]:
    """What this audit can resolve per confounder, from its test sets and runs, before any run."""
    from audit.analysis.planning import plan_power, planned_test_sets_from_cohort

    settings, first = request.settings, request.settings.levels[0]
    records: dict[str, Any] = {}
    for name, rc in request.confounders.items():
        split = splits.get(name, first)
        test_sets = planned_test_sets_from_cohort(
            request.cohort, split.test, {name: rc}, presampled=split.presampled
        )
        records.update(
            plan_power(
                test_sets,
                folds=len(split.folds),
                repeats=settings.repeats,
                margin=settings.margin,
                alpha=settings.alpha,
            )  # fmt: skip
        )
    return records


def _gate(
    audit_overall: str,
    probe: Mapping[str, Any] | None,
    inconclusive_exit: int,
    anything_gated: bool = True,
    untested: bool = False,
) -> dict[str, Any]:
    """What the exit code and a CI gate follow: the audit's verdict, or with ``check --probe``
    the worse of the audit's and the probe's; and what an inconclusive verdict counts as. An
    audit that gated nothing is inconclusive whatever ``inconclusive_exit`` says: no test is no
    pass; nor is a confounder "not tested" (its artifact invisible) ever counted as a pass."""
    from audit.analysis.verdict import exit_code_for, overall_verdict

    probe_overall = probe["verdict"]["overall"] if probe else None
    verdicts = [audit_overall] + ([probe_overall] if probe_overall else [])
    overall = overall_verdict(verdicts)
    requested, override = inconclusive_exit, None
    if not anything_gated:
        inconclusive_exit = 3
    elif untested and inconclusive_exit == 0:
        inconclusive_exit = 3
        override = (
            "--inconclusive-exit 0 does not apply: a confounder was not tested (its artifact "
            "is invisible at the input size), and an untested confounder is never counted as "
            "a pass: exit 3."
        )
    counted_as = {0: "pass", 1: "fail"}.get(inconclusive_exit)
    return {
        "inconclusive_exit_requested": requested,
        "override": override,
        "overall": overall,
        "audit": audit_overall,
        "probe": probe_overall,
        "inconclusive_exit": inconclusive_exit,
        "inconclusive_counted_as": counted_as,
        "exit_code": exit_code_for(overall, inconclusive_exit),
    }


def _example_cohort(cohort: Cohort, settings: Settings) -> Cohort:
    """Example images for the report come from phantoms unless the data is synthetic anyway:
    a patient's pixels never go into the output folder."""
    if cohort.synthetic:
        return cohort
    from audit.data.synthetic import PhantomSettings, make_phantom_cohort

    return make_phantom_cohort(
        PhantomSettings(modality=cohort.modality, n_patients=4, image_size=cohort.image_size,
                        seed=settings.seed)
    )  # fmt: skip


def _first_cell(confounders: Mapping[str, Any], settings: Settings) -> tuple[str, float]:
    return next(iter(confounders)), settings.levels[0]


def build_results(
    request: AuditRequest,
    splits: SplitTable,
    specs: Sequence[RunSpec],
    outcome: Outcome,
    environment: Mapping[str, str],
    learnable: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    settings, cohort, confounders = request.settings, request.cohort, request.confounders
    runs_complete = not outcome.failed and len(outcome.results) == len(specs)
    roles = {ref.role for ref, _ in request.models}
    has_reference = "reference" in roles
    controls = (
        _controls(outcome, request, splits, learnable) if runs_complete and has_reference else None
    )
    status = _status(specs, outcome, controls)
    complete = status["complete"]
    folds = fold_results(outcome.results)  # a fold's repeats averaged: one unit per fold
    auc = auc_summary(folds, settings.levels)
    verdict = _verdict(outcome, request, splits, has_reference, learnable) if complete else None
    results = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "medaudit", "version": __version__},
        "audit_id": content_hash(sorted(s.key for s in specs)),
        "created_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": request.command,
        "illustrative": cohort.synthetic,
        "illustrative_note": ILLUSTRATIVE_NOTE if cohort.synthetic else None,
        "status": status,
        "controls": controls,
        "budget": budget_record(settings, len(specs), sum(r.seconds for r in outcome.results)),
        "models": [canonical(ref) for ref, _ in request.models],
        "data": {
            "source": cohort.source,
            "modality": cohort.modality,
            "manifest_hash": cohort.manifest_hash(),
            "synthetic": cohort.synthetic,
            "n_cases": len(cohort.cases),
            "n_patients": int(len(np.unique(cohort.patients))),
            "image_size": cohort.image_size,
            "splits": _split_counts(cohort, splits.get(*_first_cell(confounders, settings))),
            "split_source": "study lists (source-matters)"
            if request.protocol
            else "patient-level shuffle split",
            "excluded": dict(cohort.excluded),
            "warnings": dict(cohort.warnings),  # caveats counted on kept images, by kind
        },
        "protocol": {
            "levels": list(settings.levels),
            "folds": len(splits.get(*_first_cell(confounders, settings)).folds),
            "repeats": settings.repeats,
            "seed": settings.seed,
            "val_fraction": settings.val_fraction,
            "test_fraction": settings.test_fraction,
            "train": canonical(settings.train),
            "confounders": [
                {
                    "name": name,
                    "category": rc.confounder.category,
                    "kind": rc.kind,
                    "description": rc.confounder.description,
                    "params": canonical(rc.params),
                    "has_clean_test": _clean_test(
                        rc, splits.get(name, settings.levels[0]).presampled
                    )
                    is not None,
                    "clean_test": _clean_test(rc, splits.get(name, settings.levels[0]).presampled),
                    "preset": rc.preset,
                    "work_size": rc.work_size,
                    "to_input": rc.to_input,
                }
                for name, rc in confounders.items()
            ],
        },
        "thresholds": {
            "margin": settings.margin,
            "alpha": settings.alpha,
            "counted_levels": list(settings.counted_levels) if settings.counted_levels else None,
            "n_resamples": settings.n_resamples,
            "min_clean_auc": settings.min_clean_auc,
            "min_detector_auc": settings.min_detector_auc,
            **({"sources": threshold_sources(request.origin)} if request.origin else {}),
        },
        **({"settings_origin": request.origin.record()} if request.origin else {}),
        "environment": dict(environment),
        "auc": auc,
        "study_auc": auc_summary(folds, settings.levels, "study_auc"),
        "operating": operating_summary(folds, settings.levels),
        "runs": [
            {
                "key": r.key,
                "role": r.role,
                "confounder": r.confounder,
                "level": r.level,
                "fold": r.fold,
                "repeat": r.repeat,
                "auc": dict(r.auc),
                "study_auc": dict(r.study_auc),
                "epochs_run": r.epochs_run,
                "best_epoch": r.best_epoch,
                "optimizer_steps": r.optimizer_steps,
                "train_loss_start": r.train_loss_start,
                "train_loss_end": r.train_loss_end,
                "seconds": r.seconds,
            }
            for r in sorted(
                outcome.results, key=lambda r: (r.confounder, r.level, r.fold, r.repeat, r.role)
            )
        ],
        "verdict": verdict,
        "power": _power(request, splits),
        "provenance": environment_details(),
        "examples": example_images(_example_cohort(cohort, settings), confounders, settings.seed),
    }
    if request.probe is not None:
        results["probe"] = dict(request.probe)
    if verdict is not None:
        from audit.analysis.gate import NOT_TESTED

        rows = verdict["per_confounder"]
        results["gate"] = _gate(
            verdict["overall"], request.probe, request.inconclusive_exit,
            anything_gated=any(row["gated"] for row in rows),
            untested=any(row["verdict"] == NOT_TESTED for row in rows),
        )  # fmt: skip
    if complete and "reference" in roles:
        results["statistics"] = {
            name: descriptive_statistics(folds, name, settings.levels) for name in confounders
        }
    return _clean(results)


def _learnability(
    inputs: AuditInputs, specs: Sequence[RunSpec], settings: Settings, executor: Executor
) -> dict[str, dict[str, Any]]:
    """Control (c), before the runs: which artifacts a detector sees at the input size, on a
    device of the executor's (never a GPU the user did not name)."""
    import torch

    from audit.run.learnability import learnability

    device = torch.device(executor.local_device())
    return learnability(inputs, specs, settings.min_detector_auc, settings.seed, device)


def run_audit(request: AuditRequest) -> AuditOutputs:
    """Plan, run what is missing, analyse, and write every output format (results.json first,
    junit.xml, report.pdf unless ``write_report`` is False, registered formats, and the console
    summary unless ``summary`` is False)."""
    settings = request.settings
    out_dir = Path(request.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    set_determinism(settings.train.deterministic)
    confounders = request.confounders
    if not confounders:
        raise UsageError("no confounder to audit")
    cohort = request.cohort
    models = [ref for ref, _ in request.models]
    if len({m.role for m in models}) != len(models):
        raise UsageError("each model role (user, reference, random-init) may appear only once")
    splits = split_table(settings, cohort, confounders, request.protocol)
    specs = build_runs(settings, models, confounders, cohort.manifest_hash(), splits)
    inputs = AuditInputs(
        cohort=cohort,
        splits=splits,
        confounders=confounders,
        backbones={
            ref.role: fit_input_size(backbone, settings.train.input_size)
            for ref, backbone in request.models
        },
        base_seed=settings.seed,
    )
    from audit.analysis.planning import power_lines

    for line in power_lines(_power(request, splits)):  # what this plan can resolve, up front
        log.info(line)
    learnable = _learnability(inputs, specs, settings, request.executor)
    outcome = execute(specs, inputs, ResultsStore(out_dir), request.executor)
    results = build_results(
        request, splits, specs, outcome,
        request.executor.environment(settings.train.deterministic), learnable,
    )  # fmt: skip
    from audit.report.outputs import write_finished

    skip = [] if request.write_report else ["report.pdf"]
    written = write_finished(results, out_dir, skip=skip if request.summary else [*skip, "console"])
    return AuditOutputs(results, written)
