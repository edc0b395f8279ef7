"""The study's AUC: Keras's ``tf.keras.metrics.AUC()`` on one-hot labels against both softmax columns.

The study scored every test set with a fresh ``keras.metrics.AUC()`` (200 thresholds, ROC curve,
``summation_method="interpolation"``), updated with the one-hot labels ``[1 - y, y]`` and the
model's two softmax columns ``[1 - p, p]``. That metric is not multi-label, so Keras flattens both
arrays and pools the two columns into one ROC curve: a *micro-average* over the one-hot columns.
:func:`study_auc` repeats that computation, so a medaudit number can be set beside the study's
figures; medaudit's own reports use the standard binary ROC AUC of ``p``.

Why it differs from the binary AUC. Pooling the columns makes ``2N`` "positives" -- ``p_i`` of each
positive case and ``1 - p_j`` of each negative case -- against ``2N`` "negatives" -- ``1 - p_i`` of
each positive and ``p_j`` of each negative. Of the ``N**2`` (positive, negative) pairs, with
``n1`` positive and ``n0`` negative cases:

* ``2 * n1 * n0`` pairs compare a positive case with a negative case (``p_i`` against ``p_j``, or
  ``1 - p_j`` against ``1 - p_i``): the binary AUC;
* ``n1**2`` pairs ask whether ``p_i + p_k > 1`` for two positive cases (self-pairs included);
* ``n0**2`` pairs ask whether ``p_j + p_l < 1`` for two negative cases.

So ``AUC_study ~= (2 n1 n0 AUC_binary + n1**2 P[p_i + p_k > 1] + n0**2 P[p_j + p_l < 1]) / N**2``
(up to ties at the threshold grid's resolution, which count half). The last two terms depend on
where the scores sit against 0.5, not on how they rank: the metric rewards calibration. A
perfectly ranked score shifted upwards (every ``p > 0.5``) keeps its binary AUC but scores 1 on
the positive term and 0 on the negative one; with the study's test split (31 positive, 52
negative cases) a binary AUC of 0.92 then reads about 0.57. A well-calibrated, confident model
reads above its binary AUC. The study's figures are therefore not comparable with a binary AUC
even in distribution, and its o.o.d. numbers mix a loss of ranking with a shift of the scores.

The computation is Keras's own for evenly spaced thresholds: thresholds ``[-eps, 1/(n-1), ...,
(n-2)/(n-1), 1 + eps]`` (``eps = 1e-7``, Keras's ``backend.epsilon()``); a score counts as
predicted positive at a threshold when it is strictly greater; each float32 score falls in bucket
``max(ceil(score * (n - 1)) - 1, 0)``, the counts are cumulated from the top bucket down, and the
area is the trapezoidal sum ``sum((fpr[k] - fpr[k+1]) * (tpr[k] + tpr[k+1]) / 2)``. The counts are
exact; the rates and the sum are computed in float64 here, where Keras uses float32, so the two
agree to about 1e-7.
"""

from __future__ import annotations

import numpy as np

NUM_THRESHOLDS = 200  # tf.keras.metrics.AUC's default
EPSILON = 1e-7  # keras.backend.epsilon(): the end thresholds sit just outside [0, 1]


def keras_thresholds(num_thresholds: int = NUM_THRESHOLDS) -> np.ndarray:
    """The thresholds ``tf.keras.metrics.AUC(num_thresholds=...)`` uses, as float32 like Keras."""
    _check_num_thresholds(num_thresholds)
    inner = [(i + 1) / (num_thresholds - 1) for i in range(num_thresholds - 2)]
    return np.array([0.0 - EPSILON, *inner, 1.0 + EPSILON], dtype=np.float32)


