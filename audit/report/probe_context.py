"""From a probe document (kind "probe") to what its report section shows: formatted, in order.

The same section appears in an audit report (when ``check --probe`` embedded the probe under
``results["probe"]``) and in the standalone probe report, so everything here is derived from the
probe document alone. Nothing is recomputed or re-decided: verdicts, intervals and p-values are
the ones the probe recorded; a missing value is shown as missing, never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from audit.constants import ILLUSTRATIVE_NOTE, NOT_GATED
from audit.report.formatting import (
    MODALITY_LABELS,
    NOT_RECORDED,
    as_number,
    commit_text,
    fmt_auc,
    fmt_interval,
    fmt_p,
    fmt_percent,
    fmt_range,
    fmt_signed,
    fmt_value,
    or_not_recorded,
)

MAX_WORST_CASES = 10
SEX_GROUPS = (("F", "female (F)"), ("M", "male (M)"), ("unknown", "sex not recorded"))

OVERALL_TEXT = {
    "pass": (
        "For every gated confounder, the intervals lie within the limits declared in advance (the "
        "mean score shift and the flip rate for a pixel confounder; the AUC gap between sexes "
        "where it was gated): the shipped model's output moved less than the limits allow."
    ),
    "fail": (
        "For at least one gated confounder, an interval lies wholly beyond its declared limit: "
        "adding the confounder alone, with the anatomy unchanged, moved the shipped model's "
        "output more than the limits allow (for sex: its AUC differs between the subgroups by "
        "more than the limit). The model reacts to that confounder."
    ),
    "inconclusive": (
        "No gated confounder fails, but for at least one the intervals reach across a limit: the "
        "images probed cannot tell whether the model stays within it. More images narrow the "
        "intervals."
    ),
}


# ----------------------------------------------------------------------------------- formatting


def _seconds(value: Any) -> str:
    number = as_number(value)
    return "n/a" if number is None else f"{number:.2f} s"


def _verdict_label(verdict: str) -> str:
    return "reported, not gated" if verdict == NOT_GATED else verdict


# ------------------------------------------------------------------------------------ the model


def _row(label: str, value: Any, style: str = "") -> dict[str, Any]:
    return {"label": label, "value": value, "style": style}


def _providers(runtime: Mapping[str, Any], key: str) -> str:
    listed = runtime.get(key)
    if runtime.get("backend") == "torch" and not listed:
        return "none (PyTorch runs the model itself)"
    if listed is None:
        return NOT_RECORDED
    return ", ".join(listed) if listed else "none"


def fallback_warning(runtime: Mapping[str, Any]) -> str | None:
    """A silent fall-back to the CPU changes speed, and may change numerics: say so plainly."""
    if not runtime.get("fell_back_to_cpu"):
        return None
    requested = ", ".join(runtime.get("providers_requested") or []) or "an accelerator"
    used = ", ".join(runtime.get("providers_used") or []) or "the CPU"
    return (
        f"Warning: the runtime fell back to the CPU. Requested {requested}; used {used}. "
        "The scores in this section were computed on the CPU, not on the device the model "
        "was meant to run on."
    )


def _input_text(spec: Mapping[str, Any]) -> str:
    text = (
        f"{spec.get('channels')} x {spec.get('height')} x {spec.get('width')} "
        f"(channels x height x width), {spec.get('layout')}, {spec.get('dtype')}"
    )
    if spec.get("fixed_batch"):
        text += f"; fixed batch of {spec['fixed_batch']} (padded)"
    return text


def _score_text(score: Mapping[str, Any]) -> str:
    column = score.get("column")
    where = "single value" if column is None else f"column {column} of {score.get('n_columns')}"
    return (
        f"output '{score.get('output')}' (index {score.get('output_index', 0)}), {where}; "
        f"activation {score.get('activation')}"
    )


def header(probe: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The model as shipped: file, identity, runtime, input, preprocessing, score, threshold."""
    model, t = probe["model"], probe["thresholds"]
    runtime, prep = model.get("runtime") or {}, model.get("preprocessing") or {}
    sha = model.get("sha256") or ""
    rows = [
        _row("model file", model.get("file")),
        _row("SHA-256 of the file", f"{sha[:12]} (full: {sha})" if sha else NOT_RECORDED, "hash"),
        _row(
            "file format / architecture",
            f"{model.get('format')} / {model.get('arch') or 'not named'}",
        ),
        _row(
            "runtime",
            f"{runtime.get('backend')} {runtime.get('version')} on {runtime.get('device')}"
            + (f", {runtime['threads']} threads" if runtime.get("threads") else ""),
        ),
        _row("providers requested", _providers(runtime, "providers_requested")),
        _row("providers used", _providers(runtime, "providers_used")),
        _row(
            "preprocessing",
            f"{prep.get('name')}: mean {fmt_value(prep.get('mean'))}; std {fmt_value(prep.get('std'))}",
        ),
        _row("input", _input_text(model.get("input") or {})),
        _row("score", _score_text(model.get("score") or {})),
        _row(
            "why this activation",
            or_not_recorded((model.get("score") or {}).get("activation_reason")),
        ),
        _row(
            "operating threshold",
            f"{fmt_value(t.get('operating_threshold'))} ({t.get('operating_threshold_source')})",
        ),
    ]
    notes = list(model.get("notes") or []) + list(runtime.get("notes") or [])
    if notes:
        rows.append(_row("loading notes", fmt_value(notes)))
    return rows


