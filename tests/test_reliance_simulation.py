"""Seeded simulations of the reliance gate (audit.analysis.reliance): operating characteristics.

Every scenario draws, per replication, a fresh test set (patients with one or two images) and a
fresh set of fine-tuning runs (2 roles x 5 levels x 5 folds), and calls ``reliance.decide`` -- the
pipeline's decision function, not a copy. Each asserted rate rests on at least 1,000
replications; the Monte-Carlo standard error sqrt(r (1 - r) / n) is printed in every assertion
message. Two generative models (docs/reliance-measure.md, "Generative models"):

* ``binormal``: normal case noise, the artifact adds a constant lift delta to a negative's score;
  every run then meets the binormal equal-variance model exactly.
* ``gamma``: the same structure with exponential (skewed) case noise and a lift scaled per image by
  a Gamma(2, 1/2) susceptibility, so that neither the ROC curves nor the link between C, K and the
  o.o.d. AUC are binormal.

Run ``python tests/test_reliance_simulation.py`` to print every scenario's rates (the table in
docs/reliance-measure.md).
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, replace

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import ndtr

from audit.analysis import reliance

LEVELS = (0.1, 0.2, 0.5, 0.8, 1.0)
SETTINGS = reliance.RelianceSettings(margin=0.05, alpha=0.05)
MARGIN = SETTINGS.margin
FAMILIES = ("binormal", "gamma")
LIFT = (0.55, 0.60, 0.70, 0.80, 0.90)  # the equal-reliance scenarios' lift AUC per level
TYPICAL_SD = 0.07  # training SD of d and delta: between-fold SD of o.o.d. AUC about 0.025
REPS = 1000

# ------------------------------------------------------------------------------------ test sets


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Image labels and patients: pos/neg pairs are patients with two images of one class,
    mixed patients have one of each, the rest one image."""

    labels: np.ndarray
    patient: np.ndarray
    n_patients: int

    @property
    def neg(self) -> np.ndarray:
        return np.flatnonzero(self.labels == 0)


def _test_set(pos_pairs: int, neg_pairs: int, mixed: int, pos_single: int, neg_single: int):
    labels, patient = [], []
    groups = [(1, 1)] * pos_pairs + [(0, 0)] * neg_pairs + [(1, 0)] * mixed
    groups += [(1,)] * pos_single + [(0,)] * neg_single
    for k, group in enumerate(groups):
        labels += list(group)
        patient += [k] * len(group)
    return ImageSet(np.array(labels, dtype=np.int8), np.array(patient), len(groups))


STUDY = _test_set(5, 8, 2, 19, 34)  # 83 images: 31 positive, 52 negative, 68 patients
LARGE = _test_set(120, 192, 48, 459, 821)  # 2,000 images: 747 positive, 1,253 negative, 1,640
assert (STUDY.labels.size, int(STUDY.labels.sum()), STUDY.n_patients) == (83, 31, 68)
assert (LARGE.labels.size, int(LARGE.labels.sum())) == (2000, 747)

# ------------------------------------------------------------------------- generative models


@dataclass(frozen=True)
class Model:
    """One role's population: clean separation d and lift delta per level (latent units, at the
    mean model), and the run-to-run (training) SDs of both."""

    d: float
    deltas: tuple[float, ...]
    sd_d: float = TYPICAL_SD
    sd_delta: float = TYPICAL_SD
    sd_fold_delta: float = 0.0  # a lift offset shared by all levels of a fold (its data split)

    @property
    def sd_lift(self) -> float:
        """The lift's total between-run SD (the run's own part and the fold's)."""
        return math.hypot(self.sd_delta, self.sd_fold_delta)


@dataclass(frozen=True)
class Scenario:
    name: str
    family: str
    user: Model
    reference: Model
    test_set: ImageSet
    agreement: float = 0.7  # share of a run's case noise common to all runs of the role
    model_corr: float = 0.5  # share of the case noise common to the two roles
    patient_corr: float = 0.5  # correlation of two images of one patient
    folds: int = 5
    reps: int = REPS
    seed: int = 0


