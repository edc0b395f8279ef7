"""The study's own test, reported beside medaudit's paired one and named as the study's."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from audit.analysis.summaries import descriptive_statistics
from audit.train.engine import RunResult


def _run(role: str, fold: int, auc: float, rng: np.random.Generator) -> RunResult:
    y = (0, 0, 0, 1, 1, 1)
    scores = tuple(float(v) for v in rng.random(6))
    return RunResult(
        key=f"{role}{fold}", role=role, confounder="tag", level=0.5, fold=fold,
        auc={"ood": auc}, scores={"ood": scores}, case_ids={"ood": tuple("abcdef")},
        labels={"ood": y}, epochs_run=1, best_epoch=1, best_val_loss=0.1, seconds=1.0,
        device="cpu",
    )  # fmt: skip


@pytest.mark.parametrize("seed", range(5))
def test_the_studys_test_is_scipys_permutation_t_test_over_fold_aucs(seed) -> None:
    """The study ran scipy.stats.ttest_ind(imagenet, radimagenet, permutations=10000) on five AUCs
    a side; scipy now spells it method=PermutationMethod(n_resamples=10000). With 252 distinct
    splits scipy enumerates them all, so the two agree exactly."""
    rng = np.random.default_rng(seed)
    user = rng.uniform(0.3, 0.8, 5)
    reference = rng.uniform(0.5, 0.9, 5)
    runs = [_run("user", k, a, rng) for k, a in enumerate(user)]
    runs += [_run("reference", k, a, rng) for k, a in enumerate(reference)]
    (row,) = descriptive_statistics(runs, "tag", [0.5])
    method = scipy_stats.PermutationMethod(n_resamples=10000)
    expected = scipy_stats.ttest_ind(user, reference, method=method).pvalue
    assert row["study_test_p"] == pytest.approx(expected, abs=1e-12)
    assert row["study_test_splits"] == 252
    assert row["permutation_p"] is not None, "the paired sign-flip test is kept, under its name"


def test_fully_separated_folds_give_the_studys_smallest_p() -> None:
    rng = np.random.default_rng(0)
    runs = [_run("user", k, 0.2 + k / 100, rng) for k in range(5)]
    runs += [_run("reference", k, 0.8 + k / 100, rng) for k in range(5)]
    (row,) = descriptive_statistics(runs, "tag", [0.5])
    assert row["study_test_p"] == pytest.approx(2 / 252)
