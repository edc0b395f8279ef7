"""From results.json to what the templates show: formatted, in order, with gaps marked.

Every value the report prints comes from the results dict handed in; nothing is recomputed or
re-decided here. A key the audit did not record is shown as :data:`NOT_RECORDED`, never guessed.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

from audit.constants import ILLUSTRATIVE_NOTE, STUDY_FOLDS, STUDY_LEVELS
from audit.report.formatting import (
    MODALITY_LABELS,
    NOT_RECORDED,
    as_number,
    commit_text,
    fmt_auc,
    fmt_breaking_point,
    fmt_df,
    fmt_half_width,
    fmt_interval,
    fmt_level,
    fmt_p,
    fmt_percent,
    fmt_signed,
    fmt_small,
    fmt_value,
    incomplete_reason,
    or_not_recorded,
    settings_origin_text,
)
from audit.report.plots import (
    ROLE_COLOURS,
    ROLE_LABELS,
    SET_LABELS,
    GapSeries,
    Series,
    confounder_figure_svg,
)
from audit.report.probe_context import probe_context

TEST_SETS = ("ood", "iid", "clean")
_RUN_SD = re.compile(r"between-fold SD of the measure ([0-9][0-9.eE+-]*)")
CATEGORY_NOTE = (
    "MICCAT working categories: the study's own category names are not public, so medaudit "
    "groups confounders by where they enter the imaging context."
)
TRAIN_LABELS = {
    "epochs": "epochs (maximum)",
    "batch_size": "batch size",
    "lr": "learning rate",
    "weight_decay": "weight decay",
    "patience": "early-stopping patience (epochs)",
    "dropout": "dropout before the new head",
    "input_size": "input size (px)",
    "normalize": "input normalisation",
    "augment": "augmentation",
    "rotation_deg": "rotation (degrees)",
    "shift_fraction": "shift (fraction)",
    "shear_deg": "shear (degrees)",
    "zoom_fraction": "zoom (fraction)",
    "max_steps_per_epoch": "steps per epoch (cap)",
    "deterministic": "deterministic algorithms",
}


# ----------------------------------------------------------------------------------- lookups


def _get(mapping: Any, *keys: str) -> Any:
    """Nested lookup that returns None where any key along the way is absent."""
    for key in keys:
        if not isinstance(mapping, Mapping) or key not in mapping:
            return None
        mapping = mapping[key]
    return mapping


# ---------------------------------------------------------------------------------- the verdict

OVERALL_TEXT = {
    "pass": (
        "For every confounder tested, the shortcut gap's interval lies below the margin: under "
        "this protocol the audited model's pretraining leans on the planted shortcuts no more "
        "than the reference's, up to the margin."
    ),
    "fail": (
        "For at least one confounder the shortcut gap's interval lies above the margin: under "
        "this protocol the audited model's o.o.d. AUC falls further than the reference's, by "
        "more than the margin."
    ),
    "inconclusive": (
        "No confounder fails, but for at least one the interval contains the margin: the data "
        "cannot tell whether the gap exceeds it. More test cases narrow the interval."
    ),
}


RELIANCE_MEANING = (
    "D is how much lower the reference's o.o.d. AUC would be if it leaned on the shortcut as much "
    "as the audited model; it does not depend on either model's accuracy."
)
OVERALL_TEXT_RELIANCE = {
    "pass": (
        "For every gated confounder the interval of the reliance gap D lies below the margin: "
        "under this protocol the audited model leans on the planted shortcuts no more than the "
        "reference, up to the margin. " + RELIANCE_MEANING
    ),
    "fail": (
        "For at least one confounder the interval of the reliance gap D lies above the margin, "
        "after Holm adjustment across confounders: the audited model leans on the planted "
        "shortcut more than the reference. " + RELIANCE_MEANING
    ),
    "inconclusive": (
        "No confounder fails, but for at least one gated confounder the interval of the reliance "
        "gap D contains the margin (or D could not be computed): the data cannot tell whether the "
        "audited model leans on the shortcut more than the reference. " + RELIANCE_MEANING
    ),
}


def is_reliance(results: Mapping[str, Any]) -> bool:
    """Schema 1: the gate is the reliance gap D. Schema 0 gated on the o.o.d. AUC gap S."""
    verdict = results.get("verdict") or {}
    if "measure" in verdict:
        return verdict["measure"] == "reliance_gap"
    return str(results.get("schema_version", "0")) != "0"


def overall(results: Mapping[str, Any]) -> dict[str, Any]:
    verdict = results.get("verdict")
    status = results["status"]
    if verdict and is_reliance(results):
        return {
            "verdict": verdict["overall"],
            "headline": f"Overall verdict: {verdict['overall'].upper()}",
            "explanation": OVERALL_TEXT_RELIANCE.get(verdict["overall"], ""),
            "notes": _gate_notes(results),
        }
    if verdict:
        return {
            "verdict": verdict["overall"],
            "headline": f"Overall verdict: {verdict['overall'].upper()}",
            "explanation": OVERALL_TEXT.get(verdict["overall"], ""),
        }
    if not status["complete"]:
        return {
            "verdict": "none",
            "headline": "No verdict: the audit is incomplete",
            "explanation": incomplete_reason(status),
        }
    return {
        "verdict": "none",
        "headline": "No verdict",
        "explanation": "No reference model took part, so there is no shortcut gap to judge.",
    }


def _gate_notes(results: Mapping[str, Any]) -> list[str]:
    """What page 1 must say besides the verdict: why it is inconclusive by record, which
    confounders are shown but not gated, and what an inconclusive verdict counts as."""
    verdict, gate = results["verdict"], results.get("gate") or {}
    notes = []
    if verdict.get("reason"):
        notes.append(verdict["reason"])
    shown = [r["confounder"] for r in verdict.get("per_confounder", []) if not r.get("gated", True)]
    if shown:
        notes.append(
            f"Not gated: {', '.join(shown)} (why: in its row); the verdict comes from the gated "
            "confounders only."
        )
    if gate.get("override"):
        notes.append(gate["override"])
    counted_as = gate.get("inconclusive_counted_as")
    if verdict["overall"] == "inconclusive" and counted_as:
        text = (
            f"Inconclusive counted as {counted_as} (--inconclusive-exit "
            f"{fmt_value(gate.get('inconclusive_exit'))}): exit code "
            f"{fmt_value(gate.get('exit_code'))}."
        )
        gaps = [
            entry["detectable_gap"]
            for entry in (results.get("power") or {}).values()
            if isinstance(entry, Mapping) and as_number(entry.get("detectable_gap")) is not None
        ]
        if gaps:
            text += (
                " The smallest reliance gap this audit could detect (planned before the runs) is "
                f"about {fmt_signed(max(gaps))}; a smaller one may have gone unseen."
            )
        notes.append(text)
    return notes


def verdict_rows(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Confounder name -> the verdict's row, formatted; empty when there is no verdict.

    The one place that reads either verdict: schema 1 (the reliance gap D gated, S beside it)
    or schema 0 (the o.o.d. AUC gap S gated)."""
    if is_reliance(results):
        verdict = results.get("verdict") or {}
        power = results.get("power") or {}
        return {
            row["confounder"]: _reliance_row(results, row, power.get(row["confounder"]))
            for row in verdict.get("per_confounder", [])
        }
    rows = {}
    for row in (results.get("verdict") or {}).get("per_confounder", []):
        gap = row.get("gap", {})
        rows[row["confounder"]] = {
            "verdict": row["verdict"],
            "estimate": fmt_signed(gap.get("estimate")),
            "interval": fmt_interval(gap.get("ci_low"), gap.get("ci_high")),
            "confidence": fmt_percent(gap.get("confidence")),
            "breaking_point": fmt_breaking_point(row.get("breaking_point")),
            "p_fail": fmt_p(row.get("p_fail")),
            "p_pass": fmt_p(row.get("p_pass")),
            "p_fail_adjusted": fmt_p(row.get("p_fail_adjusted")),
            "p_pass_adjusted": fmt_p(row.get("p_pass_adjusted")),
            "margin": fmt_signed(row.get("margin")),
            "counted_levels": ", ".join(fmt_level(v) for v in row.get("counted_levels", [])),
            "method": gap.get("method", NOT_RECORDED),
            "n_resamples": fmt_value(gap.get("n_resamples")),
            "seed": fmt_value(gap.get("seed")),
            "n_positive": fmt_value(gap.get("n_positive")),
            "n_negative": fmt_value(gap.get("n_negative")),
            "n_patients": fmt_value(gap.get("n_patients")) if gap.get("n_patients") else None,
            "reason": row.get("reason", ""),
            "adjusted": _adjusted_gap(row.get("gap_baseline_adjusted")),
        }
    return rows


