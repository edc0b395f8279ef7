"""The reference-standardised shortcut-reliance gap and its interval: the statistical core of the
release gate (:func:`decide`; the pipeline reaches it through :mod:`audit.analysis.gate`).

Why a new measure. S compares the two models' o.o.d. AUCs, so a user model that is merely less
accurate shows a gap without leaning on any shortcut; and S's bootstrap resamples test patients
only, so its interval ignores how much the fine-tuning runs themselves differ. Here, per confounder
and correlation level p,

    D_p = Phi(z(C_ref) - z(K_ref)) - Phi(z(C_ref) - z(K_user)),   z = Phi^-1 of a clipped AUC,

where C is the clean AUC and K the lift AUC (negatives carrying the confounder against negatives
without it). Under the binormal equal-variance model Phi(z(C) - z(K)) is the o.o.d. AUC, so D_p is
how much lower the reference's o.o.d. AUC would be with the user's reliance: zero for equal lift,
whatever the two accuracies. The gated measure is the mean of D_p over the counted levels p > 0.

The interval adds two variances. The test patients': the delta method on DeLong / Obuchowski
structural components (placement values per case, summed per patient, stratified by what each
patient contributes), every run evaluated on the same patients, so one audit costs a few array
operations. The runs': the spread of the F per-fold measures, divided by F, on F - 1 degrees of
freedom. The interval is t-like: the generalized pivot Z sqrt(V_test + V_runs (F - 1) / W),
W ~ chi^2_{F-1}, which is t_{F-1} when test variance vanishes and normal when run variance does
(the plain Satterthwaite t was simulated and found slightly liberal at F = 5; Satterthwaite's df
is still reported). Decision: fail if the lower bound exceeds the margin (Holm across
confounders), pass only if every confounder's upper bound is below it (intersection-union),
otherwise inconclusive. The derivation, the simulations that check it and their measured rates
are in docs/reliance-measure.md.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.optimize import brentq
from scipy.special import chdtri, gammaln, ndtr, ndtri, stdtrit

from audit.analysis.stats import holm

ROLES = ("user", "reference")
KINDS = ("pixel", "sampling")
VERDICTS = ("pass", "fail", "inconclusive")
DEFAULT_CLIP = 0.005
DEFAULT_LIFT_AUC = (0.55, 0.60, 0.70, 0.80, 0.90)  # the power helper's reference lift profile
DEFAULT_RUN_SD = 0.03  # the power helper's between-fold SD of the measure (one repeat per fold)
METHOD_NOTE = (
    "Reference-standardised reliance gap: mean over counted levels of "
    "Phi(z(C_ref) - z(K_ref)) - Phi(z(C_ref) - z(K_user)). SE^2 = V_test (delta method, "
    "patient-level structural components, all runs paired on the same test patients) + V_runs "
    "(variance of the per-fold measures / F, F - 1 df); interval and p-values from the "
    "generalized pivot Z sqrt(V_test + V_runs (F - 1) / chi^2_{F-1}). Fail: lower bound > "
    "margin, Holm across confounders; pass: every upper bound < margin (intersection-union)."
)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _pdf(x: np.ndarray) -> np.ndarray:
    return _INV_SQRT_2PI * np.exp(-0.5 * np.square(x))


# ------------------------------------------------------------------------------- input validation


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}; got {value!r}.")
    return int(value)


def _open_unit(name: str, value: object, high: float = 1.0) -> float:
    number = float(value)  # type: ignore[arg-type]
    if not 0.0 < number < high:
        raise ValueError(f"{name} must lie in (0, {high:g}); got {value!r}.")
    return number


def _scores(values: object, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array; got shape {arr.shape}.")
    if not math.isfinite(float(arr.sum())) and not np.isfinite(arr).all():  # the sum: cheap
        raise ValueError(f"{name} must be finite; got {int(np.sum(~np.isfinite(arr)))} NaN/inf.")
    return arr


def _patients(values: object, n: int, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), one id per case; got {arr.shape}.")
    return arr


# ---------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True, eq=False)
class RunScores:
    """One fine-tuning run's scores on the shared, fixed test set (arrays, one entry per image).

    ``clean_*``: the clean test set. ``treated_*``: the negatives carrying the confounder (pixel:
    the artifact applied; sampling: the attribute value training paired with positives).
    ``control_*``: the negatives they are compared with (pixel: the same negatives clean, in the
    same order; sampling: the negatives with the other value). Patient ids tie a patient's images
    together across the three sets; every run of a confounder must carry the same test layout.
    """

    role: str
    level: float
    fold: int
    clean_scores: np.ndarray
    clean_labels: np.ndarray
    clean_patients: np.ndarray
    treated_scores: np.ndarray
    treated_patients: np.ndarray
    control_scores: np.ndarray
    control_patients: np.ndarray
    repeat: int = 0

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}; got {self.role!r}.")
        level = float(self.level)
        if not 0.0 <= level <= 1.0:
            raise ValueError(f"level must lie in [0, 1]; got {self.level!r}.")
        object.__setattr__(self, "level", level)
        object.__setattr__(self, "fold", _check_int("fold", self.fold, 0))
        object.__setattr__(self, "repeat", _check_int("repeat", self.repeat, 0))
        clean = _scores(self.clean_scores, "clean_scores")
        labels = np.asarray(self.clean_labels)
        if (
            labels.shape != clean.shape
            or labels.dtype.kind not in "biuf"
            or not ((labels == 0) | (labels == 1)).all()
        ):
            raise ValueError(
                f"clean_labels must be {clean.size} labels of 0 or 1, one per clean score; got "
                f"shape {labels.shape}."
            )
        if labels.dtype != np.int8:  # kept as is otherwise: runs sharing one array stay shared
            labels = labels.astype(np.int8)
        n_pos = int(labels.sum())
        if n_pos < 2 or clean.size - n_pos < 2:
            raise ValueError(
                "the clean set must hold at least 2 positives and 2 negatives; got "
                f"{n_pos} and {clean.size - n_pos}."
            )
        object.__setattr__(self, "clean_scores", clean)
        object.__setattr__(self, "clean_labels", labels)
        object.__setattr__(
            self, "clean_patients", _patients(self.clean_patients, clean.size, "clean_patients")
        )
        for part in ("treated", "control"):
            scores = _scores(getattr(self, f"{part}_scores"), f"{part}_scores")
            ids = _patients(getattr(self, f"{part}_patients"), scores.size, f"{part}_patients")
            object.__setattr__(self, f"{part}_scores", scores)
            object.__setattr__(self, f"{part}_patients", ids)


@dataclass(frozen=True, eq=False)
class ConfounderRuns:
    """All runs of one confounder, both roles, every level, fold and repeat, on one test layout.

    ``kind`` "pixel": treated and control are the same negatives (same patients, same order);
    "sampling" (e.g. sex): they are disjoint groups of patients.
    """

    runs: tuple[RunScores, ...]
    kind: str = "pixel"

    def __post_init__(self) -> None:
        runs = tuple(self.runs)
        object.__setattr__(self, "runs", runs)
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {self.kind!r}.")
        if not runs or not all(isinstance(r, RunScores) for r in runs):
            raise ValueError("runs must be a non-empty sequence of RunScores.")
        first = runs[0]
        for name in ("clean_labels", "clean_patients", "treated_patients", "control_patients"):
            ref = getattr(first, name)
            for r in runs[1:]:
                other = getattr(r, name)
                if other is not ref and not np.array_equal(other, ref):
                    raise ValueError(
                        f"every run must be scored on the same test cases in the same order; "
                        f"{name} of the {r.role} run at level {r.level}, fold {r.fold}, repeat "
                        f"{r.repeat} differs from the first run's."
                    )
        keys = [(r.role, r.level, r.fold, r.repeat) for r in runs]
        if len(set(keys)) != len(keys):
            raise ValueError("runs must not repeat a (role, level, fold, repeat).")
        missing = set(ROLES) - {r.role for r in runs}
        if missing:
            raise ValueError(f"runs must include both roles; none for {sorted(missing)}.")
        treated, control = first.treated_patients, first.control_patients
        if self.kind == "pixel" and not np.array_equal(treated, control):
            raise ValueError(
                "a pixel confounder compares each negative with the artifact against the same "
                "negative clean: treated_patients must equal control_patients, in order."
            )
        if self.kind == "sampling" and np.intersect1d(treated, control).size:
            raise ValueError(
                "a sampling confounder compares two disjoint groups of negatives: a patient "
                "cannot be both treated and control."
            )


@dataclass(frozen=True)
class RelianceSettings:
    """The pre-declared settings; recorded with every verdict.

    ``counted_levels``: the levels p > 0 whose D_p are averaged (None: every level > 0 that was
    run). ``clip``: AUCs are clipped to [clip, 1 - clip] before Phi^-1, so that a fully collapsed
    model (K = 1) stays finite and two collapsed models read as equal.
    """

    margin: float = 0.05
    alpha: float = 0.05
    counted_levels: tuple[float, ...] | None = None
    clip: float = DEFAULT_CLIP

    def __post_init__(self) -> None:
        object.__setattr__(self, "margin", _open_unit("margin", self.margin))
        object.__setattr__(self, "alpha", _open_unit("alpha", self.alpha))
        object.__setattr__(self, "clip", _open_unit("clip", self.clip, 0.5))
        if self.counted_levels is not None:
            levels = tuple(float(v) for v in self.counted_levels)
            if (
                not levels
                or any(not 0.0 < v <= 1.0 for v in levels)
                or len(set(levels)) < len(levels)
            ):
                raise ValueError(
                    "counted_levels must be None or distinct levels in (0, 1] (p = 0 has no "
                    f"shortcut to rely on); got {self.counted_levels!r}."
                )
            object.__setattr__(self, "counted_levels", levels)


# --------------------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class LevelGap:
    """One level's run-averaged AUCs and D_p (C_user is shown, but D_p does not use it)."""

    level: float
    gap: float
    clean_auc_reference: float
    clean_auc_user: float
    lift_auc_reference: float
    lift_auc_user: float
    ood_reference: float  # Phi(z(C_ref) - z(K_ref)): the reference's binormal o.o.d. AUC
    ood_reference_with_user_lift: float  # Phi(z(C_ref) - z(K_user))


