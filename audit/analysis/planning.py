"""What an audit of this size can resolve, per confounder, before any GPU time is spent.

The release gate (audit.analysis.reliance) passes a confounder only if the upper bound of its
reliance gap is below the margin. Whether that is attainable is settled by the test set's size and
the number of runs, both known before training: ``check --dry-run`` sizes each confounder's test
set here (from the cohort, or from the dry run's counts when nothing is decoded yet) and asks
:func:`reliance.power_analysis` how wide the interval will be. The point is the warning: a test
set so small that even a model with no shortcut reliance could not be expected to pass should be
found before the fine-tuning runs, not after.

Test sets, as the pipeline builds them (audit.plan.grid.cell_sets):

* pixel confounder: the test split's positives and negatives; every negative is also scored with
  the artifact (treated) and its clean copy is its control;
* sampling confounder (sex: attribute ``sex``, value ``F``): the clean set is the positives and
  negatives without the value (male), the treated negatives carry it (female), the controls are
  the clean set's negatives. So ``n_positive`` is the male positives, ``n_negative`` all the
  negatives of known attribute, and ``attribute_share`` the share of them with the value. Cases
  whose attribute is not recorded take no part.
* under the study protocol (``presampled``) the sex test set holds male positives and female
  negatives only: sex is shown but not gated, so it gets no power estimate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from audit.analysis import reliance
from audit.data.cases import Cohort
from audit.data.study_lists import subset_name
from audit.plan.grid import attribute_masks
from audit.resolve.confounders import ResolvedConfounder

PRESAMPLED_REASON = (
    "The study's sex test set holds male positives and female negatives only, so how far sex "
    "lifts a negative (the lift AUC K) cannot be measured: sex is shown but not gated; audit it "
    "without the `protocol` to gate it."
)
# The power helper's reference profile (its defaults): what "no reliance at all" is measured against.
CLEAN_AUC = 0.85
NO_RELIANCE_LIFT_AUC = 0.5  # a model that scores a negative alike with and without the confounder
_SUMMARY_TABLES = {"sex": "sex", "view": "views"}  # attribute -> the dry-run summary's count table


@dataclass(frozen=True)
class PlannedTestSet:
    """One confounder's test set as the gate will measure it (sizes only).

    ``attribute_share`` (sampling only): the share of the negatives that carry the attribute
    value, i.e. the treated ones. ``gated``: False when the gate shows the confounder but does not
    decide on it, ``reason`` says why. ``basis``: where the counts come from (counted, or scaled
    from the cohort when the split is not drawn yet); it is carried into the power record.
    """

    confounder: str
    kind: str
    n_positive: int
    n_negative: int
    n_patients: int
    attribute_share: float | None
    gated: bool = True
    reason: str = ""
    basis: str = ""

    def __post_init__(self) -> None:
        if self.kind not in reliance.KINDS:
            raise ValueError(f"kind must be one of {reliance.KINDS}; got {self.kind!r}.")
        for name in ("n_positive", "n_negative", "n_patients"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0; got {value!r}.")
            object.__setattr__(self, name, int(value))
        if self.attribute_share is not None:
            object.__setattr__(self, "attribute_share", float(self.attribute_share))


# ------------------------------------------------------------------------------- from the cohort


def planned_test_sets_from_cohort(
    cohort: Cohort,
    test_indices: np.ndarray,
    confounders: Mapping[str, ResolvedConfounder],
    *,
    presampled: bool = False,
) -> dict[str, PlannedTestSet]:
    """Each confounder's test set, counted on the cohort's test split (cohort indices).

    ``presampled``: the study protocol's split, whose sex test set is already the o.o.d.
    arrangement; its sampling confounders are then not gated (their counts are still given).
    """
    test = np.asarray(test_indices, dtype=np.int64)
    labels, patients = cohort.labels, cohort.patients
    out = {}
    for name, rc in confounders.items():
        if rc.kind == "pixel":
            out[name] = PlannedTestSet(
                name,
                "pixel",
                n_positive=int(np.sum(labels[test] == 1)),
                n_negative=int(np.sum(labels[test] == 0)),
                n_patients=len(np.unique(patients[test])),
                attribute_share=None,
                basis="counted on the test split",
            )
            continue
        known, has = attribute_masks(cohort, rc.confounder)
        idx = test[known[test]]
        pos = (labels[idx] == 1) & ~has[idx]
        control = (labels[idx] == 0) & ~has[idx]
        treated = (labels[idx] == 0) & has[idx]
        n_negative = int(control.sum() + treated.sum())
        gated = not presampled
        out[name] = PlannedTestSet(
            name,
            "sampling",
            n_positive=int(pos.sum()),
            n_negative=n_negative,
            n_patients=len(np.unique(patients[idx[pos | control | treated]])),
            attribute_share=float(treated.sum()) / n_negative if n_negative else None,
            gated=gated,
            reason="" if gated else presampled_reason(rc),
            basis="counted on the test split",
        )
    return out


def presampled_reason(rc: ResolvedConfounder) -> str:
    """Why a sampling confounder on presampled study lists is shown but not gated (one sentence
    for the verdict, the power record and the report)."""
    conf = rc.confounder
    if conf.attribute == "sex":
        return PRESAMPLED_REASON
    return (
        f"The study's test set of {rc.name!r} is already the o.o.d. arrangement, so how far "
        f"{conf.attribute} = {conf.attribute_value} lifts a negative cannot be measured: it is "
        "shown but not gated."
    )


# ------------------------------------------------------------------------ from the dry-run counts


def planned_test_sets_from_counts(
    summary: Mapping[str, Any],
    confounders: Mapping[str, ResolvedConfounder],
    *,
    test_fraction: float,
) -> dict[str, PlannedTestSet]:
    """Each confounder's test set from :func:`audit.data.loading.describe_dry_run`'s summary.

    The dry run decodes nothing and draws no split, so: with the study protocol
    (``summary["protocol"]``) the study's test lists are counted as they are (the sex list is not
    gated); without it the test split is ``ceil(test_fraction * patients)`` patients drawn at
    random (GroupShuffleSplit), so every count is the cohort's scaled by that share of patients,
    its expected value. The summary counts sexes (and views) over all classes only, so a sampling
    confounder's classes are split assuming the attribute is independent of the label. Each
    ``basis`` says which was done.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1); got {test_fraction!r}.")
    protocol = summary.get("protocol")
    out = {}
    for name, rc in confounders.items():
        if protocol:
            out[name] = _listed_test_set(summary, name, rc)
        else:
            out[name] = _scaled_test_set(summary, name, rc, test_fraction)
    return out