NOISE = (0.7, 0.5, 0.5)  # agreement, model_corr, patient_corr: the Scenario defaults


class Population:
    """Population AUCs of one run (infinitely many test patients) for a family.

    binormal: closed forms. gamma: a fixed 400,000-draw Monte-Carlo sample of the difference of
    two independent cases' noise -- each the same weighted sum of standardized exponentials that
    :func:`draw` builds -- and of the susceptibility W (AUC error about 0.001).
    """

    def __init__(self, family: str, noise: tuple[float, float, float] = NOISE) -> None:
        self.family = family
        if family == "gamma":
            rng = np.random.default_rng(20240601)
            size = 400_000
            self.diff = _marginal_noise(rng, size, noise) - _marginal_noise(rng, size, noise)
            self.sorted_diff = np.sort(self.diff)
            self.w = rng.gamma(2.0, 0.5, size)

    def clean(self, d: float) -> float:  # P(d + e_i > e_j)
        if self.family == "binormal":
            return float(ndtr(d / math.sqrt(2)))
        return float(np.searchsorted(self.sorted_diff, d) / self.diff.size)

    def lift(self, delta: float) -> float:  # P(e_i + delta W_i > e_j)
        if self.family == "binormal":
            return float(ndtr(delta / math.sqrt(2)))
        return float(np.mean(self.diff < delta * self.w))

    def ood(self, d: float, delta: float) -> float:  # P(d + e_i > e_j + delta W_j)
        if self.family == "binormal":
            return float(ndtr((d - delta) / math.sqrt(2)))
        return float(np.mean(self.diff + delta * self.w < d))

    def expected(self, fn, centre: float, sd: float, *args: float) -> float:
        """E over training draws N(centre, sd^2) of fn(draw, *args) (Gauss-Hermite, 15 nodes)."""
        if sd == 0:
            return fn(centre, *args)
        nodes, weights = np.polynomial.hermite_e.hermegauss(15)
        values = [fn(centre + sd * x, *args) for x in nodes]
        return float(np.dot(weights, values) / weights.sum())


def _marginal_noise(
    rng: np.random.Generator, size: int, noise: tuple[float, float, float]
) -> np.ndarray:
    """One case's noise in one run, as :func:`draw` makes it: patient and image parts, common to
    both roles or the role's own, shared by the role's runs or the run's own (unit variance)."""
    agreement, model_corr, patient_corr = noise
    weights = [
        math.sqrt(agreement * a * b)
        for a in (model_corr, 1 - model_corr)
        for b in (patient_corr, 1 - patient_corr)
    ] + [math.sqrt(1 - agreement)]
    return sum(w * (rng.standard_exponential(size) - 1.0) for w in weights)


@functools.cache
def population(family: str, noise: tuple[float, float, float] = NOISE) -> Population:
    return Population(family, noise)


def _solve(fn, target: float, low: float, high: float) -> float:
    return float(brentq(lambda x: fn(x) - target, low, high, xtol=1e-6))


def d_for_clean(family: str, auc: float, noise=NOISE) -> float:
    return _solve(population(family, noise).clean, auc, -10, 10)


def delta_for_lift(family: str, auc: float, noise=NOISE) -> float:
    return _solve(population(family, noise).lift, auc, -10, 50)


def delta_for_ood(family: str, d: float, auc: float, noise=NOISE) -> float:
    return _solve(lambda x: population(family, noise).ood(d, x), auc, -10, 500)


def expected_aucs(family: str, model: Model, noise=NOISE) -> tuple[float, np.ndarray]:
    """E[C] and E[K] per level over the training draws: the cell means an audit estimates."""
    pop = population(family, noise)
    c = pop.expected(pop.clean, model.d, model.sd_d)
    k = np.array([pop.expected(pop.lift, x, model.sd_lift) for x in model.deltas])
    return c, k


