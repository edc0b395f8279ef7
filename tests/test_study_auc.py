"""The study's AUC: Keras's AUC on one-hot labels and both softmax columns, worked by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from audit.analysis.study_auc import keras_thresholds, study_auc


def test_four_cases_worked_by_hand():
    # labels y = [0, 0, 1, 1], scores p = [0.1, 0.4, 0.35, 0.8].
    # One-hot columns [1 - y, y] and scores [1 - p, p], flattened (Keras pools both columns):
    #   pooled positives (label 1): 1 - p of the negatives {0.9, 0.6}, p of the positives
    #   {0.35, 0.8}; pooled negatives (label 0): 1 - p of the positives {0.65, 0.2}, p of the
    #   negatives {0.1, 0.4}.
    # Buckets ceil(199 s) - 1: 0.1 -> 19, 0.2 -> 39, 0.35 -> 69, 0.4 -> 79, 0.6 -> 119,
    # 0.65 -> 129, 0.8 -> 159, 0.9 -> 179: eight different buckets, so the 200-threshold ROC
    # passes through every corner of the exact ROC and its trapezoids add up to the pair count.
    # Pairs (positive above negative), 16 in all:
    #   0.9 beats 0.65, 0.4, 0.2, 0.1 (4); 0.8 beats all four (4); 0.6 beats 0.4, 0.2, 0.1 (3);
    #   0.35 beats 0.2, 0.1 (2): 13 / 16 = 0.8125.
    # The binary AUC compares positives {0.35, 0.8} with negatives {0.1, 0.4}: 3 / 4 = 0.75.
    labels = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    assert study_auc(labels, p) == pytest.approx(13 / 16, abs=1e-12)
    assert roc_auc_score(labels, p) == pytest.approx(0.75)


def test_a_perfectly_ranked_but_shifted_score_worked_by_hand():
    # y = [0, 1, 0, 1], p = [0.6, 0.9, 0.7, 0.8]: every positive above every negative, binary
    # AUC 1. But every p is above 0.5.
    #   pooled positives: p of the positives {0.9, 0.8}, 1 - p of the negatives {0.4, 0.3};
    #   pooled negatives: 1 - p of the positives {0.1, 0.2}, p of the negatives {0.6, 0.7}.
    # Buckets (0.1 -> 19, 0.2 -> 39, 0.3 -> 59, 0.4 -> 79, 0.6 -> 119, 0.7 -> 139, 0.8 -> 159,
    # 0.9 -> 179) are all different again. Pairs: 0.9 and 0.8 beat all four negatives (8); 0.4
    # and 0.3 beat only 0.1 and 0.2 (4): 12 / 16 = 0.75.
    # The closed form of the module docstring agrees: (2*2*2*1 + 2**2 * 1 + 2**2 * 0) / 4**2.
    labels = np.array([0, 1, 0, 1])
    p = np.array([0.6, 0.9, 0.7, 0.8])
    assert roc_auc_score(labels, p) == 1.0
    assert study_auc(labels, p) == pytest.approx(12 / 16, abs=1e-12)


def test_scores_in_one_threshold_bucket_tie_worked_by_hand():
    # y = [0, 1], p = [0.501, 0.502]: ranked perfectly, binary AUC 1. The four pooled scores
    # 0.498, 0.499 (1 - p) and 0.501, 0.502 (p) times 199 are 99.10, 99.30, 99.70, 99.90: all in
    # bucket 99. Up to threshold 99/199 every score is above (TPR = FPR = 1), from 100/199 on none
    # is (TPR = FPR = 0): one trapezoid from (1, 1) to (0, 0), area 1 * (1 + 0) / 2 = 0.5.
    labels = np.array([0, 1])
    p = np.array([0.501, 0.502])
    assert roc_auc_score(labels, p) == 1.0
    assert study_auc(labels, p) == pytest.approx(0.5, abs=1e-12)


def test_calibrated_confident_scores_worked_by_hand():
    # y = [0, 1, 0, 1], p = [0.2, 0.9, 0.3, 0.7]: pooled positives {0.9, 0.7} (p) and {0.8, 0.7}
    # (1 - p of the negatives); pooled negatives {0.1, 0.3} and {0.2, 0.3}. Every pooled positive
    # (>= 0.7) is above every pooled negative (<= 0.3): 16 / 16 = 1. The two 0.7s are both
    # positives, so sharing bucket 139 costs nothing.
    labels = np.array([0, 1, 0, 1])
    assert study_auc(labels, np.array([0.2, 0.9, 0.3, 0.7])) == pytest.approx(1.0, abs=1e-12)


def test_one_hot_labels_and_two_column_scores_give_the_same_value():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 50)
    p = rng.uniform(0, 1, 50).astype(np.float32)
    onehot = np.stack([1 - labels, labels], axis=1)
    softmax = np.stack([np.float32(1) - p, p], axis=1)
    assert study_auc(onehot, softmax) == study_auc(labels, p)
    assert study_auc(labels.astype(bool), p) == study_auc(labels, p)


def test_defined_when_every_case_has_one_label():
    # y = [1, 1], p = [0.9, 0.8]: pooled positives {0.9, 0.8}, pooled negatives {0.1, 0.2}: 1.
    assert study_auc(np.array([1, 1]), np.array([0.9, 0.8])) == pytest.approx(1.0, abs=1e-12)


def test_a_shifted_well_ranked_score_reads_much_lower_than_the_binary_auc():
    """The study's test split (31 positive, 52 negative): scores that rank well (binary AUC about
    0.89) but all sit above 0.5 read about 0.55, as the closed form predicts."""
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(31, int), np.zeros(52, int)]
    logits = rng.normal(0, 1, 83) + 2.0 * labels - 1.0  # centred: the classes meet near 0.5
    well_ranked = 1 / (1 + np.exp(-logits))
    shifted = 0.6 + 0.4 * well_ranked  # same ranking, every score above 0.5
    binary = roc_auc_score(labels, shifted)
    assert binary == pytest.approx(roc_auc_score(labels, well_ranked))
    assert binary > 0.85
    study = study_auc(labels, shifted)
    assert study < binary - 0.25
    # every positive pair sums above 1, no negative pair below 1: (2 n1 n0 AUC + n1**2) / N**2
    predicted = (2 * 31 * 52 * binary + 31**2) / 83**2
    assert study == pytest.approx(predicted, abs=0.02)
    # the same ranking centred on 0.5 reads near its binary AUC: only the calibration changed
    assert study_auc(labels, well_ranked) == pytest.approx(binary, abs=0.02)


def reference_auc(labels: np.ndarray, p: np.ndarray, num_thresholds: int = 200) -> float:
    """Keras's AUC written out plainly: explicit thresholds, a confusion matrix at each one
    (predicted positive when the float32 score is strictly above the float32 threshold, as
    Keras's generic path compares), then the trapezoidal sum."""
    truth = np.stack([1 - labels, labels], axis=1).ravel().astype(bool)
    p32 = p.astype(np.float32)
    pred = np.stack([np.float32(1) - p32, p32], axis=1).ravel()
    inner = [i / (num_thresholds - 1) for i in range(1, num_thresholds - 1)]
    thresholds = np.array([-1e-7, *inner, 1 + 1e-7], dtype=np.float32)
    tpr, fpr = [], []
    for t in thresholds:
        above = pred > t
        tp = np.sum(above & truth)
        fn = np.sum(~above & truth)
        fp = np.sum(above & ~truth)
        tn = np.sum(~above & ~truth)
        tpr.append(tp / (tp + fn) if tp + fn else 0.0)
        fpr.append(fp / (fp + tn) if fp + tn else 0.0)
    area = 0.0
    for k in range(num_thresholds - 1):
        area += (fpr[k] - fpr[k + 1]) * (tpr[k] + tpr[k + 1]) / 2
    return area


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_a_plain_reimplementation_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    labels = rng.integers(0, 2, n)
    draw = [
        lambda: rng.uniform(0, 1, n),
        lambda: rng.beta(0.3, 0.3, n),  # many scores near 0 and 1
        lambda: np.round(rng.uniform(0, 1, n), 2),  # ties, some on thresholds' neighbours
    ][seed % 3]
    p = draw()
    assert study_auc(labels, p) == pytest.approx(reference_auc(labels, p), abs=1e-12)


def test_agrees_with_the_plain_reimplementation_at_other_threshold_counts():
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 2, 120)
    p = rng.uniform(0, 1, 120)
    for n in (2, 3, 11, 1000):
        assert study_auc(labels, p, num_thresholds=n) == pytest.approx(
            reference_auc(labels, p, n), abs=1e-12
        )


