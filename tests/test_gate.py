"""The release gate wired to runs: run results become the reliance module's inputs, the pipeline's
verdict is reliance.decide's, sampling confounders get K from both-sex test sets, and the study's
sex lists are shown but not gated."""

from __future__ import annotations

import numpy as np
import pytest

from audit.analysis import reliance
from audit.analysis.gate import NOT_GATED, gate_record
from audit.analysis.planning import PRESAMPLED_REASON
from audit.data.synthetic import PhantomSettings, make_phantom_cohort
from audit.errors import UsageError
from audit.plan.grid import attribute_masks, cell_sets
from audit.plan.splits import PatientSplit
from audit.resolve.confounders import resolve_confounders
from audit.resolve.settings import Settings
from audit.train.engine import RunResult

LEVELS = (0.0, 0.5, 1.0)
N_POS, N_NEG = 60, 90


def _pixel_layout() -> tuple[list[str], np.ndarray, dict[str, str]]:
    ids = [f"c{i}" for i in range(N_POS + N_NEG)]
    labels = np.array([1] * N_POS + [0] * N_NEG)
    patients = {c: f"p{i // 2}" for i, c in enumerate(ids)}  # two images per patient
    return ids, labels, patients


def _pixel_run(
    rng: np.random.Generator, role: str, level: float, fold: int, lift: float, d: float = 1.4
) -> RunResult:
    ids, labels, _ = _pixel_layout()
    clean = rng.normal(size=labels.size) + d * labels
    ood = clean.copy()
    ood[labels == 0] += lift * level
    scores = {"clean": tuple(clean), "ood": tuple(ood), "iid": tuple(clean)}
    return RunResult(
        key=f"{role}{level}{fold}", role=role, confounder="tag", level=level, fold=fold,
        auc={"ood": 0.5, "clean": 0.5, "iid": 0.5}, scores=scores,
        case_ids={k: tuple(ids) for k in scores}, labels={k: tuple(labels) for k in scores},
        epochs_run=1, best_epoch=1, best_val_loss=0.1, seconds=1.0, device="cpu",
    )  # fmt: skip


def _pixel_results(user_lift: float, ref_lift: float, seed: int = 0) -> list[RunResult]:
    rng = np.random.default_rng(seed)
    return [
        _pixel_run(rng, role, level, fold, lift)
        for level in LEVELS
        for fold in range(4)
        for role, lift in (("user", user_lift), ("reference", ref_lift))
    ]


def _record(results, confounders=None, not_gated=None, **kwargs):
    _, _, patients = _pixel_layout()
    options = {"levels": LEVELS, "margin": 0.05, "alpha": 0.05, "counted_levels": None}
    options.update(kwargs)
    return gate_record(
        results, confounders or {"tag": "pixel"}, not_gated or {}, patient_of=patients, **options
    )


def test_the_pipelines_verdict_is_reliance_decide_on_the_same_runs() -> None:
    results = _pixel_results(user_lift=3.0, ref_lift=0.3)
    record = _record(results)
    row = record["per_confounder"][0]
    _, _, patients = _pixel_layout()
    runs = []
    for r in results:  # built by hand here: clean set, o.o.d. negatives vs clean negatives
        labels = np.array(r.labels["clean"])
        ids = np.array([patients[c] for c in r.case_ids["clean"]])
        runs.append(
            reliance.RunScores(
                r.role,
                r.level,
                r.fold,
                np.array(r.scores["clean"]),
                labels,
                ids,
                np.array(r.scores["ood"])[labels == 0],
                ids[labels == 0],
                np.array(r.scores["clean"])[labels == 0],
                ids[labels == 0],
            )  # fmt: skip
        )
    expected = reliance.decide({"tag": reliance.ConfounderRuns(tuple(runs))})
    decision = expected.per_confounder[0]
    assert row["verdict"] == decision.verdict == "fail" == record["overall"]
    assert row["reliance"]["estimate"] == pytest.approx(decision.estimate.estimate, abs=1e-12)
    assert row["reliance"]["ci_low"] == pytest.approx(decision.estimate.ci_low, abs=1e-12)
    assert row["p_fail_adjusted"] == pytest.approx(decision.p_fail_adjusted, abs=1e-12)
    assert row["reason"] == decision.reason
    assert [lv["level"] for lv in row["reliance"]["per_level"]] == [0.5, 1.0], "p = 0 not counted"
    assert row["reliance"]["dominant_variance"] in ("test patients", "runs")