def thresholds(probe: Mapping[str, Any]) -> dict[str, Any]:
    """What was declared before any image was scored, as the verdict uses it."""
    t = probe["thresholds"]
    gap = t.get("max_sex_auc_gap")
    rows = [
        ("largest mean score shift tolerated (either sign)", f"\u00b1{fmt_value(t['max_shift'])}"),
        ("largest flip rate tolerated", fmt_value(t["max_flip_rate"])),
        ("alpha (family-wise, Holm)", fmt_value(t["alpha"])),
        ("confidence of the intervals", fmt_percent(1 - t["alpha"])),
        ("bootstrap resamples / seed", f"{t['n_resamples']} / {t['seed']}"),
        (
            "largest AUC gap between sexes",
            "not gated (reported only)" if gap is None else f"\u00b1{fmt_value(gap)}",
        ),
        (
            "operating threshold",
            f"{fmt_value(t['operating_threshold'])} ({t['operating_threshold_source']})",
        ),
        ("score scale", or_not_recorded(t.get("scale"))),
    ]
    return {"rows": rows, "confidence": fmt_percent(1 - t["alpha"])}


# ------------------------------------------------------------------------------ the confounders


def _auc_cells(auc: Mapping[str, Any] | None) -> dict[str, str]:
    if not auc:
        return {"clean": "n/a", "confounded": "n/a", "diff": "n/a", "p": "n/a", "available": False}
    return {
        "clean": fmt_auc(auc.get("clean")),
        "confounded": fmt_auc(auc.get("confounded")),
        "diff": fmt_signed(auc.get("diff")),
        "p": fmt_p(auc.get("p_value")),
        "available": True,
    }


def _holm(row: Mapping[str, Any]) -> dict[str, str]:
    return {
        "p_fail": fmt_p(row.get("p_fail")),
        "p_pass": fmt_p(row.get("p_pass")),
        "p_fail_adjusted": fmt_p(row.get("p_fail_adjusted")),
        "p_pass_adjusted": fmt_p(row.get("p_pass_adjusted")),
    }


def pixel_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """One pixel confounder: the two gated measures with their intervals, the AUC, the verdict."""
    shift, flips = row.get("mean_shift") or {}, row.get("flip_rate") or {}
    return {
        "name": row["name"],
        "category": row.get("category", ""),
        "description": row.get("description", ""),
        "params": fmt_value(row.get("params")) if row.get("params") else "none",
        "verdict": row["verdict"],
        "verdict_label": _verdict_label(row["verdict"]),
        "shift": fmt_signed(shift.get("estimate")),
        "shift_ci": fmt_interval(shift.get("ci_low"), shift.get("ci_high")),
        "shift_abs": fmt_auc(shift.get("mean_abs")),
        "flip": fmt_auc(flips.get("estimate")),
        "flip_ci": fmt_range(flips.get("ci_low"), flips.get("ci_high")),
        "flips": f"{flips.get('n_flipped')} of {flips.get('n')}",
        # which way: a model that reads the tag as "positive" flips negatives up
        "to_positive": f"{flips.get('to_positive', 'n/a')} to positive",
        "to_negative": f"{flips.get('to_negative', 'n/a')} to negative",
        "auc": _auc_cells(row.get("auc")),
        **_holm(row),
        "reason": row.get("reason", ""),
        "placebo": placebo_cells(row.get("placebo")),
    }


def placebo_cells(placebo: Mapping[str, Any] | None) -> dict[str, str] | None:
    """With ``--placebo``: the placebo's shift and flips, and the confounder's excess flips."""
    if not placebo:
        return None
    shift, flips = placebo.get("mean_shift") or {}, placebo.get("flip_rate") or {}
    excess = placebo.get("excess_flip_rate") or {}
    kept = as_number(placebo.get("change_kept"))
    return {
        "change_kept": "n/a" if kept is None else f"{kept:.0%}",
        "shift": fmt_signed(shift.get("estimate")),
        "shift_ci": fmt_interval(shift.get("ci_low"), shift.get("ci_high")),
        "shift_abs": fmt_auc(shift.get("mean_abs")),
        "flip": fmt_auc(flips.get("estimate")),
        "flip_ci": fmt_range(flips.get("ci_low"), flips.get("ci_high")),
        "excess": fmt_signed(excess.get("estimate")),
        "excess_ci": fmt_interval(excess.get("ci_low"), excess.get("ci_high")),
        "only_confounder": fmt_value(excess.get("only_confounder")),
        "only_placebo": fmt_value(excess.get("only_placebo")),
        "p": fmt_p(excess.get("p_value")),
        "finding": or_not_recorded(placebo.get("finding")),
    }