def test_scores_on_the_ends_and_on_a_threshold_count_as_keras_counts_them():
    # p = 0 is above only the first threshold (-eps); p = 1 is above all but the last (1 + eps);
    # a score exactly on a threshold is not above it.
    labels = np.array([0, 1, 0, 1, 1])
    p = np.array([0.0, 1.0, 100 / 199, 100 / 199, 1.0])
    assert study_auc(labels, p) == pytest.approx(reference_auc(labels, p), abs=1e-12)


def test_keras_thresholds_are_evenly_spaced_with_epsilon_ends():
    t = keras_thresholds()
    assert t.dtype == np.float32 and len(t) == 200
    assert t[0] == np.float32(-1e-7) and t[-1] == np.float32(1 + 1e-7)
    assert np.allclose(t[1:-1], np.arange(1, 199) / 199)


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        ([0, 2], [0.1, 0.2], "labels must be 0/1"),
        ([], [], "non-empty"),
        ([[1, 1], [0, 1]], [0.1, 0.2], "one-hot"),
        ([0, 1], [0.1, 1.2], r"\[0, 1\]"),
        ([0, 1], [0.1, np.nan], r"\[0, 1\]"),
        ([0, 1], [0.1, 0.2, 0.3], r"shape \(2,\) or \(2, 2\)"),
    ],
)
def test_bad_inputs_are_one_line_errors(labels, scores, message):
    with pytest.raises(ValueError, match=message):
        study_auc(np.array(labels), np.array(scores))


def test_a_bad_threshold_count_is_refused():
    with pytest.raises(ValueError, match="num_thresholds"):
        study_auc(np.array([0, 1]), np.array([0.1, 0.9]), num_thresholds=1)