def _gap_text(gap: Mapping[str, Any] | None) -> dict[str, str]:
    """A descriptive AUC gap (S, or the clean gap) with its interval; n/a when not computed."""
    gap = gap or {}
    estimate = fmt_signed(gap.get("estimate"))
    interval = fmt_interval(gap.get("ci_low"), gap.get("ci_high"))
    return {
        "estimate": estimate,
        "interval": interval,
        "text": f"{estimate} {interval}" if gap else "not computed",
        "se": fmt_auc(gap.get("se")),
        "recorded": bool(gap),
    }


def _role_label(role: str) -> str:
    return ROLE_LABELS.get(role, role)


def _reliance_tables(reliance: Mapping[str, Any], levels: Sequence[float]) -> dict[str, Any]:
    """The per-level measure, the model-fit check and the clean-AUC retention, formatted."""
    per_level = [
        {
            "level": fmt_level(e.get("level")),
            "c_ref": fmt_auc(e.get("clean_auc_reference")),
            "c_user": fmt_auc(e.get("clean_auc_user")),
            "k_ref": fmt_auc(e.get("lift_auc_reference")),
            "k_user": fmt_auc(e.get("lift_auc_user")),
            "o_ref": fmt_auc(e.get("ood_reference")),
            "o_ref_user": fmt_auc(e.get("ood_reference_with_user_lift")),
            "gap": fmt_signed(e.get("gap")),
        }
        for e in reliance.get("per_level") or []
    ]
    fit = [
        {
            "label": _role_label(e.get("role", "")),
            "colour": ROLE_COLOURS.get(e.get("role", ""), "#000000"),
            "level": fmt_level(e.get("level")),
            "observed": fmt_auc(e.get("observed_ood_auc")),
            "predicted": fmt_auc(e.get("predicted_ood_auc")),
            "difference": fmt_signed(e.get("difference")),
            "se": fmt_auc(e.get("se")),
        }
        for e in reliance.get("fit_check") or []
    ]
    retention = []
    entries = reliance.get("retention") or []
    for role in dict.fromkeys(e.get("role", "") for e in entries):
        by_level = {}
        for e in entries:
            index = _level_index(levels, e.get("level")) if e.get("role") == role else None
            if index is not None:
                by_level[index] = e
        retention.append(
            {
                "label": _role_label(role),
                "colour": ROLE_COLOURS.get(role, "#000000"),
                "cells": [
                    {
                        "clean_auc": fmt_auc(by_level[i].get("clean_auc")),
                        "retention": fmt_auc(by_level[i].get("retention")),
                    }
                    if i in by_level
                    else None
                    for i in range(len(levels))
                ],
            }
        )
    return {"per_level": per_level, "fit_check": fit, "retention": retention}


