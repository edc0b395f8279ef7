"""The decode-once cache: reused, rebuilt when damaged, never trusted half-written, parallel-safe."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from test_data_builders import make_nih_tree, nih_rows, write_manifest, write_png

from audit.data import cache as store
from audit.data.loading import DataRequest, load_cohort
from audit.data.pseudonyms import KEY_FILE, load_or_create_key


@pytest.fixture
def nih(tmp_path) -> DataRequest:
    make_nih_tree(tmp_path / "nih", nih_rows(8, 3))
    return DataRequest(tmp_path / "nih", "cxr", cache_dir=tmp_path / "cache", image_size=16)


def no_decoding(monkeypatch) -> None:
    def fail(*_args, **_kwargs):
        raise AssertionError("decoded although the cache holds the cohort")

    monkeypatch.setattr(store, "decode_file", fail)


def entry(req: DataRequest) -> tuple[Path, Path]:
    (pixels,) = (req.cache_dir / "cohorts").glob("*.npy")
    return pixels, pixels.with_suffix(".json")


def test_second_load_reads_the_cache_without_decoding(nih, monkeypatch) -> None:
    first = load_cohort(nih, progress=False)
    no_decoding(monkeypatch)
    second = load_cohort(nih, progress=False)
    assert isinstance(second.images, np.memmap)
    assert np.array_equal(first.images, second.images)
    assert first.cases == second.cases and first.manifest_hash() == second.manifest_hash()


def test_damaged_pixels_are_detected_and_rebuilt(nih) -> None:
    first = np.array(load_cohort(nih, progress=False).images)
    pixels, _record = entry(nih)
    data = bytearray(pixels.read_bytes())
    data[-5] ^= 0xFF
    pixels.write_bytes(bytes(data))
    again = load_cohort(nih, progress=False)
    assert np.array_equal(first, again.images)


@pytest.mark.parametrize("damage", ["truncate", "no_record", "bad_record"])
def test_incomplete_entries_are_never_trusted(nih, damage) -> None:
    first = np.array(load_cohort(nih, progress=False).images)
    pixels, record = entry(nih)
    if damage == "truncate":
        pixels.write_bytes(pixels.read_bytes()[:200])
    elif damage == "no_record":
        record.unlink()
    else:
        record.write_text("{not json")
    assert np.array_equal(first, load_cohort(nih, progress=False).images)


def test_a_killed_build_leaves_nothing_trusted(nih, monkeypatch) -> None:
    calls = {"n": 0}
    real = store.decode_file

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "decode_file", dying)
    with pytest.raises(KeyboardInterrupt):
        load_cohort(nih, progress=False)
    assert list((nih.cache_dir / "cohorts").iterdir()) == []
    monkeypatch.setattr(store, "decode_file", real)
    assert len(load_cohort(nih, progress=False).cases) > 0


def test_temp_files_of_dead_builds_are_removed(nih) -> None:
    cohort = load_cohort(nih, progress=False)
    pixels, _ = entry(nih)
    key = pixels.stem
    stale = pixels.parent / f".{key}.999999999.abcd.tmp.npy"
    stale.write_bytes(b"half")
    pixels.unlink()
    again = load_cohort(nih, progress=False)
    assert not stale.exists() and len(again.cases) == len(cohort.cases)


def test_changed_files_or_settings_make_a_new_entry(nih, tmp_path) -> None:
    load_cohort(nih, progress=False)
    png = next((tmp_path / "nih").glob("images_*/images/00000001_000.png"))
    write_png(png, seed=123)
    load_cohort(nih, progress=False)
    assert len(list((nih.cache_dir / "cohorts").glob("*.npy"))) == 2
    load_cohort(
        DataRequest(nih.path, "cxr", cache_dir=nih.cache_dir, image_size=24), progress=False
    )
    assert len(list((nih.cache_dir / "cohorts").glob("*.npy"))) == 3


def test_parallel_decoding_equals_serial(tmp_path) -> None:
    rows = []
    for i in range(40):
        write_png(tmp_path / "d" / f"{i}.png", seed=i, size=40)
        rows.append({"path": f"{i}.png", "label": str(i % 2), "patient_id": f"P{i // 2}"})
    (tmp_path / "d" / "bad.png").write_text("x")
    rows.append({"path": "bad.png", "label": "0", "patient_id": "Q"})
    manifest = write_manifest(tmp_path / "d" / "manifest.csv", rows)
    serial = load_cohort(
        DataRequest(manifest, "cxr", cache_dir=tmp_path / "a", image_size=16, workers=1),
        progress=False,
    )
    parallel = load_cohort(
        DataRequest(manifest, "cxr", cache_dir=tmp_path / "b", image_size=16, workers=2),
        progress=False,
    )
    assert np.array_equal(serial.images, parallel.images)
    assert serial.excluded == parallel.excluded == {"not a PNG, JPEG or DICOM file": 1}
    assert [c.label for c in serial.cases] == [c.label for c in parallel.cases]


def test_the_pseudonym_key_is_private_and_stable(tmp_path) -> None:
    first = load_or_create_key(tmp_path)
    mode = stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode)
    assert mode == 0o600
    assert load_or_create_key(tmp_path).case_id("s", "x") == first.case_id("s", "x")
    assert "key=<secret>" in repr(first)
    os.chmod(tmp_path / KEY_FILE, 0o644)
    load_or_create_key(tmp_path)
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600


def test_another_key_gives_other_pseudonyms(nih, tmp_path) -> None:
    first = load_cohort(nih, progress=False)
    other = load_cohort(
        DataRequest(nih.path, "cxr", cache_dir=tmp_path / "other", image_size=16), progress=False
    )
    assert {c.case_id for c in first.cases}.isdisjoint({c.case_id for c in other.cases})
    assert np.array_equal(first.images, other.images)


def test_the_record_holds_only_pseudonyms(nih, tmp_path) -> None:
    load_cohort(nih, progress=False)
    _pixels, record = entry(nih)
    text = record.read_text()
    assert "00000001_000" not in text and str(tmp_path) not in text
    cases = json.loads(text)["cases"]
    assert all(
        case_id.startswith("c") and patient.startswith("p") for case_id, _, patient, *_ in cases
    )