def study_auc(labels: object, scores: object, *, num_thresholds: int = NUM_THRESHOLDS) -> float:
    """The study's AUC of ``scores`` against ``labels``: Keras's AUC micro-averaged over one-hot.

    ``labels``: 0/1 per case (1 = positive), or the one-hot ``(N, 2)`` array itself.
    ``scores``: the positive class's probability ``p`` per case (the columns are then
    ``[1 - p, p]``, computed in float32), or the model's ``(N, 2)`` softmax output itself. Every
    score must lie in [0, 1], as Keras asserts.

    Unlike the binary AUC it is defined when every case has one label: each one-hot row holds a 1
    and a 0, so the pooled columns always have both. See the module docstring for why it depends
    on calibration.
    """
    _check_num_thresholds(num_thresholds)
    onehot = _onehot_labels(labels)
    columns = _score_columns(scores, len(onehot))
    truth = onehot.ravel()
    pred = columns.ravel()
    buckets = np.ceil(pred * np.float32(num_thresholds - 1)) - 1
    buckets = np.maximum(buckets, 0).astype(np.int64)  # thresholds with epsilon: -1 counts as 0
    tp = np.bincount(buckets, weights=truth, minlength=num_thresholds)[::-1].cumsum()[::-1]
    fp = np.bincount(buckets, weights=1.0 - truth, minlength=num_thresholds)[::-1].cumsum()[::-1]
    tpr = _divide_no_nan(tp, tp[0])  # tp + fn is the number of positives, tp at threshold -eps
    fpr = _divide_no_nan(fp, fp[0])
    return float(np.sum((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2.0))


def _divide_no_nan(numerator: np.ndarray, denominator: float) -> np.ndarray:
    if denominator == 0:
        return np.zeros_like(numerator, dtype=np.float64)
    return numerator / denominator


def _check_num_thresholds(num_thresholds: int) -> None:
    if isinstance(num_thresholds, bool) or not isinstance(num_thresholds, int | np.integer):
        raise ValueError(f"num_thresholds must be an int > 1; got {num_thresholds!r}.")
    if num_thresholds <= 1:
        raise ValueError(f"num_thresholds must be an int > 1; got {num_thresholds!r}.")


def _onehot_labels(labels: object) -> np.ndarray:
    """(N, 2) float64 one-hot labels from 0/1 labels or a one-hot array; a one-line ValueError."""
    arr = np.asarray(labels)
    if arr.ndim == 1 and arr.size > 0:
        if arr.dtype == bool:
            arr = arr.astype(np.int8)
        if not np.issubdtype(arr.dtype, np.number) or not np.isin(arr, (0, 1)).all():
            raise ValueError(f"labels must be 0/1 per case; got values {np.unique(arr)[:5]!r}.")
        y = arr.astype(np.float64)
        return np.stack([1.0 - y, y], axis=1)
    if arr.ndim == 2 and arr.shape[0] > 0 and arr.shape[1] == 2:
        if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
            raise ValueError(f"labels must be a one-hot (N, 2) array; got dtype {arr.dtype}.")
        onehot = arr.astype(np.float64)
        if not (np.isin(onehot, (0.0, 1.0)).all() and (onehot.sum(axis=1) == 1).all()):
            raise ValueError("labels given as (N, 2) must be one-hot: one 1 and one 0 per row.")
        return onehot
    raise ValueError(
        f"labels must be a non-empty 1-D array of 0/1 or a one-hot (N, 2) array; "
        f"got shape {arr.shape}."
    )


def _score_columns(scores: object, n: int) -> np.ndarray:
    """(N, 2) float32 scores: ``[1 - p, p]`` from p per case, or the (N, 2) softmax as given."""
    arr = np.asarray(scores)
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"scores must be real numbers in [0, 1]; got dtype {arr.dtype}.")
    if arr.shape not in ((n,), (n, 2)):
        raise ValueError(
            f"scores must have shape ({n},) or ({n}, 2), one row per label; got {arr.shape}."
        )
    values = arr.astype(np.float32)
    if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
        raise ValueError("scores must be probabilities in [0, 1] (Keras's AUC asserts it).")
    if values.ndim == 1:
        return np.stack([np.float32(1.0) - values, values], axis=1)
    return values
