"""The phantom cohort: deterministic, balanced where the audit needs balance, and learnable."""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from scipy.optimize import minimize
from scipy.stats import rankdata

from audit.data import synthetic
from audit.data.synthetic import (
    CT_WINDOW_HU,
    PhantomSettings,
    draw_ct_anatomy,
    draw_ct_lesion,
    draw_cxr_anatomy,
    draw_cxr_lesion,
    make_phantom_cohort,
    render_ct_slice,
    render_cxr,
)
from audit.errors import UsageError

MODALITIES = ("cxr", "ct")


@pytest.fixture(scope="module")
def cohorts() -> dict[str, object]:
    """One 300-patient cohort per modality at 64 px, shared by the statistical tests."""
    return {m: make_phantom_cohort(PhantomSettings(modality=m, seed=7)) for m in MODALITIES}


# ---- determinism and settings -----------------------------------------------------------------


@pytest.mark.parametrize("modality", MODALITIES)
def test_same_settings_give_byte_identical_cohorts(modality: str) -> None:
    settings = PhantomSettings(modality=modality, n_patients=12, image_size=48, seed=3)
    first, second = make_phantom_cohort(settings), make_phantom_cohort(settings)
    assert first.cases == second.cases
    assert first.images.tobytes() == second.images.tobytes()
    assert first.manifest_hash() == second.manifest_hash()


@pytest.mark.parametrize("modality", MODALITIES)
def test_a_different_seed_gives_different_images(modality: str) -> None:
    a = make_phantom_cohort(PhantomSettings(modality=modality, n_patients=12, seed=1))
    b = make_phantom_cohort(PhantomSettings(modality=modality, n_patients=12, seed=2))
    n = min(len(a.images), len(b.images))
    assert not np.array_equal(a.images[:n], b.images[:n])
    assert a.manifest_hash() != b.manifest_hash()


@pytest.mark.parametrize("modality", MODALITIES)
@pytest.mark.parametrize("size", [32, 96])
def test_images_are_uint8_squares_of_the_requested_size(modality: str, size: int) -> None:
    cohort = make_phantom_cohort(
        PhantomSettings(modality=modality, n_patients=4, image_size=size, seed=0)
    )
    assert cohort.images.dtype == np.uint8
    assert cohort.images.shape == (len(cohort.cases), size, size)
    assert cohort.image_size == size
    assert cohort.images.std() > 20  # a picture, not a blank


@pytest.mark.parametrize("modality", MODALITIES)
def test_image_size_changes_the_resolution_not_the_cohort(modality: str) -> None:
    small, large = (
        make_phantom_cohort(PhantomSettings(modality=modality, n_patients=8, image_size=size))
        for size in (32, 64)
    )
    assert small.cases == large.cases
    shrunk = large.images.astype(float).reshape(-1, 32, 2, 32, 2).mean((2, 4))
    for a, b in zip(small.images.astype(float), shrunk, strict=True):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9


@pytest.mark.parametrize("modality", MODALITIES)
def test_cohort_says_it_is_synthetic(modality: str) -> None:
    cohort = make_phantom_cohort(PhantomSettings(modality=modality, n_patients=4))
    assert cohort.synthetic is True
    assert cohort.source == "synthetic"
    assert cohort.modality == modality
    assert "illustrative: synthetic data" in cohort.description
    assert {c.modality for c in cohort.cases} == {modality}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("modality", "mri"),
        ("n_patients", 1),
        ("images_per_patient", (3, 1)),
        ("image_size", 8),
        ("prevalence", 1.0),
        ("prevalence", 0.0),
        ("seed", -1),
    ],
)
def test_bad_settings_are_refused_with_a_message_naming_them(field: str, value: object) -> None:
    with pytest.raises(UsageError, match=field):
        PhantomSettings(**{field: value})


def test_a_list_of_image_counts_is_taken_as_a_pair() -> None:
    assert PhantomSettings(images_per_patient=[2, 2]).images_per_patient == (2, 2)


# ---- the patient table ------------------------------------------------------------------------