def true_gap(s: Scenario) -> float:
    """The measure at the expected AUCs (infinite test set, infinitely many runs)."""
    c_ref, k_ref = expected_aucs(s.family, s.reference, _noise(s))
    _, k_user = expected_aucs(s.family, s.user, _noise(s))
    return float(reliance.reliance_gap(np.full(k_ref.size, c_ref), k_ref, k_user).mean())


def _noise(s: Scenario) -> tuple[float, float, float]:
    return (s.agreement, s.model_corr, s.patient_corr)


def ood_fold_sd(s: Scenario) -> float:
    """Mean over roles and levels of the between-run SD of the population o.o.d. AUC."""
    pop = population(s.family, _noise(s))
    nodes, weights = np.polynomial.hermite_e.hermegauss(7)
    w2 = np.outer(weights, weights).ravel() / weights.sum() ** 2
    sds = []
    for m in (s.user, s.reference):
        for delta in m.deltas:
            grid = [(m.d + m.sd_d * a, delta + m.sd_lift * b) for a in nodes for b in nodes]
            values = np.array([pop.ood(a, b) for a, b in grid])
            mean = float(w2 @ values)
            sds.append(math.sqrt(float(w2 @ (values - mean) ** 2)))
    return float(np.mean(sds))


# ------------------------------------------------------------------------------------ drawing


def draw(
    s: Scenario, rng: np.random.Generator, train_rng: np.random.Generator | None = None
) -> reliance.ConfounderRuns:
    """One audit's runs. The test patients (their latent scores and susceptibilities) come from
    ``rng``, everything that differs between training runs from ``train_rng`` (default: ``rng``,
    i.e. fresh patients and fresh training draws)."""
    train_rng = rng if train_rng is None else train_rng
    ts = s.test_set
    y, patient, neg = ts.labels, ts.patient, ts.neg
    n = y.size
    gamma = s.family == "gamma"

    def noise(gen: np.random.Generator, size):
        return gen.standard_exponential(size) - 1.0 if gamma else gen.standard_normal(size)

    def per_case():
        r = s.patient_corr
        return math.sqrt(r) * noise(rng, ts.n_patients)[patient] + math.sqrt(1 - r) * noise(rng, n)

    common = per_case()
    cases = [math.sqrt(s.model_corr) * common + math.sqrt(1 - s.model_corr) * per_case()
             for _ in reliance.ROLES]  # fmt: skip
    w = rng.gamma(2.0, 0.5, n)[neg] if gamma else 1.0
    n_cells = len(LEVELS) * s.folds
    level_of = np.repeat(np.arange(len(LEVELS)), s.folds)
    fold_of = np.tile(np.arange(s.folds), len(LEVELS))
    runs = []
    pid_neg = patient[neg]
    for role, m, case in zip(reliance.ROLES, (s.user, s.reference), cases, strict=True):
        d = m.d + m.sd_d * train_rng.standard_normal(n_cells)
        delta = np.asarray(m.deltas)[level_of] + m.sd_delta * train_rng.standard_normal(n_cells)
        if m.sd_fold_delta:
            delta += m.sd_fold_delta * train_rng.standard_normal(s.folds)[fold_of]
        if s.agreement < 1:
            own = noise(train_rng, (n_cells, n))
            eps = math.sqrt(s.agreement) * case + math.sqrt(1 - s.agreement) * own
        else:
            eps = np.broadcast_to(case, (n_cells, n))
        clean = d[:, None] * y + eps
        control = eps[:, neg]
        treated = control + delta[:, None] * w
        for k in range(n_cells):
            runs.append(
                reliance.RunScores(
                    role,
                    LEVELS[level_of[k]],
                    int(fold_of[k]),
                    clean[k],
                    y,
                    patient,
                    treated[k],
                    pid_neg,
                    control[k],
                    pid_neg,
                )  # fmt: skip
            )
    return reliance.ConfounderRuns(tuple(runs))


