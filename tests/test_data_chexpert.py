"""CheXpert as laid out on disk: detection from either folder, the finding, uncertain labels,
views, official lists, broken files, and no identifier in anything the cohort exposes."""

from __future__ import annotations

import csv
import io
import json
import logging
import traceback
import warnings
from dataclasses import astuple
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_data_privacy import CANARY

from audit.data.chexpert import OBSERVATIONS
from audit.data.loading import DataRequest, describe_dry_run, load_cohort, official_split
from audit.data.registry import detect_source
from audit.errors import UsageError

FOLDER = "CheXpert-v1.0-small"
HEADER = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *OBSERVATIONS)

# (split, patient, study, view file, Frontal/Lateral, AP/PA, sex, age, {observation: code})
ROWS = [
    ("train", "patient00001", 1, "view1_frontal", "Frontal", "AP", "Female", "68",
     {"Atelectasis": "1.0", "Support Devices": "1.0"}),
    ("train", "patient00001", 1, "view2_lateral", "Lateral", "", "Female", "68",
     {"Atelectasis": "1.0"}),
    ("train", "patient00001", 2, "view1_frontal", "Frontal", "PA", "Female", "69",
     {"No Finding": "1.0"}),
    ("train", "patient00002", 1, "view1_frontal", "Frontal", "AP", "Male", "55",
     {"Atelectasis": "-1.0", "Edema": "1.0"}),
    ("train", "patient00003", 1, "view1_frontal", "Frontal", "AP", "Male", "40",
     {"Edema": "1.0", "Atelectasis": ""}),
    ("train", "patient00004", 1, "view1_frontal", "Frontal", "PA", "Unknown", "33",
     {"Atelectasis": "0.0", "No Finding": "1.0"}),  # broken JPEG
    ("train", "patient00005", 1, "view1_frontal", "Frontal", "PA", "Male", "71",
     {"Atelectasis": "1.0"}),  # file missing
    ("train", "patient00006", 1, "view1_frontal", "Frontal", "PA", "Male", "50",
     {"No Finding": "1.0"}),
    ("valid", "patient64541", 1, "view1_frontal", "Frontal", "PA", "Male", "60",
     {"Atelectasis": "1.0"}),
    ("valid", "patient64542", 1, "view1_frontal", "Frontal", "AP", "Female", "45",
     {"No Finding": "1.0"}),
    ("valid", "patient64542", 1, "view2_lateral", "Lateral", "", "Female", "45",
     {"No Finding": "1.0"}),
]  # fmt: skip
BROKEN, MISSING = 5, 6


def listed_path(row, folder: str = FOLDER) -> str:
    split, patient, study, view = row[:4]
    return f"{folder}/{split}/{patient}/study{study}/{view}.jpg"


def write_jpeg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 24), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)