def test_s_is_descriptive_on_per_run_averages_and_equal_lift_passes() -> None:
    results = _pixel_results(user_lift=0.5, ref_lift=0.5)
    row = _record(results)["per_confounder"][0]
    assert row["verdict"] == "pass", row["reason"]
    from sklearn.metrics import roc_auc_score

    def mean_auc(role: str, level: float, test_set: str) -> float:
        return float(
            np.mean(
                [
                    roc_auc_score(r.labels[test_set], r.scores[test_set])
                    for r in results
                    if r.role == role and r.level == level
                ]
            )
        )

    expected = np.mean(
        [mean_auc("reference", v, "ood") - mean_auc("user", v, "ood") for v in (0.5, 1)]
    )
    assert row["shortcut_gap"]["estimate"] == pytest.approx(expected, abs=1e-12)
    assert row["shortcut_gap"]["ci_low"] < expected < row["shortcut_gap"]["ci_high"]
    assert row["clean_gap"]["per_level"][0]["auc_user"] == pytest.approx(
        mean_auc("user", 0.5, "clean"), abs=1e-12
    )


def test_a_confounder_that_cannot_be_measured_is_inconclusive_never_left_out() -> None:
    results = _pixel_results(user_lift=0.0, ref_lift=0.0)
    broken = [r for r in results if not (r.role == "user" and r.level == 1.0)]
    record = _record(broken)
    row = record["per_confounder"][0]
    assert row["verdict"] == "inconclusive" and record["overall"] == "inconclusive"
    assert "could not be computed" in row["reason"] and "no user run" in row["reason"]


def test_not_gated_confounders_are_shown_and_leave_the_overall_to_the_others() -> None:
    results = _pixel_results(user_lift=0.5, ref_lift=0.5)
    sex = [RunResult(**{**r.__dict__, "confounder": "sex", "key": "s" + r.key}) for r in results]
    record = _record(results + sex, {"tag": "pixel", "sex": "sampling"}, {"sex": PRESAMPLED_REASON})
    rows = {r["confounder"]: r for r in record["per_confounder"]}
    assert rows["sex"]["verdict"] == NOT_GATED and rows["sex"]["gated"] is False
    assert rows["sex"]["reliance"] is None and rows["sex"]["shortcut_gap"] is not None
    assert record["overall"] == rows["tag"]["verdict"] == "pass"
    only_sex = _record(sex, {"sex": "sampling"}, {"sex": PRESAMPLED_REASON})
    assert only_sex["overall"] == "inconclusive", "nothing gated: never a pass"


def test_sex_test_sets_allow_the_lift_auc_outside_the_protocol() -> None:
    cohort = make_phantom_cohort(PhantomSettings(n_patients=120, image_size=32, seed=3))
    confounders = resolve_confounders(("sex",), {}, "cxr", seed=0, work_size=32)
    conf = confounders["sex"].confounder
    everything = np.arange(len(cohort.cases))
    split = PatientSplit(test=everything, folds=((everything, everything),))
    sets = cell_sets(cohort, split, conf, 0.5, 0, seed=0).tests
    known, female = attribute_masks(cohort, conf)
    labels = cohort.labels
    clean, ood = sets["clean"].indices, sets["ood"].indices
    assert set(clean) == set(everything[known & ~female]), "clean: male cases of both classes"
    assert set(labels[clean]) == {0, 1}
    treated = ood[labels[ood] == 0]
    assert treated.size and female[treated].all(), "treated negatives: the female ones"
    controls = clean[labels[clean] == 0]
    assert controls.size and not female[controls].any()
    assert not set(treated) & set(controls)


def test_a_split_without_male_cases_of_a_class_is_refused_in_words() -> None:
    from audit.plan.splits import attribute_clean_set

    labels = np.array([1, 1, 0, 0])
    has = np.array([False, True, True, True])
    with pytest.raises(UsageError, match="reliance cannot be measured"):
        attribute_clean_set(np.arange(4), labels, has, np.ones(4, dtype=bool))