@dataclass(frozen=True)
class Rates:
    name: str
    family: str
    reps: int
    theta: float
    p_pass: float
    p_fail: float
    coverage: float
    mean_half_width: float
    mean_estimate: float
    sd_estimate: float
    seconds: float

    def se(self, rate: float) -> float:
        return math.sqrt(max(rate * (1 - rate), 1e-12) / self.reps)

    def show(self, rate_name: str) -> str:
        rate = getattr(self, rate_name)
        return (
            f"{self.name} [{self.family}]: {rate_name} = {rate:.4f} +- {self.se(rate):.4f} "
            f"(Monte-Carlo SE, {self.reps} replications; true gap {self.theta:.4f})"
        )


def simulate(s: Scenario) -> Rates:
    rng = np.random.default_rng(s.seed)
    theta = true_gap(s)
    passes = fails = covered = 0
    widths, estimates = [], []
    start = time.perf_counter()
    for _ in range(s.reps):
        verdict = reliance.decide({"tag": draw(s, rng)}, SETTINGS, fit_check=False)
        est = verdict.per_confounder[0].estimate
        passes += verdict.overall == "pass"
        fails += verdict.overall == "fail"
        covered += est.ci_low <= theta <= est.ci_high
        widths.append((est.ci_high - est.ci_low) / 2)
        estimates.append(est.estimate)
    return Rates(
        s.name, s.family, s.reps, theta, passes / s.reps, fails / s.reps, covered / s.reps,
        float(np.mean(widths)), float(np.mean(estimates)), float(np.std(estimates)),
        time.perf_counter() - start,
    )  # fmt: skip


# ------------------------------------------------------------------------------------ scenarios


def _equal_reliance(
    family: str, c_user: float, c_ref: float, noise=NOISE, **kw
) -> tuple[Model, Model]:
    deltas = tuple(delta_for_lift(family, k, noise) for k in LIFT)
    return (
        Model(d_for_clean(family, c_user, noise), deltas, **kw),
        Model(d_for_clean(family, c_ref, noise), deltas, **kw),
    )


def _from_ood(family: str, clean: float, ood: tuple[float, ...], **kw) -> Model:
    d = d_for_clean(family, clean)
    return Model(d, tuple(delta_for_ood(family, d, v) for v in ood), **kw)


STUDY_OOD = {  # o.o.d. AUC by level p = 0, .1, .2, .5, .8, 1 (p = 0: the clean AUC)
    "user": (0.85, 0.81, 0.75, 0.38, 0.05, 0.01),
    "reference": (0.84, 0.81, 0.79, 0.72, 0.62, 0.43),
}
WIDE_SD = (0.15, 0.28)  # training SDs of d and delta giving a between-fold o.o.d. SD near 0.08
SCATTER_SD = 1.2  # the scattering user's between-fold SD of the lift (latent units); see docs


def _at_margin(s: Scenario) -> Scenario:
    """Shift the user's lift (one common latent shift) until the true gap equals the margin."""

    def gap(shift: float) -> float:
        user = replace(s.user, deltas=tuple(x + shift for x in s.reference.deltas))
        return true_gap(replace(s, user=user))

    shift = _solve(gap, MARGIN, 0.0, 3.0)
    return replace(s, user=replace(s.user, deltas=tuple(x + shift for x in s.reference.deltas)))