def make_chexpert(base: Path, rows=ROWS, folder: str = FOLDER) -> Path:
    """``base/<folder>/train.csv``, ``valid.csv`` and the JPEGs they list (one cut in half, one
    missing); returns the folder holding the CSVs."""
    root = base / folder
    for split in ("train", "valid"):
        root.mkdir(parents=True, exist_ok=True)
        with open(root / f"{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(HEADER)
            for row in (r for r in rows if r[0] == split):
                codes = [row[8].get(name, "") for name in OBSERVATIONS]
                group, ap_pa, sex, age = row[4:8]
                writer.writerow([listed_path(row, folder), sex, age, group, ap_pa, *codes])
    for i, row in enumerate(rows):
        if i == MISSING:
            continue
        path = base / listed_path(row, folder)
        write_jpeg(path, i)
        if i == BROKEN:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return root


@pytest.fixture(scope="module")
def chexpert(tmp_path_factory) -> Path:
    return make_chexpert(tmp_path_factory.mktemp("chexpert"))


def request(root: Path, cache: Path, options=None, **kw) -> DataRequest:
    return DataRequest(root, "cxr", cache_dir=cache, image_size=16, source_options=options, **kw)


def test_either_folder_is_detected_and_the_csv_itself_is_refused(chexpert) -> None:
    source, evidence = detect_source(chexpert)
    assert source.name == "chexpert" and evidence == "train.csv (CheXpert)"
    source, evidence = detect_source(chexpert.parent)
    assert source.name == "chexpert" and evidence == f"{FOLDER}/train.csv (CheXpert)"
    with pytest.raises(UsageError, match="give the CheXpert folder that holds it"):
        detect_source(chexpert / "train.csv")


def test_dry_run_counts_the_selection_the_views_and_the_official_lists(chexpert, tmp_path) -> None:
    summary = describe_dry_run(request(chexpert, tmp_path))
    assert summary["source"] == "chexpert" and summary["detected"] is True
    assert summary["selection"] == {
        "rows in train.csv": 8,
        "rows in valid.csv": 3,
        "left out: lateral view": 2,
        "left out: uncertain label (uncertain=drop)": 1,
        "left out: other findings only": 1,
        "selected": 6,
    }
    assert summary["excluded"] == {"image file not found": 1}  # the broken file is not decoded
    assert (summary["images"], summary["positive"], summary["negative"]) == (6, 2, 4)
    assert summary["views"] == {"AP": 2, "PA": 4}
    assert summary["splits"]["chexpert/train"]["images"] == 4
    assert summary["splits"]["chexpert/valid"]["images"] == 2
    assert "uncertain labels: drop" in summary["description"]
    assert "views frontal" in summary["description"]


def test_cohort_leaves_out_the_broken_file_and_keeps_a_patients_images_together(
    chexpert, tmp_path
) -> None:
    cohort = load_cohort(request(chexpert, tmp_path), progress=False)
    assert cohort.excluded == {"image file not found": 1, "damaged or truncated PNG/JPEG": 1}
    assert [c.label for c in cohort.cases] == [1, 0, 0, 1, 0]
    assert [c.sex for c in cohort.cases] == ["F", "F", "M", "M", "F"]
    assert [c.age for c in cohort.cases] == [68.0, 69.0, 50.0, 60.0, 45.0]
    assert [c.view for c in cohort.cases] == ["AP", "PA", "PA", "PA", "AP"]
    assert cohort.patients[0] == cohort.patients[1] != cohort.patients[2]
    assert len(set(cohort.patients)) == 4
    assert cohort.images.shape == (5, 16, 16) and cohort.source == "chexpert"
    assert "uncertain labels: drop" in cohort.description


@pytest.mark.parametrize(
    ("policy", "positive", "negative"), [("drop", 2, 4), ("ones", 3, 4), ("zeros", 2, 5)]
)
def test_the_uncertain_policy_decides_the_uncertain_image(
    chexpert, tmp_path, policy, positive, negative
) -> None:
    summary = describe_dry_run(request(chexpert, tmp_path, {"uncertain": policy}))
    assert (summary["positive"], summary["negative"]) == (positive, negative)
    assert f"uncertain labels: {policy}" in summary["description"]
    dropped = summary["selection"].get("left out: uncertain label (uncertain=drop)", 0)
    assert dropped == (policy == "drop")


def test_each_policy_is_its_own_cached_cohort(chexpert, tmp_path) -> None:
    drop = load_cohort(request(chexpert, tmp_path), progress=False)
    ones = load_cohort(request(chexpert, tmp_path, {"uncertain": "ones"}), progress=False)
    assert len(ones.cases) == len(drop.cases) + 1
    assert drop.manifest_hash() != ones.manifest_hash()
    assert len(list((tmp_path / "cohorts").glob("*.npy"))) == 2


@pytest.mark.parametrize(
    ("views", "kept"),
    [("all", {"AP": 2, "PA": 4, "LATERAL": 2}), ("lateral", {"LATERAL": 2}), (("PA",), {"PA": 4})],
)
def test_the_views_option_keeps_the_views_named(chexpert, tmp_path, views, kept) -> None:
    summary = describe_dry_run(request(chexpert, tmp_path, {"views": views}))
    assert summary["views"] == kept


def test_negatives_absent_takes_images_without_the_finding(chexpert, tmp_path) -> None:
    summary = describe_dry_run(request(chexpert, tmp_path, {"negatives": "absent"}))
    assert summary["negative"] == 5 and "left out: other findings only" not in summary["selection"]
    assert "Atelectasis (positive) vs no Atelectasis (negative)" in summary["description"]


def test_another_finding_is_chosen_by_name(chexpert, tmp_path) -> None:
    summary = describe_dry_run(request(chexpert, tmp_path, finding="edema"))
    assert summary["positive"] == 2  # patients 2 and 3 (the Edema column, case aside)
    assert "Edema (positive)" in summary["description"]


def test_valid_csv_is_the_official_test_list(chexpert, tmp_path) -> None:
    cohort = load_cohort(request(chexpert, tmp_path), progress=False)
    split = official_split(cohort, n_folds=2, val_fraction=0.5, seed=0)
    assert split is not None and split.test.tolist() == [3, 4]
    for train, val in split.folds:
        assert not set(cohort.patients[train]) & set(cohort.patients[split.test])
        assert not set(cohort.patients[train]) & set(cohort.patients[val])


def test_a_renamed_data_set_folder_is_still_read(tmp_path) -> None:
    root = make_chexpert(tmp_path / "data")
    renamed = root.rename(tmp_path / "data" / "chexpert-small")
    summary = describe_dry_run(request(renamed, tmp_path / "cache"))
    assert summary["images"] == 6 and summary["excluded"] == {"image file not found": 1}


@pytest.mark.parametrize(
    ("options", "finding", "message"),
    [
        (
            {"uncertain": "maybe"},
            "Atelectasis",
            "`uncertain` 'maybe'; use one of drop, zeros, ones",
        ),
        (
            {"uncertian": "ones"},
            "Atelectasis",
            r"`uncertian` does not apply to CheXpert \(it reads uncertain",
        ),
        (None, "Effusion", "not a CheXpert observation; use one of Enlarged Cardiomediastinum"),
        (None, "No Finding", "not a CheXpert observation"),
    ],
)
def test_bad_options_and_findings_are_one_line(
    chexpert, tmp_path, options, finding, message
) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        describe_dry_run(request(chexpert, tmp_path, options, finding=finding))
    assert "\n" not in str(caught.value)


def test_a_missing_column_names_the_official_columns(tmp_path) -> None:
    root = make_chexpert(tmp_path)
    for name in ("train.csv", "valid.csv"):
        text = (root / name).read_text()
        (root / name).write_text(text.replace("AP/PA", "Projection", 1))
    with pytest.raises(UsageError, match="lacks the column.*'AP/PA'"):
        describe_dry_run(request(root, tmp_path / "cache"))


def exposed(requests: list[DataRequest], cache: Path, caplog, capsys) -> list[str]:
    """Everything the requests' dry runs, loads and errors show, with the log, the printed
    output, the warnings and the cache folder's names and records (test_data_privacy's canary)."""
    seen: list[str] = []
    calls = (
        describe_dry_run,
        partial(load_cohort, progress=True),
        partial(load_cohort, progress=False),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for req in requests:
            seen.append(repr(req))
            for call in calls:
                try:
                    result = call(req)
                except UsageError as error:
                    seen += [str(error), repr(error), "".join(traceback.format_exception(error))]
                    continue
                if isinstance(result, dict):
                    seen.append(json.dumps(result))
                else:
                    seen += [repr(case) for case in result.cases]
                    seen += [str(field) for case in result.cases for field in astuple(case)]
                    seen += [
                        result.description,
                        *result.excluded,
                        *result.warnings,
                        *result.subsets,
                    ]
    printed = capsys.readouterr()
    seen += [str(w.message) for w in caught]
    seen += [caplog.text, *(repr(r.args) for r in caplog.records), printed.out, printed.err]
    seen += [p.name for p in cache.rglob("*")]
    seen += [p.read_text() for p in cache.rglob("*.json")]
    assert "decoding images" in printed.err  # the progress bar ran and was captured
    assert any("file(s) left out" in text for text in seen)  # broken files were reported
    return seen


def canary_rows() -> list:
    """The rows with a canary in every patient folder and file name."""
    rows = []
    for split, patient, study, view, *rest in ROWS:
        rows.append((split, f"patient{CANARY}{patient[-2:]}", study, f"{view}-{CANARY}", *rest))
    return rows


def test_the_canary_never_leaves_the_source(tmp_path, caplog, capsys) -> None:
    caplog.set_level(logging.DEBUG)
    root = make_chexpert(tmp_path / f"site-{CANARY}", canary_rows())
    cache = tmp_path / "cache"
    cohort = load_cohort(request(root, cache, {"views": "all"}), progress=False)
    assert len(cohort.cases) == 7 and len(set(cohort.patients)) == 4  # real cases are read
    requests = [
        request(root, cache, options, finding=finding, strict=strict)
        for strict in (False, True)
        for options, finding in ((None, "Atelectasis"), ({"views": "all"}, "Edema"), (None, "X"))
    ]
    seen = exposed(requests, cache, caplog, capsys)
    assert [text for text in seen if CANARY.lower() in text.lower()] == []


def test_the_csv_is_read_by_column_name_not_position(tmp_path) -> None:
    """CheXpert's full-size release orders the same columns otherwise: names decide."""
    root = make_chexpert(tmp_path)
    for name in ("train.csv", "valid.csv"):
        rows = list(csv.reader(io.StringIO((root / name).read_text())))
        order = list(reversed(range(len(rows[0]))))
        buffer = io.StringIO()
        csv.writer(buffer).writerows([[row[i] for i in order] for row in rows])
        (root / name).write_text(buffer.getvalue())
    summary = describe_dry_run(request(root, tmp_path / "cache"))
    assert (summary["images"], summary["positive"], summary["negative"]) == (6, 2, 4)


def test_the_command_line_passes_uncertain_negatives_and_views_to_the_source(
    chexpert, tmp_path, capsys
) -> None:
    """`check --dry-run --json` with --uncertain, --views: the source reads what was typed;
    untyped, it keeps its own defaults (drop, frontal); a source that takes none refuses."""
    import json

    from audit import cli

    def dry_run(*more: str) -> dict:
        code = cli.main(["check", str(tmp_path / "m.pt"), "--modality", "cxr", "--data",
                         str(chexpert), "--dry-run", "--json", "--cache-dir",
                         str(tmp_path / "c"), *more])  # fmt: skip
        captured = capsys.readouterr()
        assert code == 0, captured.err
        return json.loads(captured.out)

    default = dry_run()
    assert "uncertain labels: drop" in default["description"]
    zeros = dry_run("--uncertain", "zeros")
    assert "uncertain labels: zeros" in zeros["description"]
    assert zeros["images"] == default["images"] + 1, "the uncertain image comes back"
    every_view = dry_run("--views", "all")
    assert every_view["images"] == default["images"] + 2, "the two lateral images come back"
    assert "AP" in default["views"] and set(dry_run("--views", "PA")["views"]) == {"PA"}
    manifest = tmp_path / "manifest"
    manifest.mkdir()
    (manifest / "manifest.csv").write_text("path,label,patient_id\na.png,1,p1\n")
    code = cli.main(["check", str(tmp_path / "m.pt"), "--modality", "cxr", "--data",
                     str(manifest), "--uncertain", "zeros", "--dry-run"])  # fmt: skip
    assert code == 2
    assert "--uncertain does not apply to a manifest CSV" in capsys.readouterr().err