@dataclass(frozen=True)
class FitCheck:
    """Observed o.o.d. AUC (clean positives vs treated negatives) against the binormal prediction
    Phi(z(C) - z(K)); ``se`` is the test-patient SE of the difference. A large difference says the
    binormal reading of D_p as an o.o.d. AUC is off (the measure itself stays defined)."""

    role: str
    level: float
    observed_ood_auc: float
    predicted_ood_auc: float
    difference: float
    se: float


@dataclass(frozen=True)
class Retention:
    """A model's run-averaged clean AUC at a level, and its ratio to the clean AUC at p = 0."""

    role: str
    level: float
    clean_auc: float
    retention: float | None  # None when p = 0 was not run


@dataclass(frozen=True)
class RelianceEstimate:
    """One confounder's measure, its interval and both variance parts.

    ``df`` is Satterthwaite's effective df (inf when the runs do not vary or only one fold was
    run), reported; the interval and p-values come from the generalized pivot (module docstring).
    ``fold_estimates`` are the per-fold measures behind ``var_runs``.
    """

    estimate: float
    per_level: tuple[LevelGap, ...]
    var_test: float
    var_runs: float
    se: float
    df: float
    ci_low: float
    ci_high: float
    confidence: float
    n_folds: int
    n_runs: int
    fold_estimates: tuple[float, ...]
    runs_variance_available: bool
    n_positive: int
    n_negative: int
    n_patients: int
    kind: str = "pixel"
    fit_check: tuple[FitCheck, ...] = ()
    retention: tuple[Retention, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def levels(self) -> tuple[float, ...]:
        return tuple(g.level for g in self.per_level)

    @property
    def dominant_variance(self) -> str:
        """Which source is the larger share of SE^2: "test patients" or "runs"."""
        return "test patients" if self.var_test >= self.var_runs else "runs"

    def p_greater(self, margin: float) -> float:
        """One-sided p-value for "the measure exceeds ``margin``" (evidence to fail)."""
        return _pivot_tail(self.estimate - margin, self.var_test, self.var_runs, self.n_folds)

    def p_less(self, margin: float) -> float:
        """One-sided p-value for "the measure is below ``margin``" (evidence to pass)."""
        return _pivot_tail(margin - self.estimate, self.var_test, self.var_runs, self.n_folds)


@dataclass(frozen=True)
class ConfounderDecision:
    """The verdict on one confounder with the numbers behind it and one sentence why.

    p-values are one-sided; each side is tested at alpha / 2 so that the verdict and the
    two-sided (1 - alpha) interval agree. Only ``p_fail`` is Holm-adjusted.
    """

    confounder: str
    verdict: str
    estimate: RelianceEstimate
    margin: float
    p_fail: float
    p_pass: float
    p_fail_adjusted: float
    reason: str


@dataclass(frozen=True)
class RelianceVerdict:
    """The audit's overall verdict, each confounder's, and the settings that produced them."""

    overall: str
    per_confounder: tuple[ConfounderDecision, ...]
    settings: RelianceSettings
    method: str = field(default=METHOD_NOTE)


# ------------------------------------------------------------------------------------ the measure


def _z(auc: np.ndarray, clip: float) -> tuple[np.ndarray, np.ndarray]:
    """Phi^-1 of the clipped AUC, and where the clip is inactive (there the derivative is 1)."""
    auc = np.asarray(auc, dtype=float)
    inside = (auc > clip) & (auc < 1.0 - clip)
    return ndtri(np.clip(auc, clip, 1.0 - clip)), inside.astype(float)


def binormal_ood_auc(clean_auc: object, lift_auc: object, clip: float = DEFAULT_CLIP) -> np.ndarray:
    """Phi(z(C) - z(K)): the o.o.d. AUC the binormal equal-variance model predicts."""
    a, _ = _z(np.asarray(clean_auc, dtype=float), clip)
    b, _ = _z(np.asarray(lift_auc, dtype=float), clip)
    return ndtr(a - b)


def reliance_gap(
    clean_auc_reference: object,
    lift_auc_reference: object,
    lift_auc_user: object,
    clip: float = DEFAULT_CLIP,
) -> np.ndarray:
    """D_p = Phi(z(C_ref) - z(K_ref)) - Phi(z(C_ref) - z(K_user)), elementwise.

    Both terms use the reference's clean AUC, so the user's accuracy cannot enter: with equal lift
    the gap is exactly zero. Positive means the user model leans on the shortcut more.
    """
    return _gap_parts(
        np.asarray(clean_auc_reference, dtype=float),
        np.asarray(lift_auc_reference, dtype=float),
        np.asarray(lift_auc_user, dtype=float),
        clip,
    )[0]


def _gap_parts(
    c_ref: np.ndarray, k_ref: np.ndarray, k_user: np.ndarray, clip: float
) -> tuple[np.ndarray, ...]:
    """D_p and its derivatives w.r.t. C_ref, K_ref and K_user (zero where the clip binds)."""
    a, in_a = _z(c_ref, clip)
    b_ref, in_ref = _z(k_ref, clip)
    b_user, in_user = _z(k_user, clip)
    pdf_ref, pdf_user = _pdf(a - b_ref), _pdf(a - b_user)
    gap = ndtr(a - b_ref) - ndtr(a - b_user)
    d_clean = (pdf_ref - pdf_user) / _pdf(a) * in_a
    d_ref = -pdf_ref / _pdf(b_ref) * in_ref
    d_user = pdf_user / _pdf(b_user) * in_user
    return gap, d_clean, d_ref, d_user


# ------------------------------------------------------------------- AUCs and structural components


def _cross_counts(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row by row: for each a, the b's below it; for each b, the a's above it (ties count half).

    One argsort of (rows, na + nb) serves every run at once; tie groups are looked for only when
    scores tie (saturated outputs do). Tied values are adjacent in any sorted order, so the sort
    need not be stable.
    """
    rows, na = a.shape
    n = na + b.shape[1]
    values = np.ascontiguousarray(np.concatenate([a, b], axis=1))
    order = np.argsort(values, axis=1)
    flat = (order + n * np.arange(rows)[:, None]).ravel()
    ordered = values.ravel()[flat].reshape(rows, n)
    from_b = order >= na
    b_upto = np.cumsum(from_b, axis=1, dtype=np.int32)  # b's at or before each sorted position
    position = np.arange(n, dtype=np.int32)
    tied = ordered[:, 1:] == ordered[:, :-1]
    if tied.any():
        first = np.ones((rows, n), dtype=bool)
        first[:, 1:] = ~tied
        last = np.ones((rows, n), dtype=bool)
        last[:, :-1] = ~tied
        start = np.maximum.accumulate(np.where(first, position, 0), axis=1)
        end = np.minimum.accumulate(np.where(last, position, n - 1)[:, ::-1], axis=1)[:, ::-1]
        b_below = np.take_along_axis(b_upto, start, axis=1) - np.take_along_axis(
            from_b, start, axis=1
        )
        b_tied = np.take_along_axis(b_upto, end, axis=1) - b_below
        a_below = start - b_below
        a_tied = end - start + 1 - b_tied
        counts = np.where(from_b, na - a_below - 0.5 * a_tied, b_below + 0.5 * b_tied)
    else:  # an a at sorted position s has b_upto b's below; a b there has s - b_upto + 1 a's
        counts = (b_upto + from_b * (na - 1 - position)).astype(float)
    out = np.empty(rows * n)
    out[flat] = counts.ravel()
    out = out.reshape(rows, n)
    return out[:, :na], out[:, na:]


def _flat_sums(index: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """Row by row: sums of ``values`` (rows, k) into ``size`` bins by ``index`` (k,)."""
    rows = values.shape[0]
    flat = (index[None, :] + size * np.arange(rows)[:, None]).ravel()
    return np.bincount(flat, weights=values.ravel(), minlength=rows * size).reshape(rows, size)


@dataclass(frozen=True, eq=False)
class _Layout:
    """The shared test layout: case indices, each case's patient, the patients' strata, and the
    treated/control pairs of one patient (left out of K)."""

    pos: np.ndarray
    neg: np.ndarray
    code_pos: np.ndarray
    code_neg: np.ndarray
    code_treated: np.ndarray
    code_control: np.ndarray
    n_patients: int
    strata: np.ndarray  # (patients, strata) one-hot: which sets a patient appears in
    stratum_factor: np.ndarray  # per stratum: n / (n - 1), or 1 for a stratum of one
    pair_t: np.ndarray  # same-patient treated/control pairs, left out of K
    pair_c: np.ndarray
    pairs_by_t: sparse.csr_matrix  # (treated, pairs) incidence, to sum a run's pairs per case
    pairs_by_c: sparse.csr_matrix
    valid_t: np.ndarray  # per treated case: controls from other patients
    valid_c: np.ndarray

    @classmethod
    def of(cls, run: RunScores) -> _Layout:
        """The layout of ``run``'s test set, computed once per distinct layout."""
        sets = (run.clean_labels, run.clean_patients, run.treated_patients, run.control_patients)
        if all(a.dtype.kind in "biuUS" for a in sets):  # plain bytes: safe to key a cache on
            key = tuple((a.dtype.str, a.shape, a.tobytes()) for a in sets)
            cached = _LAYOUTS.get(key)
            if cached is None:
                cached = _LAYOUTS[key] = cls._build(run)
                while len(_LAYOUTS) > 8:
                    _LAYOUTS.pop(next(iter(_LAYOUTS)))
            return cached
        return cls._build(run)

    @classmethod
    def _build(cls, run: RunScores) -> _Layout:
        sets = (run.clean_patients, run.treated_patients, run.control_patients)
        if len({s.dtype.kind in "iub" for s in sets}) > 1:
            sets = tuple(s.astype(str) for s in sets)
        _, code = np.unique(np.concatenate(sets), return_inverse=True)
        code = code.ravel()
        n_clean, n_t = run.clean_scores.size, run.treated_scores.size
        clean, treated = code[:n_clean], code[n_clean : n_clean + n_t]
        control = code[n_clean + n_t :]
        n_patients = int(code.max()) + 1
        pos = np.flatnonzero(run.clean_labels == 1)
        neg = np.flatnonzero(run.clean_labels == 0)
        signature = np.zeros(n_patients, dtype=np.int64)
        for bit, members in enumerate((clean[pos], clean[neg], treated, control)):
            signature[members] |= 1 << bit
        _, stratum = np.unique(signature, return_inverse=True)
        strata = np.zeros((n_patients, int(stratum.max()) + 1))
        strata[np.arange(n_patients), stratum.ravel()] = 1.0
        counts = strata.sum(axis=0)
        factor = np.where(counts > 1, counts / np.maximum(counts - 1, 1), 1.0)
        order = np.argsort(control, kind="stable")
        lo = np.searchsorted(control[order], treated, side="left")
        hi = np.searchsorted(control[order], treated, side="right")
        count = hi - lo
        pair_t = np.repeat(np.arange(n_t), count)
        offset = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
        pair_c = order[np.repeat(lo, count) + offset]
        valid_t = control.size - count
        valid_c = n_t - np.bincount(pair_c, minlength=control.size)
        if not valid_t.any():
            raise ValueError(
                "every treated/control pair belongs to one patient: the lift AUC needs negatives "
                "of at least two patients."
            )
        ones, k = np.ones(pair_t.size), np.arange(pair_t.size)
        return cls(
            pos, neg, clean[pos], clean[neg], treated, control, n_patients, strata, factor,
            pair_t, pair_c,
            sparse.csr_matrix((ones, (pair_t, k)), shape=(n_t, pair_t.size)),
            sparse.csr_matrix((ones, (pair_c, k)), shape=(control.size, pair_t.size)),
            valid_t, valid_c,
        )  # fmt: skip

    def patient_sums(self, parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """(k, patients): per patient, the sum of its cases' values over (code, values) parts."""
        k = parts[0][1].shape[0]
        total = np.zeros((k, self.n_patients))
        for code, values in parts:
            total += _flat_sums(code, values, self.n_patients)
        return total

    def variance(self, psi: np.ndarray) -> np.ndarray:
        """(k,) stratified variance of the sum of per-patient influences ``psi`` (k, patients).

        Strata are fixed by design (which sets a patient is in), so each is centred on its own
        mean with the n / (n - 1) correction; with one image per patient this is exactly DeLong's
        S10 / m + S01 / n. A stratum of one patient contributes its square uncentred.
        """
        counts = self.strata.sum(axis=0)
        means = np.where(counts > 1, (psi @ self.strata) / np.maximum(counts, 1), 0.0)
        squares = np.square(psi - means @ self.strata.T) @ self.strata
        return squares @ self.stratum_factor


_LAYOUTS: dict[tuple, _Layout] = {}


@dataclass(frozen=True, eq=False)
class _Components:
    """Per run: the AUC and each case's centred placement value / set size (its influence)."""

    auc: np.ndarray  # (runs,)
    first: np.ndarray  # (runs, cases of the first set)
    second: np.ndarray  # (runs, cases of the second set)


def _auc_components(counts_a: np.ndarray, counts_b: np.ndarray, na: int, nb: int) -> _Components:
    """Mann-Whitney AUC and Hajek influences from the cross counts of a vs b (all pairs)."""
    place_a, place_b = counts_a / nb, counts_b / na
    auc = place_a.mean(axis=1)
    return _Components(auc, (place_a - auc[:, None]) / na, (place_b - auc[:, None]) / nb)


def _lift_components(layout: _Layout, treated: np.ndarray, control: np.ndarray) -> _Components:
    """K over pairs of different patients: a negative against its own clean copy says nothing
    about the across-case separation the o.o.d. AUC measures, and leaving same-patient pairs out
    keeps K unchanged when every image of a patient is duplicated."""
    counts_t, counts_c = _cross_counts(treated, control)
    if layout.pair_t.size:
        a, b = treated[:, layout.pair_t], control[:, layout.pair_c]
        same = ((a > b) + 0.5 * (a == b)).T
        counts_t -= (layout.pairs_by_t @ same).T
        counts_c -= (layout.pairs_by_c @ same).T
    auc = counts_t.sum(axis=1) / layout.valid_t.sum()
    place_t = np.where(layout.valid_t > 0, counts_t / np.maximum(layout.valid_t, 1), auc[:, None])
    place_c = np.where(layout.valid_c > 0, counts_c / np.maximum(layout.valid_c, 1), auc[:, None])
    return _Components(
        auc,
        (place_t - auc[:, None]) / treated.shape[1],
        (place_c - auc[:, None]) / control.shape[1],
    )


# ------------------------------------------------------------------------------------ estimation


@functools.cache
def _chi_nodes(nu: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights for E[f(s)], s = sqrt(chi^2_nu) (the chi density times
    f is smooth in s, so 96 nodes reach machine precision for the tails used here)."""
    top = math.sqrt(float(chdtri(nu, 1e-15)))
    x, w = np.polynomial.legendre.leggauss(96)
    s = (x + 1.0) * top / 2.0
    log_pdf = (
        (nu - 1) * np.log(s) - s * s / 2.0 - (nu / 2.0 - 1.0) * math.log(2.0) - gammaln(nu / 2)
    )
    return s, w * top / 2.0 * np.exp(log_pdf)


def _pivot_tail(distance: float, var_test: float, var_runs: float, n_folds: int) -> float:
    """P(Q >= distance) for the pivot Q = Z sqrt(V_test + V_runs (F - 1) / W), W ~ chi^2_{F-1}.

    This is the generalized pivotal quantity for a sum of a test variance (treated as known,
    its df are in the hundreds) and a between-run variance estimated on F - 1 df: it is exactly
    t_{F-1} when V_test = 0 and the normal when V_runs = 0. With V = 0 the answer is 0 or 1.
    """
    if var_runs <= 0 or n_folds < 2:
        if var_test <= 0:
            return 0.0 if distance > 0 else 1.0
        return float(ndtr(-distance / math.sqrt(var_test)))
    s, w = _chi_nodes(n_folds - 1)
    scale = np.sqrt(var_test + var_runs * (n_folds - 1) / np.square(s))
    return float(np.clip(w @ ndtr(-distance / scale), 0.0, 1.0))  # quadrature can overshoot 1


def _pivot_quantile(tail: float, var_test: float, var_runs: float, n_folds: int) -> float:
    """The distance c >= 0 with P(Q >= c) = ``tail`` (< 1/2): the interval's half-width."""
    if var_runs <= 0 or n_folds < 2:
        return float(ndtri(1.0 - tail)) * math.sqrt(var_test)
    high = float(stdtrit(n_folds - 1, 1.0 - tail)) * math.sqrt(var_test + var_runs)
    while _pivot_tail(high, var_test, var_runs, n_folds) > tail:
        high *= 2.0
    return float(
        brentq(lambda c: _pivot_tail(c, var_test, var_runs, n_folds) - tail, 0.0, high, xtol=1e-12)
    )


def _satterthwaite(var_test: float, var_runs: float, n_folds: int) -> float:
    """(V_test + V_runs)^2 / (V_runs^2 / (F - 1)), V_test's own df taken as infinite."""
    if var_runs <= 0 or n_folds < 2:
        return math.inf
    return (var_test + var_runs) ** 2 / (var_runs**2 / (n_folds - 1))


def _counted(levels: Sequence[float], settings: RelianceSettings) -> tuple[float, ...]:
    run = sorted(set(levels))
    if settings.counted_levels is None:
        counted = tuple(v for v in run if v > 0)
        if not counted:
            raise ValueError("runs must include at least one level p > 0; got only p = 0.")
        return counted
    missing = [v for v in settings.counted_levels if not any(math.isclose(v, w) for w in run)]
    if missing:
        raise ValueError(f"counted_levels includes {missing}, but the runs have only {run}.")
    return tuple(next(w for w in run if math.isclose(v, w)) for v in settings.counted_levels)


@dataclass(frozen=True, eq=False)
class _RunGrid:
    """Which (role, level) cell and fold each run belongs to, and its weights: 1 / K_f within its
    fold (``in_fold``) and 1 / (F K_f) in its cell (``weight``), repeats averaged first. Shared by
    every estimate here, so they all average runs the same way."""

    counted: tuple[float, ...]
    cells: list[tuple[str, float]]
    cell_of: np.ndarray
    fold_of: np.ndarray
    folds: list[int]
    in_fold: np.ndarray
    weight: np.ndarray
    ref: np.ndarray  # cell index of the reference at each counted level
    usr: np.ndarray

    @property
    def n_cells(self) -> int:
        return len(self.cells)

    def cell_mean(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.cell_of, weights=self.weight * values, minlength=self.n_cells)

    def fold_means(self, values: np.ndarray) -> np.ndarray:
        """(F, cells): each fold's mean of ``values`` (its repeats averaged); runs of uncounted
        levels may use other folds and are left out."""
        n_cells, n_folds = self.n_cells, len(self.folds)
        slot = np.where(
            np.isin(self.fold_of, self.folds),
            np.searchsorted(self.folds, self.fold_of) * n_cells + self.cell_of,
            n_folds * n_cells,
        )
        sums = np.bincount(slot, weights=self.in_fold * values, minlength=n_folds * n_cells + 1)
        return sums[:-1].reshape(n_folds, n_cells)


def _run_grid(runs: Sequence[RunScores], settings: RelianceSettings) -> _RunGrid:
    """The grid of ``runs``, checked: both roles at every counted level, on the same folds."""
    counted = _counted([r.level for r in runs], settings)
    cells = sorted({(r.role, r.level) for r in runs})
    cell_index = {cell: i for i, cell in enumerate(cells)}
    cell_of = np.array([cell_index[(r.role, r.level)] for r in runs])
    for role in ROLES:
        for level in counted:
            if (role, level) not in cell_index:
                raise ValueError(f"no {role} run at the counted level {level}.")
    folds = sorted({r.fold for r in runs if r.level in counted})
    for role, level in cells:
        if level in counted:
            have = sorted({r.fold for r in runs if (r.role, r.level) == (role, level)})
            if have != folds:
                raise ValueError(
                    f"every counted level needs the same folds for both roles; {role} at level "
                    f"{level} has folds {have}, others have {folds}."
                )
    fold_of = np.array([r.fold for r in runs])
    repeats: dict[tuple[int, int], int] = {}
    for c, f in zip(cell_of, fold_of, strict=True):
        repeats[(c, f)] = repeats.get((c, f), 0) + 1
    folds_per_cell = np.bincount(np.array([c for c, _ in repeats]), minlength=len(cells)).astype(
        float
    )
    in_fold = np.array([1.0 / repeats[(c, f)] for c, f in zip(cell_of, fold_of, strict=True)])
    return _RunGrid(
        counted=counted, cells=cells, cell_of=cell_of, fold_of=fold_of, folds=folds,
        in_fold=in_fold, weight=in_fold / folds_per_cell[cell_of],
        ref=np.array([cell_index[("reference", v)] for v in counted]),
        usr=np.array([cell_index[("user", v)] for v in counted]),
    )  # fmt: skip


def estimate_reliance(
    confounder: ConfounderRuns,
    settings: RelianceSettings | None = None,
    *,
    fit_check: bool = True,
) -> RelianceEstimate:
    """The reliance gap of one confounder, its two variance parts and its interval.

    Per (role, level) cell the AUCs are averaged over the runs, repeats within their fold first,
    then folds. V_test propagates every run's per-patient influences through the gradient of the
    measure (the same patients score every run, so the runs' test errors are combined, not
    summed as if independent); V_runs is the variance of the per-fold measures over F.
    ``fit_check=False`` skips the descriptive model-fit check (a third of the work; simulations
    use it); the estimate, interval and verdict do not depend on it.
    """
    settings = settings or RelianceSettings()
    runs = confounder.runs
    layout = _Layout.of(runs[0])
    grid = _run_grid(runs, settings)
    counted, cells, cell_of, weight = grid.counted, grid.cells, grid.cell_of, grid.weight
    n_cells, ref, usr = grid.n_cells, grid.ref, grid.usr

    clean = np.stack([r.clean_scores for r in runs])
    pos, neg = clean[:, layout.pos], clean[:, layout.neg]
    treated = np.stack([r.treated_scores for r in runs])
    control = np.stack([r.control_scores for r in runs])
    m, n = pos.shape[1], neg.shape[1]
    comp_c = _auc_components(*_cross_counts(pos, neg), m, n)
    comp_k = _lift_components(layout, treated, control)

    mean_c, mean_k = grid.cell_mean(comp_c.auc), grid.cell_mean(comp_k.auc)
    gap, d_clean, d_ref, d_user = _gap_parts(mean_c[ref], mean_k[ref], mean_k[usr], settings.clip)
    estimate = float(gap.mean())
    n_levels = len(counted)

    # V_test: each run's influences, weighted by its share of the cell mean and the gradient.
    grad_c = np.zeros(n_cells)
    grad_k = np.zeros(n_cells)
    grad_c[ref] = d_clean / n_levels
    grad_k[ref] = d_ref / n_levels
    grad_k[usr] = d_user / n_levels
    coef_c, coef_k = (weight * grad_c[cell_of])[None, :], (weight * grad_k[cell_of])[None, :]
    psi = layout.patient_sums(
        [
            (layout.code_pos, coef_c @ comp_c.first),
            (layout.code_neg, coef_c @ comp_c.second),
            (layout.code_treated, coef_k @ comp_k.first),
            (layout.code_control, coef_k @ comp_k.second),
        ]
    )
    var_test = float(layout.variance(psi)[0])

    # V_runs: the measure of each fold (its repeats averaged), then their variance over F.
    f_c, f_k = grid.fold_means(comp_c.auc), grid.fold_means(comp_k.auc)
    fold_gaps = _gap_parts(f_c[:, ref], f_k[:, ref], f_k[:, usr], settings.clip)[0]
    fold_estimates = [float(v) for v in fold_gaps.mean(axis=1)]
    n_folds = len(grid.folds)
    notes = []
    if n_folds >= 2:
        var_runs = float(np.var(fold_estimates, ddof=1)) / n_folds
    else:
        var_runs = 0.0
        notes.append(
            "Only one fold: the between-run variance cannot be estimated, so the interval "
            "reflects the test patients only and is too narrow by the unknown training variance."
        )
    df = _satterthwaite(var_test, var_runs, n_folds)
    se = math.sqrt(var_test + var_runs)
    half_width = _pivot_quantile(settings.alpha / 2.0, var_test, var_runs, n_folds)

    per_level = tuple(
        LevelGap(
            level=float(level),
            gap=float(gap[i]),
            clean_auc_reference=float(mean_c[ref[i]]),
            clean_auc_user=float(mean_c[usr[i]]),
            lift_auc_reference=float(mean_k[ref[i]]),
            lift_auc_user=float(mean_k[usr[i]]),
            ood_reference=float(binormal_ood_auc(mean_c[ref[i]], mean_k[ref[i]], settings.clip)),
            ood_reference_with_user_lift=float(
                binormal_ood_auc(mean_c[ref[i]], mean_k[usr[i]], settings.clip)
            ),
        )
        for i, level in enumerate(counted)
    )
    return RelianceEstimate(
        estimate=estimate,
        per_level=per_level,
        var_test=var_test,
        var_runs=var_runs,
        se=se,
        df=df,
        ci_low=estimate - half_width,
        ci_high=estimate + half_width,
        confidence=1.0 - settings.alpha,
        n_folds=n_folds,
        n_runs=len(runs),
        fold_estimates=tuple(fold_estimates),
        runs_variance_available=n_folds >= 2,
        n_positive=m,
        n_negative=n,
        n_patients=layout.n_patients,
        kind=confounder.kind,
        fit_check=(
            _fit_check(layout, cells, cell_of, weight, (comp_c, comp_k), (pos, treated), settings)
            if fit_check
            else ()
        ),
        retention=_retention(cells, mean_c),
        notes=tuple(notes),
    )


@dataclass(frozen=True)
class AucGapLevel:
    """One level's run-averaged AUCs of the two models on one test set, and their difference."""

    level: float
    auc_reference: float
    auc_user: float
    gap: float  # reference minus user


@dataclass(frozen=True)
class AucGapEstimate:
    """The reference's minus the user's AUC on one test set, averaged over the counted levels,
    with the same two variance parts and pivot interval as the reliance gap (descriptive)."""

    estimate: float
    per_level: tuple[AucGapLevel, ...]
    var_test: float
    var_runs: float
    se: float
    ci_low: float
    ci_high: float
    confidence: float
    n_folds: int
    fold_estimates: tuple[float, ...]


def estimate_auc_gap(
    confounder: ConfounderRuns, settings: RelianceSettings | None = None
) -> AucGapEstimate:
    """Mean over the counted levels of the run-averaged AUC difference on the runs' ``clean_*``
    set (pass the o.o.d. set there for the o.o.d. AUC gap S): the same per-run averages the
    report's AUC tables show, not the AUC of fold-averaged scores (an ensemble nobody ships)."""
    settings = settings or RelianceSettings()
    runs = confounder.runs
    layout = _Layout.of(runs[0])
    grid = _run_grid(runs, settings)
    counted, ref, usr = grid.counted, grid.ref, grid.usr
    clean = np.stack([r.clean_scores for r in runs])
    pos, neg = clean[:, layout.pos], clean[:, layout.neg]
    comp = _auc_components(*_cross_counts(pos, neg), pos.shape[1], neg.shape[1])
    mean = grid.cell_mean(comp.auc)
    gap = mean[ref] - mean[usr]
    grad = np.zeros(grid.n_cells)
    grad[ref], grad[usr] = 1.0 / len(counted), -1.0 / len(counted)
    coef = (grid.weight * grad[grid.cell_of])[None, :]
    psi = layout.patient_sums(
        [(layout.code_pos, coef @ comp.first), (layout.code_neg, coef @ comp.second)]
    )
    var_test = float(layout.variance(psi)[0])
    by_fold = grid.fold_means(comp.auc)
    fold_estimates = [float(v) for v in (by_fold[:, ref] - by_fold[:, usr]).mean(axis=1)]
    n_folds = len(grid.folds)
    var_runs = float(np.var(fold_estimates, ddof=1)) / n_folds if n_folds >= 2 else 0.0
    half = _pivot_quantile(settings.alpha / 2.0, var_test, var_runs, n_folds)
    estimate = float(gap.mean())
    return AucGapEstimate(
        estimate=estimate,
        per_level=tuple(
            AucGapLevel(float(v), float(mean[ref[i]]), float(mean[usr[i]]), float(gap[i]))
            for i, v in enumerate(counted)
        ),
        var_test=var_test,
        var_runs=var_runs,
        se=math.sqrt(var_test + var_runs),
        ci_low=estimate - half,
        ci_high=estimate + half,
        confidence=1.0 - settings.alpha,
        n_folds=n_folds,
        fold_estimates=tuple(fold_estimates),
    )


@dataclass(frozen=True)
class CleanAucEstimate:
    """One model's clean AUC at one level, averaged over its runs, with a one-sided lower bound
    from the same two variance parts as the gap (the control that the model learned the task)."""

    role: str
    level: float
    estimate: float
    var_test: float
    var_runs: float
    lower: float
    confidence: float  # of the one-sided bound
    n_folds: int


def estimate_clean_auc(
    runs: Sequence[RunScores], role: str, level: float, alpha: float = 0.05
) -> CleanAucEstimate:
    """The run-averaged clean AUC of ``role`` at ``level`` (a fold's repeats averaged first) and
    its lower 1 - ``alpha`` bound: test patients by the stratified delta method, runs by the
    spread of the fold means, combined by the gap's pivot."""
    mine = [r for r in runs if r.role == role and r.level == float(level)]
    if not mine:
        raise ValueError(f"no {role} run at level {level}.")
    layout = _Layout.of(mine[0])
    clean = np.stack([r.clean_scores for r in mine])
    pos, neg = clean[:, layout.pos], clean[:, layout.neg]
    comp = _auc_components(*_cross_counts(pos, neg), pos.shape[1], neg.shape[1])
    folds = sorted({r.fold for r in mine})
    fold_index = np.searchsorted(folds, [r.fold for r in mine])
    per_fold = np.bincount(fold_index, minlength=len(folds)).astype(float)
    weight = 1.0 / (len(folds) * per_fold[fold_index])
    estimate = float(weight @ comp.auc)
    psi = layout.patient_sums(
        [
            (layout.code_pos, weight[None, :] @ comp.first),
            (layout.code_neg, weight[None, :] @ comp.second),
        ]
    )
    var_test = float(layout.variance(psi)[0])
    fold_means = np.bincount(fold_index, weights=comp.auc, minlength=len(folds)) / per_fold
    n_folds = len(folds)
    var_runs = float(np.var(fold_means, ddof=1)) / n_folds if n_folds >= 2 else 0.0
    half = _pivot_quantile(alpha, var_test, var_runs, n_folds)
    return CleanAucEstimate(
        role=role, level=float(level), estimate=estimate, var_test=var_test, var_runs=var_runs,
        lower=estimate - half, confidence=1.0 - alpha, n_folds=n_folds,
    )  # fmt: skip


def _fit_check(
    layout: _Layout,
    cells: list[tuple[str, float]],
    cell_of: np.ndarray,
    weight: np.ndarray,
    comps: tuple[_Components, _Components],
    scores: tuple[np.ndarray, np.ndarray],
    settings: RelianceSettings,
) -> tuple[FitCheck, ...]:
    """Per cell: observed o.o.d. AUC (clean positives vs treated negatives, all pairs) minus
    Phi(z(C) - z(K)), with its test-patient SE."""
    comp_c, comp_k = comps
    pos, treated = scores
    comp_o = _auc_components(*_cross_counts(pos, treated), pos.shape[1], treated.shape[1])
    share = np.zeros((len(cells), cell_of.size))
    share[cell_of, np.arange(cell_of.size)] = weight
    mean_c, mean_k, mean_o = share @ comp_c.auc, share @ comp_k.auc, share @ comp_o.auc
    a, in_a = _z(mean_c, settings.clip)
    b, in_b = _z(mean_k, settings.clip)
    predicted = ndtr(a - b)
    slope = _pdf(a - b)
    d_c = (-slope / _pdf(a) * in_a)[:, None]  # d(observed - predicted) / dC
    d_k = (slope / _pdf(b) * in_b)[:, None]
    psi = layout.patient_sums(
        [
            (layout.code_pos, d_c * (share @ comp_c.first) + share @ comp_o.first),
            (layout.code_neg, d_c * (share @ comp_c.second)),
            (layout.code_treated, d_k * (share @ comp_k.first) + share @ comp_o.second),
            (layout.code_control, d_k * (share @ comp_k.second)),
        ]
    )
    se = np.sqrt(np.maximum(layout.variance(psi), 0.0))
    return tuple(
        FitCheck(
            role=role,
            level=float(level),
            observed_ood_auc=float(mean_o[i]),
            predicted_ood_auc=float(predicted[i]),
            difference=float(mean_o[i] - predicted[i]),
            se=float(se[i]),
        )
        for i, (role, level) in enumerate(cells)
    )


def _retention(cells: list[tuple[str, float]], mean_c: np.ndarray) -> tuple[Retention, ...]:
    base = {role: mean_c[i] for i, (role, level) in enumerate(cells) if level == 0.0}
    return tuple(
        Retention(
            role=role,
            level=float(level),
            clean_auc=float(mean_c[i]),
            retention=float(mean_c[i] / base[role]) if role in base else None,
        )
        for i, (role, level) in enumerate(cells)
    )


# ------------------------------------------------------------------------------------- decision


def decide(
    confounders: Mapping[str, ConfounderRuns],
    settings: RelianceSettings | None = None,
    *,
    fit_check: bool = True,
) -> RelianceVerdict:
    """Estimate every confounder's reliance gap and apply the pre-declared rule: the pipeline's
    one decision function (``fit_check`` as in :func:`estimate_reliance`)."""
    settings = settings or RelianceSettings()
    if not confounders:
        raise ValueError("confounders must name at least one confounder; got none.")
    estimates = {
        name: estimate_reliance(runs, settings, fit_check=fit_check)
        for name, runs in confounders.items()
    }
    return decide_from_estimates(estimates, settings)


def decide_from_estimates(
    estimates: Mapping[str, RelianceEstimate],
    settings: RelianceSettings | None = None,
    *,
    unmeasured: int = 0,
) -> RelianceVerdict:
    """The rule on estimates already made; :func:`decide` is the usual entry point.

    Fail side: one-sided p_fail, Holm across confounders, fail if adjusted p_fail < alpha / 2
    (for one confounder: the lower bound exceeds the margin); a wrong fail anywhere is controlled
    family-wise. Pass side: a confounder passes if its upper bound is below the margin, unadjusted,
    because the audit passes only if every confounder does (an intersection-union test is level
    alpha / 2 without any adjustment). ``unmeasured``: gated confounders whose measure could not
    be computed; they enter the fail family with p = 1, so Holm still counts every test planned.
    """
    settings = settings or RelianceSettings()
    if not estimates:
        raise ValueError("estimates must name at least one confounder; got none.")
    names = list(estimates)
    for name in names:
        if not math.isclose(estimates[name].confidence, 1.0 - settings.alpha, abs_tol=1e-12):
            raise ValueError(
                f"estimates[{name!r}].confidence must equal 1 - alpha = {1 - settings.alpha} so "
                f"that interval and verdict agree; got {estimates[name].confidence}."
            )
    margin, half = settings.margin, settings.alpha / 2.0
    p_fail = [estimates[n].p_greater(margin) for n in names]
    p_pass = [estimates[n].p_less(margin) for n in names]
    adjusted = holm(p_fail + [1.0] * unmeasured)[: len(names)]  # the unmeasured count in Holm
    decisions = []
    for i, name in enumerate(names):
        est = estimates[name]
        if adjusted[i] < half:
            verdict = "fail"
        elif p_pass[i] < half and est.runs_variance_available and est.se > 0:
            verdict = "pass"
        else:  # one fold, or an interval of zero width (a saturated measure): never a pass
            verdict = "inconclusive"
        reason = _reason(verdict, est, settings, p_fail[i], p_pass[i], adjusted[i], len(names))
        decisions.append(
            ConfounderDecision(
                name, verdict, est, margin, p_fail[i], p_pass[i], adjusted[i], reason
            )
        )
    return RelianceVerdict(overall_verdict(decisions), tuple(decisions), settings)


def overall_verdict(decisions: Sequence[ConfounderDecision | str]) -> str:
    """Fail if any confounder fails, pass if all pass, else inconclusive (the shared rule)."""
    from audit.analysis.verdict import overall_verdict as shared_rule

    return shared_rule([d if isinstance(d, str) else d.verdict for d in decisions])


def _settle(est: RelianceEstimate, settings: RelianceSettings) -> str:
    """Which variance dominates, and roughly how much more of it would settle the verdict."""
    share = est.var_test / (est.var_test + est.var_runs) if est.se > 0 else 1.0
    distance = abs(est.estimate - settings.margin)
    multiplier = (est.ci_high - est.ci_low) / 2.0 / est.se if est.se > 0 else 1.96
    target = (distance / multiplier) ** 2  # SE^2 at which the interval would just exclude it
    if est.dominant_variance == "test patients":
        head = f"Test-patient variance dominates ({share:.0%} of SE^2)"
        own, other, what = est.var_test, est.var_runs, "test patients"
        other_what = "runs (folds or repeats)"
    else:
        head = f"Between-run variance dominates ({1 - share:.0%} of SE^2)"
        own, other, what = est.var_runs, est.var_test, "runs (folds or repeats)"
        other_what = "test patients"
    if distance < 1e-12:
        return f"{head}; the estimate sits on the margin, so no amount of data is predicted to settle it."
    if target > other:
        factor = own / (target - other)
        return (
            f"{head}: about {factor:.1f}x as many {what} would settle it, if the estimate held "
            f"at {est.estimate:.3f}."
        )
    return (
        f"{head}, but the {other_what} alone leave the interval too wide: more of both would be "
        f"needed, if the estimate held at {est.estimate:.3f}."
    )


def _reason(
    verdict: str,
    est: RelianceEstimate,
    settings: RelianceSettings,
    p_fail: float,
    p_pass: float,
    adjusted: float,
    n_confounders: int,
) -> str:
    """One sentence a reader can act on, with the numbers that decided it."""
    ci = f"{est.confidence:.0%} CI {est.ci_low:.3f} to {est.ci_high:.3f}"
    margin = f"the margin {settings.margin:.3f}"
    head = f"Reliance gap {est.estimate:.3f} ({ci}, SE {est.se:.3f}, effective df {est.df:.3g})"
    tail = "" if est.runs_variance_available else " " + est.notes[0]
    if verdict == "fail":
        return (
            f"{head} exceeds {margin}: the user model leans on the shortcut more than the "
            f"reference (Holm-adjusted one-sided p = {adjusted:.3g}).{tail}"
        )
    if verdict == "pass":
        return f"{head} stays below {margin} (one-sided p = {p_pass:.3g}).{tail}"
    if p_fail < settings.alpha / 2.0:
        return (
            f"{head} lies above {margin}, but not after Holm adjustment across {n_confounders} "
            f"confounders (adjusted p = {adjusted:.3g} >= alpha / 2 = {settings.alpha / 2:g}).{tail}"
        )
    if p_pass < settings.alpha / 2.0 and est.se == 0:  # below the margin, with no uncertainty
        return (
            f"{head} lies below {margin}, but its interval has zero width: every counted lift AUC "
            "clips (both models collapse fully onto the shortcut) or no run varies, so the two "
            "models' reliance cannot be told apart and it cannot pass; audit lower levels."
        )
    if p_pass < settings.alpha / 2.0:  # below the margin, but with one fold only
        return (
            f"{head} lies below {margin}, but with a single fold the training variance is "
            "unknown, so it cannot pass: audit at least 2 folds."
        )
    return f"{head} contains {margin}. {_settle(est, settings)}{tail}"


# ---------------------------------------------------------------------------------------- power


@dataclass(frozen=True)
class PowerEstimate:
    """What an audit of this size can resolve, under the stated binormal assumptions.

    ``half_width``: the expected half-width of the (1 - alpha) interval at a true gap equal to
    the margin. ``detectable_gap``: the smallest true gap that fails with probability ``power``,
    with the variance taken at that gap (NaN when no gap of the profile is detected that often).
    ``pass_gap``: the largest true gap that passes with that probability (negative: even two
    equally reliant models would not pass that often). ``equal_pass_probability``: roughly, how
    often two equally reliant models pass.
    """

    se_test: float
    se_runs: float
    se: float
    se_equal: float  # the SE when the two models are equally reliant (true gap 0)
    df: float
    half_width: float
    detectable_gap: float
    pass_gap: float
    equal_pass_probability: float
    assumptions: str


def _test_variance_model(
    gap_profile: tuple[np.ndarray, np.ndarray, np.ndarray],
    n_positive: int,
    n_negative: int,
    model_correlation: float,
    kind: str,
    attribute_share: float,
    clip: float,
) -> float:
    """V_test of the measure from the binormal placement values, by Gauss-Hermite quadrature.

    Positives Y ~ N(d, 1), negatives X ~ N(0, 1) in each model's units; a treated negative is
    its clean score plus delta. Placement values: Phi(Y) for a positive, Phi(d - X) for a
    negative, Phi(X + delta) and Phi(delta - X) for a treated and a control negative. The two
    models' standardised scores of one negative correlate ``model_correlation``; every run of a
    model is taken to score a case alike (conservative: averaging runs lowers V_test).
    """
    c_ref, k_ref, k_user = gap_profile
    _, d_c, d_r, d_u = _gap_parts(c_ref, k_ref, k_user, clip)
    d_c, d_r, d_u = d_c / c_ref.size, d_r / c_ref.size, d_u / c_ref.size
    d = math.sqrt(2.0) * float(ndtri(c_ref[0]))
    delta_r = math.sqrt(2.0) * ndtri(np.clip(k_ref, clip, 1 - clip))
    delta_u = math.sqrt(2.0) * ndtri(np.clip(k_user, clip, 1 - clip))
    nodes, w = np.polynomial.hermite_e.hermegauss(60)
    w = w / w.sum()
    g_c = float(d_c.sum())
    pos = g_c * ndtr(nodes + d)
    var_pos = float(w @ np.square(pos - w @ pos)) / n_positive
    x_r = nodes[:, None] + 0.0 * nodes[None, :]
    x_u = model_correlation * nodes[:, None] + math.sqrt(1 - model_correlation**2) * nodes[None, :]
    ww = w[:, None] * w[None, :]

    def lift(x: np.ndarray, delta: np.ndarray, grad: np.ndarray, side: str) -> np.ndarray:
        if side == "treated":
            return np.tensordot(grad, ndtr(x[None] + delta[:, None, None]), axes=1)
        return np.tensordot(grad, ndtr(delta[:, None, None] - x[None]), axes=1)

    base = g_c * ndtr(d - x_r)

    def var(h: np.ndarray) -> float:
        return float(np.sum(ww * np.square(h - np.sum(ww * h))))

    if kind == "pixel":
        h = base + sum(
            lift(x, delta, grad, side)
            for x, delta, grad in ((x_r, delta_r, d_r), (x_u, delta_u, d_u))
            for side in ("treated", "control")
        )
        var_neg = var(h) / n_negative
    else:
        s = attribute_share
        h_t = base + (lift(x_r, delta_r, d_r, "treated") + lift(x_u, delta_u, d_u, "treated")) / s
        h_c = base + (lift(x_r, delta_r, d_r, "control") + lift(x_u, delta_u, d_u, "control")) / (
            1 - s
        )
        var_neg = (s * var(h_t) + (1 - s) * var(h_c)) / n_negative
    return var_pos + var_neg


def power_analysis(
    n_positive: int,
    n_negative: int,
    n_patients: int | None = None,
    *,
    folds: int = 5,
    repeats: int = 1,
    run_sd: float = DEFAULT_RUN_SD,
    split_share: float = 0.5,
    clean_auc: float = 0.85,
    lift_auc: Sequence[float] = DEFAULT_LIFT_AUC,
    model_correlation: float = 0.5,
    patient_icc: float = 0.5,
    kind: str = "pixel",
    attribute_share: float = 0.5,
    margin: float = 0.05,
    alpha: float = 0.05,
    power: float = 0.8,
    clip: float = DEFAULT_CLIP,
) -> PowerEstimate:
    """Expected interval half-width and detectable gaps for a planned audit (``check --dry-run``).

    Assumptions (all stated in the result): the reference has clean AUC ``clean_auc`` and lift
    AUCs ``lift_auc`` at the counted levels; the user's lift is raised by one common z-shift to
    reach the gap in question; scores are binormal (see :func:`_test_variance_model`); images of
    one patient correlate ``patient_icc`` (design effect 1 + (images / patient - 1) icc);
    ``run_sd`` is the between-fold SD of the measure with one repeat per fold, of which
    ``split_share`` comes from the fold's data split (repeats do not average it away).
    Defaults: run_sd 0.03 (about what a between-fold SD of o.o.d. AUC of 0.025 gives in the
    binormal simulations of docs/reliance-measure.md), split_share 0.5, model_correlation 0.5,
    patient_icc 0.5.
    """
    n_positive = _check_int("n_positive", n_positive, 2)
    n_negative = _check_int("n_negative", n_negative, 2)
    folds = _check_int("folds", folds, 1)
    repeats = _check_int("repeats", repeats, 1)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}.")
    images = n_positive + n_negative
    if n_patients is None:
        n_patients = images
    n_patients = _check_int("n_patients", n_patients, 2)
    if n_patients > images:
        raise ValueError(f"n_patients must be at most the {images} images; got {n_patients}.")
    if run_sd < 0 or not math.isfinite(run_sd):
        raise ValueError(f"run_sd must be a finite number >= 0; got {run_sd!r}.")
    for name, value in (("split_share", split_share), ("patient_icc", patient_icc)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1]; got {value!r}.")
    if not -1.0 < model_correlation < 1.0:
        raise ValueError(f"model_correlation must lie in (-1, 1); got {model_correlation!r}.")
    _open_unit("attribute_share", attribute_share)
    _open_unit("margin", margin)
    _open_unit("alpha", alpha)
    _open_unit("power", power)
    lifts = np.array([float(v) for v in lift_auc])
    if lifts.size == 0 or np.any((lifts <= 0) | (lifts >= 1)):
        raise ValueError(f"lift_auc must be one or more AUCs in (0, 1); got {list(lift_auc)}.")
    c_ref = np.full(lifts.size, _open_unit("clean_auc", clean_auc))

    def profile(gap: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        def k_user(shift: float) -> np.ndarray:
            return ndtr(ndtri(np.clip(lifts, clip, 1 - clip)) + shift)

        if gap == 0:
            return c_ref, lifts, lifts
        top = float(reliance_gap(c_ref, lifts, k_user(10.0), clip).mean())
        if gap >= top:
            raise ValueError(f"a gap of {gap} is beyond this profile's largest ({top:.3f}).")
        shift = brentq(
            lambda s: float(reliance_gap(c_ref, lifts, k_user(s), clip).mean()) - gap, 0, 10
        )
        return c_ref, lifts, k_user(shift)

    deff = 1.0 + (images / n_patients - 1.0) * patient_icc
    var_runs = run_sd**2 * (split_share + (1 - split_share) / repeats) / folds if folds > 1 else 0.0

    def variance(gap: float) -> tuple[float, float]:
        v_test = deff * _test_variance_model(
            profile(gap), n_positive, n_negative, model_correlation, kind, attribute_share, clip
        )
        return v_test, _satterthwaite(v_test, var_runs, folds)

    v_margin, df = variance(margin)
    v_equal, _ = variance(0.0)
    half_width = _pivot_quantile(alpha / 2, v_margin, var_runs, folds)
    distance = half_width + _pivot_quantile(1 - power, v_margin, var_runs, folds)

    def short_of_failing(gap: float) -> float:  # the variance grows with the gap: taken at it
        v_gap, _ = variance(gap)
        reach = _pivot_quantile(alpha / 2, v_gap, var_runs, folds)
        return gap - reach - _pivot_quantile(1 - power, v_gap, var_runs, folds) - margin

    top = float(
        reliance_gap(c_ref, lifts, ndtr(ndtri(np.clip(lifts, clip, 1 - clip)) + 10.0), clip).mean()
    )
    high = min(top - 1e-3, 1.0 - 1e-6)
    detectable = (
        float(brentq(short_of_failing, margin, high, xtol=1e-5))
        if high > margin and short_of_failing(high) >= 0
        else math.nan
    )
    # Equal models pass when estimate + half-width < margin; the estimate spread as the pivot.
    room = margin - _pivot_quantile(alpha / 2, v_equal, var_runs, folds)
    tail = _pivot_tail(abs(room), v_equal, var_runs, folds)
    equal_pass = 1.0 - tail if room >= 0 else tail
    assumptions = (
        f"binormal scores; reference clean AUC {clean_auc:g}, lift AUCs {lifts.tolist()}; "
        f"{kind} confounder; model correlation {model_correlation:g}; patient ICC "
        f"{patient_icc:g} (design effect {deff:.2f}); between-fold SD of the measure "
        f"{run_sd:g} with {split_share:.0%} from the split; {folds} folds x {repeats} repeats"
        + ("; one fold: no between-run variance is estimated" if folds == 1 else "")
    )
    return PowerEstimate(
        se_test=math.sqrt(v_margin),
        se_runs=math.sqrt(var_runs),
        se=math.sqrt(v_margin + var_runs),
        se_equal=math.sqrt(v_equal + var_runs),
        df=df,
        half_width=half_width,
        detectable_gap=detectable,
        pass_gap=margin - distance,
        equal_pass_probability=equal_pass,
        assumptions=assumptions,
    )


def to_dict(result: object) -> object:
    """JSON-ready values of any result here: floats, ints, strings, lists; NaN and inf as None."""
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return {f.name: to_dict(getattr(result, f.name)) for f in dataclasses.fields(result)}
    if isinstance(result, Mapping):
        return {str(k): to_dict(v) for k, v in result.items()}
    if isinstance(result, list | tuple | np.ndarray):
        return [to_dict(v) for v in result]
    if isinstance(result, bool | np.bool_):
        return bool(result)
    if isinstance(result, int | np.integer):
        return int(result)
    if isinstance(result, float | np.floating):
        return float(result) if math.isfinite(result) else None
    return result