def _listed_test_set(
    summary: Mapping[str, Any], name: str, rc: ResolvedConfounder
) -> PlannedTestSet:
    """The study protocol's own test lists (``summary["splits"]``), counted as they are."""
    splits = summary.get("splits", {})
    if rc.kind == "pixel":
        listed = subset_name("chest14", "test")
        counts = splits.get(listed)
        if counts is None:
            return _unsized(name, "pixel", f"the dry-run summary holds no list {listed!r}")
        return PlannedTestSet(
            name,
            "pixel",
            n_positive=int(counts["positive"]),
            n_negative=int(counts["negative"]),
            n_patients=int(counts["patients"]),
            attribute_share=None,
            basis=f"counted on the study's test list {listed}",
        )
    listed = subset_name("sex", "test")
    counts = splits.get(listed) if rc.confounder.attribute == "sex" else None
    if counts is None:
        return PlannedTestSet(
            name, "sampling", 0, 0, 0, None, gated=False,
            reason=f"the study protocol has no image lists for {name!r}",
        )  # fmt: skip
    negatives = int(counts["negative"])
    return PlannedTestSet(
        name,
        "sampling",
        n_positive=int(counts["positive"]),
        n_negative=negatives,
        n_patients=int(counts["patients"]),
        attribute_share=1.0 if negatives else None,  # by design: every negative is female
        gated=False,
        reason=presampled_reason(rc),
        basis=f"counted on the study's test list {listed} (male positives, female negatives)",
    )


def _scaled_test_set(
    summary: Mapping[str, Any], name: str, rc: ResolvedConfounder, test_fraction: float
) -> PlannedTestSet:
    """Expected counts of a random patient-level test split holding ``test_fraction`` of them."""
    patients, images = int(summary["patients"]), int(summary["images"])
    if patients < 1 or images < 1:
        return _unsized(name, rc.kind, "the dry run found no images")
    test_patients = min(math.ceil(test_fraction * patients), patients)
    share = test_patients / patients
    basis = (
        f"expected counts: the test split is {test_patients} of the {patients} patients "
        f"(test fraction {test_fraction:g}), every count of the cohort scaled by that share"
    )
    positives, negatives = share * int(summary["positive"]), share * int(summary["negative"])
    if rc.kind == "pixel":
        return PlannedTestSet(
            name, "pixel", round(positives), round(negatives), test_patients, None, basis=basis
        )
    conf = rc.confounder
    table = summary.get(_SUMMARY_TABLES.get(conf.attribute or "", ""))
    if not isinstance(table, Mapping):
        return _unsized(
            name, "sampling", f"the dry-run summary does not count cases by {conf.attribute!r}"
        )
    known = sum(int(v) for k, v in table.items() if k != "unknown") / images
    with_value = int(table.get(conf.attribute_value, 0)) / images
    test_images = share * images
    pos = test_images * (known - with_value) * int(summary["positive"]) / images
    control = test_images * (known - with_value) * int(summary["negative"]) / images
    treated = test_images * with_value * int(summary["negative"]) / images
    n_negative = round(control + treated)
    return PlannedTestSet(
        name,
        "sampling",
        n_positive=round(pos),
        n_negative=n_negative,
        n_patients=round(test_patients * (pos + control + treated) / test_images),
        attribute_share=treated / (control + treated) if control + treated > 0 else None,
        basis=basis + f"; {conf.attribute} taken as independent of the label",
    )


