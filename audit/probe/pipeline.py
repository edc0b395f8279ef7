"""The probe from a loaded model and a cohort to results: score clean, confound, score again.

model -> trial batch (input and score checked) -> clean scores -> per confounder: confounded
scores -> measures -> verdict -> results. Images are confounded and scored in chunks, so memory
stays flat however many images are probed; every pixel confounder draws each image's randomness
from (seed, cohort index), so a probe is replayed exactly from its recorded seed.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audit import __version__
from audit.analysis.stats import youden_threshold
from audit.common.hashing import canonical, content_hash
from audit.confounders import Confounder, apply_confounder
from audit.constants import ILLUSTRATIVE_NOTE, NOT_GATED
from audit.data.cases import Cohort
from audit.errors import UsageError
from audit.probe.cohort import Selection
from audit.probe.decide import (
    CI_NOTE,
    Decision,
    Evidence,
    ProbeThresholds,
    decide,
    pixel_evidence,
    sex_evidence,
)
from audit.probe.measures import (
    auc_change,
    flip_rate,
    mean_shift,
    subgroup_comparison,
    worst_cases,
)
from audit.probe.placebo import PlaceboImages, compare_with_placebo
from audit.probe.preprocess import Preprocessor
from audit.probe.runner import Runner
from audit.probe.scores import (
    Activation,
    ScoreChoice,
    choose_activation,
    choose_score,
    raw_rows,
    to_scores,
)
from audit.resolve.confounders import ResolvedConfounder
from audit.run.provenance import environment_details
from audit.schema import PROBE_SCHEMA_VERSION

log = logging.getLogger(__name__)

_CHUNK = 256  # images confounded and held at once


@dataclass(frozen=True)
class ProbeRequest:
    runner: Runner
    preprocessor: Preprocessor
    cohort: Cohort
    selection: Selection
    confounders: Mapping[str, ResolvedConfounder]  # from audit.resolve: check --probe's too
    thresholds: ProbeThresholds = field(default_factory=ProbeThresholds)
    score_output: str | None = None
    activation: str = "auto"
    batch_size: int = 32
    worst_count: int = 10
    command: str = ""
    model_sha256: str = ""
    placebo: bool = False  # also score each pixel confounder's placebo (descriptive)


@dataclass
class _Scorer:
    """Batches images through the runner and keeps count of what it scored and how fast."""

    runner: Runner
    preprocessor: Preprocessor
    choice: ScoreChoice
    batch_size: int
    images_scored: int = 0
    seconds: float = 0.0

    def raw(self, images: np.ndarray) -> np.ndarray:
        fixed = self.preprocessor.spec.batch
        size = fixed or self.batch_size
        rows = []
        for start in range(0, len(images), size):
            batch = self.preprocessor(images[start : start + size])
            n = len(batch)
            if fixed and n < fixed:  # a model with a fixed batch: pad, then drop the padding
                batch = np.concatenate(
                    [batch, np.zeros((fixed - n, *batch.shape[1:]), batch.dtype)]
                )
            began = time.perf_counter()
            outputs = self.runner.run(batch)
            self.seconds += time.perf_counter() - began
            rows.append(raw_rows(self.choice, outputs)[:n])
        self.images_scored += len(images)
        return np.concatenate(rows)


def confounder_seed(base: int, name: str) -> int:
    return int(content_hash([base, "probe", name], length=8), 16)


def run_probe(request: ProbeRequest, progress: Callable[[str], None] | None = None) -> dict:
    """Score, measure and decide; the results document (``"kind": "probe"``)."""
    say = progress or log.info
    runner, cohort, t = request.runner, request.cohort, request.thresholds
    confounders = request.confounders
    if not any(rc.kind == "pixel" for rc in confounders.values()) and (t.max_sex_auc_gap is None):
        raise UsageError("nothing to gate: probe a pixel confounder or give `max_sex_auc_gap`")
    outputs = runner.trial(request.preprocessor.spec)
    choice = choose_score(request.score_output, outputs, runner.file_name)
    scorer = _Scorer(runner, request.preprocessor, choice, request.batch_size)
    idx = request.selection.indices
    y = cohort.labels[idx].astype(np.int8)
    patients = cohort.patient_groups[idx]  # the resampling units (key-free: any cache folder)
    began = time.perf_counter()
    say(f"scoring {len(idx)} clean images ({runner.info.backend}, {runner.info.device})")
    clean_raw = _chunked(cohort, idx, scorer.raw)
    activation = choose_activation(request.activation, clean_raw, choice)
    clean = to_scores(clean_raw, choice, activation)
    threshold, threshold_source = _operating_threshold(y, clean, t.threshold, activation)
    rows: list[dict[str, Any]] = []
    evidence: dict[str, Evidence] = {}
    for name, resolved in confounders.items():
        conf, params, preset = resolved.confounder, resolved.params, resolved.preset
        if conf.kind != "pixel":
            row, gate = _sampling_row(conf, cohort, idx, (y, patients), clean, t)
        else:
            say(f"scoring {len(idx)} images with confounder {name}")
            score = _scores_with(scorer, activation, cohort, idx)
            seed = confounder_seed(resolved.seed, conf.name)
            baseline = clean if conf.baseline is None else score(conf, False, seed, params)
            scores = (baseline, score(conf, True, seed, params))
            row, gate = _pixel_row(
                conf, params, preset, seed, scores, (y, patients), threshold, request
            )
            if request.placebo:
                say(f"scoring {len(idx)} images with the placebo of {name}")
                make = PlaceboImages(conf, params, seed)
                placebo = to_scores(_chunked(cohort, idx, scorer.raw, make), choice, activation)
                row["placebo"] = compare_with_placebo(
                    y, *scores, placebo, threshold, n_resamples=t.n_resamples, seed=t.seed,
                    confidence=1.0 - t.alpha, change_kept=make.change_kept, clusters=patients,
                ).to_dict()  # fmt: skip
        rows.append(row)
        if gate is not None:
            evidence[name] = gate
    overall, decisions = decide(evidence, t.alpha)
    for row in rows:
        _attach(row, decisions.get(row["name"]))
    elapsed = time.perf_counter() - began
    return _document(
        request, rows, overall, (threshold, threshold_source), (activation, choice),
        {"seconds_total": elapsed, "seconds_in_model": scorer.seconds,
         "images_scored": scorer.images_scored,
         "images_per_second": scorer.images_scored / scorer.seconds if scorer.seconds else None},
    )  # fmt: skip


def _chunked(
    cohort: Cohort,
    idx: np.ndarray,
    score: Callable[[np.ndarray], np.ndarray],
    transform: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    parts = []
    for start in range(0, len(idx), _CHUNK):
        ids = idx[start : start + _CHUNK]
        images = np.asarray(cohort.images[ids])
        parts.append(score(transform(images, ids) if transform else images))
    return np.concatenate(parts)


def _scores_with(scorer: _Scorer, activation: Activation, cohort: Cohort, idx: np.ndarray):  # noqa: ANN202
    """A function (confounder, mask value, seed, params) -> scores of the selected images."""

    def score(conf: Confounder, confounded: bool, seed: int, params: Mapping) -> np.ndarray:
        def transform(images: np.ndarray, ids: np.ndarray) -> np.ndarray:
            mask = np.full(len(images), confounded)
            return apply_confounder(conf, images, mask, seed=seed, params=params, ids=ids)

        raw = _chunked(cohort, idx, scorer.raw, transform)
        return to_scores(raw, scorer.choice, activation)

    return score


def _operating_threshold(
    y: np.ndarray, clean: np.ndarray, given: float | None, activation: Activation
) -> tuple[float, str]:
    if given is not None:
        if activation.probabilities and not 0.0 < given < 1.0:
            raise UsageError(
                f"`threshold` {given:g}: the scores are probabilities ({activation.reason}), so "
                "a threshold outside (0, 1) would leave every decision on one side"
            )
        return float(given), "given (--threshold)"
    if len(np.unique(y)) < 2:
        raise UsageError(
            "the probed images hold one class only, so no operating threshold can be chosen on "
            "them; give `threshold` (on the probability scale)"
        )
    return youden_threshold(y, clean), "Youden's J on the clean images"


def _pixel_row(
    conf: Confounder,
    params: Mapping[str, Any],
    preset: str | None,
    seed: int,
    scores: tuple[np.ndarray, np.ndarray],
    labels_and_patients: tuple[np.ndarray, np.ndarray],
    threshold: float,
    request: ProbeRequest,
) -> tuple[dict[str, Any], Evidence]:
    """Baseline (clean, or the confounder's baseline) against confounded scores of the images."""
    t = request.thresholds
    baseline, confounded = scores
    y, patients = labels_and_patients
    confidence = 1.0 - t.alpha
    shift = mean_shift(y, baseline, confounded, n_resamples=t.n_resamples, seed=t.seed,
                       confidence=confidence, clusters=patients)  # fmt: skip
    flips = flip_rate(baseline, confounded, threshold, confidence, clusters=patients)
    case_ids = [request.cohort.cases[i].case_id for i in request.selection.indices]
    row = {
        **_describe(conf),
        "params": canonical(params),
        "preset": preset,
        "seed": seed,
        "baseline": "none (the clean image)" if conf.baseline is None else "confounder baseline",
        "n_images": int(len(y)),
        "mean_shift": shift.to_dict(),
        "flip_rate": flips.to_dict(),
        "auc": auc_change(y, baseline, confounded),
        "worst_cases": worst_cases(
            case_ids, y, baseline, confounded, threshold, request.worst_count
        ),  # fmt: skip
        "gated": True,
    }
    return row, pixel_evidence(shift, flips, t)


def _sampling_row(
    conf: Confounder,
    cohort: Cohort,
    idx: np.ndarray,
    labels_and_patients: tuple[np.ndarray, np.ndarray],
    clean: np.ndarray,
    t: ProbeThresholds,
) -> tuple[dict[str, Any], Evidence | None]:
    y, patients = labels_and_patients
    groups, gap = subgroup_comparison(y, clean, cohort.sexes[idx], 1.0 - t.alpha, patients)
    gated = t.max_sex_auc_gap is not None
    row = {
        **_describe(conf),
        "attribute": conf.attribute,
        "groups": groups,
        "auc_gap": gap.to_dict() if gap else None,
        "gated": gated,
    }
    if not gated:
        return row, None
    if gap is None:
        summary = "no AUC gap: a subgroup lacks 2 images (or 2 patients) of each class"
        return row, Evidence(1.0, 1.0, summary)
    return row, sex_evidence(gap, float(t.max_sex_auc_gap))


def _describe(conf: Confounder) -> dict[str, Any]:
    return {
        "name": conf.name,
        "kind": conf.kind,
        "category": conf.category,
        "description": conf.description,
    }


def _attach(row: dict[str, Any], decision: Decision | None) -> None:
    if decision is None:
        row.update(verdict=NOT_GATED, p_fail=None, p_pass=None, p_fail_adjusted=None,
                   p_pass_adjusted=None,
                   reason="Reported, not gated: a subgroup difference alone cannot tell a "
                   "shortcut from a harder subgroup; declare --max-sex-auc-gap to gate it.")  # fmt: skip
        return
    row.update(
        verdict=decision.verdict,
        p_fail=decision.p_fail,
        p_pass=decision.p_pass,
        p_fail_adjusted=decision.p_fail_adjusted,
        p_pass_adjusted=decision.p_pass_adjusted,
        reason=decision.reason,
    )


def _document(
    request: ProbeRequest,
    rows: list[dict[str, Any]],
    overall: str,
    operating: tuple[float, str],
    score: tuple[Activation, ScoreChoice],
    timing: dict[str, Any],
) -> dict[str, Any]:
    runner, cohort, t = request.runner, request.cohort, request.thresholds
    activation, choice = score
    spec, norm = request.preprocessor.spec, request.preprocessor.normalization
    idx = request.selection.indices
    names = [r["name"] for r in rows]
    identity = [request.model_sha256, cohort.manifest_hash(), idx.tolist(), names, canonical(t)]
    if request.placebo:
        identity.append("placebo")
    return _clean_json(
        {
            "schema_version": PROBE_SCHEMA_VERSION,
            "kind": "probe",
            "tool": {"name": "medaudit", "version": __version__},
            "probe_id": content_hash(identity),
            "created_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": request.command,
            "illustrative": cohort.synthetic,
            "illustrative_note": ILLUSTRATIVE_NOTE if cohort.synthetic else None,
            "model": {
                "file": runner.file_name,
                "sha256": request.model_sha256,
                "format": runner.format,
                "arch": runner.arch,
                "notes": list(runner.notes),
                "runtime": canonical(runner.info),
                "input": {
                    "name": spec.name,
                    "declared": runner.declared.describe(),
                    "channels": spec.channels,
                    "height": spec.height,
                    "width": spec.width,
                    "layout": spec.layout,
                    "dtype": spec.dtype,
                    "fixed_batch": spec.batch,
                },
                "preprocessing": canonical(norm),
                "score": {
                    "output": choice.output_name,
                    "output_index": choice.output_index,
                    "column": choice.column,
                    "n_columns": choice.n_columns,
                    "activation": activation.name,
                    "activation_reason": activation.reason,
                },
            },
            "data": {
                "source": cohort.source,
                "modality": cohort.modality,
                "synthetic": cohort.synthetic,
                "manifest_hash": cohort.manifest_hash(),
                "image_size": cohort.image_size,
                "n_cases": len(cohort.cases),
                "n_images": int(len(idx)),
                "n_positive": int(cohort.labels[idx].sum()),
                "n_patients": int(len(np.unique(cohort.patients[idx]))),
                "subset": request.selection.subset,
                "selection": request.selection.description,
                "excluded": dict(cohort.excluded),
            },
            "thresholds": {
                **canonical(t),
                "operating_threshold": operating[0],
                "operating_threshold_source": operating[1],
                "scale": f"model score after activation {activation.name!r}",
            },
            "timing": timing,
            "environment": environment_details(),
            "confounders": rows,
            "verdict": {
                "overall": overall,
                "gated": [r["name"] for r in rows if r["gated"]],
                "ci_note": CI_NOTE,
            },
        }
    )


def _clean_json(value: Any) -> Any:
    """NaN and infinities become null, numpy scalars Python ones: strict JSON."""
    if isinstance(value, dict):
        return {k: _clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_json(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