def _group_rows(groups: Mapping[str, Any]) -> list[dict[str, str]]:
    rows = []
    for key, label in SEX_GROUPS:
        group = groups.get(key)
        if not isinstance(group, Mapping) or (key == "unknown" and not group.get("n")):
            continue
        n, pos = group.get("n"), group.get("n_positive")
        rows.append(
            {
                "label": label,
                "n": fmt_value(n),
                "n_positive": fmt_value(pos) if pos is not None else "n/a",
                "auc": fmt_auc(group.get("auc")),
                "mean_pos": fmt_auc(group.get("mean_score_positive")),
                "mean_neg": fmt_auc(group.get("mean_score_negative")),
            }
        )
    return rows


def sampling_row(row: Mapping[str, Any], limit: Any) -> dict[str, Any]:
    """The sex comparison: per-group AUCs, the gap F - M with its interval, and whether it gates."""
    gap = row.get("auc_gap") or {}
    gated = bool(row.get("gated"))
    return {
        "name": row["name"],
        "category": row.get("category", ""),
        "attribute": row.get("attribute", row["name"]),
        "groups": _group_rows(row.get("groups") or {}),
        "gap": fmt_signed(gap.get("estimate")),
        "gap_ci": fmt_interval(gap.get("ci_low"), gap.get("ci_high")),
        "gap_p": fmt_p(gap.get("p_value")),
        "has_gap": bool(gap),
        "gated": gated,
        "gating": f"gated against \u00b1{fmt_value(limit)}" if gated else "reported, not gated",
        "verdict": row["verdict"],
        "verdict_label": _verdict_label(row["verdict"]),
        **_holm(row),
        "reason": row.get("reason", ""),
    }


def _case(case: Mapping[str, Any]) -> dict[str, str]:
    label = case.get("label")
    return {
        "case_id": str(case["case_id"]),
        "label": {1: "pos", 0: "neg"}.get(label, "") if label is not None else "",
        "clean": fmt_auc(case.get("clean")),
        "confounded": fmt_auc(case.get("confounded")),
        "shift": fmt_signed(case.get("shift")),
        "flipped": bool(case.get("flipped")),
    }