def _unsized(name: str, kind: str, why: str) -> PlannedTestSet:
    """A gated confounder whose test set cannot be sized from what is known now."""
    return PlannedTestSet(name, kind, 0, 0, 0, None, reason=why)


# ---------------------------------------------------------------------------------------- power

_POWER_KEYS = (
    "half_width",
    "detectable_gap",
    "pass_gap",
    "equal_pass_probability",
    "se",
    "se_test",
    "se_runs",
    "assumptions",
    "perfect_gap",
    "perfect_upper",
    "perfect_can_pass",
)


def plan_power(
    test_sets: Mapping[str, PlannedTestSet],
    *,
    folds: int,
    repeats: int = 1,
    margin: float = 0.05,
    alpha: float = 0.05,
    power: float = 0.8,
    run_sd: float = reliance.DEFAULT_RUN_SD,
) -> dict[str, dict[str, Any]]:
    """Per confounder a JSON-ready record: the test set, then what the audit can resolve.

    Every record has the same keys. Not gated (``gated`` False) or not sizeable (``reason`` set):
    the power fields are None and ``reason`` says why; a gated confounder that cannot be sized has
    ``perfect_can_pass`` False (the audit could not measure it at all).

    ``half_width``, ``pass_gap``, ``equal_pass_probability``, ``se*`` and ``assumptions`` come
    from :func:`reliance.power_analysis` (variance at a true gap equal to the margin).
    ``detectable_gap``: the true gap that fails with probability ``power``, solved with the
    variance *at that gap* (power_analysis's own figure keeps the margin's variance, which grows
    with the gap: at the study's 83 images it reads 0.158, where the gate failed in 65% of 1,000
    seeded simulated audits; the solved 0.184 failed in 82%, see tests/test_planning.py). None
    when no gap of the reference profile is detected that often.
    ``perfect_gap``: the gap of a model with no reliance at all (user lift AUC 0.5 at every
    level) against the helper's reference profile; ``perfect_upper`` its expected upper bound,
    taken with the half-width at the margin, which is conservative (the test variance shrinks with
    the gap: at 83 images the half-width there is 0.064 against 0.076); ``perfect_can_pass``:
    that bound is below the margin.
    """
    if not 0.5 < power < 1.0:
        raise ValueError(f"power must lie in (0.5, 1); got {power!r}.")
    perfect_gap = float(
        reliance.reliance_gap(
            np.full(len(reliance.DEFAULT_LIFT_AUC), CLEAN_AUC),
            np.asarray(reliance.DEFAULT_LIFT_AUC),
            np.full(len(reliance.DEFAULT_LIFT_AUC), NO_RELIANCE_LIFT_AUC),
        ).mean()
    )
    records = {}
    for name, ts in test_sets.items():
        record: dict[str, Any] = {
            "confounder": ts.confounder,
            "kind": ts.kind,
            "gated": ts.gated,
            "reason": ts.reason,
            "basis": ts.basis,
            "n_positive": ts.n_positive,
            "n_negative": ts.n_negative,
            "n_patients": ts.n_patients,
            "attribute_share": ts.attribute_share,
            "folds": folds,
            "repeats": repeats,
            "margin": margin,
            "alpha": alpha,
            "power": power,
            "run_sd": run_sd,
            **dict.fromkeys(_POWER_KEYS),
        }
        records[name] = record
        if not ts.gated:
            continue
        why = ts.reason or _too_small(ts)
        if why:
            record["reason"] = why
            record["perfect_can_pass"] = False
            continue
        kw = _power_kwargs(ts, folds=folds, repeats=repeats, run_sd=run_sd)
        try:
            plan = reliance.power_analysis(margin=margin, alpha=alpha, power=power, **kw)
        except ValueError as exc:  # e.g. a margin beyond the profile's largest gap
            record["reason"] = f"no power estimate: {exc}"
            continue
        upper = perfect_gap + plan.half_width
        can_pass = bool(upper < margin) and folds >= 2  # a single fold never passes
        record.update(
            half_width=plan.half_width,
            detectable_gap=None if math.isnan(plan.detectable_gap) else plan.detectable_gap,
            pass_gap=plan.pass_gap,
            equal_pass_probability=plan.equal_pass_probability if folds >= 2 else 0.0,
            se=plan.se,
            se_test=plan.se_test,
            se_runs=plan.se_runs,
            assumptions=plan.assumptions + (f"; {ts.basis}" if ts.basis else ""),
            perfect_gap=perfect_gap,
            perfect_upper=upper,
            perfect_can_pass=can_pass,
        )
    return records