@functools.cache
def scenario(name: str, family: str) -> Scenario:
    if name == "less_accurate_83":
        user, ref = _equal_reliance(family, 0.74, 0.84)
        return Scenario(name, family, user, ref, STUDY, seed=1)
    if name == "reference_far_better_83":
        user, ref = _equal_reliance(family, 0.76, 0.96)
        return Scenario(name, family, user, ref, STUDY, seed=2)
    if name == "less_accurate_2000":
        user, ref = _equal_reliance(family, 0.74, 0.84)
        return Scenario(name, family, user, ref, LARGE, seed=3)
    if name == "both_collapse_83":
        user = _from_ood(family, 0.84, (0.01,) * len(LEVELS))
        ref = _from_ood(family, 0.74, (0.01,) * len(LEVELS))
        return Scenario(name, family, user, ref, STUDY, seed=4)
    if name == "study_tag_83":
        user = _from_ood(family, STUDY_OOD["user"][0], STUDY_OOD["user"][1:])
        ref = _from_ood(family, STUDY_OOD["reference"][0], STUDY_OOD["reference"][1:])
        return Scenario(name, family, user, ref, STUDY, seed=5)
    if name == "equal_no_training_variance_2000":
        noise = (1.0, NOISE[1], NOISE[2])
        user, ref = _equal_reliance(family, 0.84, 0.84, noise, sd_d=0.0, sd_delta=0.0)
        return Scenario(name, family, user, ref, LARGE, agreement=1.0, seed=6)
    if name in ("wide_training_at_margin_83", "wide_training_at_margin_2000"):
        user, ref = _equal_reliance(family, 0.80, 0.84, sd_d=WIDE_SD[0], sd_delta=WIDE_SD[1])
        test_set = STUDY if name.endswith("_83") else LARGE
        reps = 2 * REPS if test_set is STUDY else REPS  # cheap: halve the Monte-Carlo error
        return _at_margin(Scenario(name, family, user, ref, test_set, reps=reps, seed=7))
    if name in ("user_runs_scatter_2000", "user_runs_scatter_independent_2000"):
        # The user's lift scatters between folds with SD SCATTER_SD (latent; a between-run SD of
        # its o.o.d. AUC near 0.25), shared by a fold's levels (its split decides whether the
        # model latches on), or, in the "independent" variant, drawn afresh for every run. Its
        # mean is set so that E[K_user] = E[K_ref] at every level: equal on average, gap 0.
        _, ref = _equal_reliance(family, 0.84, 0.84)
        pop = population(family)
        total = math.hypot(SCATTER_SD, TYPICAL_SD)
        k_ref = expected_aucs(family, ref)[1]
        deltas = tuple(
            _solve(lambda x, k=k: pop.expected(pop.lift, x, total) - k, 0.0, -10, 50) for k in k_ref
        )
        if name == "user_runs_scatter_2000":
            user = Model(ref.d, deltas, sd_fold_delta=SCATTER_SD)
        else:
            user = Model(ref.d, deltas, sd_delta=total)
        return Scenario(name, family, user, ref, LARGE, seed=8)
    raise KeyError(name)


@functools.cache
def rates(name: str, family: str) -> Rates:
    return simulate(scenario(name, family))


def _assert_rate(r: Rates, rate_name: str, *, at_most: float | None = None, at_least=None):
    rate = getattr(r, rate_name)
    if at_most is not None:
        assert rate <= at_most, r.show(rate_name)
    if at_least is not None:
        assert rate >= at_least, r.show(rate_name)


# ---------------------------------------------------------------------------------------- tests

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("family", FAMILIES)
def test_less_accurate_user_with_equal_reliance_rarely_fails_on_83_images(family: str) -> None:
    _assert_rate(rates("less_accurate_83", family), "p_fail", at_most=0.025)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_far_better_reference_with_equal_reliance_rarely_fails(family: str) -> None:
    _assert_rate(rates("reference_far_better_83", family), "p_fail", at_most=0.025)


@pytest.mark.parametrize("family", FAMILIES)
def test_less_accurate_user_with_equal_reliance_passes_on_2000_images(family: str) -> None:
    _assert_rate(rates("less_accurate_2000", family), "p_pass", at_least=0.8)


@pytest.mark.parametrize("family", FAMILIES)
def test_both_models_fully_collapsed_rarely_fail(family: str) -> None:
    _assert_rate(rates("both_collapse_83", family), "p_fail", at_most=0.025)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_studys_tag_curves_fail_on_83_images(family: str) -> None:
    _assert_rate(rates("study_tag_83", family), "p_fail", at_least=0.95)


def test_equal_models_without_training_variance_pass_on_2000_images() -> None:
    _assert_rate(rates("equal_no_training_variance_2000", "binormal"), "p_pass", at_least=0.9)


