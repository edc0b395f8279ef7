"""NIH ChestX-ray14 as laid out on disk: detection, selection, official lists, counts, cohort."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_data_builders import make_nih_tree, nih_rows

from audit.data.loading import DataRequest, describe_dry_run, load_cohort, official_split
from audit.errors import ExitCode, UsageError


def expected(rows, finding="Atelectasis", views=("PA",)):
    chosen = []
    for row in rows:
        labels = set(row.findings.split("|"))
        if views and row.view not in views:
            continue
        if finding in labels:
            chosen.append((row, 1))
        elif labels == {"No Finding"}:
            chosen.append((row, 0))
    return chosen


@pytest.fixture(scope="module")
def nih(tmp_path_factory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("nih") / "ChestX-ray14"
    return root, make_nih_tree(root)


def request(root: Path, cache: Path, **kw) -> DataRequest:
    return DataRequest(root, "cxr", cache_dir=cache, image_size=16, **kw)


def test_dry_run_detects_nih_and_counts_classes_sex_and_official_splits(nih, tmp_path) -> None:
    root, rows = nih
    summary = describe_dry_run(request(root, tmp_path))
    chosen = expected(rows)
    assert summary["source"] == "nih-cxr14" and summary["detected"] is True
    assert summary["detected_by"] == "Data_Entry_2017.csv"
    assert summary["images"] == len(chosen)
    assert summary["positive"] == sum(label for _r, label in chosen)
    assert summary["negative"] == sum(1 - label for _r, label in chosen)
    assert summary["patients"] == len({r.patient for r, _l in chosen})
    assert summary["sex"] == {
        s: sum(r.sex == s for r, _l in chosen)
        for s in ("F", "M")
        if any(r.sex == s for r, _ in chosen)
    }
    assert summary["views"] == {"PA": len(chosen)}
    test = [r for r, _l in chosen if r.patient >= 13]
    assert summary["splits"]["nih/test"]["images"] == len(test)
    assert summary["splits"]["nih/train_val"]["images"] == len(chosen) - len(test)
    assert summary["overlap_warnings"] == []
    assert summary["decoded"] is False


def test_cohort_matches_the_dry_run_and_is_pseudonymous(nih, tmp_path) -> None:
    root, rows = nih
    req = request(root, tmp_path)
    cohort = load_cohort(req, progress=False)
    summary = describe_dry_run(req)
    assert summary["decoded"] is True
    assert len(cohort.cases) == summary["images"] == len(expected(rows))
    assert cohort.images.shape == (len(cohort.cases), 16, 16)
    assert cohort.images.dtype == np.uint8 and cohort.synthetic is False
    assert cohort.source == "nih-cxr14" and cohort.modality == "cxr"
    names = {r.name for r in rows} | {str(r.patient) for r in rows}
    for case in cohort.cases:
        assert case.case_id.startswith("c") and case.patient_key.startswith("p")
        assert case.case_id not in names and case.patient_key not in names
        assert case.view == "PA" and case.sex in ("F", "M") and case.age is not None


def test_a_patients_images_share_one_patient_key(nih, tmp_path) -> None:
    root, rows = nih
    cohort = load_cohort(request(root, tmp_path, views=()), progress=False)
    assert len(set(cohort.patients)) == len({r.patient for r, _ in expected(rows, views=())})


def test_images_match_the_pngs_resized(nih, tmp_path) -> None:
    from PIL import Image

    root, rows = nih
    cohort = load_cohort(request(root, tmp_path), progress=False)
    first = expected(rows)[0][0]
    path = next(root.glob(f"images_*/images/{first.name}"))
    reference = np.asarray(Image.open(path).resize((16, 16), Image.Resampling.BILINEAR))
    assert np.abs(cohort.images[0].astype(int) - reference).max() <= 1


def test_views_and_finding_select_the_images(nih, tmp_path) -> None:
    root, rows = nih
    both = describe_dry_run(request(root, tmp_path, views=("PA", "AP")))
    assert both["images"] == len(expected(rows, views=("PA", "AP")))
    effusion = describe_dry_run(request(root, tmp_path, finding="Effusion"))
    assert effusion["positive"] == len([r for r, label in expected(rows, "Effusion") if label])


def test_unknown_finding_lists_the_known_ones(nih, tmp_path) -> None:
    root, _rows = nih
    with pytest.raises(UsageError, match="findings in it: Atelectasis, Effusion"):
        describe_dry_run(request(root, tmp_path, finding="Pneumonia"))


def test_flat_images_folder_is_read(tmp_path) -> None:
    root = tmp_path / "flat"
    rows = make_nih_tree(root, nih_rows(4, 2), nested=False)
    cohort = load_cohort(request(root, tmp_path / "cache"), progress=False)
    assert len(cohort.cases) == len(expected(rows))


def test_official_split_uses_the_test_list(nih, tmp_path) -> None:
    root, rows = nih
    cohort = load_cohort(request(root, tmp_path, views=()), progress=False)
    split = official_split(cohort, n_folds=3, val_fraction=0.2, seed=0)
    assert split is not None and len(split.folds) == 3
    test_patients = set(cohort.patients[split.test])
    assert len(split.test) == len([r for r, _ in expected(rows, views=()) if r.patient >= 13])
    for train, val in split.folds:
        assert not set(cohort.patients[train]) & test_patients
        assert not set(cohort.patients[train]) & set(cohort.patients[val])


def test_missing_images_are_counted_not_fatal(tmp_path) -> None:
    root = tmp_path / "partial"
    rows = make_nih_tree(root, nih_rows(6, 2))
    chosen = expected(rows)
    next(root.glob(f"images_*/images/{chosen[0][0].name}")).unlink()
    cohort = load_cohort(request(root, tmp_path / "cache"), progress=False)
    assert cohort.excluded == {"image file not found": 1}
    assert len(cohort.cases) == len(chosen) - 1
    with pytest.raises(UsageError) as caught:
        load_cohort(request(root, tmp_path / "cache", strict=True), progress=False)
    assert caught.value.exit_code == ExitCode.USAGE
    assert "file #1 (case c" in str(caught.value) and "image file not found" in str(caught.value)


def test_missing_column_is_one_clear_line(tmp_path) -> None:
    root = tmp_path / "bad"
    make_nih_tree(root, nih_rows(2, 2))
    csv = root / "Data_Entry_2017.csv"
    csv.write_text(csv.read_text().replace("View Position", "View"))
    with pytest.raises(UsageError, match="lacks the column.*'View Position'") as caught:
        describe_dry_run(request(root, tmp_path / "cache"))
    assert "\n" not in str(caught.value)


def test_wrong_modality_for_nih_is_refused(nih, tmp_path) -> None:
    root, _ = nih
    with pytest.raises(UsageError, match="use `modality` cxr"):
        describe_dry_run(DataRequest(root, "ct", cache_dir=tmp_path))


def test_views_typed_on_the_command_line_select_nih_images(nih, tmp_path, capsys) -> None:
    """`--views PA,AP` reaches NIH as its views (and, like every changed --views, as a source
    option, which NIH accepts: it is the same value)."""
    import json

    from audit import cli

    root, rows = nih
    code = cli.main(["check", str(tmp_path / "m.pt"), "--modality", "cxr", "--data", str(root),
                     "--dry-run", "--json", "--views", "PA,AP", "--cache-dir",
                     str(tmp_path / "c")])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out)["images"] == len(expected(rows, views=("PA", "AP")))
