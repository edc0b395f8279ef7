"""Splits and sample sets: the study's definitions, checked on a phantom-like cohort."""

from __future__ import annotations

import numpy as np
import pytest
from audit_checks import WORKING_TRAINING, assert_finished

from audit.confounders import get_confounder
from audit.data.cases import Case, Cohort
from audit.errors import UsageError
from audit.plan.grid import cell_sets
from audit.plan.splits import patient_split

LEVELS = (0.0, 0.1, 0.2, 0.5, 0.8, 1.0)


def make_cohort(n_patients: int = 120, seed: int = 0) -> Cohort:
    rng = np.random.default_rng(seed)
    cases = []
    for p in range(n_patients):
        sex = "F" if p % 2 else "M"
        for _ in range(int(rng.integers(1, 4))):
            label = int(rng.random() < 0.4)
            cases.append(Case(f"C{len(cases):05d}", label, f"P{p:04d}", sex=sex))
    images = rng.integers(0, 255, (len(cases), 16, 16), dtype=np.uint8)
    return Cohort(tuple(cases), images, source="test", modality="cxr", synthetic=True)


@pytest.fixture(scope="module")
def cohort() -> Cohort:
    return make_cohort()


@pytest.fixture(scope="module")
def split(cohort: Cohort):
    return patient_split(cohort.patients, n_folds=5, val_fraction=0.15, test_fraction=0.25, seed=0)


def test_no_patient_in_two_of_train_val_test(cohort, split) -> None:
    patients = cohort.patients
    test_patients = set(patients[split.test])
    for train, val in split.folds:
        assert not set(patients[train]) & set(patients[val])
        assert not set(patients[train]) & test_patients
        assert not set(patients[val]) & test_patients
    assert len(split.folds) == 5


def test_every_case_is_in_test_or_the_training_pool(cohort, split) -> None:
    for train, val in split.folds:
        union = np.sort(np.concatenate([train, val, split.test]))
        np.testing.assert_array_equal(union, np.arange(len(cohort.cases)))


@pytest.mark.parametrize("level", LEVELS)
def test_pixel_training_sets_carry_the_exact_confounded_fraction(cohort, split, level) -> None:
    sets = cell_sets(cohort, split, get_confounder("tag"), level, fold=0, seed=0)
    labels = cohort.labels
    for sample_set in (sets.train, sets.val, sets.tests["iid"]):
        positives = labels[sample_set.indices] == 1
        assert sample_set.confounded[~positives].sum() == 0
        assert sample_set.confounded[positives].sum() == round(level * positives.sum())


def test_ood_set_reverses_the_correlation(cohort, split) -> None:
    sets = cell_sets(cohort, split, get_confounder("denoise"), 0.8, fold=1, seed=0)
    ood = sets.tests["ood"]
    labels = cohort.labels[ood.indices]
    assert ood.confounded[labels == 0].all()
    assert not ood.confounded[labels == 1].any()
    assert not sets.tests["clean"].confounded.any()
    np.testing.assert_array_equal(ood.indices, split.test)


def test_test_sets_do_not_depend_on_the_fold(cohort, split) -> None:
    a = cell_sets(cohort, split, get_confounder("tag"), 0.5, fold=0, seed=3)
    b = cell_sets(cohort, split, get_confounder("tag"), 0.5, fold=4, seed=3)
    np.testing.assert_array_equal(a.tests["iid"].confounded, b.tests["iid"].confounded)
    assert not np.array_equal(a.train.indices, b.train.indices)


@pytest.mark.parametrize("level", LEVELS)
def test_sex_sampling_sets_hold_the_level_among_positives(cohort, split, level) -> None:
    sets = cell_sets(cohort, split, get_confounder("sex"), level, fold=0, seed=0)
    labels, sexes = cohort.labels, cohort.sexes
    clean = sets.tests["clean"].indices  # the reliance gap's controls: male cases, both classes
    assert (sexes[clean] == "M").all() and set(labels[clean]) == {0, 1}
    sizes = []
    for sample_set in (sets.train, sets.tests["iid"]):
        idx = sample_set.indices
        positives = idx[labels[idx] == 1]
        negatives = idx[labels[idx] == 0]
        female_positives = (sexes[positives] == "F").sum()
        assert female_positives == round(level * len(positives))
        assert (sexes[negatives] == "M").all()
        np.testing.assert_array_equal(sample_set.confounded, sexes[idx] == "F")
        sizes.append(len(positives))
    assert sizes[0] > 0


def test_sex_training_size_is_the_same_at_every_level(cohort, split) -> None:
    sizes = {
        len(cell_sets(cohort, split, get_confounder("sex"), lv, 0, 0).train.indices)
        for lv in LEVELS
    }
    assert len(sizes) == 1