@pytest.mark.parametrize(
    ("values", "message"),
    [({"levels": (0.0,)}, "include a level above 0"),
     ({"levels": (0.0, 0.5), "counted_levels": (0.0, 0.5)}, "levels above 0")],
)  # fmt: skip
def test_settings_refuse_an_audit_with_no_level_to_gate(values, message) -> None:
    with pytest.raises(UsageError, match=message):
        Settings(**values)


def test_the_console_says_when_inconclusive_is_counted_as_pass() -> None:
    from audit.report.console import verdict_lines

    row = {
        "confounder": "tag", "gated": True, "verdict": "inconclusive",
        "reliance": {"estimate": 0.04, "ci_low": -0.02, "ci_high": 0.10},
        "shortcut_gap": {"estimate": 0.1, "ci_low": 0.0, "ci_high": 0.2},
    }  # fmt: skip
    results = {
        "verdict": {"measure": "reliance_gap", "overall": "inconclusive",
                    "thresholds": {"margin": 0.05}, "per_confounder": [row]},
        "gate": {"inconclusive_exit": 0, "inconclusive_counted_as": "pass"},
        "power": {"tag": {"detectable_gap": 0.184}, "sex": {"gated": False}},
    }  # fmt: skip
    lines = verdict_lines(results)
    assert "D = +0.040 [-0.020, +0.100]" in lines[0] and "S = +0.100" in lines[0]
    assert "inconclusive counted as pass (--inconclusive-exit 0)" in lines[-1]
    assert "smallest reliance gap this audit could detect is about 0.18" in lines[-1]
    results["gate"] = {"inconclusive_exit": 3, "inconclusive_counted_as": None}
    assert not any("counted as" in line for line in verdict_lines(results))


def test_an_audit_that_gated_nothing_never_exits_0_even_counted_as_pass() -> None:
    from audit.pipeline import _gate

    lenient = _gate("inconclusive", None, 0)
    assert (lenient["exit_code"], lenient["inconclusive_counted_as"]) == (0, "pass")
    nothing = _gate("inconclusive", None, 0, anything_gated=False)
    assert (nothing["exit_code"], nothing["inconclusive_counted_as"]) == (3, None)


def test_the_verdict_does_not_depend_on_the_order_runs_finished_in() -> None:
    results = _pixel_results(user_lift=0.9, ref_lift=0.6, seed=4)
    shuffled = [results[i] for i in np.random.default_rng(1).permutation(len(results))]
    assert _record(shuffled) == _record(results), "Ray finishes runs in any order"


def test_a_not_tested_confounder_is_never_a_pass_but_a_shown_reliance_still_fails() -> None:
    """The learnability detector missed the artifact: an equal-lift pass becomes "not tested"
    (overall inconclusive); a reliance the runs show clearly stays a fail, with its measure."""
    why = {"tag": "Not tested: the detector missed it."}
    equal = _record(_pixel_results(user_lift=0.5, ref_lift=0.5), not_tested=why)
    row = equal["per_confounder"][0]
    assert (row["verdict"], row["reason"]) == ("not tested", why["tag"])
    assert row["reliance"] is not None, "the measure is kept for the reader"
    assert equal["overall"] == "inconclusive"
    leaning = _record(_pixel_results(user_lift=3.0, ref_lift=0.3), not_tested=why)
    row = leaning["per_confounder"][0]
    assert row["verdict"] == "fail" and "detector missed" in row["reason"]
    assert leaning["overall"] == "fail"


def test_not_tested_keeps_exit_3_under_inconclusive_exit_0_and_says_why() -> None:
    from audit.pipeline import _gate

    gate = _gate("inconclusive", None, 0, untested=True)
    assert (gate["exit_code"], gate["inconclusive_counted_as"]) == (3, None)
    assert gate["inconclusive_exit_requested"] == 0 and "not tested" in gate["override"]
    assert _gate("inconclusive", None, 1, untested=True)["exit_code"] == 1