def _power_text(entry: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The planned resolution for one confounder (computed before the runs), formatted."""
    if not isinstance(entry, Mapping):
        return None
    if entry.get("gated") is False:
        return {"gated": False, "sized": False, "reason": entry.get("reason") or "not gated"}
    sized = as_number(entry.get("half_width")) is not None
    detectable = entry.get("detectable_gap")
    return {
        "gated": True,
        "sized": sized,
        "reason": entry.get("reason") or "",
        "half_width": fmt_half_width(entry.get("half_width")),
        "detectable_gap": fmt_signed(detectable)
        if as_number(detectable) is not None
        else ("none at this power" if sized else "n/a"),  # fmt: skip
        "pass_gap": fmt_signed(entry.get("pass_gap")),
        "equal_pass": fmt_p(entry.get("equal_pass_probability")),
        "se": fmt_auc(entry.get("se")),
        "se_test": fmt_auc(entry.get("se_test")),
        "se_runs": fmt_auc(entry.get("se_runs")),
        "assumptions": entry.get("assumptions") or NOT_RECORDED,
        "run_sd": entry.get("run_sd"),
        "perfect_upper": fmt_signed(entry.get("perfect_upper")),
        "perfect_can_pass": entry.get("perfect_can_pass"),
    }


def _reliance_row(
    results: Mapping[str, Any], row: Mapping[str, Any], power: Mapping[str, Any] | None
) -> dict[str, Any]:
    """A schema-1 row: the gated reliance gap D, and beside it the descriptive S and clean gap."""
    rel = row.get("reliance") or {}
    verdict = row["verdict"]
    gated = bool(row.get("gated", True))
    counted = [e.get("level") for e in rel.get("per_level") or []] or [
        e.get("level") for e in (row.get("shortcut_gap") or {}).get("per_level") or []
    ]
    no_runs_variance = as_number(rel.get("var_runs")) == 0.0
    return {
        "reliance": True,
        "verdict": verdict,
        "verdict_class": verdict.replace(" ", "-"),
        "gated": gated,
        "has_measure": bool(rel),
        "estimate": fmt_signed(rel.get("estimate"))
        if rel
        else ("not gated" if not gated else "n/a"),
        "interval": fmt_interval(rel.get("ci_low"), rel.get("ci_high")),
        "confidence": fmt_percent(rel.get("confidence")),
        "p_fail": fmt_p(row.get("p_fail")),
        "p_pass": fmt_p(row.get("p_pass")),
        "p_fail_adjusted": fmt_p(row.get("p_fail_adjusted")),
        "dominant": rel.get("dominant_variance") or "n/a",
        "se": fmt_auc(rel.get("se")),
        "var_test": fmt_small(rel.get("var_test")),
        "var_runs": fmt_small(rel.get("var_runs")),
        "df": fmt_df(rel.get("df"), no_runs_variance=no_runs_variance),
        "n_folds": fmt_value(rel.get("n_folds")),
        "n_runs": fmt_value(rel.get("n_runs")),
        "fold_estimates": ", ".join(fmt_signed(v) for v in rel.get("fold_estimates") or [])
        or "n/a",
        "runs_variance_available": rel.get("runs_variance_available"),
        "n_positive": fmt_value(rel.get("n_positive")),
        "n_negative": fmt_value(rel.get("n_negative")),
        "n_patients": fmt_value(rel.get("n_patients")),
        "counted_levels": ", ".join(fmt_level(v) for v in counted) or "n/a",
        "margin": fmt_signed(row.get("margin")),
        "breaking_point": fmt_breaking_point(row.get("breaking_point")),
        "reason": row.get("reason") or "",
        "reason_short": _without_notes(row.get("reason") or "", rel.get("notes") or []),
        "notes": list(rel.get("notes") or []),
        "shortcut_gap": _gap_text(row.get("shortcut_gap")),
        "clean_gap": _gap_text(row.get("clean_gap")),
        "tables": _reliance_tables(rel, results["protocol"]["levels"]),
        "power": _power_text(power),
    }


def _without_notes(reason: str, notes: Sequence[str]) -> str:
    """The reason without the measure's notes it ends with: page 1 lists each note once."""
    for note in reversed(notes):
        if note and reason.endswith(note):
            reason = reason[: -len(note)].rstrip()
    return reason


def shared_notes(rows: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Each distinct note of the measures, with the confounders it applies to (page 1)."""
    seen: dict[str, list[str]] = {}
    for name, row in rows.items():
        for note in row.get("notes") or []:
            seen.setdefault(note, []).append(name)
    return [f"{note} ({', '.join(names)})" for note, names in seen.items()]


def _adjusted_gap(adjusted: Mapping[str, Any] | None) -> str:
    """The baseline-adjusted gap (descriptive): S minus the gap at p = 0, with its interval."""
    if not adjusted:
        return "not computed (needs level 0 and one other counted level)"
    return (
        f"{fmt_signed(adjusted.get('estimate'))} "
        f"{fmt_interval(adjusted.get('ci_low'), adjusted.get('ci_high'))}"
    )


def thresholds(results: Mapping[str, Any]) -> dict[str, str]:
    declared = dict(results["thresholds"])
    declared.update((results.get("verdict") or {}).get("thresholds") or {})
    counted = declared.get("counted_levels")
    return {
        "margin": fmt_signed(declared.get("margin")),
        "alpha": fmt_value(declared.get("alpha")),
        "confidence": fmt_percent(1 - declared["alpha"])
        if as_number(declared.get("alpha"))
        else "n/a",
        "counted_levels": ("every level run above 0" if is_reliance(results) else "every level run")
        if not counted
        else ", ".join(fmt_level(v) for v in counted),
        "n_resamples": fmt_value(declared.get("n_resamples")),
        "seed": or_not_recorded(declared.get("seed")),
        "breaking_auc": or_not_recorded(declared.get("breaking_auc")),
        "clip": or_not_recorded(declared.get("clip")),
    }


# ---------------------------------------------------------------------------------- provenance


def _model_by_role(results: Mapping[str, Any], role: str) -> Mapping[str, Any] | None:
    return next((m for m in results["models"] if m["role"] == role), None)


def model_summary(model: Mapping[str, Any] | None) -> str:
    if model is None:
        return "none took part"
    return f"{model['display_name']} ({model['arch']}, {model['format']}; sha256 {model['sha256'][:12]}...)"


def _trust_text(model: Mapping[str, Any]) -> str:
    flags = model.get("trust_flags")
    if not isinstance(flags, Mapping):
        return NOT_RECORDED
    used = [name for name, on in flags.items() if on]
    return ("used: " + ", ".join(used)) if used else "none (no code in the checkpoint was run)"


def models(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for model in results["models"]:
        role = model["role"]
        rows = [
            ("name", model["display_name"]),
            ("architecture", model["arch"]),
            ("file format", model["format"]),
            ("preprocessing of its pretraining", model["preprocessing"]),
            ("SHA-256 of the weights file", model["sha256"]),
            ("trust flags", _trust_text(model)),
        ]
        if model.get("notes"):
            rows.append(("loading notes", fmt_value(model["notes"])))
        out.append(
            {
                "role": role,
                "label": ROLE_LABELS.get(role, role),
                "colour": ROLE_COLOURS.get(role, "#000000"),
                "rows": rows,
            }
        )
    return out


def budget(results: Mapping[str, Any]) -> str:
    """The tier and, for a reduced audit, what it cut from the study's protocol."""
    value = results.get("budget")
    if not isinstance(value, Mapping):
        return NOT_RECORDED if not value else str(value)
    tier = value.get("tier") or value.get("name") or NOT_RECORDED
    parts = ["the study's protocol" if tier == "study" else str(tier)]
    if value.get("deviations"):
        parts[0] += ": " + "; ".join(value["deviations"])
    if value.get("runs") is not None:
        spent = as_number(value.get("fine_tuning_seconds"))
        time = f", {spent / 60:.1f} min of fine-tuning" if spent is not None else ""
        parts.append(f"{value['runs']} runs{time}")
    return "; ".join(parts)


def _split_row(name: str, counts: Mapping[str, Any]) -> dict[str, str]:
    cases, positives = counts.get("cases"), counts.get("positives")
    negatives = cases - positives if isinstance(cases, int) and isinstance(positives, int) else None
    by_sex = counts.get("by_sex")
    return {
        "split": name,
        "cases": or_not_recorded(cases),
        "positives": or_not_recorded(positives),
        "negatives": or_not_recorded(negatives),
        "patients": or_not_recorded(counts.get("patients")),
        "by_sex": NOT_RECORDED if not isinstance(by_sex, Mapping) else fmt_value(dict(by_sex)),
    }


def data(results: Mapping[str, Any]) -> dict[str, Any]:
    d = results["data"]
    splits = d.get("splits") or {}
    table = []
    for i, fold in enumerate(splits.get("folds", [])):
        for part in ("train", "val"):
            if part in fold:
                table.append(_split_row(f"fold {i + 1} {part}", fold[part]))
    if "test" in splits:
        table.append(_split_row("test (shared by all folds)", splits["test"]))
    excluded = d.get("excluded")
    if excluded is None:
        excluded_text = NOT_RECORDED
    elif not excluded:
        excluded_text = "none"
    else:
        excluded_text = "; ".join(f"{reason}: {count}" for reason, count in excluded.items())
    rows = [
        ("source", d["source"] + (" (synthetic phantom images)" if d["synthetic"] else "")),
        ("modality", MODALITY_LABELS.get(d["modality"], d["modality"])),
        ("images / patients", f"{d['n_cases']} images of {d['n_patients']} patients"),
        ("image size (px)", or_not_recorded(d.get("image_size"))),
        ("manifest hash", d["manifest_hash"]),
        ("excluded / quarantined files", excluded_text),
    ]
    return {"rows": rows, "splits": table}


def _repeats_text(repeats: int) -> str:
    return f" x {repeats} repeats (a fold's repeats averaged first)" if repeats > 1 else ""


def protocol(results: Mapping[str, Any]) -> dict[str, Any]:
    p = results["protocol"]
    rows = [
        ("correlation levels p", ", ".join(fmt_level(v) for v in p["levels"])),
        ("folds (patient-level train / val)", str(p["folds"])),
        ("repeats per fold (independent training seeds)", str(p.get("repeats", 1))),
        ("validation fraction", or_not_recorded(p.get("val_fraction"))),
        ("test fraction", or_not_recorded(p.get("test_fraction"))),
        ("protocol seed", str(p["seed"])),
    ]
    train = [
        (TRAIN_LABELS.get(k, k.replace("_", " ")), fmt_value(v)) for k, v in p["train"].items()
    ]
    confs = [
        {
            "name": c["name"],
            "category": c["category"],
            "kind": c["kind"],
            "description": c["description"],
            "params": fmt_value(c["params"]) if c["params"] else "none",
        }
        for c in p["confounders"]
    ]
    return {"rows": rows, "train": train, "confounders": confs}


# ------------------------------------------------------------------------- per-confounder results


def _band(entry: Mapping[str, Any]) -> tuple[tuple | None, tuple | None, str]:
    """The interval drawn around a mean AUC, and what it is."""
    if entry.get("ci_low") is not None and entry.get("ci_high") is not None:
        return tuple(entry["ci_low"]), tuple(entry["ci_high"]), "bootstrap interval"
    means, sds = entry.get("mean", []), entry.get("sd", [])
    if sds and any(as_number(s) is not None for s in sds):
        low = tuple(
            None if as_number(m) is None or as_number(s) is None else m - s
            for m, s in zip(means, sds, strict=True)
        )
        high = tuple(
            None if as_number(m) is None or as_number(s) is None else m + s
            for m, s in zip(means, sds, strict=True)
        )
        return low, high, "mean \u00b1 1 s.d. over folds (clipped to [0, 1])"
    return None, None, "none (one fold: no spread to show)"


def _roles(auc: Mapping[str, Any]) -> list[str]:
    """Roles in the report's fixed order: audited model, reference, random init, then any other."""
    known = [role for role in ROLE_COLOURS if role in auc]
    return known + sorted(set(auc) - set(ROLE_COLOURS))


def _series(auc: Mapping[str, Any]) -> tuple[list[Series], set[str]]:
    series, bands = [], set()
    for role in _roles(auc):
        for test_set in TEST_SETS:
            entry = _get(auc, role, test_set)
            if entry is None:
                continue
            low, high, kind = _band(entry)
            bands.add(kind)
            series.append(Series(role, test_set, tuple(entry["mean"]), low, high))
    return series, bands


def _per_level_series(
    entries: Sequence[Mapping[str, Any]] | None, margin: Any, label: str, *, dashed: bool = False
) -> GapSeries | None:
    points = [e for e in entries or [] if as_number(e.get("level")) is not None]
    if not points:
        return None
    return GapSeries(
        tuple(float(e["level"]) for e in points),
        tuple(as_number(e.get("gap")) for e in points),
        (None,) * len(points),  # schema 1 records no per-level interval
        (None,) * len(points),
        as_number(margin),
        label,
        dashed,
    )


def _gap_series(row: Mapping[str, Any] | None) -> GapSeries | list[GapSeries] | None:
    """The plot's gap panel: schema 0, the gated S per level with its interval; schema 1, the
    gated D_p per level and, dashed, the descriptive S per level (no per-level intervals)."""
    if row is not None and "reliance" in row:
        gaps = [
            _per_level_series(
                (row.get("reliance") or {}).get("per_level"), row.get("margin"),
                "reliance gap D_p (gated as the mean)",
            ),
            _per_level_series(
                (row.get("shortcut_gap") or {}).get("per_level"), row.get("margin"),
                "o.o.d. AUC gap S (not gated)", dashed=True,
            ),
        ]  # fmt: skip
        gaps = [g for g in gaps if g is not None]
        if gaps and gaps[0].dashed:  # no measure gated: S alone, and no margin it must meet
            gaps = [dataclasses.replace(gaps[0], margin=None)]
        return gaps or None
    gap = (row or {}).get("gap") or {}
    levels = (row or {}).get("counted_levels")
    if not levels or len(gap.get("per_level_gap", [])) != len(levels):
        return None
    return GapSeries(
        tuple(levels),
        tuple(gap["per_level_gap"]),
        tuple(gap.get("per_level_ci_low") or [None] * len(levels)),
        tuple(gap.get("per_level_ci_high") or [None] * len(levels)),
        as_number(row.get("margin")),
    )


def _svg_data_url(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def _spread(entry: Mapping[str, Any], i: int) -> str:
    """The second line of an AUC cell: its interval when recorded, else +- its s.d. over folds."""
    low, high = _get(entry, "ci_low"), _get(entry, "ci_high")
    if low is not None and high is not None and i < len(low) and as_number(low[i]) is not None:
        return f"[{fmt_auc(low[i])}, {fmt_auc(high[i])}]"
    sds = entry.get("sd") or []
    return f"\u00b1 {sds[i]:.3f}" if i < len(sds) and as_number(sds[i]) is not None else ""


def _under_protocol(results: Mapping[str, Any]) -> bool:
    """An audit on the study's lists: its tables add the study's AUC beside the binary one."""
    return str((results.get("data") or {}).get("split_source", "")).startswith("study lists")


def _auc_table(auc: Mapping[str, Any], n_levels: int) -> list[dict[str, Any]]:
    rows = []
    for role in _roles(auc):
        for test_set in TEST_SETS:
            entry = _get(auc, role, test_set)
            if entry is None:
                continue
            cells = [
                {
                    "mean": fmt_auc(entry["mean"][i] if i < len(entry["mean"]) else None),
                    "spread": _spread(entry, i),
                }
                for i in range(n_levels)
            ]
            rows.append(
                {
                    "role": role,
                    "label": ROLE_LABELS.get(role, role),
                    "colour": ROLE_COLOURS.get(role, "#000000"),
                    "test_set": SET_LABELS[test_set],
                    "cells": cells,
                }
            )
    return rows


def _operating_table(operating: dict[str, Any], n_levels: int) -> list[dict[str, Any]]:
    """Rows of sensitivity / specificity (at the validation threshold) and ECE per level."""
    rows = []
    for role in _roles(operating):
        for test_set in TEST_SETS:
            entry = _get(operating, role, test_set)
            if entry is None:
                continue

            def at(measure: str, i: int, entry: dict = entry) -> Any:
                values = entry.get(measure, [])
                return values[i] if i < len(values) else None

            cells = [
                {
                    "sens_spec": f"{fmt_auc(at('sensitivity', i))} / {fmt_auc(at('specificity', i))}",
                    "ece": fmt_auc(at("ece", i)),
                }
                for i in range(n_levels)
            ]
            rows.append(
                {
                    "label": ROLE_LABELS.get(role, role),
                    "colour": ROLE_COLOURS.get(role, "#000000"),
                    "test_set": SET_LABELS[test_set],
                    "cells": cells,
                }
            )
    return rows


def _level_index(levels: Sequence[float], level: Any) -> int | None:
    number = as_number(level)
    if number is None:
        return None
    return next((i for i, lv in enumerate(levels) if abs(lv - number) < 1e-9), None)


def _p_list(values: Any) -> str:
    if values is None:
        return NOT_RECORDED
    if isinstance(values, list | tuple):
        return ", ".join(fmt_p(v) for v in values) if values else NOT_RECORDED
    return fmt_p(values)


def _p_entry(test: Mapping[str, Any], key: str) -> str:
    """Missing key: not recorded; recorded as null: not computable (e.g. one fold, one class)."""
    if key not in test:
        return NOT_RECORDED
    return "n/a" if test[key] is None else _p_list(test[key])


def _stats_table(
    name: str, results: Mapping[str, Any], row: Mapping[str, Any] | None
) -> list[dict[str, str]]:
    """One row per level: both models' o.o.d. AUC, the gap with its interval, paired tests.

    Schema 1: the gap is S's per-level part (per-run averages; no per-level interval)."""
    levels = results["protocol"]["levels"]
    auc = results["auc"].get(name, {})
    user_ood = _get(auc, "user", "ood", "mean") or []
    ref_ood = _get(auc, "reference", "ood", "mean") or []
    gap = (row or {}).get("gap") or {}
    counted = (row or {}).get("counted_levels") or []
    if row is not None and "reliance" in row:
        entries = (row.get("shortcut_gap") or {}).get("per_level") or []
        counted = [e.get("level") for e in entries]
        gap = {"per_level_gap": [e.get("gap") for e in entries]}
    tests = {}
    for entry in (results.get("statistics") or {}).get(name, []):
        index = _level_index(levels, entry.get("level"))
        if index is not None:
            tests[index] = entry
    table = []
    for i, level in enumerate(levels):
        k = _level_index(counted, level)
        test = tests.get(i, {})
        table.append(
            {
                "level": fmt_level(level),
                "counted": "yes" if k is not None else "no",
                "user": fmt_auc(user_ood[i] if i < len(user_ood) else None),
                "reference": fmt_auc(ref_ood[i] if i < len(ref_ood) else None),
                "gap": fmt_signed(gap["per_level_gap"][k]) if k is not None else "",
                "gap_ci": fmt_interval(gap["per_level_ci_low"][k], gap["per_level_ci_high"][k])
                if k is not None and "per_level_ci_low" in gap
                else "",
                "delong": _p_entry(test, "delong_p"),
                "delong_adjusted": _p_entry(test, "delong_p_adjusted"),
                "permutation": _p_entry(test, "permutation_p"),
                "permutation_adjusted": _p_entry(test, "permutation_p_adjusted"),
                "study_test": _p_entry(test, "study_test_p"),
            }
        )
    return table


def _example(results: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    example = (results.get("examples") or {}).get(name)
    if not isinstance(example, Mapping) or not example.get("clean"):
        return None
    png = "data:image/png;base64,"
    return {
        "clean": png + example["clean"],
        "confounded": png + example["confounded"],
        "difference": png + example["difference"] if example.get("difference") else None,
        "gain": fmt_value(example.get("difference_gain")),
        "source": "synthetic phantom" if example.get("synthetic", True) else "the audited data",
        "image_size": or_not_recorded(example.get("image_size")),
        "shown_size": or_not_recorded(example.get("shown_size")),
    }


def confounder_sections(
    results: Mapping[str, Any], rows: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    levels = results["protocol"]["levels"]
    verdict_by_name = {
        r["confounder"]: r for r in (results.get("verdict") or {}).get("per_confounder", [])
    }
    sections = []
    for conf in results["protocol"]["confounders"]:
        name = conf["name"]
        auc = results["auc"].get(name, {})
        series, bands = _series(auc)
        raw_row = verdict_by_name.get(name)
        plot = None
        if series:
            plot = _svg_data_url(confounder_figure_svg(levels, series, _gap_series(raw_row)))
        sections.append(
            {
                "name": name,
                "category": conf["category"],
                "kind": conf["kind"],
                "description": conf["description"],
                "params": fmt_value(conf["params"]) if conf["params"] else "none",
                "has_clean_test": conf.get("has_clean_test", conf["kind"] == "pixel"),
                "clean_test": conf.get("clean_test") or "none",
                "verdict": rows.get(name),
                "plot": plot,
                "bands": "; ".join(sorted(bands)) if bands else "none",
                "example": _example(results, name),
                "auc_table": _auc_table(auc, len(levels)),
                "study_auc_table": _auc_table(
                    (results.get("study_auc") or {}).get(name, {}), len(levels)
                )
                if _under_protocol(results)
                else [],  # fmt: skip
                "stats": _stats_table(name, results, raw_row),
                "has_tests": bool((results.get("statistics") or {}).get(name)),
                "operating_table": _operating_table(
                    (results.get("operating") or {}).get(name, {}), len(levels)
                ),
            }
        )
    return sections


# ----------------------------------------------------------------------------- the rest of it


def limitations(results: Mapping[str, Any]) -> list[str]:
    p, items = results["protocol"], []
    if results["illustrative"]:
        items.append(
            "The data are synthetic phantom images and the models are small stand-ins: this "
            "report demonstrates the tool and is no evidence about any model."
        )
    items.append(
        "The verdict measures how the model's pretraining reacts to confounded fine-tuning under "
        "this protocol. It says nothing about the shipped model's accuracy, calibration or "
        "shortcuts on its own data, and nothing about confounders not listed here."
    )
    if is_reliance(results):
        items.extend(RELIANCE_LIMITATIONS)
    else:
        items.append(
            "The interval of S comes from resampling test cases with the fine-tuned models fixed; "
            "variation from fine-tuning itself enters only through the average over folds."
        )
    if p["folds"] < STUDY_FOLDS or len(p["levels"]) < len(STUDY_LEVELS):
        items.append(
            f"This audit ran {p['folds']} fold(s) and {len(p['levels'])} correlation level(s); "
            f"the study's protocol uses {STUDY_FOLDS} folds and levels "
            f"{', '.join(fmt_level(v) for v in STUDY_LEVELS)}."
        )
    archs = {m["role"]: m["arch"] for m in results.get("models", [])}
    if "user" in archs and "reference" in archs and archs["user"] != archs["reference"]:
        items.append(
            f"The audited model's architecture ({archs['user']}) differs from the reference's "
            f"({archs['reference']}): the gap mixes the effect of pretraining data with that of "
            "architecture and capacity."
        )
    if results.get("data", {}).get("split_source", "").startswith("study lists"):
        items.append(
            "Splits come from the study's published image lists, which let a few patients appear in "
            "both a training pool and the test set (see the data section); they were kept so the "
            "study is reproduced exactly."
        )
    if is_reliance(results):
        for c in p["confounders"]:
            if c["kind"] == "sampling":
                clean = c.get("clean_test")
                items.append(
                    f"A sampling confounder ({c['name']}) changes which cases are drawn, not "
                    "pixels, so it has no example image; "
                    + (
                        f"its clean test set holds {clean}."
                        if clean
                        else "it has no clean test set."
                    )
                )
    elif any(c["kind"] == "sampling" for c in p["confounders"]):
        items.append(
            "A sampling confounder (such as sex) changes which cases are drawn, not pixels, so it "
            "has no clean test set and no example image."
        )
    items.append(CATEGORY_NOTE)
    items.append(
        "Descriptive per-level tests (DeLong, permutation) do not gate the verdict; where this "
        f"audit did not record them the report says '{NOT_RECORDED}'."
    )
    items.append(
        "The PDF is written as PDF/A-3b by WeasyPrint; its conformance has not been checked by an "
        "independent PDF/A validator."
    )
    return items


RELIANCE_LIMITATIONS = (
    "The reliance gap D is read on an o.o.d. AUC scale through the binormal model: equal lift "
    "gives D = 0 whatever the models' scores look like, but reading its size as o.o.d. AUC "
    "points leans on that model. The model-fit check in each confounder's section tests it.",
    "The interval of D adds the test patients' variance (delta method) and the between-run "
    "variance (the spread of the per-fold measures, F - 1 degrees of freedom); with few folds "
    "the latter is itself uncertain, and with one fold it cannot be estimated at all, so the "
    "interval is then too narrow by the unknown training variance.",
    "D is an average over the counted levels and the runs: a model that latches on the shortcut "
    "in some fine-tuning runs and not in others can pass on average.",
)


def _seconds(results: Mapping[str, Any]) -> str:
    total = sum(r.get("seconds") or 0.0 for r in results.get("runs", []))
    return f"{total:.1f} s of fine-tuning and evaluation over {len(results.get('runs', []))} runs"


def reproducibility(
    results: Mapping[str, Any], results_sha256: str, rendered_utc: str
) -> dict[str, Any]:
    env = results.get("environment") or {}
    prov = results.get("provenance") or {}
    status = results["status"]
    hardware = dict(prov.get("hardware") or {})
    for key in ("device", "gpu", "cuda", "cudnn", "threads", "platform"):
        if key in env:
            hardware.setdefault(key, env[key])
    determinism = {"train.deterministic": results["protocol"]["train"].get("deterministic")}
    determinism.update(prov.get("determinism") or {})
    rows = [
        ("command", results.get("command") or NOT_RECORDED),
        ("tool", f"{results['tool']['name']} {results['tool']['version']}"),
        ("tool commit", commit_text(prov)),
        ("python", prov.get("python") or env.get("python") or NOT_RECORDED),
        ("audit id", results["audit_id"]),
        ("results.json SHA-256", results_sha256),
        ("audit finished (UTC)", results["created_utc"]),
        ("audit started (UTC)", or_not_recorded(prov.get("started_utc"))),
        ("report rendered (UTC)", rendered_utc),
        (
            "runs",
            f"{status['runs_done']} of {status['runs_total']} finished, {status['runs_reused']} "
            f"reused from an earlier invocation, {status['runs_failed']} failed",
        ),
        ("compute", _seconds(results)),
        ("protocol seed", str(results["protocol"]["seed"])),
    ]
    if not is_reliance(results):  # schema 1's verdict draws no bootstrap resamples
        rows.append(("bootstrap seed", thresholds(results)["seed"]))
    return {
        "rows": rows,
        "libraries": sorted((prov.get("libraries") or {}).items()),
        "hardware": [(k.replace("_", " "), fmt_value(v)) for k, v in hardware.items()],
        "determinism": [(k, fmt_value(v)) for k, v in determinism.items()],
        "has_libraries": bool(prov.get("libraries")),
    }


GLOSSARY = (
    ("AUC", "Area under the ROC curve: the chance that a random positive case scores above a "
     "random negative one. 0.5 is chance, 1 is perfect."),
    ("correlation level p", "The fraction of positive training images that carry the "
     "confounder; at p = 1 every positive does and no negative does."),
    ("i.i.d. test set", "Built like training: positives carry the confounder with probability p."),
    ("o.o.d. test set", "The correlation reversed: the confounder on every negative, on no "
     "positive. A model that learned the shortcut scores below chance here."),
    ("clean test set", "No confounder at all (pixel confounders only)."),
    ("shortcut gap S", "Mean over the counted levels of (reference o.o.d. AUC - audited model "
     "o.o.d. AUC), each model's per-case scores averaged over folds. Positive S: the audited "
     "model loses more to the shortcut than the reference."),
    ("margin", "The largest S tolerated, declared before the runs."),
    ("alpha", "The error rate the verdict controls across confounders; intervals are at "
     "confidence 1 - alpha."),
    ("bootstrap interval", "The percentile interval of S over test-case resamples, stratified by "
     "class and paired (the same resample for both models and every level)."),
    ("Holm adjustment", "A step-down correction that keeps the family-wise error rate at alpha "
     "across the confounders."),
    ("breaking point", "The lowest correlation level at which the audited model's o.o.d. AUC "
     "falls below the breaking AUC (chance); 'not reached' if it never does."),
    ("DeLong test", "A paired test of two correlated AUCs on the same cases (descriptive here)."),
    ("sign-flip test", "medaudit's paired test across folds: the sign of each fold's AUC "
     "difference flipped in every way, enumerated exactly (descriptive here)."),
    ("the study's test", "An unpaired two-sample permutation test of the two models' per-fold "
     "o.o.d. AUCs, every split enumerated (252 for 5 folds against 5), two-sided and unadjusted, "
     "as the study ran it (descriptive here)."),
    ("MICCAT category", "Where a confounder enters the imaging context: patient, acquisition, "
     "processing or annotation (working names)."),
    ("reference", "A model pretrained on medical images (RadImageNet), fine-tuned side by side "
     "with the audited model under the same protocol."),
    ("random init", "The same architecture without pretraining, when run: a floor, not a target."),
    ("manifest hash", "The identity of the data: the case list and a digest of every pixel."),
    ("audit id", "A hash of every run specification of the audit."),
    ("PDF/A-3b", "The archival PDF profile used for this file; results.json is embedded in it as "
     "an associated file."),
)  # fmt: skip


_V0_ONLY = {"shortcut gap S", "margin", "bootstrap interval", "Holm adjustment"}
GLOSSARY_RELIANCE = (
    ("reliance gap D", "The gated measure: the mean over the counted levels p > 0 of D_p = "
     "\u03a6(z(C_ref) - z(K_ref)) - \u03a6(z(C_ref) - z(K_user)), z = \u03a6\u207b\u00b9 of the "
     "clipped AUC. " + RELIANCE_MEANING + " Positive D: the audited model leans on the shortcut "
     "more; D = 0 whenever the two lift AUCs are equal."),
    ("lift AUC K", "How far the confounder lifts a negative's score: the AUC of negatives "
     "carrying the confounder against negatives without it (a pixel confounder: the same "
     "negatives clean; sex: the negatives of the other value), pairs of different patients only. "
     "0.5: no lift."),
    ("clean AUC C", "The AUC on the clean test set, where the confounder tells nothing. D uses "
     "the reference's C only; the audited model's C is shown, never used."),
    ("retention", "A model's clean AUC at a level divided by its clean AUC at p = 0: below 1, "
     "the model lost real signal as the correlation grew."),
    ("fit check", "Per model and level, the observed o.o.d. AUC against the binormal prediction "
     "\u03a6(z(C) - z(K)), with the test-patient SE of the difference; a difference large "
     "against its SE says D's reading as o.o.d. AUC points is off there."),
    ("V_test / V_runs", "The two parts of D's variance: V_test from the test patients (delta "
     "method on DeLong structural components, every run paired on the same patients), V_runs "
     "from the spread of the per-fold measures (their variance over F folds, divided by F). "
     "SE\u00b2 = V_test + V_runs."),
    ("generalized pivot interval", "D \u00b1 the quantile of Z \u221a(V_test + V_runs (F - 1) / W), "
     "W ~ \u03c7\u00b2 with F - 1 degrees of freedom: a t-like interval that is t_{F-1} when the "
     "runs' variance dominates and normal when the test patients' does. Satterthwaite's effective "
     "df is reported beside it."),
    ("margin", "The largest reliance gap D tolerated, declared before the runs."),
    ("Holm adjustment", "A step-down correction of the fail side's p-values across the gated "
     "confounders, keeping the family-wise error rate at alpha / 2; the pass side needs none, "
     "since a pass needs every confounder's interval below the margin (intersection-union)."),
    ("o.o.d. AUC gap S", "Descriptive, not gated: the reference's minus the audited model's "
     "o.o.d. AUC, averaged over runs and the counted levels. It mixes accuracy with shortcut "
     "reliance (a merely less accurate model shows S > 0); it was the gate of schema-0 reports."),
    ("clean gap", "Descriptive: the reference's minus the audited model's clean AUC, the same "
     "way as S."),
    ("not gated", "Shown but left out of the overall verdict, because the design cannot measure "
     "it (the study's sex lists hold no male negatives, so no lift AUC)."),
)  # fmt: skip


CLEAN_SET_RELIANCE = (
    "No confounder signal at all: for a pixel confounder the test cases without the artifact; "
    "for a sampling one outside the study's lists, the cases of both classes with the value "
    "training pairs with negatives. The study's sex lists have none."
)


def glossary(results: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    if not is_reliance(results):
        return GLOSSARY
    out: list[tuple[str, str]] = []
    for term, definition in GLOSSARY:
        if term == "clean test set":
            out.append((term, CLEAN_SET_RELIANCE))
            out.extend(GLOSSARY_RELIANCE)
        elif term not in _V0_ONLY:
            out.append((term, definition))
    return tuple(out)


def power_summary(results: Mapping[str, Any], rows: Mapping[str, Any]) -> dict[str, Any] | None:
    """What page 1 says about the planned resolution besides each row's half-width and
    detectable gap: the between-run SD it assumed (the record's ``run_sd``; else read from the
    assumptions it states), and whether even a model with no shortcut reliance could not be
    expected to pass. None without a power record."""
    power = results.get("power")
    if not isinstance(power, Mapping) or not power:
        return None
    planned = [row["power"] for row in rows.values() if row.get("power") and row["power"]["gated"]]
    sds = {fmt_value(p["run_sd"]) for p in planned if as_number(p["run_sd"]) is not None}
    if not sds:
        sds = {
            m.group(1)
            for p in planned
            if p["assumptions"] != NOT_RECORDED
            for m in [_RUN_SD.search(p["assumptions"])]
            if m
        }
    cannot = [
        name
        for name, row in rows.items()
        if (row.get("power") or {}).get("perfect_can_pass") is False and row["power"]["gated"]
    ]
    if sds:
        run_sd = f"assumed between-run SD of the measure {' / '.join(sorted(sds))}"
    else:
        stated = "; ".join(dict.fromkeys(p["assumptions"] for p in planned if p["sized"]))
        run_sd = f"assumptions: {stated}" if stated else "assumptions not recorded"
    return {"run_sd": run_sd, "cannot_pass": cannot}


def _caveats(warnings: Mapping[str, Any] | None) -> str:
    """The data's own caveats (counted on kept images), for page 1's data line."""
    if not warnings:
        return ""
    return "; caveats: " + "; ".join(f"{n} image(s) with {kind}" for kind, n in warnings.items())


def report_context(
    results: Mapping[str, Any], *, results_sha256: str, rendered_utc: str
) -> dict[str, Any]:
    """Everything the templates show, derived from ``results`` only."""
    if not results["status"]["complete"]:  # an incomplete audit decides nothing, whatever it says
        results = {**results, "verdict": None, "gate": None}
    rows = verdict_rows(results)
    reliance = is_reliance(results)
    d = results["data"]
    user, reference = _model_by_role(results, "user"), _model_by_role(results, "reference")
    t = thresholds(results)
    facts = [
        ("audited model", model_summary(user)),
        ("reference", model_summary(reference)),
        (
            "data",
            f"{d['source']} ({d['modality']}): {d['n_cases']} images of {d['n_patients']} "
            f"patients; manifest {d['manifest_hash']}" + _caveats(d.get("warnings")),
        ),
        ("budget", budget(results)),
        (
            "protocol",
            f"levels {', '.join(fmt_level(v) for v in results['protocol']['levels'])}; "
            f"{results['protocol']['folds']} fold(s)"
            + _repeats_text(results["protocol"].get("repeats", 1)),
        ),
        (
            "declared in advance",
            f"margin {t['margin']} on the reliance gap D, alpha {t['alpha']}, counted levels "
            f"{t['counted_levels']}, AUC clip {t['clip']}"
            if reliance
            else f"margin {t['margin']}, alpha {t['alpha']}, counted levels "
            f"{t['counted_levels']}, {t['n_resamples']} bootstrap resamples",
        ),
    ]
    controls = controls_text(results.get("controls"))
    if controls is not None:
        facts.append(("controls", controls))
    origin = settings_origin_text(results.get("settings_origin"), brief=True)
    if origin is not None:
        facts.append(("settings from", origin))
    if not reliance:  # schema 1's page 1 gives the date in its subtitle only, to keep one page
        facts.append(("audit date (UTC)", results["created_utc"]))
    return {
        "r": results,
        "audit_id": results["audit_id"],
        "sha256": results_sha256,
        "rendered_utc": rendered_utc,
        "illustrative": bool(results["illustrative"]),
        "illustrative_note": results.get("illustrative_note") or ILLUSTRATIVE_NOTE,
        "overall": overall(results),
        "rows": rows,
        "thresholds": t,
        "ci_note": (results.get("verdict") or {}).get("ci_note"),
        "facts": facts,
        "models": models(results),
        "data": data(results),
        "protocol": protocol(results),
        "category_note": CATEGORY_NOTE,
        "sections": confounder_sections(results, rows),
        "limitations": limitations(results),
        "repro": reproducibility(results, results_sha256, rendered_utc),
        "glossary": glossary(results),
        "reliance": reliance,
        "power": power_summary(results, rows) if reliance else None,
        "shared_notes": shared_notes(rows) if reliance else [],
        "verdict_method": (results.get("verdict") or {}).get("method") or NOT_RECORDED,
        "shortcut_gap_note": (results.get("verdict") or {}).get("shortcut_gap_note") or "",
        "not_recorded": NOT_RECORDED,
        "role_colours": ROLE_COLOURS,
        "role_labels": ROLE_LABELS,
        "probe": _probe_section(results),
    }


def controls_text(controls: Mapping[str, Any] | None) -> str | None:
    """Page 1's one line on the controls: did every run train, did each model learn the task,
    could a detector see each artifact at the input size (None: not recorded)."""
    if not isinstance(controls, Mapping):
        return None
    training, clean = controls.get("training") or {}, controls.get("clean_auc") or {}
    parts = []
    if training:
        trained = training.get("runs_checked", 0) - training.get("runs_failed", 0)
        mark = "" if training.get("passed") else " (FAILED)"
        parts.append(f"training: {trained} of {training.get('runs_checked')} runs trained{mark}")
    if clean:
        bounds = ", ".join(
            f"{ROLE_LABELS.get(r['role'], r['role'])} {fmt_auc(r.get('lower'))}"
            for r in clean.get("per_model") or []
        )
        mark = "" if clean.get("passed") else " (FAILED)"
        parts.append(
            f"clean AUC lower bound {bounds or 'not computed'} > {clean.get('min_clean_auc')}{mark}"
        )
    seen = [
        f"{name} {fmt_auc(r.get('auc'))}" + ("" if r.get("passed") else " (not tested)")
        for name, r in (controls.get("learnable") or {}).items()
        if r.get("applicable")
    ]
    if seen:
        parts.append("artifact detector AUC: " + ", ".join(seen))
    return "; ".join(parts)


def _probe_section(results: Mapping[str, Any]) -> dict[str, Any] | None:
    """The embedded probe's section (``check --probe``); None when the audit ran without one."""
    probe = results.get("probe")
    if not isinstance(probe, Mapping):
        return None
    section = probe_context(probe)
    section["gate"] = (results.get("gate") or {}).get("overall")  # what the exit code followed
    return section