@pytest.mark.parametrize(
    ("family", "size"), [("binormal", "83"), ("binormal", "2000"), ("gamma", "83")]
)
def test_wide_training_variance_keeps_coverage_and_rarely_passes_at_the_margin(
    family: str, size: str
) -> None:
    """Under the gamma model at 2,000 images the interval is close to exact (coverage 0.947,
    P(pass) 0.029 over 4,000 replications), too close to the 0.03 bound for 1,000 replications
    to settle; it is reported in docs/reliance-measure.md, not asserted here."""
    s = scenario(f"wide_training_at_margin_{size}", family)
    sd = ood_fold_sd(s)
    assert 0.06 <= sd <= 0.10, f"between-fold SD of the o.o.d. AUC {sd:.3f}, meant to be ~0.08"
    r = rates(s.name, family)
    _assert_rate(r, "coverage", at_least=0.93)
    _assert_rate(r, "p_pass", at_most=0.03)


def test_user_runs_scattering_in_reliance_rarely_pass_on_2000_images() -> None:
    _assert_rate(rates("user_runs_scatter_2000", "binormal"), "p_pass", at_most=0.05)


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("less_accurate_83", "binormal"),
        ("less_accurate_83", "gamma"),
        ("reference_far_better_83", "binormal"),
        ("reference_far_better_83", "gamma"),
        ("less_accurate_2000", "binormal"),
        ("less_accurate_2000", "gamma"),
        ("study_tag_83", "binormal"),
        ("study_tag_83", "gamma"),
        ("equal_no_training_variance_2000", "binormal"),
    ],
)
def test_every_scenario_covers_its_true_gap(name: str, family: str) -> None:
    """Not one of the brief's criteria, but what every rate above rests on (same replications)."""
    _assert_rate(rates(name, family), "coverage", at_least=0.93)


def test_the_power_helper_predicts_the_simulated_spread() -> None:
    """power_analysis (binormal quadrature, runs alike) against the SD of the estimates over
    fresh 2,000-image test sets when the runs do not vary: within 25 %."""
    r = rates("equal_no_training_variance_2000", "binormal")
    plan = reliance.power_analysis(
        747, 1253, 1640, clean_auc=0.84, lift_auc=LIFT, run_sd=0.0, model_correlation=0.5,
        patient_icc=0.5,
    )  # fmt: skip
    assert 0.75 < plan.se_equal / r.sd_estimate < 1.25, (plan.se_equal, r.sd_estimate)


def test_four_confounders_each_below_the_margin_pass_together() -> None:
    """Intersection-union: four passes make an overall pass, with no Holm on the pass side.

    Deterministic (one seeded audit of four confounders). The two models are equally reliant and
    agree closely case by case (between-model correlation 0.9), so that every interval lies
    below the margin by design, not by the seed: across seeds 0-9 the largest upper bound of the
    sampling confounder was 0.026, of the pixel ones 0.010.
    """
    rng = np.random.default_rng(11)
    base = replace(
        scenario("equal_no_training_variance_2000", "binormal"), agreement=0.9, model_corr=0.9
    )
    confounders = {}
    for name in ("tag", "denoise", "noise", "sex"):
        runs = draw(base, rng)
        if name == "sex":  # a sampling confounder: two disjoint groups of negatives
            runs = _as_sampling(runs)
        confounders[name] = runs
    verdict = reliance.decide(confounders, SETTINGS)
    for d in verdict.per_confounder:
        assert d.estimate.ci_high < MARGIN, d.reason
        assert d.verdict == "pass", d.reason
    assert verdict.overall == "pass"


def _as_sampling(runs: reliance.ConfounderRuns) -> reliance.ConfounderRuns:
    """Split the negatives in two halves: treated = first half's treated scores, control = the
    other half's clean scores (a sampling confounder's disjoint groups)."""
    out = []
    for r in runs.runs:
        half = r.control_scores.size // 2
        out.append(
            replace(
                r,
                treated_scores=r.treated_scores[:half],
                treated_patients=r.treated_patients[:half],
                control_scores=r.control_scores[half:],
                control_patients=r.control_patients[half:],
            )
        )
    return reliance.ConfounderRuns(tuple(out), kind="sampling")