def _too_small(ts: PlannedTestSet) -> str:
    """Why the gate could not measure this test set at all ("" when it can)."""
    images = ts.n_positive + ts.n_negative
    if ts.n_positive < 2 or ts.n_negative < 2:
        return (
            f"the test set holds {ts.n_positive} positive and {ts.n_negative} negative images; "
            "the gate needs at least 2 of each"
        )
    if not 2 <= ts.n_patients <= images:
        return f"the test set's {ts.n_patients} patients cannot hold its {images} images"
    if ts.kind == "sampling":
        share = ts.attribute_share
        treated = 0 if share is None else round(share * ts.n_negative)
        if treated < 1 or ts.n_negative - treated < 2:
            return (
                f"the test set holds {treated} negatives with the attribute value and "
                f"{ts.n_negative - treated} without; the gate needs at least 1 and 2"
            )
    return ""


def _power_kwargs(ts: PlannedTestSet, *, folds: int, repeats: int, run_sd: float) -> dict:
    kw: dict[str, Any] = {
        "n_positive": ts.n_positive,
        "n_negative": ts.n_negative,
        "n_patients": ts.n_patients,
        "folds": folds,
        "repeats": repeats,
        "run_sd": run_sd,
        "kind": ts.kind,
        "clean_auc": CLEAN_AUC,
        "lift_auc": reliance.DEFAULT_LIFT_AUC,
    }
    if ts.kind == "sampling":
        kw["attribute_share"] = ts.attribute_share
    return kw


# ---------------------------------------------------------------------------------------- lines

_PREFIX = "power:     "
_WARN = "warning:   "


def power_lines(records: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What ``check --dry-run`` prints: one line per confounder, a warning where even a model with
    no shortcut reliance could not be expected to pass, and the assumptions, stated once."""
    lines = []
    gated = [r for r in records.values() if r["gated"] and r["half_width"] is not None]
    for name, r in records.items():
        if not r["gated"]:
            lines.append(f"{_PREFIX}{name}: {r['reason']}")
            continue
        size = _size(r)
        if r["half_width"] is None:
            lines.append(
                f"{_WARN}{name}: the audit cannot measure this confounder ({size}): {r['reason']}"
            )
            continue
        detect = (
            f"smallest detectable gap {r['detectable_gap']:.2f} ({r['power']:.0%} power)"
            if r["detectable_gap"] is not None
            else f"no gap is detected with {r['power']:.0%} power"
        )
        lines.append(
            f"{_PREFIX}{name}: expected {1 - r['alpha']:.0%} interval half-width "
            f"{r['half_width']:.3f}; {detect}; equal models pass about "
            f"{r['equal_pass_probability']:.0%} of the time ({size})"
        )
        if not r["perfect_can_pass"]:
            lines.append(f"{_WARN}{name}: {_cannot_pass(r, size)}")
    if gated:
        r = gated[0]
        lines.append(
            f"{_PREFIX}assumed: between-fold SD of the measure {r['run_sd']:g} (a guess: no run "
            f"is made yet), binormal scores, reference clean AUC {CLEAN_AUC:g}, lift AUCs "
            f"{', '.join(f'{v:g}' for v in reliance.DEFAULT_LIFT_AUC)}, margin {r['margin']:g}"
        )
        for basis in dict.fromkeys(g["basis"] for g in gated if g["basis"]):
            lines.append(f"{_PREFIX}test sets: {basis}")
    return lines


def _size(r: Mapping[str, Any]) -> str:
    folds, repeats = r["folds"], r["repeats"]
    return (
        f"{r['n_positive']} positive, {r['n_negative']} negative test images of "
        f"{r['n_patients']} patients; {folds} fold{'s' * (folds != 1)} x {repeats} "
        f"repeat{'s' * (repeats != 1)}"
    )


def _cannot_pass(r: Mapping[str, Any], size: str) -> str:
    """Why even a model with no shortcut reliance could not pass, and what would help."""
    if r["folds"] < 2:
        return (
            f"even a model with no shortcut reliance could not pass this audit ({size}): with a "
            "single fold the training variance is unknown, so the gate never passes; audit at "
            "least 2 folds (the study: 5)."
        )
    return (
        f"even a model with no shortcut reliance could not pass this audit at this test set "
        f"size, folds and repeats ({size}): its expected upper bound {r['perfect_upper']:.3f} "
        f"is above the margin {r['margin']:g}. More test patients, folds or repeats would help "
        f"(SE from the test patients {r['se_test']:.3f}, from the runs {r['se_runs']:.3f})."
    )