def worst_cases(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per pixel confounder, the pseudonymous ids of the images that moved most (at most 10)."""
    return [
        {
            "name": row["name"],
            "cases": [_case(c) for c in (row.get("worst_cases") or [])[:MAX_WORST_CASES]],
        }
        for row in rows
        if row.get("kind") == "pixel"
    ]


# -------------------------------------------------------------------------- images and timing


def images(probe: Mapping[str, Any]) -> list[tuple[str, str]]:
    d = probe["data"]
    n, pos = d.get("n_images"), d.get("n_positive")
    counts = f"{n} images"
    if isinstance(n, int) and isinstance(pos, int):
        counts += f": {pos} positive, {n - pos} negative"
    if d.get("n_patients") is not None:
        counts += f"; {d['n_patients']} patients"
    excluded = d.get("excluded")
    return [
        ("selection", or_not_recorded(d.get("selection"))),
        ("images probed", counts),
        ("source", d["source"] + (" (synthetic phantom images)" if d.get("synthetic") else "")),
        ("modality", MODALITY_LABELS.get(d["modality"], d["modality"])),
        ("image size (px)", or_not_recorded(d.get("image_size"))),
        ("images in the data set", or_not_recorded(d.get("n_cases"))),
        ("manifest hash", d["manifest_hash"]),
        ("excluded / quarantined files", "none" if excluded == {} else or_not_recorded(excluded)),
    ]


def timing(probe: Mapping[str, Any]) -> list[tuple[str, str]]:
    t = probe.get("timing") or {}
    rate = as_number(t.get("images_per_second"))
    return [
        ("images scored (clean and confounded)", or_not_recorded(t.get("images_scored"))),
        ("wall time of the probe", _seconds(t.get("seconds_total"))),
        ("time inside the model", _seconds(t.get("seconds_in_model"))),
        ("throughput in the model", "n/a" if rate is None else f"{rate:.1f} images/s"),
    ]


# ------------------------------------------------------------------------------ the whole thing


def overall(probe: Mapping[str, Any]) -> dict[str, str]:
    verdict = probe["verdict"]["overall"]
    return {
        "verdict": verdict,
        "headline": f"Overall probe verdict: {verdict.upper()}",
        "explanation": OVERALL_TEXT.get(verdict, ""),
    }


def probe_context(probe: Mapping[str, Any]) -> dict[str, Any]:
    """Everything a probe section shows, from the probe document only."""
    rows = probe["confounders"]
    limit = probe["thresholds"].get("max_sex_auc_gap")
    runtime = probe["model"].get("runtime") or {}
    return {
        "probe_id": probe["probe_id"],
        "created_utc": probe.get("created_utc", NOT_RECORDED),
        "tool_version": (probe.get("tool") or {}).get("version", NOT_RECORDED),
        "overall": overall(probe),
        "verdicts": [(r["name"], r["verdict"], _verdict_label(r["verdict"])) for r in rows],
        "header": header(probe),
        "fallback_warning": fallback_warning(runtime),
        "thresholds": thresholds(probe),
        "pixel": [pixel_row(r) for r in rows if r.get("kind") == "pixel"],
        "sampling": [sampling_row(r, limit) for r in rows if r.get("kind") != "pixel"],
        "worst": worst_cases(rows),
        "max_worst": MAX_WORST_CASES,
        "images": images(probe),
        "timing": timing(probe),
        "ci_note": probe["verdict"].get("ci_note"),
        "illustrative": bool(probe.get("illustrative")),
        "illustrative_note": probe.get("illustrative_note") or ILLUSTRATIVE_NOTE,
    }


# ---------------------------------------------------------------- the standalone report's extras


def probe_provenance(
    probe: Mapping[str, Any], results_sha256: str, rendered_utc: str
) -> dict[str, Any]:
    """The software and hardware context the probe recorded, for its standalone report."""
    env = probe.get("environment") or {}
    rows = [
        ("command", probe.get("command") or NOT_RECORDED),
        ("tool", f"{probe['tool']['name']} {probe['tool']['version']}"),
        ("tool commit", commit_text(env)),
        ("python", env.get("python") or NOT_RECORDED),
        ("probe id", probe["probe_id"]),
        ("results.json SHA-256", results_sha256),
        ("probe run (UTC)", probe.get("created_utc") or NOT_RECORDED),
        ("report rendered (UTC)", rendered_utc),
        ("schema version", probe.get("schema_version", NOT_RECORDED)),
    ]
    return {
        "rows": rows,
        "libraries": sorted((env.get("libraries") or {}).items()),
        "has_libraries": bool(env.get("libraries")),
        "hardware": [
            (k.replace("_", " "), fmt_value(v)) for k, v in (env.get("hardware") or {}).items()
        ],
        "determinism": [(k, fmt_value(v)) for k, v in (env.get("determinism") or {}).items()],
    }


def facts(probe: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Page one of the standalone report: what was probed, on what, against which limits."""
    model, d, t = probe["model"], probe["data"], probe["thresholds"]
    runtime = model.get("runtime") or {}
    gap = t.get("max_sex_auc_gap")
    return [
        (
            "model as shipped",
            f"{model['file']} ({model['format']}; sha256 {(model.get('sha256') or '')[:12]}...)",
        ),
        ("run by", f"{runtime.get('backend')} {runtime.get('version')} on {runtime.get('device')}"),
        (
            "images",
            f"{d.get('selection')}; {d['source']} ({d['modality']}); manifest {d['manifest_hash']}",
        ),
        (
            "declared in advance",
            f"mean shift within \u00b1{fmt_value(t['max_shift'])}, flip rate below "
            f"{fmt_value(t['max_flip_rate'])}, alpha {fmt_value(t['alpha'])}, "
            f"{t['n_resamples']} bootstrap resamples; sex "
            + ("not gated" if gap is None else f"AUC gap within \u00b1{fmt_value(gap)}"),
        ),
        ("probe date (UTC)", probe.get("created_utc") or NOT_RECORDED),
    ]


def probe_report_context(
    probe: Mapping[str, Any], *, results_sha256: str, rendered_utc: str
) -> dict[str, Any]:
    """Everything the standalone probe report shows, derived from the probe document only."""
    section = probe_context(probe)
    return {
        "r": probe,
        "probe": section,
        "probe_id": probe["probe_id"],
        "sha256": results_sha256,
        "rendered_utc": rendered_utc,
        "illustrative": section["illustrative"],
        "illustrative_note": section["illustrative_note"],
        "overall": section["overall"],
        "facts": facts(probe),
        "repro": probe_provenance(probe, results_sha256, rendered_utc),
        "not_recorded": NOT_RECORDED,
    }