@pytest.mark.parametrize("modality", MODALITIES)
def test_labels_both_occur_at_about_the_prevalence(cohorts, modality: str) -> None:
    labels = cohorts[modality].labels
    assert set(np.unique(labels)) == {0, 1}
    assert abs(labels.mean() - 0.35) < 0.02


def test_prevalence_setting_is_followed() -> None:
    cohort = make_phantom_cohort(PhantomSettings(n_patients=200, prevalence=0.15, image_size=16))
    assert abs(cohort.labels.mean() - 0.15) < 0.02


@pytest.mark.parametrize("modality", MODALITIES)
def test_sex_is_balanced_and_positive_rate_is_alike_across_sexes(cohorts, modality: str) -> None:
    cohort = cohorts[modality]
    first_case = {c.patient_key: c for c in reversed(cohort.cases)}
    patient_sexes = [c.sex for c in first_case.values()]
    assert patient_sexes.count("F") == patient_sexes.count("M")
    rates = [cohort.labels[cohort.sexes == sex].mean() for sex in ("F", "M")]
    assert abs(rates[0] - rates[1]) < 0.03


def test_patients_have_several_images_and_one_label_each(cohorts) -> None:
    cohort = cohorts["cxr"]
    keys, counts = np.unique(cohort.patients, return_counts=True)
    assert len(keys) == 300
    assert set(counts) == {1, 2, 3}
    for key in keys[:50]:
        assert len(set(cohort.labels[cohort.patients == key])) == 1


def test_ids_are_pseudonymous_and_ages_plausible(cohorts) -> None:
    cases = cohorts["ct"].cases
    assert all(re.fullmatch(r"P\d{5}", c.patient_key) for c in cases)
    assert all(re.fullmatch(r"C\d{6}", c.case_id) for c in cases)
    assert len({c.case_id for c in cases}) == len(cases)
    ages = np.array([c.age for c in cases])
    assert ages.min() >= 18 and ages.max() <= 95 and 45 < ages.mean() < 70


def test_repeat_images_of_a_patient_differ_a_little() -> None:
    cohort = make_phantom_cohort(PhantomSettings(n_patients=20, images_per_patient=(2, 2)))
    first, second = cohort.images[0::2].astype(float), cohort.images[1::2].astype(float)
    same_patient = np.abs(first - second).mean()
    other_patient = np.abs(first - np.roll(second, 1, axis=0)).mean()
    assert 0 < same_patient < other_patient


# ---- what the pictures show -------------------------------------------------------------------


