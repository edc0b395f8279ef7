"""The controls: a run that did not train, a model at chance, an artifact no detector sees."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy.stats import norm

from audit.analysis import reliance
from audit.analysis.controls import (
    clean_auc_control,
    controls_record,
    training_control,
    training_problem,
)
from audit.train.engine import RunResult, loss_fall


def _result(**changes) -> RunResult:
    base = RunResult(
        key="k", role="user", confounder="tag", level=0.0, fold=0, auc={}, scores={},
        case_ids={}, labels={}, epochs_run=3, best_epoch=2, best_val_loss=0.5, seconds=1.0,
        device="cpu", optimizer_steps=12, train_loss_start=0.70, train_loss_end=0.40,
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, None),
        (
            {"optimizer_steps": 0, "train_loss_start": None, "train_loss_end": None},
            "no optimiser step",
        ),
        ({"optimizer_steps": 1, "train_loss_end": None}, "single optimiser step"),
        ({"train_loss_end": 0.71}, "did not fall"),
        ({"train_loss_end": 0.70}, "did not fall"),
        ({"train_loss_end": float("nan")}, "not a finite number"),
        ({"optimizer_steps": None}, "did not record"),
    ],
)
def test_training_problem_names_why_a_run_shows_no_training(changes, expected) -> None:
    why = training_problem(_result(**changes))
    if expected is None:
        assert why is None
    else:
        assert why is not None and expected in why


def test_one_untrained_run_fails_the_training_control_and_is_listed() -> None:
    runs = [_result(key=str(i), fold=i) for i in range(4)]
    runs.append(_result(key="bad", fold=9, optimizer_steps=0, train_loss_start=None,
                        train_loss_end=None))  # fmt: skip
    record = training_control(runs)
    assert record["passed"] is False and record["runs_failed"] == 1 and record["runs_checked"] == 5
    assert record["failures"][0]["fold"] == 9
    assert training_control(runs[:4])["passed"] is True


def test_loss_fall_reads_first_and_last_epoch_means_or_one_epochs_steps() -> None:
    epochs = [torch.tensor([0.9, 0.7]), torch.tensor([0.6]), torch.tensor([0.5, 0.3])]
    assert loss_fall(epochs) == pytest.approx((0.8, 0.4))
    assert loss_fall([torch.tensor([0.9, 0.5, 0.6])]) == pytest.approx((0.9, 0.6))
    assert loss_fall([torch.tensor([0.9])]) == (pytest.approx(0.9), None)
    assert loss_fall([torch.zeros(0), torch.zeros(0)]) == (None, None)


# ------------------------------------------------------------- the clean AUC's lower bound


def _runs(rng, true_auc: float, n_pos: int, n_neg: int, folds: int, run_sd: float, roles=("user",)):
    """Binormal scores on one fixed test set (a patient per image); each fold's run shifts the
    separation by a normal draw, so the run-to-run spread enters the truth."""
    labels = np.r_[np.ones(n_pos, np.int8), np.zeros(n_neg, np.int8)]
    patients = np.arange(n_pos + n_neg)
    base = np.sqrt(2) * norm.ppf(true_auc)
    runs = []
    for role in roles:
        for fold in range(folds):
            d = base + rng.normal(0, run_sd)
            scores = np.r_[rng.normal(d, 1, n_pos), rng.normal(0, 1, n_neg)]
            neg = scores[labels == 0]
            runs.append(reliance.RunScores(
                role=role, level=0.0, fold=fold, clean_scores=scores, clean_labels=labels,
                clean_patients=patients, treated_scores=neg, treated_patients=patients[labels == 0],
                control_scores=neg, control_patients=patients[labels == 0],
            ))  # fmt: skip
    return runs


def test_the_lower_bound_covers_the_true_mean_auc_at_its_level() -> None:
    """Seeded simulation: 600 audits of 5 folds, 60 + 60 test cases, run SD of the separation
    0.25. The one-sided 95 % bound must lie below the true expected AUC in about 95 % of
    audits; a bound from the test variance alone (the runs ignored) covers far less."""
    rng = np.random.default_rng(11)
    true_auc, run_sd, reps = 0.75, 0.25, 600
    base = np.sqrt(2) * norm.ppf(true_auc)
    draws = rng.normal(base, run_sd, 200_000)
    truth = float(norm.cdf(draws / np.sqrt(2)).mean())  # the expected AUC over run draws
    covered = naive = 0
    for _ in range(reps):
        runs = _runs(rng, true_auc, 60, 60, 5, run_sd)
        est = reliance.estimate_clean_auc(runs, "user", 0.0, 0.05)
        covered += est.lower < truth
        naive += est.estimate - 1.645 * np.sqrt(est.var_test) < truth
    rate = covered / reps
    assert 0.92 <= rate <= 0.985, rate
    assert naive / reps < rate - 0.04, "the run variance must widen the bound"


def test_a_model_at_chance_fails_the_clean_auc_control_and_a_learned_one_passes() -> None:
    rng = np.random.default_rng(3)
    learned = _runs(rng, 0.9, 40, 40, 3, 0.05, roles=("user", "reference"))
    record = clean_auc_control({"tag": learned}, 0.6)
    assert record["passed"] is True
    assert all(r["lower"] > 0.6 for r in record["per_model"])
    chance = _runs(rng, 0.5, 40, 40, 3, 0.05, roles=("user",))
    mixed = [r for r in learned if r.role == "reference"] + chance
    record = clean_auc_control({"tag": mixed}, 0.6)
    assert record["passed"] is False
    assert {r["role"]: r["passed"] for r in record["per_model"]} == {
        "user": False,
        "reference": True,
    }
    nothing = clean_auc_control({}, 0.6)  # nothing gated: the gate itself is inconclusive
    assert nothing["applicable"] is False and nothing["per_model"] == []


def test_the_record_passes_only_when_training_and_clean_auc_hold() -> None:
    good_training = training_control([_result()])
    bad_training = training_control([_result(train_loss_end=0.9)])
    rng = np.random.default_rng(5)
    good_clean = clean_auc_control(
        {"tag": _runs(rng, 0.9, 40, 40, 3, 0.05, ("user", "reference"))}, 0.6
    )
    record = controls_record(good_training, good_clean, {})
    assert record["passed"] is True and record["reason"] is None
    record = controls_record(bad_training, good_clean, {})
    assert record["passed"] is False and record["failed"] == ["training"]
    assert "1 of 1 runs show no training" in record["reason"]