def contradiction_rate(pairs: int = REPS) -> tuple[float, float, float]:
    """Pairs of audits of one model, same test set, independent training draws, at a true gap
    equal to the margin with wide training variance: (pass-vs-fail rate, P(pass), P(fail))."""
    s = scenario("wide_training_at_margin_83", "binormal")
    rng = np.random.default_rng(13)
    contradictions, verdicts = 0, []
    for _ in range(pairs):
        test_seed = int(rng.integers(2**32))
        pair = [_audit_same_test_set(s, test_seed, int(rng.integers(2**32))) for _ in range(2)]
        contradictions += {"pass", "fail"} <= set(pair)
        verdicts += pair
    return (
        contradictions / pairs,
        verdicts.count("pass") / len(verdicts),
        verdicts.count("fail") / len(verdicts),
    )


def test_two_audits_of_one_model_rarely_contradict() -> None:
    """Same test set, independent training draws (a re-run with another seed): pass against fail
    in <= 1 % of pairs."""
    rate, _, _ = contradiction_rate()
    se = math.sqrt(max(rate * (1 - rate), 1e-12) / REPS)
    assert rate <= 0.01, f"pass-vs-fail in {rate:.4f} +- {se:.4f} of {REPS} pairs"


def _audit_same_test_set(s: Scenario, test_seed: int, training_seed: int) -> str:
    """One audit whose test patients come from ``test_seed`` and whose runs from ``training_seed``."""
    runs = draw(s, np.random.default_rng(test_seed), np.random.default_rng(training_seed))
    return reliance.decide({"tag": runs}, SETTINGS, fit_check=False).overall


ALL = [
    ("less_accurate_83", "binormal"),
    ("less_accurate_83", "gamma"),
    ("reference_far_better_83", "binormal"),
    ("reference_far_better_83", "gamma"),
    ("less_accurate_2000", "binormal"),
    ("less_accurate_2000", "gamma"),
    ("both_collapse_83", "binormal"),
    ("both_collapse_83", "gamma"),
    ("study_tag_83", "binormal"),
    ("study_tag_83", "gamma"),
    ("equal_no_training_variance_2000", "binormal"),
    ("wide_training_at_margin_83", "binormal"),
    ("wide_training_at_margin_83", "gamma"),
    ("wide_training_at_margin_2000", "binormal"),
    ("wide_training_at_margin_2000", "gamma"),  # reported, not asserted (see its test)
    ("user_runs_scatter_2000", "binormal"),
    ("user_runs_scatter_independent_2000", "binormal"),  # documented, not asserted
]

if __name__ == "__main__":
    start = time.perf_counter()
    print("| scenario | model | reps | true gap | P(pass) | P(fail) | coverage | half-width | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, family in ALL:
        r = rates(name, family)
        print(
            f"| {name} | {family} | {r.reps} | {r.theta:.3f} | {r.p_pass:.3f} ({r.se(r.p_pass):.3f})"
            f" | {r.p_fail:.3f} ({r.se(r.p_fail):.3f}) | {r.coverage:.3f} ({r.se(r.coverage):.3f})"
            f" | {r.mean_half_width:.3f} | {r.seconds:.1f} |",
            flush=True,
        )
    for name, family in ALL:
        print(
            f"{name} [{family}]: between-fold SD of o.o.d. AUC {ood_fold_sd(scenario(name, family)):.3f}"
        )
    rate, p_pass, p_fail = contradiction_rate()
    print(
        f"two audits: pass-vs-fail {rate:.4f}; per audit P(pass) {p_pass:.3f} P(fail) {p_fail:.3f}"
    )
    r = rates("equal_no_training_variance_2000", "binormal")
    plan = reliance.power_analysis(
        747, 1253, 1640, clean_auc=0.84, lift_auc=LIFT, run_sd=0.0, model_correlation=0.5,
        patient_icc=0.5,
    )  # fmt: skip
    print(f"power helper se_equal {plan.se_equal:.4f} vs simulated SD {r.sd_estimate:.4f}")
    print(f"total {time.perf_counter() - start:.0f} s")