def _twins(modality: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """One patient's image with and without the finding, from the same generator state."""
    anatomy_rng = np.random.default_rng([11, index])
    sex = ("F", "M")[index % 2]
    if modality == "cxr":
        anatomy = draw_cxr_anatomy(anatomy_rng, sex)
        lesion = draw_cxr_lesion(anatomy_rng, anatomy)
        render = render_cxr
    else:
        anatomy = draw_ct_anatomy(anatomy_rng, sex)
        lesion = draw_ct_lesion(anatomy_rng, anatomy)
        render = render_ct_slice
    pictures = [
        render(
            np.random.default_rng([12, index]),
            size=64,
            sex=sex,
            finding=finding,
            anatomy=anatomy,
            lesion=lesion,
        ).astype(float)
        for finding in (True, False)
    ]
    return pictures[0], pictures[1]


def _in_dark_field(image: np.ndarray, row: int, col: int, margin: float = 15.0) -> bool:
    """Darker than tissue on both sides along the row: inside a lung, not in air or soft tissue."""
    smooth = gaussian_filter(image, 1.5)
    here = smooth[row, col]
    left, right = smooth[row, :col], smooth[row, col + 1 :]
    return bool(left.size and right.size and here < min(left.max(), right.max()) - margin)


@pytest.mark.parametrize("modality", MODALITIES)
def test_the_finding_is_a_local_brightening_inside_a_lung(modality: str) -> None:
    for index in range(12):
        with_finding, without = _twins(modality, index)
        diff = with_finding - without
        assert diff.max() > 20, "the finding must be visible"
        assert diff.min() >= -2, "the finding only adds density"
        assert (np.abs(diff) > 2).mean() < 0.1, "the finding must be local"
        row, col = np.unravel_index(np.argmax(diff), diff.shape)
        assert _in_dark_field(without, row, col), "the finding must sit in a lung field"


def test_ct_intensities_follow_hounsfield_order() -> None:
    """Air < lung < soft tissue < bone, read at places every phantom body puts them."""
    assert CT_WINDOW_HU == (-1000.0, 400.0)
    for index in range(10):
        _, slice_ = _twins("ct", index)
        air = slice_[:6, :6].mean()
        lungs = (slice_[29:35, 19:23].mean() + slice_[29:35, 41:45].mean()) / 2
        heart = slice_[26:30, 33:37].mean()
        vertebra = slice_[40:43, 31:33].mean()
        assert air < lungs < heart < vertebra, (air, lungs, heart, vertebra)


def test_phantom_code_draws_no_text() -> None:
    """The tag confounder must be the only glyph in a picture, so the phantom never draws one."""
    source = inspect.getsource(synthetic)
    assert not any(word in source for word in ("ImageDraw", "ImageFont", "matplotlib", "text("))


# ---- learnability -----------------------------------------------------------------------------


def _auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    ranks = rankdata(y_score)
    n_pos = int(y_true.sum())
    n_neg = len(y_true) - n_pos
    return float((ranks[y_true == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _logistic_auc(features: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    """Out-of-fold AUC of an L2 logistic regression, with folds split by patient (3 folds)."""
    patients = np.random.default_rng(0).permutation(np.unique(groups))
    scores = np.zeros(len(y))
    for fold in range(3):
        test = np.isin(groups, patients[fold::3])
        mean, std = features[~test].mean(0), features[~test].std(0) + 1e-6
        w = _fit_logistic((features[~test] - mean) / std, y[~test], penalty=0.01)
        scores[test] = ((features[test] - mean) / std) @ w[:-1]
    return _auc(y, scores)


def _fit_logistic(x: np.ndarray, y: np.ndarray, penalty: float) -> np.ndarray:
    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = x @ w[:-1] + w[-1]
        err = (1.0 / (1.0 + np.exp(-z)) - y) / len(z)
        value = np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * penalty * w[:-1] @ w[:-1]
        return value, np.append(x.T @ err + penalty * w[:-1], err.sum())

    return minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B").x


def _downsampled(images: np.ndarray, cells: int = 16) -> np.ndarray:
    n, size, _ = images.shape
    k = size // cells
    return images.astype(float).reshape(n, cells, k, cells, k).mean((2, 4)).reshape(n, -1)


def _blob_responses(images: np.ndarray, cells: int = 8) -> np.ndarray:
    """Strongest centre-surround (difference of Gaussians) response per cell, at two scales.

    A hand-made stand-in for a CNN's first layers plus max pooling: it can see a bright blob, but
    so do vessels, hila and rib crossings, which is what keeps the task from being trivial.
    """
    x = images.astype(np.float32)
    n, size, _ = x.shape
    k = size // cells
    out = []
    for sigma in (1.0, 2.0):
        dog = gaussian_filter(x, (0, sigma, sigma)) - gaussian_filter(x, (0, 3 * sigma, 3 * sigma))
        out.append(dog.reshape(n, cells, k, cells, k).max((2, 4)).reshape(n, -1))
    return np.concatenate(out, 1)


@pytest.mark.parametrize("modality", MODALITIES)
def test_the_finding_is_learnable_but_not_trivial(cohorts, modality: str) -> None:
    cohort = cohorts[modality]
    auc = _logistic_auc(_blob_responses(cohort.images), cohort.labels, cohort.patients)
    assert 0.65 < auc < 0.99


@pytest.mark.parametrize("modality", MODALITIES)
def test_sex_is_predictable_above_chance(cohorts, modality: str) -> None:
    cohort = cohorts[modality]
    female = (cohort.sexes == "F").astype(float)
    auc = _logistic_auc(_downsampled(cohort.images, cells=8), female, cohort.patients)
    assert 0.65 < auc < 0.99