def test_sex_ood_set_has_male_positives_and_female_negatives(cohort, split) -> None:
    ood = cell_sets(cohort, split, get_confounder("sex"), 0.2, fold=0, seed=0).tests["ood"]
    labels, sexes = cohort.labels[ood.indices], cohort.sexes[ood.indices]
    assert (sexes[labels == 1] == "M").all() and (sexes[labels == 0] == "F").all()
    assert ood.confounded[labels == 0].all() and not ood.confounded[labels == 1].any()


def test_split_hash_changes_with_the_seed(cohort) -> None:
    a = patient_split(cohort.patients, n_folds=2, val_fraction=0.15, test_fraction=0.25, seed=0)
    b = patient_split(cohort.patients, n_folds=2, val_fraction=0.15, test_fraction=0.25, seed=1)
    c = patient_split(cohort.patients, n_folds=2, val_fraction=0.15, test_fraction=0.25, seed=0)
    assert a.content_hash() == c.content_hash() != b.content_hash()


def test_too_few_patients_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="fewer than 3 patients"):
        patient_split(
            np.array(["a", "a", "b"]), n_folds=2, val_fraction=0.15, test_fraction=0.25, seed=0
        )


def test_the_split_is_the_same_under_any_cache_folders_secret_key(tmp_path) -> None:
    """Pseudonyms follow the cache folder's key; the split must follow the data and seed only."""
    from test_data_builders import write_manifest, write_png

    from audit.data.loading import DataRequest, load_cohort
    from audit.plan.splits import split_table
    from audit.resolve.confounders import resolve_confounders
    from audit.resolve.settings import Settings

    rows = []
    for n in range(60):
        write_png(tmp_path / f"i{n}.png", seed=n, size=16)
        rows.append({"path": f"i{n}.png", "label": n % 2, "patient_id": f"patient{n // 2}"})
    manifest = write_manifest(tmp_path / "manifest.csv", rows)
    settings = Settings(levels=(0.0, 1.0), folds=3, confounders=("tag",))
    confounders = resolve_confounders(("tag",), {}, "cxr", seed=0, work_size=16)
    hashes, keys, data = [], [], []
    for cache in ("cache-a", "cache-b"):
        cohort = load_cohort(
            DataRequest(manifest, "cxr", cache_dir=tmp_path / cache, image_size=16), progress=False
        )
        keys.append(cohort.patients[0])
        hashes.append(split_table(settings, cohort, confounders).default.content_hash())
        data.append(cohort.manifest_hash())
    assert keys[0] != keys[1], "each cache folder has its own secret key"
    assert hashes[0] == hashes[1], "the same data and seed split alike"
    assert data[0] == data[1], "the data's identity (in every run key and the audit id) too"


def test_two_fresh_cache_folders_give_the_same_audit_id_split_and_verdict(tmp_path) -> None:
    """The same command on the same data, each with a new --cache-dir (a new secret key)."""

    from model_builders import tiny_checkpoints
    from test_data_builders import separable_pngs, write_manifest

    from audit import cli

    rows = [
        {"path": name, "label": label, "patient_id": f"p{n // 2}"}
        for n, (name, label) in enumerate(separable_pngs(tmp_path, n=96))
    ]
    manifest = write_manifest(tmp_path / "manifest.csv", rows)
    tiny_checkpoints(tmp_path)

    def audit(out: str, cache: str) -> dict:
        code = cli.main([
            "--quiet", "check", str(tmp_path / "user.pt"), "--modality", "cxr", "--data",
            str(manifest), "--reference", str(tmp_path / "reference.pt"), "--out",
            str(tmp_path / out), "--cache-dir", str(tmp_path / cache),
            "--confounders", "tag", "--levels", "0,1", *WORKING_TRAINING, "--deterministic",
            "--no-report",
        ])  # fmt: skip
        results = assert_finished(code, tmp_path / out)
        assert results["controls"]["passed"], "a working experiment: the verdict is compared"
        return results

    audits = [audit("out-cache-a", "cache-a"), audit("out-cache-b", "cache-b")]
    # the same --out with a third cache folder: its stored runs name other pseudonyms, so they
    # are redone (reusing them would score this cohort's cases under names it does not have)
    again = audit("out-cache-a", "cache-c")
    assert again["status"]["complete"] and again["status"]["runs_reused"] == 0
    assert again["verdict"] == audits[0]["verdict"]
    first, second = audits
    assert first["audit_id"] == second["audit_id"]
    assert first["data"]["manifest_hash"] == second["data"]["manifest_hash"]
    assert first["data"]["splits"] == second["data"]["splits"]
    assert [r["key"] for r in first["runs"]] == [r["key"] for r in second["runs"]]
    assert first["verdict"] == second["verdict"] and first["auc"] == second["auc"]
